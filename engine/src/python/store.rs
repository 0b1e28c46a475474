//! The SQLite batch writer's bindings: a batch's decisions arrive as columns (one list
//! per field), the rows are built and written with the GIL released, and each payment's
//! outcome comes back as a tuple of numbers.
//!
//! SQLite's errors keep the classes Python's sqlite3 module would raise, so the store's
//! callers tell "the store is out of reach" (OperationalError: the disk, a lock) from
//! other failures exactly as before.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyList, PyString, PyType};

use super::completions::{Completions, Finish, Workers};
use super::reconcile::Reconciled;
use super::{blank, check_len, set_field};
use crate::store::checkpoint::Counts;
use crate::store::rows::{confirmation_id, Decision, Fraud, Outcome};
use crate::store::sqlite::{message, Failure, Writer};
use crate::store::subscriber_file::{
    import_sqlite, ImportError, Reader, Retrying, RowError, COLUMNS, ROWS_MAX,
};

/// A decision's columns, read by attribute from `quickpay_engine.store.rows.CommitColumns`.
/// The text is borrowed from the Python strings (`PyBackedStr`: the str's own UTF-8,
/// no copy for the ASCII strings the path carries), not copied into a `String` per
/// value: two calls a batch, 17 text columns each.
#[derive(FromPyObject)]
struct Columns {
    payment_id: Vec<PyBackedStr>,
    idempotency_key: Vec<PyBackedStr>,
    fingerprint: Vec<PyBackedStr>,
    account_id: Vec<PyBackedStr>,
    msisdn: Vec<PyBackedStr>,
    amount_minor: Vec<i64>,
    currency: Vec<PyBackedStr>,
    purpose: Vec<u8>,
    method_kind: Vec<u8>,
    method_display: Vec<PyBackedStr>,
    channel: Vec<PyBackedStr>,
    device_id: Vec<PyBackedStr>,
    ip: Vec<PyBackedStr>,
    sender: Vec<PyBackedStr>,
    decline_reason: Vec<PyBackedStr>,
    decline_detail: Vec<PyBackedStr>,
    gateway: Vec<PyBackedStr>,
    gateway_reference: Vec<PyBackedStr>,
    fraud_score: Vec<Option<i64>>,
    fraud_decision: Vec<PyBackedStr>,
    fraud_reasons: Vec<PyBackedStr>,
    review: Vec<bool>,
    failed: Vec<bool>,
}

impl Columns {
    fn decisions(&self) -> PyResult<Vec<Decision<'_>>> {
        self.check()?;
        Ok(self.rows())
    }

    /// ValueError naming the first column whose length is not the payment ids'.
    fn check(&self) -> PyResult<()> {
        let n = self.payment_id.len();
        for (column, len) in [
            ("idempotency_key", self.idempotency_key.len()),
            ("fingerprint", self.fingerprint.len()),
            ("account_id", self.account_id.len()),
            ("msisdn", self.msisdn.len()),
            ("amount_minor", self.amount_minor.len()),
            ("currency", self.currency.len()),
            ("purpose", self.purpose.len()),
            ("method_kind", self.method_kind.len()),
            ("method_display", self.method_display.len()),
            ("channel", self.channel.len()),
            ("device_id", self.device_id.len()),
            ("ip", self.ip.len()),
            ("sender", self.sender.len()),
            ("decline_reason", self.decline_reason.len()),
            ("decline_detail", self.decline_detail.len()),
            ("gateway", self.gateway.len()),
            ("gateway_reference", self.gateway_reference.len()),
            ("fraud_score", self.fraud_score.len()),
            ("fraud_decision", self.fraud_decision.len()),
            ("fraud_reasons", self.fraud_reasons.len()),
            ("review", self.review.len()),
            ("failed", self.failed.len()),
        ] {
            check_len(column, len, n)?;
        }
        Ok(())
    }

    /// The decisions of columns `check` passed.
    fn rows(&self) -> Vec<Decision<'_>> {
        (0..self.payment_id.len())
            .map(|k| Decision {
                payment_id: &self.payment_id[k],
                idempotency_key: &self.idempotency_key[k],
                fingerprint: &self.fingerprint[k],
                account_id: &self.account_id[k],
                msisdn: &self.msisdn[k],
                amount_minor: self.amount_minor[k],
                currency: &self.currency[k],
                purpose: self.purpose[k],
                method_kind: self.method_kind[k],
                method_display: &self.method_display[k],
                channel: &self.channel[k],
                device_id: &self.device_id[k],
                ip: &self.ip[k],
                sender: &self.sender[k],
                decline_reason: &self.decline_reason[k],
                decline_detail: &self.decline_detail[k],
                gateway: &self.gateway[k],
                gateway_reference: &self.gateway_reference[k],
                fraud: self.fraud_score[k].map(|score| Fraud {
                    score,
                    decision: &self.fraud_decision[k],
                    reasons: &self.fraud_reasons[k],
                }),
                review: self.review[k],
                failed: self.failed[k],
            })
            .collect()
    }
}

