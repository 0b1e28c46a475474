//! The simulator's books: one SQLite file (DATA_DIR/gateways/NAME/ledger.sqlite3), so
//! they survive restarts, written by one thread of their own.
//!
//! They play the acquirer's books: payments keyed by the merchant's reference (our
//! payment id), and one entry per capture or refund, dated by business day, from which
//! the settlement report is exported (by `quickpay_engine.gateways.sim.ledger`, which
//! reads this file; `quickpay verify` reads it too). A card is kept as its last four
//! digits and a keyed fingerprint, never the number (invariant 7).
//!
//! Durability: WAL journal with synchronous=NORMAL, which survives the simulator's own
//! crash or kill (the case it models); a power cut may lose the last commits, which an
//! acquirer stand-in may. A request is answered only once its transaction committed.
//! The file is opened as the core opens its own (`store::sqlite::open_wal`: foreign keys
//! enforced, a busy wait for another connection's lock).
//!
//! Group commit: the thread takes every request waiting (up to `BATCH_MAX`) into one
//! transaction; under load that writes each b-tree page once per batch instead of once
//! per sale. The result is the same as applying the requests one by one in their order
//! of arrival (a store error in one of them redoes the batch one by one, see
//! `apply_batch`).
//!
//! SQLite is the system's shared libsqlite3 (rusqlite without its "bundled" feature),
//! the one Python's sqlite3 module loads in the same process: two copies of SQLite in
//! one process break its POSIX locks (see `quickpay_engine.store.sqlite_library`).

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tokio::sync::oneshot;

use super::method::MethodSummary;
use crate::store::sqlite::{open_wal, Synchronous};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payments (
    merchant_reference  TEXT PRIMARY KEY,
    gateway_reference   TEXT NOT NULL UNIQUE,
    state               TEXT NOT NULL,
    amount_minor        INTEGER NOT NULL,
    currency            TEXT NOT NULL,
    captured_minor      INTEGER NOT NULL DEFAULT 0,
    refunded_minor      INTEGER NOT NULL DEFAULT 0,
    decline_reason      TEXT NOT NULL DEFAULT '',
    method_kind         TEXT NOT NULL,
    method_last4        TEXT NOT NULL DEFAULT '',
    method_fingerprint  TEXT NOT NULL DEFAULT '',
    created_at_us       INTEGER NOT NULL,
    captured_at_us      INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS entries (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_reference     TEXT NOT NULL UNIQUE,
    merchant_reference  TEXT NOT NULL REFERENCES payments(merchant_reference),
    type                TEXT NOT NULL CHECK (type IN ('CAPTURE', 'REFUND')),
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('SETTLED', 'VOIDED')),
    at_us               INTEGER NOT NULL,
    business_day        TEXT NOT NULL,
    refund_reference    TEXT UNIQUE
) STRICT;
CREATE INDEX IF NOT EXISTS entries_by_day ON entries (business_day, id);
";

const PAYMENT_COLUMNS: &str = "merchant_reference, gateway_reference, state, amount_minor, \
    currency, captured_minor, refunded_minor, decline_reason, method_kind, method_last4, \
    method_fingerprint, created_at_us, captured_at_us";

/// Requests waiting for the books thread; at the bound a request is refused at once
/// (503, nothing processed) rather than queued without limit.
const QUEUE_MAX: usize = 4_096;
/// At most this many requests share one transaction.
const BATCH_MAX: usize = 512;

/// A sale or authorization as the simulator decided it.
pub(super) struct SaleIn {
    pub(super) merchant_reference: String,
    pub(super) amount_minor: i64,
    pub(super) currency: String,
    pub(super) method: MethodSummary,
    /// A decline reason, or "" to approve.
    pub(super) decline: String,
    /// Sale (true) or authorize only (false).
    pub(super) capture: bool,
}

/// One request to the books.
pub(super) enum Job {
    Sale(SaleIn),
    Capture {
        reference: String,
        amount_minor: Option<i64>,
    },
    Void {
        reference: String,
    },
    Refund {
        reference: String,
        refund_reference: String,
        amount_minor: i64,
        currency: String,
    },
    Lookup {
        reference: String,
    },
}

/// What the books answer: the JSON body and whether it replays an earlier request.
pub(super) struct Booked {
    pub(super) body: Vec<u8>,
    pub(super) replayed: bool,
}

/// A request the books refuse; `code` is stable, `status` its HTTP status.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found() -> Refusal {
        Refusal::new(404, "NOT_FOUND", "no payment with this merchant reference")
    }

    fn store(err: &rusqlite::Error) -> Refusal {
        // The message is SQLite's, which never quotes a bound value.
        Refusal::new(500, "STORE_ERROR", format!("the books failed: {err}"))
    }
}

