//! The durable ledger across restarts: replay, snapshots, torn tails, corruption.

use std::path::{Path, PathBuf};

use quickpay_engine::ledger::{
    account_flags, transfer_flags, AccountInput, AccountKind, Command, DurableConfig, DurableError,
    DurableLedger, Ledger, Limits, TransferInput,
};
use quickpay_engine::wal::{list_dir, WalConfig, WalError};

const EUR: u16 = 978;

fn config(segment_bytes_max: u64) -> DurableConfig {
    DurableConfig {
        wal: WalConfig { segment_bytes_max },
        limits: Limits::default(),
    }
}

fn accounts() -> Command {
    let account = |id, flags| AccountInput {
        id,
        currency: EUR,
        kind: AccountKind::GatewayClearing as u16,
        flags,
    };
    Command::CreateAccounts {
        accounts: vec![
            account(1, 0),
            account(2, 0),
            account(3, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        ],
    }
}

/// A deterministic mix of plain, pending and posting transfers for batch `i`.
fn batch(i: u64, n: u64) -> Command {
    let transfers = (0..n)
        .map(|j| {
            let id = u128::from(i * 1000 + j + 1);
            let mut t = TransferInput {
                id,
                debit_account_id: 1 + u128::from(j % 2),
                credit_account_id: 2 - u128::from(j % 2),
                amount_minor: (j as i64 % 50) + 1,
                currency: EUR,
                payment_id: id,
                ..TransferInput::default()
            };
            if j % 3 == 1 {
                t.flags = transfer_flags::PENDING;
                t.timeout_s = 3600;
            }
            if j % 3 == 2 {
                t = TransferInput {
                    id,
                    pending_id: id - 1,
                    flags: transfer_flags::POST_PENDING,
                    ..TransferInput::default()
                };
            }
            t
        })
        .collect();
    Command::CreateTransfers { transfers }
}

fn image(ledger: &DurableLedger) -> quickpay_engine::ledger::LedgerImage {
    ledger.read(Ledger::image).unwrap()
}

fn fill(dir: &Path, segment_bytes_max: u64, batches: u64) -> (DurableLedger, Vec<u64>) {
    let (ledger, report) = DurableLedger::open(dir, config(segment_bytes_max)).unwrap();
    assert_eq!(report.records_replayed, 0);
    let mut seqs = vec![ledger.execute(1, accounts()).unwrap().1];
    for i in 0..batches {
        let (codes, seq) = ledger.execute(10 + i, batch(i, 9)).unwrap();
        assert!(codes.iter().all(|&c| c == 0), "batch {i}: {codes:?}");
        seqs.push(seq);
    }
    (ledger, seqs)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    list_dir(dir)
        .unwrap()
        .segments
        .into_iter()
        .map(|s| s.path)
        .collect()
}

#[test]
fn a_restart_replays_every_record_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, seqs) = fill(dir.path(), 4096, 40);
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>());
    let before = image(&ledger);
    drop(ledger);
    assert!(segments(dir.path()).len() > 3, "small segments rotate");
    let (ledger, report) = DurableLedger::open(dir.path(), config(4096)).unwrap();
    assert_eq!(report.records_replayed, 41);
    assert!(report.torn_tail().is_none());
    assert_eq!(image(&ledger), before);
    ledger.read(|l| l.check_balanced()).unwrap().unwrap();
    // Appends continue the chain after a restart.
    assert_eq!(ledger.execute(100, batch(77, 3)).unwrap().1, 42);
}

#[test]
fn a_snapshot_replaces_the_segments_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = fill(dir.path(), 4096, 30);
    let segments_before = segments(dir.path()).len();
    assert_eq!(ledger.snapshot().unwrap(), 31);
    ledger.execute(200, batch(500, 5)).unwrap();
    assert_eq!(ledger.snapshot().unwrap(), 32);
    let listing = list_dir(dir.path()).unwrap();
    assert_eq!(listing.snapshots.len(), 1, "older snapshots are removed");
    assert!(
        listing.segments.len() < segments_before,
        "covered segments are removed"
    );
    ledger.execute(300, batch(600, 4)).unwrap();
    let before = image(&ledger);
    drop(ledger);
    let (ledger, report) = DurableLedger::open(dir.path(), config(4096)).unwrap();
    assert_eq!((report.snapshot_seq, report.records_replayed), (32, 1));
    assert_eq!(image(&ledger), before);
}