/// How a payment of a committed batch ended, as its tuple's first element.
const WRITTEN: u8 = 0;
const REJECTED: u8 = 1;
const ACCOUNT_GONE: u8 = 2;

/// Per payment: (how it ended, status, ledger sequence, balance after, line state after,
/// the failure's text); the accounts' (id, balance, status) after; the audit head.
type CommitResult = (
    Vec<(u8, u8, i64, i64, u8, String)>,
    Vec<(String, i64, u8)>,
    Option<(i64, String)>,
);

/// The domain's outcome classes (`Outcome`, `Confirmation`, and the members of
/// `PaymentStatus` and `LineStatus` by number), handed over once: the outcomes of a
/// batch the core's writer committed are built by the core, on the event loop's
/// thread, as `store.rows.outcome_of` builds them (a test holds the two equal), with no
/// Python step per payment. Fields are set as the frozen dataclasses' own `__init__`
/// sets them (`blank`, `set_field`).
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct OutcomeTypes {
    outcome: Py<PyType>,
    confirmation: Py<PyType>,
    // Indexed by number; None where the enum has no member.
    statuses: Vec<Option<Py<PyAny>>>,
    lines: Vec<Option<Py<PyAny>>>,
    outcome_fields: [Py<PyString>; 8],
    confirmation_fields: [Py<PyString>; 8],
}

const OUTCOME_FIELDS: [&str; 8] = [
    "payment_id",
    "idempotency_key",
    "status",
    "decline_reason",
    "decline_detail",
    "confirmation",
    "replayed",
    "fraud",
];
const CONFIRMATION_FIELDS: [&str; 8] = [
    "confirmation_id",
    "ledger_sequence",
    "settled_at_us",
    "gateway",
    "gateway_reference",
    "balance_after_minor",
    "currency",
    "service_state_after",
];
const SETTLED: u8 = 1;

/// The members by their number (an int enum's own value).
fn by_number(py: Python<'_>, members: Vec<Py<PyAny>>) -> PyResult<Vec<Option<Py<PyAny>>>> {
    let mut out: Vec<Option<Py<PyAny>>> = Vec::new();
    for member in members {
        let number: u8 = member.bind(py).extract()?;
        let at = usize::from(number);
        if out.len() <= at {
            out.resize_with(at + 1, || None);
        }
        out[at] = Some(member);
    }
    Ok(out)
}

fn member<'py>(
    py: Python<'py>,
    members: &[Option<Py<PyAny>>],
    number: u8,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    members
        .get(usize::from(number))
        .and_then(Option::as_ref)
        .map(|m| m.bind(py).clone())
        .ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!("{number} is not a valid {name}"))
        })
}

#[pymethods]
impl OutcomeTypes {
    #[new]
    fn new(
        py: Python<'_>,
        outcome: Py<PyType>,
        confirmation: Py<PyType>,
        statuses: Vec<Py<PyAny>>,
        lines: Vec<Py<PyAny>>,
    ) -> PyResult<Self> {
        Ok(OutcomeTypes {
            outcome,
            confirmation,
            statuses: by_number(py, statuses)?,
            lines: by_number(py, lines)?,
            outcome_fields: OUTCOME_FIELDS.map(|f| PyString::intern(py, f).unbind()),
            confirmation_fields: CONFIRMATION_FIELDS.map(|f| PyString::intern(py, f).unbind()),
        })
    }
}