type Reply = oneshot::Sender<Result<Booked, Refusal>>;

enum Message {
    Job(Job, i64, Reply),
    Stop,
}

/// The handle the HTTP side holds: submits jobs to the books thread.
pub(super) struct Books {
    queue: SyncSender<Message>,
}

impl Books {
    /// Opens (creating if needed) the books at `path` and starts their thread.
    pub(super) fn open(path: &Path, gateway: &str) -> rusqlite::Result<(Books, JoinHandle<()>)> {
        let db = open_wal(path, Synchronous::Normal)?;
        db.execute_batch(SCHEMA)?;
        let prefix = gateway.to_uppercase().replace('-', "");
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name("quickpay-sim-books".into())
            .spawn(move || run(db, &prefix, &jobs))
            .expect("spawn the books thread");
        Ok((Books { queue }, thread))
    }

    /// Applies `job` at `now_us`; the answer comes once its transaction committed.
    pub(super) async fn submit(&self, job: Job, now_us: i64) -> Result<Booked, Refusal> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Message::Job(job, now_us, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Refusal::new(
                    503,
                    "BUSY",
                    "the books are at their queue bound",
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Refusal::new(503, "STOPPING", "the simulator is stopping"));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Refusal::new(500, "STORE_ERROR", "the books stopped")))
    }

    /// Asks the thread to finish what is queued and close the file.
    pub(super) fn stop(&self) {
        // A full queue still ends: the thread stops when every sender is gone.
        let _ = self.queue.try_send(Message::Stop);
    }
}

fn run(mut db: Connection, prefix: &str, jobs: &Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while let Ok(first) = jobs.recv() {
        let mut stop = false;
        for message in std::iter::once(first).chain(std::iter::from_fn(|| jobs.try_recv().ok())) {
            match message {
                Message::Job(job, now_us, reply) => batch.push((job, now_us, reply)),
                Message::Stop => stop = true,
            }
            if stop || batch.len() == BATCH_MAX {
                break;
            }
        }
        apply_batch(&mut db, prefix, &mut batch);
        if stop {
            break;
        }
    }
}

/// One transaction for the whole batch; replies after COMMIT.
///
/// A refusal writes nothing (every rule is checked before the first write), so only a
/// store error can leave a job half done: then the batch is rolled back and each job
/// applied again in a transaction of its own, so that the error stays that job's.
fn apply_batch(db: &mut Connection, prefix: &str, batch: &mut Vec<(Job, i64, Reply)>) {
    if batch.is_empty() {
        return;
    }
    let results = match in_transaction(db, prefix, batch) {
        Ok(results)
            if results
                .iter()
                .all(|r| !matches!(r, Err(e) if e.status == 500)) =>
        {
            results
        }
        // Either the whole batch failed to commit, or one job hit a store error.
        _ => batch
            .iter()
            .map(
                |job| match in_transaction(db, prefix, std::slice::from_ref(job)) {
                    Ok(mut one) => one.pop().expect("one result per job"),
                    Err(err) => Err(Refusal::store(&err)),
                },
            )
            .collect(),
    };
    for ((_, _, reply), result) in batch.drain(..).zip(results) {
        // A caller that went away (its connection closed) no longer listens.
        let _ = reply.send(result);
    }
}

/// Applies the jobs in one transaction; commits unless one hit a store error.
fn in_transaction(
    db: &mut Connection,
    prefix: &str,
    jobs: &[(Job, i64, Reply)],
) -> rusqlite::Result<Vec<Result<Booked, Refusal>>> {
    let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(jobs.len());
    for (job, now_us, _) in jobs {
        let result = apply(&tx, prefix, job, *now_us);
        let failed = matches!(&result, Err(e) if e.status == 500);
        results.push(result);
        if failed {
            // Dropping the transaction rolls it back.
            return Ok(results);
        }
    }
    tx.commit()?;
    Ok(results)
}

fn apply(db: &Connection, prefix: &str, job: &Job, now_us: i64) -> Result<Booked, Refusal> {
    let store = |err: rusqlite::Error| Refusal::store(&err);
    match job {
        Job::Sale(sale) => self::sale(db, prefix, sale, now_us).map_err(store),
        Job::Capture {
            reference,
            amount_minor,
        } => capture(db, reference, *amount_minor, now_us),
        Job::Void { reference } => void(db, prefix, reference, now_us),
        Job::Refund {
            reference,
            refund_reference,
            amount_minor,
            currency,
        } => refund(
            db,
            prefix,
            reference,
            refund_reference,
            *amount_minor,
            currency,
            now_us,
        ),
        Job::Lookup { reference } => {
            let payment = get(db, reference)
                .map_err(store)?
                .ok_or_else(Refusal::not_found)?;
            Ok(Booked {
                body: payment.json(None),
                replayed: false,
            })
        }
    }
}

