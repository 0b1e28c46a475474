use std::collections::HashMap;

use super::audit::{chain_hash, AuditRow, GENESIS};
use super::rows::*;
use super::sqlite::{Failure, Writer};

const KEY: [u8; 32] = [3; 32];

fn rules() -> Vec<Rule> {
    vec![Rule {
        rule_id: "prepaid-barred-has-credit".into(),
        plan: PREPAID,
        from_status: BARRED,
        to_status: ACTIVE,
        owed_max_minor: 0,
        credit_min_minor: 1,
    }]
}

fn decision<'a>(payment_id: &'a str, key: &'a str, account_id: &'a str) -> Decision<'a> {
    Decision {
        payment_id,
        idempotency_key: key,
        fingerprint: "f",
        account_id,
        msisdn: "+306900000001",
        amount_minor: 1500,
        currency: "EUR",
        purpose: 2,
        method_kind: 1,
        method_display: "card ****4242",
        channel: "app",
        device_id: "",
        ip: "",
        sender: "",
        decline_reason: "",
        decline_detail: "",
        gateway: "alpha",
        gateway_reference: "ref-1",
        fraud: None,
        review: false,
        failed: false,
    }
}

fn barred_prepaid(balance_minor: i64) -> Account {
    Account {
        msisdn: "+306900000001".into(),
        plan: PREPAID,
        status: BARRED,
        balance_minor,
    }
}

#[test]
fn a_top_up_restores_a_barred_line_and_chains_the_audit_rows() {
    let mut accounts = HashMap::from([("acc-1".to_string(), barred_prepaid(-100))]);
    let mut declined = decision("pay_2", "k-2", "acc-1");
    declined.decline_reason = "FRAUD_DECLINED";
    declined.decline_detail = "score 990";
    declined.failed = false;
    let batch = [decision("pay_1", "k-1", "acc-1"), declined];
    let rows = build(&batch, &mut accounts, &rules(), None, 7, 1_000, &KEY).unwrap();

    assert_eq!(accounts["acc-1"].balance_minor, 1400);
    assert_eq!(accounts["acc-1"].status, ACTIVE);
    assert_eq!(rows.touched, vec!["acc-1"]);
    assert_eq!(
        rows.outcomes,
        vec![
            Outcome {
                status: SETTLED,
                ledger_sequence: 7,
                balance_after_minor: 1400,
                service_state_after: ACTIVE
            },
            Outcome {
                status: DECLINED,
                ledger_sequence: 8,
                balance_after_minor: 0,
                service_state_after: 0
            },
        ]
    );
    assert_eq!(rows.provisioning.len(), 1);
    assert_eq!(rows.provisioning[0].rule_id, "prepaid-barred-has-credit");
    let kinds: Vec<_> = rows.outbox.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["service_state", "settlement", "decline"]);
    assert_eq!(
        rows.outbox[0].payload,
        r#"{"msisdn":"+306900000001","state_after":"ACTIVE","state_before":"BARRED"}"#
    );
    assert_eq!(rows.ar[0].ar_account, "gateway_clearing:alpha");
    assert_eq!(rows.ar[1].ar_account, "prepaid_liability:acc-1");
    assert_eq!(rows.payments[0].confirmation_id.as_deref(), Some("cnf_1"));
    // The chain: row 1 follows the genesis hash, row 2 follows row 1.
    assert_eq!(rows.audit.len(), 2);
    assert_eq!(rows.audit[0].prev_hash, GENESIS);
    assert_eq!(
        rows.audit[0].row_hash,
        chain_hash(&KEY, GENESIS, 1, &rows.audit[0].content)
    );
    assert_eq!(rows.audit[1].prev_hash, rows.audit[0].row_hash);
}