impl OutcomeTypes {
    /// Row `k`'s outcome, which the commit wrote as `o`.
    fn build<'py>(
        &self,
        py: Python<'py>,
        columns: &Columns,
        k: usize,
        o: &Outcome,
        fraud: &Bound<'py, PyAny>,
        now_us: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let text = |column: &[PyBackedStr]| (&column[k]).into_pyobject(py).map(Bound::into_any);
        let empty = || PyString::intern(py, "").into_any();
        let settled = o.status == SETTLED;
        let confirmation = if settled {
            let c = blank(py, &self.confirmation)?;
            let f = &self.confirmation_fields;
            let id = confirmation_id(&columns.payment_id[k]);
            set_field(&c, &f[0], id.into_pyobject(py)?.into_any())?;
            set_field(&c, &f[1], o.ledger_sequence.into_pyobject(py)?.into_any())?;
            set_field(&c, &f[2], now_us.into_pyobject(py)?.into_any())?;
            set_field(&c, &f[3], text(&columns.gateway)?)?;
            set_field(&c, &f[4], text(&columns.gateway_reference)?)?;
            set_field(
                &c,
                &f[5],
                o.balance_after_minor.into_pyobject(py)?.into_any(),
            )?;
            set_field(&c, &f[6], text(&columns.currency)?)?;
            let line = member(py, &self.lines, o.service_state_after, "LineStatus")?;
            set_field(&c, &f[7], line)?;
            c
        } else {
            py.None().into_bound(py)
        };
        let out = blank(py, &self.outcome)?;
        let f = &self.outcome_fields;
        set_field(&out, &f[0], text(&columns.payment_id)?)?;
        set_field(&out, &f[1], text(&columns.idempotency_key)?)?;
        set_field(
            &out,
            &f[2],
            member(py, &self.statuses, o.status, "PaymentStatus")?,
        )?;
        if settled {
            set_field(&out, &f[3], empty())?;
            set_field(&out, &f[4], empty())?;
        } else {
            set_field(&out, &f[3], text(&columns.decline_reason)?)?;
            set_field(&out, &f[4], text(&columns.decline_detail)?)?;
        }
        set_field(&out, &f[5], confirmation)?;
        set_field(&out, &f[6], false.into_pyobject(py)?.to_owned().into_any())?;
        set_field(&out, &f[7], fraud.clone())?;
        Ok(out)
    }
}

/// SQLite's error as the exception Python's sqlite3 module raises for the same code
/// (its `_pysqlite_seterror`); an error of rusqlite's own is a DatabaseError.
fn sqlite_error(py: Python<'_>, err: &rusqlite::Error) -> PyErr {
    use rusqlite::ErrorCode::*;
    let class = match err {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            InternalMalfunction | NotFound => "InternalError",
            OutOfMemory => return pyo3::exceptions::PyMemoryError::new_err(message(err)),
            Unknown
            | PermissionDenied
            | OperationAborted
            | DatabaseBusy
            | DatabaseLocked
            | ReadOnly
            | OperationInterrupted
            | SystemIoFailure
            | DiskFull
            | CannotOpen
            | FileLockingProtocolFailed
            | SchemaChanged => "OperationalError",
            TooBig => "DataError",
            ConstraintViolation | TypeMismatch => "IntegrityError",
            ApiMisuse | ParameterOutOfRange => "InterfaceError",
            _ => "DatabaseError",
        },
        _ => "DatabaseError",
    };
    match py
        .import("sqlite3")
        .and_then(|module| module.getattr(class))
        .and_then(|class| class.call1((message(err),)))
    {
        Ok(exception) => PyErr::from_value(exception),
        Err(import_failed) => import_failed,
    }
}

/// Whose turn it is to write: this store's core connection (a commit or a journal, on
/// the writer thread or a caller's) or its Python connection (a `_Transaction`). Both
/// write the same file, and without this turn a writer that finds the other in a
/// transaction sleeps in SQLite's busy handler (1 ms, then 2, 5, 10...) instead of
/// starting the moment the other ends. Turns are served in the order asked (a ticket
/// each), so a stream of commits cannot keep a refund or an outbox mark waiting.
/// Waited for without the GIL only, so a thread holding the turn can always take the
/// GIL it needs to finish. (Another store on the same file, Reconcile's, has turns of
/// its own: its writes still meet these in SQLite's busy handler.)
#[derive(Default)]
struct Turn {
    /// (the next ticket to hand out, the ticket being served)
    tickets: Mutex<(u64, u64)>,
    next: Condvar,
}