#[test]
fn a_torn_tail_is_truncated_and_reported_and_earlier_records_survive() {
    for cut in [1u64, 5, 23, 24, 25, 100] {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = fill(dir.path(), 1 << 20, 10);
        drop(ledger);
        let last = segments(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&last).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
        file.set_len(len - cut).unwrap();
        drop(file);
        // The expected state is the log minus its last record.
        let reference = tempfile::tempdir().unwrap();
        let (expected, _) = fill(reference.path(), 1 << 20, 9);
        let verify = quickpay_engine::ledger::verify(dir.path(), Limits::default()).unwrap();
        assert!(
            verify.torn_tail().is_some(),
            "cut {cut}: verify reports the tear"
        );
        assert_eq!(
            std::fs::metadata(&last).unwrap().len(),
            len - cut,
            "verify changes nothing"
        );
        let (ledger, report) = DurableLedger::open(dir.path(), config(1 << 20)).unwrap();
        let tail = report.torn_tail().expect("reported");
        assert_eq!(tail.segment, last);
        assert_eq!(report.records_replayed, 10, "cut {cut}");
        assert_eq!(image(&ledger), image(&expected), "cut {cut}");
        assert_eq!(ledger.execute(99, batch(99, 2)).unwrap().1, 11);
        drop(ledger);
        let (_, report) = DurableLedger::open(dir.path(), config(1 << 20)).unwrap();
        assert!(
            report.torn_tail().is_none(),
            "the tear was truncated for good"
        );
        assert_eq!(report.records_replayed, 11);
    }
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn corruption_at(result: Result<(DurableLedger, impl Sized), DurableError>) -> (PathBuf, u64) {
    match result {
        Err(DurableError::Wal(WalError::Corruption(c))) => (c.path, c.offset),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("expected corruption, the ledger opened"),
    }
}

#[test]
fn a_flipped_bit_in_a_middle_segment_refuses_to_start_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = fill(dir.path(), 4096, 30);
    drop(ledger);
    let all = segments(dir.path());
    assert!(all.len() >= 3);
    let middle = &all[all.len() / 2];
    let len = std::fs::metadata(middle).unwrap().len();
    for offset in [0, 7, 23, len / 2, len - 1] {
        flip(middle, offset);
        let (path, _) = corruption_at(DurableLedger::open(dir.path(), config(4096)));
        assert_eq!(&path, middle, "offset {offset}");
        assert!(quickpay_engine::ledger::verify(dir.path(), Limits::default()).is_err());
        flip(middle, offset);
    }
    DurableLedger::open(dir.path(), config(4096)).expect("restored bytes open again");
}

#[test]
fn a_flipped_bit_in_the_last_segment_is_corruption_unless_it_hits_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = fill(dir.path(), 1 << 20, 10);
    drop(ledger);
    let last = segments(dir.path()).pop().unwrap();
    let records = quickpay_engine::ledger::inspect(dir.path(), 0, 100).unwrap();
    assert_eq!(records.len(), 11);
    let second = &records[1];
    for offset in [
        second.offset,
        second.offset + 4,
        second.offset + 30,
        second.offset + second.bytes - 1,
    ] {
        flip(&last, offset);
        let (path, at) = corruption_at(DurableLedger::open(dir.path(), config(1 << 20)));
        assert_eq!(
            (path, at),
            (last.clone(), second.offset),
            "flip at {offset}"
        );
        flip(&last, offset);
    }
    let final_record = records.last().unwrap();
    flip(&last, final_record.offset + 40);
    let (_, report) = DurableLedger::open(dir.path(), config(1 << 20)).unwrap();
    let tail = report
        .torn_tail()
        .expect("indistinguishable from a torn write");
    assert_eq!(tail.offset, final_record.offset);
    assert_eq!(report.records_replayed, 10);
}

#[test]
fn concurrent_appenders_share_commits_and_all_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = DurableLedger::open(dir.path(), config(1 << 20)).unwrap();
    ledger.execute(1, accounts()).unwrap();
    let ledger = std::sync::Arc::new(ledger);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                (0..25u64)
                    .map(|i| ledger.execute(10, batch(t * 100 + i, 3)).unwrap().1)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=101).collect::<Vec<_>>());
    let before = image(&ledger);
    drop(ledger);
    let (ledger, report) = DurableLedger::open(dir.path(), config(1 << 20)).unwrap();
    assert_eq!(report.records_replayed, 101);
    assert_eq!(image(&ledger), before);
}

#[test]
fn a_record_from_another_log_breaks_the_chain() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    drop(fill(a.path(), 1 << 20, 3).0);
    let (ledger, _) = DurableLedger::open(b.path(), config(1 << 20)).unwrap();
    ledger.execute(1, accounts()).unwrap();
    ledger.execute(2, batch(50, 4)).unwrap();
    drop(ledger);
    // Splice b's record 2 in place of a's record 2 (same sequence number, valid checksum).
    let records_a = quickpay_engine::ledger::inspect(a.path(), 0, 10).unwrap();
    let records_b = quickpay_engine::ledger::inspect(b.path(), 0, 10).unwrap();
    let seg_a = std::fs::read(&records_a[0].segment).unwrap();
    let seg_b = std::fs::read(&records_b[0].segment).unwrap();
    let (ra, rb) = (&records_a[1], &records_b[1]);
    let mut spliced = seg_a[..ra.offset as usize].to_vec();
    spliced.extend_from_slice(&seg_b[rb.offset as usize..(rb.offset + rb.bytes) as usize]);
    spliced.extend_from_slice(&seg_a[(ra.offset + ra.bytes) as usize..]);
    std::fs::write(&records_a[0].segment, spliced).unwrap();
    let (_, offset) = corruption_at(DurableLedger::open(a.path(), config(1 << 20)));
    assert!(
        offset > ra.offset,
        "caught at the record after the splice, where the link breaks"
    );
}
