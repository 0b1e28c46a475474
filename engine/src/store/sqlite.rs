//! A batch's rows written to the engine's SQLite file from the core, in one transaction,
//! with no Python step per row. Same file, schema and settings as
//! `quickpay_engine.store.sqlite` (WAL, synchronous=FULL, foreign keys on), through the
//! system's libsqlite3, the one Python's sqlite3 module loads (never a second copy).
//!
//! Should a batch's statements fail on a constraint (a key another writer took since the
//! replay check) or a payment name an account that is gone, the batch is redone one
//! payment per savepoint, so the one bad payment is reported and the others commit.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior,
};

use super::audit::AuditRow;
use super::rows::{build, intent_json, Account, BatchRows, BuildError, Decision, Outcome, Rule};
use crate::reconcile::{Discrepancy, State};

/// How long a write waits for another connection's lock before it fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Accounts read per statement (SQLite's default bound on variables is 32,766).
const IN_LIST_MAX: usize = 500;

/// Why one payment of a batch was not written (the others were).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A constraint refused its rows (SQLite's message).
    Rejected(String),
    /// Its account is not in billing any more.
    AccountGone(String),
}

/// What a commit wrote: an outcome or a failure per payment, in order; each account's
/// balance and line status after the batch, in first-touch order; and the audit
/// trail's head after it (None: the batch wrote no audit row).
#[derive(Debug)]
pub struct Committed {
    pub outcomes: Vec<Result<Outcome, Failure>>,
    pub states: Vec<(String, i64, u8)>,
    pub head: Option<(i64, String)>,
}

/// Why a batch's attempt failed, before it is sorted into "redo one by one" and "give up".
enum Attempt {
    Build(BuildError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Attempt {
    fn from(err: rusqlite::Error) -> Self {
        Attempt::Sql(err)
    }
}

fn is_constraint(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

/// The message SQLite gave (what Python's sqlite3 shows as the exception's text).
pub fn message(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::SqliteFailure(_, Some(text)) => text.clone(),
        other => other.to_string(),
    }
}

/// How long a commit waits for the disk (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Each commit is on disk before it returns: the engine's books.
    Full,
    /// A power loss may undo the last commits, never corrupt the file: the gateway
    /// simulators' books, which stand for another company's systems.
    Normal,
}

/// A connection to the SQLite file at `path` (created if missing) as the core opens
/// every one: WAL journal (an error if the file cannot take it), `synchronous` as
/// given, foreign keys enforced, and a wait of up to `BUSY_TIMEOUT` for another
/// connection's lock.
pub fn open_wal(path: &Path, synchronous: Synchronous) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "{}: could not enable WAL journal (got {mode})",
            path.display()
        )));
    }
    let level = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    db.execute_batch(&format!(
        "PRAGMA synchronous = {level}; PRAGMA foreign_keys = ON;"
    ))?;
    Ok(db)
}

/// The writer connection's page cache, in KiB.
const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// The batch writer: one connection of its own to the engine's file.
pub struct Writer {
    db: Connection,
    rules: Vec<Rule>,
}