impl Turn {
    fn take(&self) {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let mine = tickets.0;
        tickets.0 += 1;
        while tickets.1 != mine {
            tickets = self.next.wait(tickets).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give(&self) {
        self.tickets.lock().unwrap_or_else(|p| p.into_inner()).1 += 1;
        self.next.notify_all();
    }
}

/// The core's turn while it lives: given back however the write ends, a panic included.
struct Held<'a>(&'a Turn);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.give();
    }
}

/// The core's connection and its turn, shared by the callers' threads and the writer
/// thread.
struct Shared {
    path: PathBuf,
    turn: Turn,
    writer: Mutex<Option<Writer>>,
    /// The checkpoint thread's counts, across the writer's reopenings.
    checkpoints: Arc<Counts>,
}

impl Shared {
    /// Runs `work` on the connection (opened first if need be) in the core's turn; the
    /// caller holds no GIL.
    fn write<T>(
        &self,
        work: impl FnOnce(&mut Writer) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.turn.take();
        let _held = Held(&self.turn);
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Writer::open_counted(
                &self.path,
                Arc::clone(&self.checkpoints),
            )?);
        }
        work(guard.as_mut().expect("opened above"))
    }
}

/// The core's thread that writes the settlement path's journal and commits, handing
/// each result to the event loop through `Completions`: no Python thread is woken to
/// start a write, nor to finish one (benches/RESULTS.md, "The store's writes on a core
/// thread, and batches that keep their size"). A write queued here runs even if its
/// awaiting coroutine is cancelled meanwhile: a cancelled batch's commit may land,
/// which recovery finishes as any commit whose answer was lost.
const WRITER_THREAD_NAME: &str = "sqlite_writer";

/// One connection of the core's to the engine's SQLite file, opened on first use.
#[pyclass(frozen)]
struct SqliteWriter {
    shared: Arc<Shared>,
    workers: Workers,
}

impl SqliteWriter {
    /// Runs `work` on the connection without the GIL, on the caller's thread.
    fn with_writer<T: Send>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&mut Writer) -> rusqlite::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| self.shared.write(work))
            .map_err(|err| sqlite_error(py, &err))
    }

    /// Runs `work` on the writer thread over the decisions of `columns` and sets
    /// `future` through `done` from its result, which `finish` turns into Python's (with
    /// the GIL, on the event loop). `first`: ahead of the writes waiting (the saga's
    /// first stage, one batch at a time, waits for its journal; many batches' commits
    /// may be queued). The columns borrow Python's strings: they go back to the event
    /// loop with the result, whatever it is, and are dropped there with the GIL.
    fn spawn_write<T: Send + 'static>(
        &self,
        first: bool,
        done: &Completions,
        future: Py<PyAny>,
        columns: Columns,
        work: impl FnOnce(&mut Writer, &[Decision<'_>]) -> rusqlite::Result<T> + Send + 'static,
        finish: impl FnOnce(Python<'_>, T, &Columns) -> PyResult<Py<PyAny>> + Send + 'static,
    ) -> PyResult<()> {
        columns.check()?; // on the caller's thread: a bad call raises there
        let shared = Arc::clone(&self.shared);
        let queue = done.queue();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                shared.write(|writer| work(writer, &columns.rows()))
            }));
            let finish: Finish = match outcome {
                Ok(Ok(value)) => Box::new(move |py| {
                    let done = finish(py, value, &columns);
                    drop(columns);
                    done
                }),
                // `finish` is dropped here too, with the GIL: it may hold Python objects.
                Ok(Err(err)) => Box::new(move |py| {
                    drop((columns, finish));
                    Err(sqlite_error(py, &err))
                }),
                Err(_) => Box::new(move |_| {
                    drop((columns, finish));
                    Err(super::EngineError::new_err("a SQLite write panicked"))
                }),
            };
            queue.complete(future, finish);
        });
        if first {
            self.workers.spawn_first(job)
        } else {
            self.workers.spawn(job)
        }
        .map_err(|err| super::EngineError::new_err(format!("SQLite writer thread: {err}")))
    }
}