/// A payment as the API returns it.
#[derive(Serialize)]
struct Payment {
    merchant_reference: String,
    gateway_reference: String,
    state: String,
    amount_minor: i64,
    currency: String,
    captured_minor: i64,
    refunded_minor: i64,
    decline_reason: String,
    method: Method,
    created_at: String,
    captured_at: Option<String>,
    captured_at_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<bool>,
}

#[derive(Serialize)]
struct Method {
    kind: String,
    last4: String,
    fingerprint: String,
}

impl Payment {
    /// The JSON body, with "replayed" when the operation says whether it replayed.
    fn json(mut self, replayed: Option<bool>) -> Vec<u8> {
        self.replayed = replayed;
        serde_json::to_vec(&self).expect("a payment serializes")
    }
}

fn get(db: &Connection, reference: &str) -> rusqlite::Result<Option<Payment>> {
    let mut select = db.prepare_cached(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_reference = ?"
    ))?;
    select
        .query_row([reference], |row| {
            let created: i64 = row.get(11)?;
            let captured_at: Option<i64> = row.get(12)?;
            Ok(Payment {
                merchant_reference: row.get(0)?,
                gateway_reference: row.get(1)?,
                state: row.get(2)?,
                amount_minor: row.get(3)?,
                currency: row.get(4)?,
                captured_minor: row.get(5)?,
                refunded_minor: row.get(6)?,
                decline_reason: row.get(7)?,
                method: Method {
                    kind: row.get(8)?,
                    last4: row.get(9)?,
                    fingerprint: row.get(10)?,
                },
                created_at: rfc3339(created),
                captured_at: captured_at.map(rfc3339),
                captured_at_us: captured_at,
                replayed: None,
            })
        })
        .optional()
}

fn require(db: &Connection, reference: &str) -> Result<Payment, Refusal> {
    get(db, reference)
        .map_err(|err| Refusal::store(&err))?
        .ok_or_else(Refusal::not_found)
}

/// Records a sale or authorization. A reference seen before returns the stored payment
/// unchanged, whatever this request says: a repeated sale never captures twice, and a
/// reference voided by a technical cancel stays voided.
fn sale(db: &Connection, prefix: &str, sale: &SaleIn, now_us: i64) -> rusqlite::Result<Booked> {
    if let Some(existing) = get(db, &sale.merchant_reference)? {
        return Ok(Booked {
            body: existing.json(Some(true)),
            replayed: true,
        });
    }
    let reference = format!("{prefix}-{:010}", next_seq(db, "payments")?);
    let state = match (sale.decline.is_empty(), sale.capture) {
        (false, _) => "DECLINED",
        (true, true) => "CAPTURED",
        (true, false) => "AUTHORIZED",
    };
    let captured = if state == "CAPTURED" {
        sale.amount_minor
    } else {
        0
    };
    let captured_at = (captured != 0).then_some(now_us);
    let m = &sale.method;
    db.prepare_cached(&format!(
        "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES \
         (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)"
    ))?
    .execute(params![
        sale.merchant_reference,
        reference,
        state,
        sale.amount_minor,
        sale.currency,
        captured,
        sale.decline,
        m.kind,
        m.last4,
        m.fingerprint,
        now_us,
        captured_at,
    ])?;
    if captured != 0 {
        entry(
            db,
            &reference,
            &sale.merchant_reference,
            "CAPTURE",
            captured,
            &sale.currency,
            now_us,
            None,
        )?;
    }
    let payment = Payment {
        merchant_reference: sale.merchant_reference.clone(),
        gateway_reference: reference,
        state: state.into(),
        amount_minor: sale.amount_minor,
        currency: sale.currency.clone(),
        captured_minor: captured,
        refunded_minor: 0,
        decline_reason: sale.decline.clone(),
        method: Method {
            kind: m.kind.clone(),
            last4: m.last4.clone(),
            fingerprint: m.fingerprint.clone(),
        },
        created_at: rfc3339(now_us),
        captured_at: captured_at.map(rfc3339),
        captured_at_us: captured_at,
        replayed: None,
    };
    Ok(Booked {
        body: payment.json(Some(false)),
        replayed: false,
    })
}