impl Writer {
    /// Opens the file the Python store created and migrated.
    pub fn open(path: &Path) -> rusqlite::Result<Writer> {
        let db = open_wal(path, Synchronous::Full)?;
        // A batch runs inside a savepoint (and each payment of a redo in its own), so
        // SQLite keeps a statement journal of the pages it changes: with temporary
        // files, past 64 KiB that journal went to a temp file on disk, 2 KiB per write,
        // about two writes per payment (strace under PayBatch). It only serves a
        // rollback to the savepoint while the transaction is open, never recovery
        // (that is the WAL's), so it is kept in memory. The page cache is this
        // connection's alone (the one writer of payments), so a larger one spares
        // re-reading the indexes' pages from the OS.
        db.execute_batch(&format!(
            "PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{WRITER_CACHE_KIB};"
        ))?;
        let rules = {
            let mut statement = db.prepare(
                "SELECT rule_id, plan, from_status, to_status, owed_max_minor, credit_min_minor \
                 FROM provisioning_rules ORDER BY priority, rule_id",
            )?;
            let rules = statement
                .query_map([], |r| {
                    Ok(Rule {
                        rule_id: r.get(0)?,
                        plan: r.get(1)?,
                        from_status: r.get(2)?,
                        to_status: r.get(3)?,
                        owed_max_minor: r.get(4)?,
                        credit_min_minor: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rules
        };
        Ok(Writer { db, rules })
    }

    /// Keeps each discrepancy once (a re-run only touches its last_seen), in one
    /// transaction; then reads back, in `found`'s order, the state investigators left
    /// each one in. `record_discrepancies` of quickpay_engine.store.sqlite, row for row:
    /// the reconciliation's chunks are written here with no Python object per row.
    pub fn record_discrepancies(
        &mut self,
        gateway: &str,
        business_day: &str,
        found: &[Discrepancy],
        now_us: i64,
    ) -> rusqlite::Result<Vec<State>> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO discrepancies (discrepancy_id, gateway, business_day, category, \
                 payment_id, gateway_reference, gateway_amount_minor, billing_amount_minor, \
                 currency, detail, first_seen_at_us, last_seen_at_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) \
                 ON CONFLICT (discrepancy_id) DO UPDATE \
                 SET last_seen_at_us = excluded.last_seen_at_us",
            )?;
            for d in found {
                insert.execute(params![
                    d.id,
                    gateway,
                    business_day,
                    d.category.name(),
                    d.payment_id,
                    d.gateway_reference,
                    d.gateway_amount_minor,
                    d.billing_amount_minor,
                    d.currency,
                    d.detail,
                    now_us,
                ])?;
            }
        }
        tx.commit()?;
        let mut states: HashMap<String, State> = HashMap::with_capacity(found.len());
        for chunk in found.chunks(IN_LIST_MAX) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut select = self.db.prepare_cached(&format!(
                "SELECT discrepancy_id, status, note FROM discrepancies \
                 WHERE discrepancy_id IN ({marks})"
            ))?;
            let rows = select.query_map(
                rusqlite::params_from_iter(chunk.iter().map(|d| d.id.as_str())),
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        State {
                            status: r.get(1)?,
                            note: r.get(2)?,
                        },
                    ))
                },
            )?;
            for row in rows {
                let (id, state) = row?;
                states.insert(id, state);
            }
        }
        found
            .iter()
            .map(|d| {
                states
                    .get(&d.id)
                    .cloned()
                    .ok_or(rusqlite::Error::QueryReturnedNoRows)
            })
            .collect()
    }

    /// Journals payments about to go to a gateway, in one transaction: per payment,
    /// false when its key is already journalled by an attempt not yet finished.
    pub fn journal(
        &mut self,
        decisions: &[Decision<'_>],
        now_us: i64,
    ) -> rusqlite::Result<Vec<bool>> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut taken = Vec::with_capacity(decisions.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO settlement_attempts (payment_id, idempotency_key, \
                 intent, created_at_us) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for d in decisions {
                let added = insert.execute(params![
                    d.payment_id,
                    d.idempotency_key,
                    intent_json(d),
                    now_us
                ])?;
                taken.push(added == 1);
            }
        }
        tx.commit()?;
        Ok(taken)
    }

    /// Makes a batch of decisions durable in one transaction (see the module docs).
    /// An error that is not about one payment (the disk, a lock) fails the whole batch
    /// and nothing of it is written.
    pub fn commit(
        &mut self,
        decisions: &[Decision<'_>],
        now_us: i64,
        audit_key: &[u8],
    ) -> rusqlite::Result<Committed> {
        let rules = &self.rules;
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("SAVEPOINT batch")?;
        match write(&tx, rules, decisions, now_us, audit_key) {
            Ok(written) => {
                tx.execute_batch("RELEASE batch")?;
                tx.commit()?;
                return Ok(Committed {
                    outcomes: written.0.into_iter().map(Ok).collect(),
                    states: written.1,
                    head: written.2,
                });
            }
            Err(Attempt::Sql(err)) if !is_constraint(&err) => return Err(err),
            Err(_) => tx.execute_batch("ROLLBACK TO batch; RELEASE batch")?,
        }
        let mut outcomes = Vec::with_capacity(decisions.len());
        let mut states: Vec<(String, i64, u8)> = Vec::new();
        let mut head = None;
        for decision in decisions {
            tx.execute_batch("SAVEPOINT payment")?;
            match write(
                &tx,
                rules,
                std::slice::from_ref(decision),
                now_us,
                audit_key,
            ) {
                Ok((outcome, touched, written_head)) => {
                    outcomes.extend(outcome.into_iter().map(Ok));
                    for state in touched {
                        match states.iter_mut().find(|s| s.0 == state.0) {
                            Some(known) => *known = state,
                            None => states.push(state),
                        }
                    }
                    head = written_head.or(head);
                }
                Err(Attempt::Sql(err)) if is_constraint(&err) => {
                    tx.execute_batch("ROLLBACK TO payment")?;
                    outcomes.push(Err(Failure::Rejected(message(&err))));
                }
                Err(Attempt::Sql(err)) => return Err(err),
                Err(Attempt::Build(err)) => {
                    tx.execute_batch("ROLLBACK TO payment")?;
                    outcomes.push(Err(match err {
                        BuildError::MissingAccount(_) => Failure::AccountGone(err.to_string()),
                        BuildError::BalanceOverflow(_) => Failure::Rejected(err.to_string()),
                    }));
                }
            }
            tx.execute_batch("RELEASE payment")?;
        }
        tx.commit()?;
        Ok(Committed {
            outcomes,
            states,
            head,
        })
    }
}