fn commit_result(done: crate::store::sqlite::Committed) -> CommitResult {
    let outcomes = done
        .outcomes
        .into_iter()
        .map(|o| match o {
            Ok(o) => (
                WRITTEN,
                o.status,
                o.ledger_sequence,
                o.balance_after_minor,
                o.service_state_after,
                String::new(),
            ),
            Err(Failure::Rejected(text)) => (REJECTED, 0, 0, 0, 0, text),
            Err(Failure::AccountGone(text)) => (ACCOUNT_GONE, 0, 0, 0, 0, text),
        })
        .collect();
    (outcomes, done.states, done.head)
}

#[pymethods]
impl SqliteWriter {
    #[new]
    fn new(path: PathBuf) -> Self {
        SqliteWriter {
            shared: Arc::new(Shared {
                path,
                turn: Turn::default(),
                writer: Mutex::new(None),
                checkpoints: Arc::default(),
            }),
            workers: Workers::new(WRITER_THREAD_NAME, 1),
        }
    }

    /// Makes a batch of decisions durable in one transaction; see store/sqlite.rs.
    fn commit(
        &self,
        py: Python<'_>,
        columns: Columns,
        now_us: i64,
        audit_key: Vec<u8>,
    ) -> PyResult<CommitResult> {
        let decisions = columns.decisions()?;
        let done = self.with_writer(py, |writer| writer.commit(&decisions, now_us, &audit_key))?;
        Ok(commit_result(done))
    }

    /// `commit` on the writer thread: sets `future` through `done` to what `commit`
    /// returns (or raises), on the event loop. The columns are read here, on the
    /// caller's thread.
    #[allow(clippy::too_many_arguments)]
    fn commit_into(
        &self,
        py: Python<'_>,
        done: &Completions,
        future: Py<PyAny>,
        columns: Columns,
        now_us: i64,
        audit_key: Vec<u8>,
        types: Py<OutcomeTypes>,
        frauds: Py<PyList>,
    ) -> PyResult<()> {
        check_len("frauds", frauds.bind(py).len(), columns.payment_id.len())?;
        self.spawn_write(
            false,
            done,
            future,
            columns,
            move |writer, decisions| writer.commit(decisions, now_us, &audit_key),
            move |py, committed, columns| {
                // Each written payment's Outcome, built here; None for one the store
                // refused, which the caller reads back (a replay, or a conflict), and
                // for one whose outcome could not be built (a number with no enum
                // member), which the caller builds and so raises for: the batch is
                // committed either way, and its audit head must still reach the caller.
                let types = types.get();
                let frauds = frauds.bind(py);
                let mut outcomes = Vec::with_capacity(committed.outcomes.len());
                for (k, o) in committed.outcomes.iter().enumerate() {
                    outcomes.push(match o {
                        Ok(o) => frauds
                            .get_item(k)
                            .and_then(|fraud| types.build(py, columns, k, o, &fraud, now_us))
                            .ok(),
                        Err(_) => None,
                    });
                }
                let unbuilt = outcomes.iter().filter(|o| o.is_none()).count();
                let (results, states, head) = commit_result(committed);
                (outcomes, unbuilt, results, states, head)
                    .into_pyobject(py)
                    .map(|o| o.into_any().unbind())
            },
        )
    }

    /// Journals payments about to go to a gateway (only their request's columns are
    /// read: the decision fields may be empty); see store/sqlite.rs.
    fn journal(&self, py: Python<'_>, columns: Columns, now_us: i64) -> PyResult<Vec<bool>> {
        let decisions = columns.decisions()?;
        self.with_writer(py, |writer| writer.journal(&decisions, now_us))
    }

    /// `journal` on the writer thread, ahead of the commits waiting there: sets
    /// `future` through `done` to what `journal` returns (or raises), on the event loop.
    fn journal_into(
        &self,
        done: &Completions,
        future: Py<PyAny>,
        columns: Columns,
        now_us: i64,
    ) -> PyResult<()> {
        self.spawn_write(
            true,
            done,
            future,
            columns,
            move |writer, decisions| writer.journal(decisions, now_us),
            |py, taken, _| taken.into_pyobject(py).map(|o| o.into_any().unbind()),
        )
    }