/// Captures an authorization (all of it, or `amount_minor` of it).
fn capture(
    db: &Connection,
    reference: &str,
    amount_minor: Option<i64>,
    now_us: i64,
) -> Result<Booked, Refusal> {
    let p = require(db, reference)?;
    if p.state == "CAPTURED" {
        // A repeated capture is answered, not repeated.
        return Ok(Booked {
            body: p.json(Some(false)),
            replayed: false,
        });
    }
    if p.state != "AUTHORIZED" {
        return Err(Refusal::new(
            409,
            "NOT_CAPTURABLE",
            format!("payment is {}", p.state),
        ));
    }
    let amount = amount_minor.unwrap_or(p.amount_minor);
    if !(0 < amount && amount <= p.amount_minor) {
        return Err(Refusal::new(
            422,
            "CAPTURE_EXCEEDS_AUTHORIZED",
            "capture above authorization",
        ));
    }
    let write = || -> rusqlite::Result<()> {
        db.prepare_cached(
            "UPDATE payments SET state = 'CAPTURED', captured_minor = ?, captured_at_us = ? \
             WHERE merchant_reference = ?",
        )?
        .execute(params![amount, now_us, reference])?;
        entry(
            db,
            &p.gateway_reference,
            reference,
            "CAPTURE",
            amount,
            &p.currency,
            now_us,
            None,
        )?;
        Ok(())
    };
    write().map_err(|err| Refusal::store(&err))?;
    Ok(Booked {
        body: require(db, reference)?.json(Some(false)),
        replayed: false,
    })
}

/// Cancels an authorization or a capture of the same business day.
///
/// An unknown reference is recorded as VOIDED (a technical cancel), so a sale that
/// arrives late with it is refused instead of captured: the adapters rely on this
/// before failing a payment over to another gateway.
fn void(db: &Connection, prefix: &str, reference: &str, now_us: i64) -> Result<Booked, Refusal> {
    let store = |err: rusqlite::Error| Refusal::store(&err);
    let Some(p) = get(db, reference).map_err(store)? else {
        let gateway_reference =
            format!("{prefix}-{:010}", next_seq(db, "payments").map_err(store)?);
        db.prepare_cached(&format!(
            "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES \
             (?, ?, 'VOIDED', 0, '', 0, 0, '', '', '', '', ?, NULL)"
        ))
        .and_then(|mut insert| insert.execute(params![reference, gateway_reference, now_us]))
        .map_err(store)?;
        return Ok(Booked {
            body: require(db, reference)?.json(None),
            replayed: false,
        });
    };
    if p.state == "VOIDED" || p.state == "DECLINED" {
        return Ok(Booked {
            body: p.json(None),
            replayed: false,
        });
    }
    if p.state == "CAPTURED"
        && (p.refunded_minor != 0
            || p.captured_at_us.map(business_day) != Some(business_day(now_us)))
    {
        return Err(Refusal::new(
            409,
            "NOT_VOIDABLE",
            "refunded or settled: refund it instead",
        ));
    }
    if p.state != "AUTHORIZED" && p.state != "CAPTURED" {
        return Err(Refusal::new(
            409,
            "NOT_VOIDABLE",
            format!("payment is {}", p.state),
        ));
    }
    let write = || -> rusqlite::Result<()> {
        db.prepare_cached("UPDATE payments SET state = 'VOIDED' WHERE merchant_reference = ?")?
            .execute([reference])?;
        db.prepare_cached(
            "UPDATE entries SET status = 'VOIDED' WHERE merchant_reference = ? \
             AND type = 'CAPTURE'",
        )?
        .execute([reference])?;
        Ok(())
    };
    write().map_err(store)?;
    Ok(Booked {
        body: require(db, reference)?.json(None),
        replayed: false,
    })
}

/// A refund's answer.
#[derive(Serialize)]
struct RefundReply {
    refund_reference: String,
    gateway_reference: String,
    amount_minor: i64,
    replayed: bool,
    payment: Payment,
}

