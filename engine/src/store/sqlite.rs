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
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior,
};

use super::audit::AuditRow;
use super::checkpoint::{Checkpointer, Counts, INLINE_PAGES};
use super::prepared::Statements;
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
    // Before `db`: a connection is closed only once its statements are finalized.
    statements: Statements,
    db: Connection,
    rules: Vec<Rule>,
    // After `db`: its WAL hook points into this (None: SQLite's own checkpoints). Only
    // held: dropping it stops the thread.
    _checkpoints: Option<Checkpointer>,
}

impl Writer {
    /// Opens the file the Python store created and migrated.
    pub fn open(path: &Path) -> rusqlite::Result<Writer> {
        Writer::open_counted(path, Arc::default())
    }

    /// `open`, its checkpoint thread counting into `checkpoints` (which outlive the
    /// writer: a store reopens its writer after `close`).
    pub fn open_counted(path: &Path, checkpoints: Arc<Counts>) -> rusqlite::Result<Writer> {
        let db = open_wal(path, Synchronous::Full)?;
        // A redo runs each payment in a savepoint of its own (the first try of a batch
        // runs in none, see `commit`), so SQLite keeps a statement journal of the pages
        // it changes: with temporary files, past 64 KiB that journal went to a temp file
        // on disk, 2 KiB per write (strace under PayBatch, when every batch ran in a
        // savepoint). It only serves a rollback to the savepoint while the transaction
        // is open, never recovery (that is the WAL's), so it is kept in memory. The
        // page cache is this connection's alone (the one writer of payments), so a
        // larger one spares re-reading the indexes' pages from the OS.
        db.execute_batch(&format!(
            "PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{WRITER_CACHE_KIB}; \
             PRAGMA wal_autocheckpoint = {INLINE_PAGES};"
        ))?;
        // The WAL is copied back on a thread of its own (see `checkpoint`); should the
        // thread not start, SQLite's own checkpoints at `INLINE_PAGES` do it here.
        let checkpoints = Checkpointer::start(path, checkpoints).ok();
        if let Some(checkpoints) = &checkpoints {
            checkpoints.install(&db);
        }
        // Each table's chunk sizes (see `CHUNK_ROWS`) are statements of their own.
        db.set_prepared_statement_cache_capacity(128);
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
        Ok(Writer {
            statements: Statements::default(),
            db,
            rules,
            _checkpoints: checkpoints,
        })
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
        let intents: Vec<String> = decisions.iter().map(intent_json).collect();
        // One multi-row statement per chunk; should a key be journalled already (rare:
        // an attempt not yet finished), the transaction is undone and each payment is
        // inserted alone in a new one, to tell which ones were. (No savepoint around the
        // chunks: see `commit`.)
        let added = insert_rows(
            &tx,
            &mut self.statements,
            "INSERT OR IGNORE INTO settlement_attempts (payment_id, idempotency_key, \
             intent, created_at_us) VALUES ",
            "(?,?,?,?)",
            &decisions
                .iter()
                .zip(&intents)
                .map(|(d, intent)| (d.payment_id, d.idempotency_key, intent.as_str()))
                .collect::<Vec<_>>(),
            |&(payment_id, key, intent), v| {
                v.extend([text(payment_id), text(key), text(intent), int(now_us)]);
            },
        )?;
        let mut taken = vec![true; decisions.len()];
        if added == decisions.len() {
            tx.commit()?;
            return Ok(taken);
        }
        tx.rollback()?;
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO settlement_attempts (payment_id, idempotency_key, \
                 intent, created_at_us) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (k, d) in decisions.iter().enumerate() {
                let added =
                    insert.execute(params![d.payment_id, d.idempotency_key, intents[k], now_us])?;
                taken[k] = added == 1;
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
        let statements = &mut self.statements;
        // The batch is the transaction itself, with no savepoint inside it: SQLite keeps
        // a copy of each page a savepoint changes (the statement journal) for a
        // rollback to it, about a page per payment that the first try never needs.
        // Should it fail on one payment, the whole transaction is undone and the batch
        // redone in a new one, each payment in a savepoint of its own.
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        match write(&tx, statements, rules, decisions, now_us, audit_key) {
            Ok(written) => {
                tx.commit()?;
                return Ok(Committed {
                    outcomes: written.0.into_iter().map(Ok).collect(),
                    states: written.1,
                    head: written.2,
                });
            }
            Err(Attempt::Sql(err)) if !is_constraint(&err) => return Err(err),
            Err(_) => tx.rollback()?,
        }
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(decisions.len());
        let mut states: Vec<(String, i64, u8)> = Vec::new();
        let mut head = None;
        for decision in decisions {
            tx.execute_batch("SAVEPOINT payment")?;
            match write(
                &tx,
                statements,
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
    statements: &mut Statements,
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
    insert(tx, statements, &rows, now_us)?;
    let states = rows
        .touched
        .iter()
        .map(|id| {
            let a = &accounts[*id];
            (id.to_string(), a.balance_minor, a.status)
        })
        .collect::<Vec<_>>();
    const UPDATE: &str =
        "UPDATE subscribers SET balance_minor = ?1, status = ?2 WHERE account_id = ?3";
    for (id, balance, status) in &states {
        let values = [int(*balance), int(i64::from(*status)), text(id)];
        statements.run(tx, (UPDATE, 1), || UPDATE.to_string(), &values)?;
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

/// Rows per multi-row statement: a batch's rows of one table go in chunks of this many
/// (`INSERT ... VALUES (...), (...)`), the rest in chunks of the powers of two below it,
/// so a table has at most eight statements, each prepared once and cached. One
/// statement per row cost a step, a reset and the opening of the table's and its
/// indexes' cursors per row (benches/store_cpu.py).
const CHUNK_ROWS: usize = 64;

/// The size of each chunk `n` rows are written in.
fn chunk_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= CHUNK_ROWS {
            CHUNK_ROWS
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        n -= size;
        Some(size)
    })
}

/// `head` followed by `rows` copies of `marks` ("(?, ?, ...)"), comma-separated.
fn multi_row_sql(head: &str, marks: &str, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (marks.len() + 1));
    sql.push_str(head);
    for k in 0..rows {
        if k > 0 {
            sql.push(',');
        }
        sql.push_str(marks);
    }
    sql
}

/// Executes `head VALUES marks, marks, ...` over `rows` in chunks, `values` giving each
/// row's values in the order of `marks`; returns the rows changed. The statements are
/// the writer's own (`prepared`), keyed by `head` and the chunk's size.
fn insert_rows<R>(
    tx: &Transaction<'_>,
    statements: &mut Statements,
    head: &'static str,
    marks: &str,
    rows: &[R],
    values: impl for<'r> Fn(&'r R, &mut Vec<Value<'r>>),
) -> rusqlite::Result<usize> {
    let mut changed = 0;
    let mut bound: Vec<Value<'_>> = Vec::new();
    let mut at = 0;
    for size in chunk_sizes(rows.len()) {
        bound.clear();
        for row in &rows[at..at + size] {
            values(row, &mut bound);
        }
        changed += statements.run(
            tx,
            (head, size),
            || multi_row_sql(head, marks, size),
            &bound,
        )?;
        at += size;
    }
    Ok(changed)
}

/// A value bound to a statement, borrowed from the batch's rows.
type Value<'a> = ValueRef<'a>;

fn text(s: &str) -> Value<'_> {
    ValueRef::Text(s.as_bytes())
}

fn int(n: i64) -> Value<'static> {
    ValueRef::Integer(n)
}

fn int_or_null(n: Option<i64>) -> Value<'static> {
    n.map_or(ValueRef::Null, ValueRef::Integer)
}