    /// Waits (without the GIL) for the writers' turn, for a transaction on the store's
    /// Python connection; `give_turn` ends it. Every write of this store's two
    /// connections goes in a turn, so neither sleeps in SQLite's busy handler waiting
    /// for the other.
    fn take_turn(&self, py: Python<'_>) {
        py.detach(|| self.shared.turn.take());
    }

    /// Ends the turn `take_turn` took.
    fn give_turn(&self) {
        self.shared.turn.give();
    }

    /// Writes the discrepancies `start..stop` of a reconciliation in one transaction
    /// (a re-run only touches their last_seen) and keeps the state investigators left
    /// each in, in `reconciled`; see store/sqlite.rs. The reconciliation's own store
    /// calls it on its own connection, chunk by chunk (settlement/reconciliation.py).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (reconciled, gateway, business_day, start, stop, now_us))]
    fn record_discrepancies(
        &self,
        py: Python<'_>,
        reconciled: &Bound<'_, Reconciled>,
        gateway: &str,
        business_day: &str,
        start: usize,
        stop: usize,
        now_us: i64,
    ) -> PyResult<()> {
        let reconciled = reconciled.get();
        let (start, stop) = reconciled.range(start, Some(stop))?;
        let found = &reconciled.outcome.discrepancies[start..stop];
        let states = self.with_writer(py, |writer| {
            writer.record_discrepancies(gateway, business_day, found, now_us)
        })?;
        reconciled.put_states(start, states);
        Ok(())
    }

    /// (WAL checkpoints the core's checkpoint thread ran for this file, of which
    /// failed), since this writer was made; read without waiting for a write.
    fn checkpoints(&self) -> (u64, u64) {
        self.shared.checkpoints.get()
    }

    /// Lets the writes asked for finish, then closes the connection (the next write
    /// opens it again).
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            self.workers.close();
            self.shared
                .writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        });
    }
}

pyo3::create_exception!(
    _engine,
    SubscriberFileError,
    pyo3::exceptions::PyValueError,
    "A subscriber file's first bad line: args are (line, message)."
);

fn row_error(err: RowError) -> PyErr {
    SubscriberFileError::new_err((err.line, err.message))
}

/// Imports a subscriber CSV into the SQLite store at `db_path`, streamed, in one
/// transaction (see `store::subscriber_file::import_sqlite`); returns (rows written,
/// lines closed by `replace`). A bad line raises `SubscriberFileError(line, message)`,
/// a constraint against the rows already there `sqlite3.IntegrityError`, a file that
/// cannot be read `OSError`; nothing is written then.
#[pyfunction]
fn import_subscribers_sqlite(
    py: Python<'_>,
    db_path: PathBuf,
    file_path: PathBuf,
    replace: bool,
) -> PyResult<(u64, u64)> {
    match py.detach(|| import_sqlite(&db_path, &file_path, replace)) {
        Ok(done) => Ok((done.rows, done.closed)),
        Err(ImportError::Row(err)) => Err(row_error(err)),
        Err(ImportError::Io(err)) => Err(err.into()),
        Err(ImportError::Conflict(text)) => Err(
            match py
                .import("sqlite3")
                .and_then(|m| m.getattr("IntegrityError"))
                .and_then(|class| class.call1((text,)))
            {
                Ok(exception) => PyErr::from_value(exception),
                Err(import_failed) => import_failed,
            },
        ),
        Err(ImportError::Sqlite(err)) => Err(sqlite_error(py, &err)),
    }
}

/// A subscriber file read in chunks of checked rows (the PostgreSQL import, parse_csv).
#[pyclass]
struct SubscriberFile {
    reader: Reader<Box<dyn std::io::Read + Send + Sync>>,
    /// A bad line found after rows of the same chunk: those are returned first (a
    /// duplicate among them is an earlier error), it is raised by the next `read`.
    failed: Option<RowError>,
}