type Written = (Vec<Outcome>, Vec<(String, i64, u8)>, Option<(i64, String)>);

/// Reads what the rows depend on, builds them and writes them, inside `tx`.
fn write(
    tx: &Transaction<'_>,
    rules: &[Rule],
    decisions: &[Decision<'_>],
    now_us: i64,
    audit_key: &[u8],
) -> Result<Written, Attempt> {
    let mut accounts = read_accounts(tx, decisions)?;
    let last_seq: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM payments", [], |r| {
        r.get(0)
    })?;
    let tail = tx
        .query_row(
            "SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok(AuditRow {
                    seq: r.get(0)?,
                    prev_hash: r.get(1)?,
                    content: r.get(2)?,
                    row_hash: r.get(3)?,
                })
            },
        )
        .optional()?;
    let rows = build(
        decisions,
        &mut accounts,
        rules,
        tail.as_ref(),
        last_seq + 1,
        now_us,
        audit_key,
    )
    .map_err(Attempt::Build)?;
    insert(tx, &rows, now_us)?;
    let states = rows
        .touched
        .iter()
        .map(|id| {
            let a = &accounts[*id];
            (id.to_string(), a.balance_minor, a.status)
        })
        .collect::<Vec<_>>();
    let mut update = tx.prepare_cached(
        "UPDATE subscribers SET balance_minor = ?1, status = ?2 WHERE account_id = ?3",
    )?;
    for (id, balance, status) in &states {
        update.execute(params![balance, status, id])?;
    }
    let head = rows.audit.last().map(|a| (a.seq, a.row_hash.clone()));
    Ok((rows.outcomes, states, head))
}