/// Refunds part or all of a capture; idempotent on `refund_reference`. Refunds in
/// total never pass the captured amount.
fn refund(
    db: &Connection,
    prefix: &str,
    reference: &str,
    refund_reference: &str,
    amount_minor: i64,
    currency: &str,
    now_us: i64,
) -> Result<Booked, Refusal> {
    let store = |err: rusqlite::Error| Refusal::store(&err);
    let done: Option<(String, String, i64)> = db
        .prepare_cached(
            "SELECT entry_reference, merchant_reference, amount_minor FROM entries \
             WHERE refund_reference = ?",
        )
        .and_then(|mut select| {
            select
                .query_row([refund_reference], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
        })
        .map_err(store)?;
    let reply = |entry: String, replayed: bool, payment: Payment| Booked {
        body: serde_json::to_vec(&RefundReply {
            refund_reference: refund_reference.into(),
            gateway_reference: entry,
            amount_minor,
            replayed,
            payment,
        })
        .expect("a refund serializes"),
        replayed,
    };
    if let Some((entry, payment, amount)) = done {
        if payment != reference || amount != amount_minor {
            return Err(Refusal::new(
                409,
                "REFUND_REFERENCE_REUSED",
                "refund reference reused",
            ));
        }
        return Ok(reply(entry, true, require(db, &payment)?));
    }
    let p = require(db, reference)?;
    if p.state != "CAPTURED" && p.state != "PARTIALLY_REFUNDED" {
        return Err(Refusal::new(
            409,
            "NOT_REFUNDABLE",
            format!("payment is {}", p.state),
        ));
    }
    if currency != p.currency {
        return Err(Refusal::new(
            422,
            "CURRENCY_MISMATCH",
            "refund currency differs from capture",
        ));
    }
    let refunded = p.refunded_minor.checked_add(amount_minor);
    let Some(refunded) = refunded.filter(|r| amount_minor > 0 && *r <= p.captured_minor) else {
        return Err(Refusal::new(
            422,
            "REFUND_EXCEEDS_CAPTURED",
            "refunds would pass the capture",
        ));
    };
    let state = if refunded == p.captured_minor {
        "REFUNDED"
    } else {
        "PARTIALLY_REFUNDED"
    };
    let write = || -> rusqlite::Result<String> {
        db.prepare_cached(
            "UPDATE payments SET state = ?, refunded_minor = ? WHERE merchant_reference = ?",
        )?
        .execute(params![state, refunded, reference])?;
        let entry_reference = format!("{prefix}-R{:010}", next_seq(db, "entries")?);
        entry(
            db,
            &entry_reference,
            reference,
            "REFUND",
            amount_minor,
            currency,
            now_us,
            Some(refund_reference),
        )?;
        Ok(entry_reference)
    };
    let entry_reference = write().map_err(store)?;
    Ok(reply(entry_reference, false, require(db, reference)?))
}

#[allow(clippy::too_many_arguments)]
fn entry(
    db: &Connection,
    entry_reference: &str,
    merchant_reference: &str,
    kind: &str,
    amount_minor: i64,
    currency: &str,
    now_us: i64,
    refund_reference: Option<&str>,
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO entries (entry_reference, merchant_reference, type, amount_minor, \
         currency, status, at_us, business_day, refund_reference) \
         VALUES (?, ?, ?, ?, ?, 'SETTLED', ?, ?, ?)",
    )?
    .execute(params![
        entry_reference,
        merchant_reference,
        kind,
        amount_minor,
        currency,
        now_us,
        business_day(now_us),
        refund_reference,
    ])?;
    Ok(())
}

/// The next rowid of `table`: references come from it, so they never repeat and stay
/// stable across restarts; max(rowid) is a b-tree lookup, not a scan.
fn next_seq(db: &Connection, table: &'static str) -> rusqlite::Result<i64> {
    let n: i64 = db
        .prepare_cached(&format!("SELECT coalesce(max(rowid), 0) FROM {table}"))?
        .query_row([], |row| row.get(0))?;
    Ok(n + 1)
}

/// The UTC calendar date and time of a timestamp in microseconds.
fn utc(at_us: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at_us.div_euclid(1_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The UTC calendar day of a timestamp, YYYY-MM-DD (the acquirer's cut-off is 00:00Z).
pub(super) fn business_day(at_us: i64) -> String {
    let t = utc(at_us);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// A timestamp as RFC 3339 UTC with microseconds.
fn rfc3339(at_us: i64) -> String {
    let t = utc(at_us);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        at_us.rem_euclid(1_000_000)
    )
}

/// The current UTC (year, month), for card expiry checks.
pub(super) fn year_month(now_us: i64) -> (i64, i64) {
    let t = utc(now_us);
    (i64::from(t.year()), i64::from(u8::from(t.month())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_the_reports_read_them() {
        let at_us = 1_764_979_200_123_456; // 2025-12-06T00:00:00.123456Z
        assert_eq!(rfc3339(at_us), "2025-12-06T00:00:00.123456Z");
        assert_eq!(business_day(at_us), "2025-12-06");
        assert_eq!(business_day(at_us - 200_000), "2025-12-05");
        assert_eq!(year_month(at_us), (2025, 12));
    }
}