#[test]
fn a_trail_from_before_the_key_gets_a_marker_first() {
    let head = AuditRow {
        seq: 4,
        prev_hash: GENESIS.into(),
        content: "{}".into(),
        row_hash: "not keyed".into(),
    };
    let mut accounts = HashMap::from([("acc-1".to_string(), barred_prepaid(0))]);
    let batch = [decision("pay_1", "k-1", "acc-1")];
    let rows = build(&batch, &mut accounts, &rules(), Some(&head), 1, 1, &KEY).unwrap();
    assert_eq!(rows.audit.len(), 2);
    assert!(rows.audit[0].content.contains("audit.keyed"));
    assert_eq!(rows.audit[0].seq, 5);
    assert_eq!(rows.audit[1].seq, 6);
}

#[test]
fn a_missing_account_or_an_overflow_is_an_error_not_a_row() {
    let mut accounts = HashMap::new();
    let batch = [decision("pay_1", "k-1", "gone")];
    let err = build(&batch, &mut accounts, &[], None, 1, 1, &KEY).unwrap_err();
    assert_eq!(err, BuildError::MissingAccount("gone".into()));

    let mut accounts = HashMap::from([("acc-1".to_string(), barred_prepaid(i64::MAX))]);
    let batch = [decision("pay_1", "k-1", "acc-1")];
    let err = build(&batch, &mut accounts, &[], None, 1, 1, &KEY).unwrap_err();
    assert_eq!(err, BuildError::BalanceOverflow("acc-1".into()));
}

const SCHEMA: &str = include_str!("../../../python/quickpay_engine/store/schema_sqlite.sql");

pub(crate) fn database() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quickpay.sqlite3");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(SCHEMA).unwrap();
    db.execute_batch(
        "INSERT INTO provisioning_rules (rule_id, priority, plan, from_status, to_status, \
         owed_max_minor, credit_min_minor) VALUES ('prepaid-barred-has-credit', 0, 1, 3, 1, 0, 1);",
    )
    .unwrap();
    for (account, msisdn) in [("acc-1", "+306900000001"), ("acc-2", "+306900000002")] {
        db.execute(
            "INSERT INTO subscribers (account_id, msisdn, plan, status, currency, \
             balance_minor, opening_balance_minor, country, created_at_s) VALUES (?1, ?2, 1, 3, 'EUR', 0, 0, 'GR', 0)",
            [account, msisdn],
        )
        .unwrap();
    }
    (dir, path)
}