/// A row as Python gets it: (line, account_id, msisdn, plan, status, currency,
/// balance_minor, country, sim_swapped_at_s or None, created_at_s).
type RowTuple = (
    u64,
    String,
    String,
    u8,
    u8,
    String,
    i64,
    String,
    Option<i64>,
    i64,
);

#[pymethods]
impl SubscriberFile {
    /// Opens a file and checks its header. Both wait on the file (the disk, or a named
    /// pipe's writer), so the other threads run meanwhile: the GIL is let go for them.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<SubscriberFile> {
        let opened = py.detach(|| {
            let file = std::fs::File::open(path)?;
            let source: Box<dyn std::io::Read + Send + Sync> =
                Box::new(std::io::BufReader::with_capacity(1 << 20, Retrying(file)));
            std::io::Result::Ok(Reader::new(source))
        });
        Ok(SubscriberFile {
            reader: opened?.map_err(row_error)?,
            failed: None,
        })
    }

    /// Reads a file's text held in memory (tests, small tools).
    #[staticmethod]
    fn from_bytes(data: Vec<u8>) -> PyResult<SubscriberFile> {
        let source: Box<dyn std::io::Read + Send + Sync> = Box::new(std::io::Cursor::new(data));
        Ok(SubscriberFile {
            reader: Reader::new(source).map_err(row_error)?,
            failed: None,
        })
    }

    /// Up to `n` more rows; an empty list at the end of the file. A bad line raises
    /// `SubscriberFileError`, once the rows before it have been returned.
    fn read(&mut self, py: Python<'_>, n: usize) -> PyResult<Vec<RowTuple>> {
        if let Some(err) = self.failed.take() {
            return Err(row_error(err));
        }
        let (reader, failed) = (&mut self.reader, &mut self.failed);
        py.detach(|| {
            let mut out = Vec::with_capacity(n.min(1 << 16));
            while out.len() < n {
                let r = match reader.next() {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(err) if out.is_empty() => return Err(err),
                    Err(err) => {
                        *failed = Some(err);
                        break;
                    }
                };
                out.push((
                    r.line,
                    r.account_id,
                    r.msisdn,
                    r.plan,
                    r.status,
                    r.currency,
                    r.balance_minor,
                    r.country,
                    r.sim_swapped_at_s,
                    r.created_at_s,
                ));
            }
            Ok(out)
        })
        .map_err(row_error)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SqliteWriter>()?;
    m.add_class::<OutcomeTypes>()?;
    m.add_class::<SubscriberFile>()?;
    m.add_function(wrap_pyfunction!(import_subscribers_sqlite, m)?)?;
    m.add(
        "SubscriberFileError",
        m.py().get_type::<SubscriberFileError>(),
    )?;
    m.add("SUBSCRIBER_ROWS_MAX", ROWS_MAX)?;
    // The file's header, the one list of its columns (the Python side writes it too).
    m.add(
        "SUBSCRIBER_COLUMNS",
        pyo3::types::PyTuple::new(m.py(), COLUMNS)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_panics_gives_the_turn_back() {
        let (_dir, path) = crate::store::tests::database();
        let shared = Shared {
            path,
            turn: Turn::default(),
            writer: Mutex::new(None),
            checkpoints: Arc::default(),
        };
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.write(|_| -> rusqlite::Result<()> { panic!("a bug in a write") })
        }));
        assert!(panicked.is_err());
        // The turn is free again: the next write (here on another thread, as the
        // store's Python connection would) gets it.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    shared.turn.take();
                    shared.turn.give();
                })
                .join()
                .unwrap();
        });
        shared.write(|_| Ok(())).unwrap();
    }

    #[test]
    fn turns_are_served_in_the_order_asked() {
        let turn = Arc::new(Turn::default());
        turn.take();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for k in 0..4 {
            let (mine, order) = (Arc::clone(&turn), Arc::clone(&order));
            waiting.push(std::thread::spawn(move || {
                mine.take();
                order.lock().unwrap().push(k);
                mine.give();
            }));
            // Each asks (takes its ticket) before the next starts.
            while turn.tickets.lock().unwrap().0 < k + 2 {
                std::thread::yield_now();
            }
        }
        turn.give();
        for thread in waiting {
            thread.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    }
}