/// The billing rows of the accounts the batch settles to.
fn read_accounts(
    tx: &Transaction<'_>,
    decisions: &[Decision<'_>],
) -> rusqlite::Result<HashMap<String, Account>> {
    let mut wanted: Vec<&str> = decisions
        .iter()
        .filter(|d| d.decline_reason.is_empty())
        .map(|d| d.account_id)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut accounts = HashMap::with_capacity(wanted.len());
    for chunk in wanted.chunks(IN_LIST_MAX) {
        let marks = vec!["?"; chunk.len()].join(",");
        let mut statement = tx.prepare_cached(&format!(
            "SELECT account_id, msisdn, plan, status, balance_minor FROM subscribers \
             WHERE account_id IN ({marks})"
        ))?;
        let mut found = statement.query(rusqlite::params_from_iter(chunk.iter()))?;
        while let Some(r) = found.next()? {
            accounts.insert(
                r.get::<_, String>(0)?,
                Account {
                    msisdn: r.get(1)?,
                    plan: r.get(2)?,
                    status: r.get(3)?,
                    balance_minor: r.get(4)?,
                },
            );
        }
    }
    Ok(accounts)
}

/// One statement per table, executed per row with the statement prepared once.
fn insert(tx: &Transaction<'_>, rows: &BatchRows<'_>, now_us: i64) -> rusqlite::Result<()> {
    let mut payments = tx.prepare_cached(
        "INSERT INTO payments (seq, payment_id, idempotency_key, fingerprint, account_id, \
         msisdn, amount_minor, currency, purpose, method_kind, method_display, channel, \
         device_id, ip, status, decline_reason, decline_detail, confirmation_id, \
         settled_at_us, balance_after_minor, service_state_after, gateway, \
         gateway_reference, fraud_score, fraud_decision, fraud_reasons, created_at_us, \
         sender) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
         ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
    )?;
    for p in &rows.payments {
        let d = &p.d;
        payments.execute(params![
            p.seq,
            d.payment_id,
            d.idempotency_key,
            d.fingerprint,
            d.account_id,
            d.msisdn,
            d.amount_minor,
            d.currency,
            d.purpose,
            d.method_kind,
            d.method_display,
            d.channel,
            d.device_id,
            d.ip,
            p.status,
            d.decline_reason,
            d.decline_detail,
            p.confirmation_id,
            p.settled_at_us,
            p.balance_after_minor,
            p.service_state_after,
            d.gateway,
            d.gateway_reference,
            d.fraud.map(|f| f.score),
            d.fraud.map_or("", |f| f.decision),
            d.fraud.map_or("", |f| f.reasons),
            now_us,
            d.sender,
        ])?;
    }
    let mut reviews = tx.prepare_cached(
        "INSERT INTO review_queue (payment_id, account_id, score, reasons, created_at_us) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for r in &rows.reviews {
        reviews.execute(params![
            r.payment_id,
            r.account_id,
            r.score,
            r.reasons,
            now_us
        ])?;
    }
    let mut billing = tx.prepare_cached(
        "INSERT INTO billing_records (record_id, payment_id, account_id, kind, amount_minor, \
         currency, balance_delta_minor, balance_after_minor, created_at_us) \
         VALUES (?1, ?1, ?2, 'PAYMENT', ?3, ?4, ?5, ?6, ?7)",
    )?;
    for b in &rows.billing {
        billing.execute(params![
            b.payment_id,
            b.account_id,
            b.amount_minor,
            b.currency,
            b.balance_delta_minor,
            b.balance_after_minor,
            now_us,
        ])?;
    }
    let mut ar = tx.prepare_cached(
        "INSERT INTO ar_entries (document_id, payment_id, leg, ar_account, debit_minor, \
         credit_minor, currency, created_at_us) VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in &rows.ar {
        ar.execute(params![
            e.payment_id,
            e.leg,
            e.ar_account,
            e.debit_minor,
            e.credit_minor,
            e.currency,
            now_us,
        ])?;
    }
    let mut provisioning = tx.prepare_cached(
        "INSERT INTO provisioning_changes (document_id, payment_id, account_id, msisdn, \
         state_before, state_after, rule_id, changed_at_us) \
         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for p in &rows.provisioning {
        provisioning.execute(params![
            p.payment_id,
            p.account_id,
            p.msisdn,
            p.state_before,
            p.state_after,
            p.rule_id,
            now_us,
        ])?;
    }
    let mut audit = tx.prepare_cached(
        "INSERT INTO audit_log (seq, prev_hash, content, row_hash) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for a in &rows.audit {
        audit.execute(params![a.seq, a.prev_hash, a.content, a.row_hash])?;
    }
    let mut outbox = tx.prepare_cached(
        "INSERT INTO outbox (event_id, kind, payment_id, account_id, payload, created_at_us) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for e in &rows.outbox {
        outbox.execute(params![
            e.event_id,
            e.kind,
            e.payment_id,
            e.account_id,
            e.payload,
            now_us
        ])?;
    }
    // The payment has ended here: its journal entry goes in the same transaction.
    let mut forget = tx.prepare_cached("DELETE FROM settlement_attempts WHERE payment_id = ?1")?;
    for p in &rows.payments {
        forget.execute(params![p.d.payment_id])?;
    }
    Ok(())
}