fn count(path: &std::path::Path, table: &str) -> i64 {
    let db = rusqlite::Connection::open(path).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_batch_commits_whole_and_a_bad_payment_is_redone_alone() {
    let (_dir, path) = database();
    let mut writer = Writer::open(&path).unwrap();
    let first = [decision("pay_1", "k-1", "acc-1")];
    let done = writer.commit(&first, 10, &KEY).unwrap();
    assert!(done.outcomes[0].is_ok());
    assert_eq!(done.states, vec![("acc-1".to_string(), 1500, ACTIVE)]);
    assert_eq!(done.head.as_ref().map(|h| h.0), Some(1));

    // k-1 again (another payment id): a UNIQUE constraint; "gone" has no account. Both
    // fail alone and the good payment between them commits.
    let batch = [
        decision("pay_2", "k-1", "acc-2"),
        decision("pay_3", "k-3", "acc-2"),
        decision("pay_4", "k-4", "gone"),
    ];
    let done = writer.commit(&batch, 20, &KEY).unwrap();
    match &done.outcomes[0] {
        Err(Failure::Rejected(text)) => assert!(text.contains("UNIQUE"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(done.outcomes[1].as_ref().unwrap().balance_after_minor, 1500);
    assert_eq!(done.outcomes[2], Err(Failure::AccountGone("gone".into())));
    assert_eq!(done.states, vec![("acc-2".to_string(), 1500, ACTIVE)]);
    assert_eq!(count(&path, "payments"), 2);
    assert_eq!(count(&path, "audit_log"), 2);
    assert_eq!(count(&path, "outbox"), 4); // two settlements, two lines restored
}

#[test]
fn a_batch_larger_than_a_chunk_is_journalled_committed_and_forgotten_whole() {
    // 150 payments: chunks of 64, 64, 16, 4 and 2 rows per statement.
    let (_dir, path) = database();
    let mut writer = Writer::open(&path).unwrap();
    let ids: Vec<String> = (0..150).map(|k| format!("pay_{k:03}")).collect();
    let keys: Vec<String> = (0..150).map(|k| format!("k-{k:03}")).collect();
    let batch: Vec<Decision<'_>> = ids
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(k, (id, key))| decision(id, key, if k % 2 == 0 { "acc-1" } else { "acc-2" }))
        .collect();

    // One key already journalled by an unfinished attempt: only its payment is refused.
    assert_eq!(writer.journal(&batch[70..71], 5).unwrap(), vec![true]);
    let mut other = batch[70];
    other.payment_id = "pay_other";
    assert_eq!(writer.journal(&[other], 5).unwrap(), vec![false]);
    let taken = writer.journal(&batch, 5).unwrap();
    assert_eq!(taken.iter().filter(|t| !**t).count(), 1);
    assert!(!taken[70]);
    assert_eq!(count(&path, "settlement_attempts"), 150);

    let done = writer.commit(&batch, 10, &KEY).unwrap();
    assert!(done.outcomes.iter().all(Result::is_ok));
    let sequences: Vec<i64> = done
        .outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().ledger_sequence)
        .collect();
    assert_eq!(sequences, (1..=150).collect::<Vec<_>>());
    for (table, rows) in [
        ("payments", 150),
        ("billing_records", 150),
        ("ar_entries", 300),
        ("audit_log", 150),
        ("settlement_attempts", 0),
    ] {
        assert_eq!(count(&path, table), rows, "{table}");
    }
    let db = rusqlite::Connection::open(&path).unwrap();
    let (seq, id): (i64, String) = db
        .query_row(
            "SELECT seq, payment_id FROM payments WHERE idempotency_key = 'k-149'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((seq, id.as_str()), (150, "pay_149"));
}

/// Frames in the WAL file at `path` (its size: a 32-byte header, then 24 bytes and a
/// 4 KiB page per frame). The file keeps its size when SQLite starts it again.
fn wal_frames(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("sqlite3-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len().saturating_sub(32) / (4096 + 24))
}

/// Commits 500 new payments of acc-1 (ids from `committed` on) and counts them.
fn commit_500(writer: &mut Writer, committed: &mut usize) {
    let ids: Vec<String> = (0..500)
        .map(|k| format!("pay_{:07}", *committed + k))
        .collect();
    let keys: Vec<String> = ids.iter().map(|id| format!("k-{id}")).collect();
    let batch: Vec<Decision<'_>> = ids
        .iter()
        .zip(&keys)
        .map(|(id, key)| decision(id, key, "acc-1"))
        .collect();
    let done = writer.commit(&batch, 10, &KEY).unwrap();
    assert!(done.outcomes.iter().all(Result::is_ok));
    *committed += 500;
}

/// Commits batches until the WAL file at `path` holds the frames that wake the
/// checkpoint thread; the most frames one batch wrote.
fn commit_to_the_background_mark(
    writer: &mut Writer,
    committed: &mut usize,
    path: &std::path::Path,
) -> u64 {
    use super::checkpoint::BACKGROUND_PAGES;
    let mut batch_frames = 0;
    while wal_frames(path) < u64::from(BACKGROUND_PAGES) {
        let frames = wal_frames(path);
        commit_500(writer, committed);
        batch_frames = batch_frames.max(wal_frames(path) - frames);
    }
    batch_frames
}

/// Commits batches until four inline marks' worth of WAL frames were written, and checks
/// that the WAL file at `path` stayed within four batches (`batch_frames` each) of the
/// inline mark: past it, the writer's own commit copies it back and it starts again.
fn commit_past_the_inline_mark(
    writer: &mut Writer,
    committed: &mut usize,
    path: &std::path::Path,
    batch_frames: u64,
) {
    use super::checkpoint::INLINE_PAGES;
    let mut most = 0;
    while *committed < 500 * (4 * INLINE_PAGES as usize / batch_frames as usize) {
        commit_500(writer, committed);
        most = most.max(wal_frames(path));
    }
    assert!(
        most <= u64::from(INLINE_PAGES) + 4 * batch_frames,
        "{most} frames, {batch_frames} a batch"
    );
}

/// Every one of `committed` payments is in the file at `path`, and it is intact.
fn assert_all_there(path: &std::path::Path, committed: usize) {
    assert_eq!(count(path, "payments"), committed as i64);
    let db = rusqlite::Connection::open(path).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn the_wal_is_copied_back_by_the_checkpoint_thread_and_stays_bounded() {
    use super::checkpoint::{Counts, BACKGROUND_PAGES, INLINE_PAGES};
    let (_dir, path) = database();
    let counts = std::sync::Arc::new(Counts::default());
    let mut writer = Writer::open_counted(&path, std::sync::Arc::clone(&counts)).unwrap();
    let file_pages = |path: &std::path::Path| std::fs::metadata(path).unwrap().len() / 4096;
    let before = file_pages(&path);
    let mut committed = 0usize;
    // Up to the mark that wakes the thread, and no further than the inline one: no
    // commit of the writer copied anything itself.
    let batch_frames = commit_to_the_background_mark(&mut writer, &mut committed, &path);
    assert!(wal_frames(&path) < u64::from(INLINE_PAGES));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // New pages (the payments' rows and indexes; most frames rewrite the same few)
    // reach the file only through a checkpoint.
    while counts.get().0 == 0 || file_pages(&path) < before + u64::from(BACKGROUND_PAGES) / 4 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(counts.get().1, 0, "a checkpoint failed");

    // Past the inline mark, the WAL starts again instead of growing: its file stays
    // within a few batches of the mark however many more commits come.
    commit_past_the_inline_mark(&mut writer, &mut committed, &path, batch_frames);
    drop(writer); // the thread stops, and nothing committed is lost
    assert_all_there(&path, committed);
}

#[test]
fn a_checkpoint_thread_that_fails_is_counted_the_writer_bounds_the_wal_and_it_recovers() {
    // The thread opens its own connection when first asked. With the data dir renamed
    // away meanwhile (the writer's connection keeps its open files), that open fails, as
    // it would on a full disk or a lost mount: counted, and nothing else stops.
    use super::checkpoint::Counts;
    let (dir, path) = database();
    let counts = std::sync::Arc::new(Counts::default());
    let mut writer = Writer::open_counted(&path, std::sync::Arc::clone(&counts)).unwrap();
    let away = dir.path().with_extension("away");
    std::fs::rename(dir.path(), &away).unwrap();
    let moved = away.join("quickpay.sqlite3");
    let mut committed = 0usize;
    let batch_frames = commit_to_the_background_mark(&mut writer, &mut committed, &moved);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while counts.get().1 == 0 {
        assert!(std::time::Instant::now() < deadline, "no failure counted");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        counts.get().0,
        0,
        "no checkpoint ran: the thread had no connection"
    );
    // Without the thread, the writer's own commit copies the WAL back past the inline
    // mark: it starts again instead of growing.
    commit_past_the_inline_mark(&mut writer, &mut committed, &moved, batch_frames);
    // The data dir back where it was: the next ask opens the connection and copies.
    std::fs::rename(&away, dir.path()).unwrap();
    let failures = counts.get().1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while counts.get().0 == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the thread did not recover"
        );
        commit_500(&mut writer, &mut committed);
    }
    drop(writer);
    assert!(counts.get().1 >= failures);
    assert_all_there(&path, committed);
}