fn text_or_null(s: Option<&str>) -> Value<'_> {
    s.map_or(ValueRef::Null, text)
}

/// One multi-row statement per table and chunk (see `CHUNK_ROWS`).
fn insert(
    tx: &Transaction<'_>,
    statements: &mut Statements,
    rows: &BatchRows<'_>,
    now_us: i64,
) -> rusqlite::Result<()> {
    insert_rows(
        tx,
        statements,
        "INSERT INTO payments (seq, payment_id, idempotency_key, fingerprint, account_id, \
         msisdn, amount_minor, currency, purpose, method_kind, method_display, channel, \
         device_id, ip, status, decline_reason, decline_detail, confirmation_id, \
         settled_at_us, balance_after_minor, service_state_after, gateway, \
         gateway_reference, fraud_score, fraud_decision, fraud_reasons, created_at_us, \
         sender) VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        &rows.payments,
        |p, v| {
            let d = &p.d;
            v.extend([
                int(p.seq),
                text(d.payment_id),
                text(d.idempotency_key),
                text(d.fingerprint),
                text(d.account_id),
                text(d.msisdn),
                int(d.amount_minor),
                text(d.currency),
                int(i64::from(d.purpose)),
                int(i64::from(d.method_kind)),
                text(d.method_display),
                text(d.channel),
                text(d.device_id),
                text(d.ip),
                int(i64::from(p.status)),
                text(d.decline_reason),
                text(d.decline_detail),
                text_or_null(p.confirmation_id.as_deref()),
                int_or_null(p.settled_at_us),
                int_or_null(p.balance_after_minor),
                int_or_null(p.service_state_after.map(i64::from)),
                text(d.gateway),
                text(d.gateway_reference),
                int_or_null(d.fraud.map(|f| f.score)),
                text(d.fraud.map_or("", |f| f.decision)),
                text(d.fraud.map_or("", |f| f.reasons)),
                int(now_us),
                text(d.sender),
            ]);
        },
    )?;
    insert_rows(
        tx,
        statements,
        "INSERT INTO review_queue (payment_id, account_id, score, reasons, created_at_us) \
         VALUES ",
        "(?,?,?,?,?)",
        &rows.reviews,
        |r, v| {
            v.extend([
                text(r.payment_id),
                text(r.account_id),
                int(r.score),
                text(r.reasons),
                int(now_us),
            ]);
        },
    )?;
    insert_rows(
        tx,
        statements,
        "INSERT INTO billing_records (record_id, payment_id, account_id, kind, amount_minor, \
         currency, balance_delta_minor, balance_after_minor, created_at_us) VALUES ",
        "(?,?,?,'PAYMENT',?,?,?,?,?)",
        &rows.billing,
        |b, v| {
            v.extend([
                text(b.payment_id),
                text(b.payment_id),
                text(b.account_id),
                int(b.amount_minor),
                text(b.currency),
                int(b.balance_delta_minor),
                int(b.balance_after_minor),
                int(now_us),
            ]);
        },
    )?;
    insert_rows(
        tx,
        statements,
        "INSERT INTO ar_entries (document_id, payment_id, leg, ar_account, debit_minor, \
         credit_minor, currency, created_at_us) VALUES ",
        "(?,?,?,?,?,?,?,?)",
        &rows.ar,
        |e, v| {
            v.extend([
                text(e.payment_id),
                text(e.payment_id),
                int(e.leg),
                text(&e.ar_account),
                int(e.debit_minor),
                int(e.credit_minor),
                text(e.currency),
                int(now_us),
            ]);
        },
    )?;
    insert_rows(
        tx,
        statements,
        "INSERT INTO provisioning_changes (document_id, payment_id, account_id, msisdn, \
         state_before, state_after, rule_id, changed_at_us) VALUES ",
        "(?,?,?,?,?,?,?,?)",
        &rows.provisioning,
        |p, v| {
            v.extend([
                text(p.payment_id),
                text(p.payment_id),
                text(p.account_id),
                text(&p.msisdn),
                int(i64::from(p.state_before)),
                int(i64::from(p.state_after)),
                text(&p.rule_id),
                int(now_us),
            ]);
        },
    )?;
    insert_rows(
        tx,
        statements,
        "INSERT INTO audit_log (seq, prev_hash, content, row_hash) VALUES ",
        "(?,?,?,?)",
        &rows.audit,
        |a, v| {
            v.extend([
                int(a.seq),
                text(&a.prev_hash),
                text(&a.content),
                text(&a.row_hash),
            ]);
        },
    )?;
    insert_rows(
        tx,
        statements,
        "INSERT INTO outbox (event_id, kind, payment_id, account_id, payload, created_at_us) \
         VALUES ",
        "(?,?,?,?,?,?)",
        &rows.outbox,
        |e, v| {
            v.extend([
                text(&e.event_id),
                text(e.kind),
                text(e.payment_id),
                text(e.account_id),
                text(&e.payload),
                int(now_us),
            ]);
        },
    )?;
    // The payment has ended here: its journal entry goes in the same transaction.
    const FORGET: &str = "DELETE FROM settlement_attempts WHERE payment_id IN ";
    let mut at = 0;
    let mut ids: Vec<Value<'_>> = Vec::new();
    for size in chunk_sizes(rows.payments.len()) {
        ids.clear();
        ids.extend(
            rows.payments[at..at + size]
                .iter()
                .map(|p| text(p.d.payment_id)),
        );
        let sql = || format!("{FORGET}({})", vec!["?"; size].join(","));
        statements.run(tx, (FORGET, size), sql, &ids)?;
        at += size;
    }
    Ok(())
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn rows_go_in_chunks_of_64_then_powers_of_two() {
        let sizes = |n| chunk_sizes(n).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(63), vec![32, 16, 8, 4, 2, 1]);
        assert_eq!(sizes(500), vec![64, 64, 64, 64, 64, 64, 64, 32, 16, 4]);
        for n in 0..300 {
            assert_eq!(sizes(n).iter().sum::<usize>(), n);
        }
        assert_eq!(multi_row_sql("V ", "(?)", 3), "V (?),(?),(?)");
    }
}
