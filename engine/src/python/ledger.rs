//! Bindings of the durable ledger: `Ledger` (open on a directory, batch calls with
//! numpy columns in and result codes out) and the offline `wal_verify` / `wal_inspect`.
//!
//! 128-bit ids (accounts, transfers, payments, fingerprints) cross as numpy `uint64`
//! arrays of shape (n, 2): column 0 the high 64 bits, column 1 the low 64 bits.
//! `ids_array` and `ids_list` convert from and to Python ints. Every mutating call
//! returns `(codes, seq)`: one uint16 result code per row, and the log sequence number
//! of the record, returned only once that record is durable. The GIL is released
//! while the ledger applies and the log is written.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::completions::Workers;
use super::saga::{SAGA_THREADS, SAGA_THREAD_NAME};
use super::{check_len, slice, BatchTooLarge, CapacityExceeded, EngineError, InvalidBatch};
use crate::ledger::{
    self as core, account_flags, transfer_flags, AccountInput, AccountResult, AnchorResult,
    ClaimInput, ClaimResult, Command, DurableConfig, DurableError, DurableLedger, EntryResult,
    LedgerError, Limits, PaymentResult, RecoveryReport, TransferInput, TransferResult,
};
use crate::wal::{WalConfig, WalError};

create_exception!(_engine, WalFailure, EngineError, "The write-ahead log failed (I/O or an earlier fsync error); the engine must restart and recover.");
create_exception!(_engine, WalCorruption, WalFailure, "The log or a snapshot is corrupt where no crash can have left it; the message names the file and offset.");
create_exception!(_engine, LedgerClosed, EngineError, "The ledger was closed.");

pub(super) fn to_py(err: DurableError) -> PyErr {
    match err {
        DurableError::Ledger(LedgerError::BatchTooLarge { len, max }) => BatchTooLarge::new_err(
            format!("batch of {len} is over the ledger's bound of {max}"),
        ),
        DurableError::Ledger(err @ LedgerError::CapacityExceeded { .. }) => {
            CapacityExceeded::new_err(err.to_string())
        }
        DurableError::Wal(err @ WalError::RecordTooLarge { .. }) => {
            BatchTooLarge::new_err(err.to_string())
        }
        DurableError::Wal(err @ WalError::Corruption(_)) => WalCorruption::new_err(err.to_string()),
        DurableError::Wal(err) => WalFailure::new_err(err.to_string()),
    }
}

/// An (n, 2) uint64 id column as its flat C-order slice (high, low, high, low, ...);
/// `n` checks the row count when given.
fn id_pairs<'a>(
    column: &'static str,
    array: &'a PyReadonlyArray2<'_, u64>,
    n: Option<usize>,
) -> PyResult<&'a [u64]> {
    let shape = array.shape();
    if shape[1] != 2 {
        let message = format!("column {column} must have shape (n, 2), got {shape:?}");
        return Err(InvalidBatch::new_err(message));
    }
    if let Some(n) = n {
        check_len(column, shape[0], n)?;
    }
    array.as_slice().map_err(|_| {
        InvalidBatch::new_err(format!(
            "column {column} must be a C-contiguous (n, 2) uint64 array"
        ))
    })
}

/// Row `i` of a flat id column from `id_pairs`.
fn id_at(flat: &[u64], i: usize) -> u128 {
    (u128::from(flat[2 * i]) << 64) | u128::from(flat[2 * i + 1])
}

/// Reads an (n, 2) uint64 id column into u128s.
fn ids(
    column: &'static str,
    array: &PyReadonlyArray2<'_, u64>,
    n: Option<usize>,
) -> PyResult<Vec<u128>> {
    let flat = id_pairs(column, array, n)?;
    Ok((0..flat.len() / 2).map(|i| id_at(flat, i)).collect())
}

fn ids_out(
    py: Python<'_>,
    values: impl ExactSizeIterator<Item = u128>,
) -> Bound<'_, PyArray2<u64>> {
    let n = values.len();
    let flat: Vec<u64> = values.flat_map(|v| [(v >> 64) as u64, v as u64]).collect();
    PyArray1::from_vec(py, flat)
        .reshape([n, 2])
        .expect("2n values reshape to (n, 2)")
}

fn column<'a, T: numpy::Element>(
    name: &'static str,
    array: &'a PyReadonlyArray1<'_, T>,
    n: usize,
) -> PyResult<&'a [T]> {
    let values = slice(name, array)?;
    check_len(name, values.len(), n)?;
    Ok(values)
}

type Codes<'py> = (Bound<'py, PyArray1<u16>>, u64);
type IdsAndStates<'py> = (Bound<'py, PyArray2<u64>>, Bound<'py, PyArray1<u8>>);

/// The durable ledger, open on a directory.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct Ledger {
    inner: RwLock<Option<Arc<DurableLedger>>>,
    pub(super) retention_ns: u64,
    /// The threads the saga's steps run on (src/python/saga.rs).
    pub(super) workers: Workers,
    report: RecoveryReport,
    dir: PathBuf,
}

impl Ledger {
    pub(super) fn get(&self) -> PyResult<Arc<DurableLedger>> {
        self.inner
            .read()
            .expect("ledger handle lock")
            .clone()
            .ok_or_else(|| LedgerClosed::new_err("the ledger was closed"))
    }

    fn run<'py>(&self, py: Python<'py>, now_ns: u64, command: Command) -> PyResult<Codes<'py>> {
        let ledger = self.get()?;
        let (codes, seq) = py
            .detach(|| ledger.execute(now_ns, command))
            .map_err(to_py)?;
        Ok((PyArray1::from_vec(py, codes), seq))
    }
}

#[pymethods]
impl Ledger {
    /// Opens (creating when absent) the ledger in `dir`: loads the newest snapshot,
    /// replays the log, truncates a torn tail, refuses corruption (`WalCorruption`).
    #[staticmethod]
    #[pyo3(signature = (dir, *, segment_bytes_max = 67_108_864, retention_s = 86_400,
        accounts_max = None, transfers_max = None, payments_max = None,
        idempotency_keys_max = None, decisions_max = None))]
    #[allow(clippy::too_many_arguments)]
    fn open(
        py: Python<'_>,
        dir: PathBuf,
        segment_bytes_max: u64,
        retention_s: u64,
        accounts_max: Option<usize>,
        transfers_max: Option<usize>,
        payments_max: Option<usize>,
        idempotency_keys_max: Option<usize>,
        decisions_max: Option<usize>,
    ) -> PyResult<Ledger> {
        let d = Limits::default();
        let config = DurableConfig {
            wal: WalConfig { segment_bytes_max },
            limits: Limits {
                accounts_max: accounts_max.unwrap_or(d.accounts_max),
                transfers_max: transfers_max.unwrap_or(d.transfers_max),
                payments_max: payments_max.unwrap_or(d.payments_max),
                idempotency_keys_max: idempotency_keys_max.unwrap_or(d.idempotency_keys_max),
                decisions_max: decisions_max.unwrap_or(d.decisions_max),
            },
        };
        let retention_ns = retention_s
            .checked_mul(1_000_000_000)
            .ok_or_else(|| InvalidBatch::new_err("retention_s is too large"))?;
        let (ledger, report) = py
            .detach(|| DurableLedger::open(&dir, config))
            .map_err(to_py)?;
        Ok(Ledger {
            inner: RwLock::new(Some(Arc::new(ledger))),
            retention_ns,
            workers: Workers::new(SAGA_THREAD_NAME, SAGA_THREADS),
            report,
            dir,
        })
    }

    /// What recovery found when the ledger was opened (see `wal_verify`).
    fn recovery<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        report_dict(py, &self.report)
    }

    /// The directory the ledger lives in.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Creates accounts; returns (AccountResult codes, seq).
    fn create_accounts<'py>(
        &self,
        py: Python<'py>,
        now_ns: u64,
        ids: PyReadonlyArray2<'py, u64>,
        currencies: PyReadonlyArray1<'py, u16>,
        kinds: PyReadonlyArray1<'py, u16>,
        flags: PyReadonlyArray1<'py, u16>,
    ) -> PyResult<Codes<'py>> {
        let id_values = self::ids("ids", &ids, None)?;
        let n = id_values.len();
        check_ledger_batch(n)?;
        let currencies = column("currencies", &currencies, n)?;
        let kinds = column("kinds", &kinds, n)?;
        let flags = column("flags", &flags, n)?;
        let accounts = (0..n)
            .map(|i| AccountInput {
                id: id_values[i],
                currency: currencies[i],
                kind: kinds[i],
                flags: flags[i],
            })
            .collect();
        self.run(py, now_ns, Command::CreateAccounts { accounts })
    }

    /// Creates transfers (plain, pending, post, void; linked chains by flag); expires
    /// every hold due at `now_ns` first. Returns (TransferResult codes, seq).
    #[allow(clippy::too_many_arguments)]
    fn create_transfers<'py>(
        &self,
        py: Python<'py>,
        now_ns: u64,
        ids: PyReadonlyArray2<'py, u64>,
        debit_account_ids: PyReadonlyArray2<'py, u64>,
        credit_account_ids: PyReadonlyArray2<'py, u64>,
        amounts_minor: PyReadonlyArray1<'py, i64>,
        currencies: PyReadonlyArray1<'py, u16>,
        flags: PyReadonlyArray1<'py, u16>,
        pending_ids: PyReadonlyArray2<'py, u64>,
        timeouts_s: PyReadonlyArray1<'py, u32>,
        payment_ids: PyReadonlyArray2<'py, u64>,
    ) -> PyResult<Codes<'py>> {
        // Straight from the numpy buffers into the command, with no column copied on
        // the way: this runs with the GIL held, once per micro-batch.
        let id_values = id_pairs("ids", &ids, None)?;
        let n = id_values.len() / 2;
        check_ledger_batch(n)?;
        let debits = id_pairs("debit_account_ids", &debit_account_ids, Some(n))?;
        let credits = id_pairs("credit_account_ids", &credit_account_ids, Some(n))?;
        let pendings = id_pairs("pending_ids", &pending_ids, Some(n))?;
        let payments = id_pairs("payment_ids", &payment_ids, Some(n))?;
        let amounts = column("amounts_minor", &amounts_minor, n)?;
        let currencies = column("currencies", &currencies, n)?;
        let flags = column("flags", &flags, n)?;
        let timeouts = column("timeouts_s", &timeouts_s, n)?;
        let transfers = (0..n)
            .map(|i| TransferInput {
                id: id_at(id_values, i),
                debit_account_id: id_at(debits, i),
                credit_account_id: id_at(credits, i),
                amount_minor: amounts[i],
                pending_id: id_at(pendings, i),
                payment_id: id_at(payments, i),
                timeout_s: timeouts[i],
                currency: currencies[i],
                flags: flags[i],
            })
            .collect();
        self.run(py, now_ns, Command::CreateTransfers { transfers })
    }

    /// Expires every hold due at `now_ns` (an empty transfer batch); returns seq.
    fn expire(&self, py: Python<'_>, now_ns: u64) -> PyResult<u64> {
        Ok(self
            .run(
                py,
                now_ns,
                Command::CreateTransfers {
                    transfers: Vec::new(),
                },
            )?
            .1)
    }

    /// Balances of accounts: (found bool, debits_pending, debits_posted,
    /// credits_pending, credits_posted), int64 minor units, zeros where not found.
    #[allow(clippy::type_complexity)]
    fn balances<'py>(
        &self,
        py: Python<'py>,
        account_ids: PyReadonlyArray2<'py, u64>,
    ) -> PyResult<(
        Bound<'py, PyArray1<bool>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
    )> {
        let id_values = ids("account_ids", &account_ids, None)?;
        let ledger = self.get()?;
        let rows = ledger
            .read(|l| {
                id_values
                    .iter()
                    .map(|id| l.account(*id).map(|a| a.balances))
                    .collect::<Vec<_>>()
            })
            .map_err(to_py)?;
        let found = rows.iter().map(Option::is_some).collect();
        let b: Vec<_> = rows.into_iter().map(Option::unwrap_or_default).collect();
        Ok((
            PyArray1::from_vec(py, found),
            PyArray1::from_vec(py, b.iter().map(|b| b.debits_pending).collect()),
            PyArray1::from_vec(py, b.iter().map(|b| b.debits_posted).collect()),
            PyArray1::from_vec(py, b.iter().map(|b| b.credits_pending).collect()),
            PyArray1::from_vec(py, b.iter().map(|b| b.credits_posted).collect()),
        ))
    }

    /// Records payment settlement states (1 RESERVED, 2 CAPTURED, 3 SETTLED,
    /// 4 ROLLED_BACK); returns (PaymentResult codes, seq).
    fn record_payment_states<'py>(
        &self,
        py: Python<'py>,
        now_ns: u64,
        payment_ids: PyReadonlyArray2<'py, u64>,
        states: PyReadonlyArray1<'py, u8>,
    ) -> PyResult<Codes<'py>> {
        let id_values = ids("payment_ids", &payment_ids, None)?;
        check_ledger_batch(id_values.len())?;
        let states = column("states", &states, id_values.len())?;
        let entries = id_values.into_iter().zip(states.iter().copied()).collect();
        self.run(
            py,
            now_ns,
            Command::PaymentStates {
                retention_ns: self.retention_ns,
                entries,
            },
        )
    }

    /// Payments RESERVED or CAPTURED, sorted by id: (ids (n, 2) uint64, states uint8).
    fn unfinished_payments<'py>(&self, py: Python<'py>) -> PyResult<IdsAndStates<'py>> {
        let rows = self
            .get()?
            .read(|l| l.unfinished_payments())
            .map_err(to_py)?;
        let states = rows.iter().map(|(_, s)| *s as u8).collect();
        Ok((
            ids_out(py, rows.into_iter().map(|(id, _)| id)),
            PyArray1::from_vec(py, states),
        ))
    }

    /// The recorded state of each payment (0 when unknown or aged out).
    fn payment_states<'py>(
        &self,
        py: Python<'py>,
        payment_ids: PyReadonlyArray2<'py, u64>,
    ) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let id_values = ids("payment_ids", &payment_ids, None)?;
        let states = self
            .get()?
            .read(|l| {
                id_values
                    .iter()
                    .map(|id| l.payment_state(*id).map_or(0, |s| s as u8))
                    .collect()
            })
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, states))
    }

    /// Claims idempotency keys: returns (ClaimResult codes, payment_ids (n, 2) stored
    /// for the key, outcomes uint16 stored for the key (0 while in flight), seq).
    #[allow(clippy::type_complexity)]
    fn claim_keys<'py>(
        &self,
        py: Python<'py>,
        now_ns: u64,
        keys: Vec<String>,
        fingerprints: PyReadonlyArray2<'py, u64>,
        payment_ids: PyReadonlyArray2<'py, u64>,
    ) -> PyResult<(
        Bound<'py, PyArray1<u16>>,
        Bound<'py, PyArray2<u64>>,
        Bound<'py, PyArray1<u16>>,
        u64,
    )> {
        let n = keys.len();
        check_ledger_batch(n)?;
        let fps = ids("fingerprints", &fingerprints, Some(n))?;
        let pays = ids("payment_ids", &payment_ids, Some(n))?;
        let claims: Vec<ClaimInput> = keys
            .into_iter()
            .zip(fps)
            .zip(pays)
            .map(|((key, fingerprint), payment_id)| ClaimInput {
                key,
                fingerprint,
                payment_id,
            })
            .collect();
        let ledger = self.get()?;
        let retention_ns = self.retention_ns;
        let (codes, seq, stored) = py
            .detach(|| {
                let lookups: Vec<String> = claims.iter().map(|c| c.key.clone()).collect();
                let command = Command::ClaimKeys {
                    retention_ns,
                    claims,
                };
                let (codes, seq) = ledger.execute(now_ns, command)?;
                // Read after the claim is durable: a key's entry is never removed
                // except by a later claim's retention sweep, which this caller's
                // orchestrator does not race with inside one micro-batch.
                let stored = ledger.read(|l| {
                    lookups
                        .iter()
                        .map(|k| {
                            l.idempotency_entry(k)
                                .map_or((0, 0), |e| (e.payment_id, e.outcome))
                        })
                        .collect::<Vec<_>>()
                })?;
                Ok::<_, DurableError>((codes, seq, stored))
            })
            .map_err(to_py)?;
        let outcomes = stored.iter().map(|(_, o)| *o).collect();
        Ok((
            PyArray1::from_vec(py, codes),
            ids_out(py, stored.into_iter().map(|(p, _)| p)),
            PyArray1::from_vec(py, outcomes),
            seq,
        ))
    }

    /// Sets the outcome (non-zero) of claimed keys, once; returns (EntryResult codes, seq).
    fn set_outcomes<'py>(
        &self,
        py: Python<'py>,
        now_ns: u64,
        keys: Vec<String>,
        outcomes: PyReadonlyArray1<'py, u16>,
    ) -> PyResult<Codes<'py>> {
        check_ledger_batch(keys.len())?;
        let outcomes = column("outcomes", &outcomes, keys.len())?;
        let entries = keys.into_iter().zip(outcomes.iter().copied()).collect();
        self.run(py, now_ns, Command::SetOutcomes { entries })
    }

    /// Records two-phase-commit decisions (1 COMMIT, 2 ABORT) by global transaction
    /// id; returns (EntryResult codes, seq).
    fn record_decisions<'py>(
        &self,
        py: Python<'py>,
        now_ns: u64,
        gtids: Vec<String>,
        decisions: PyReadonlyArray1<'py, u8>,
    ) -> PyResult<Codes<'py>> {
        check_ledger_batch(gtids.len())?;
        let decisions = column("decisions", &decisions, gtids.len())?;
        let entries = gtids.into_iter().zip(decisions.iter().copied()).collect();
        self.run(py, now_ns, Command::RecordDecisions { entries })
    }

    /// Forgets decisions whose transactions are resolved; returns (EntryResult codes, seq).
    fn forget_decisions<'py>(
        &self,
        py: Python<'py>,
        now_ns: u64,
        gtids: Vec<String>,
    ) -> PyResult<Codes<'py>> {
        check_ledger_batch(gtids.len())?;
        self.run(py, now_ns, Command::ForgetDecisions { gtids })
    }

    /// Anchors the audit trail's head (its last row's sequence number and 32-byte
    /// hash) after a database commit; returns (AnchorResult codes, seq). The ledger
    /// keeps the furthest head, through snapshots.
    fn anchor_audit<'py>(
        &self,
        py: Python<'py>,
        now_ns: u64,
        audit_seq: u64,
        audit_hash: &[u8],
    ) -> PyResult<Codes<'py>> {
        let hash: [u8; 32] = audit_hash.try_into().map_err(|_| {
            InvalidBatch::new_err(format!(
                "audit_hash must be 32 bytes, got {}",
                audit_hash.len()
            ))
        })?;
        let command = Command::AnchorAudit {
            seq: audit_seq,
            hash,
        };
        self.run(py, now_ns, command)
    }

    /// The furthest audit-trail head anchored: (sequence number, 32-byte hash), or
    /// None when none was.
    fn audit_anchor(&self) -> PyResult<Option<(u64, Vec<u8>)>> {
        let anchor = self.get()?.read(|l| l.audit_anchor()).map_err(to_py)?;
        Ok((anchor.seq != 0).then(|| (anchor.seq, anchor.hash.to_vec())))
    }

    /// Every decision not yet forgotten, as (gtid, decision), sorted by gtid.
    fn decisions(&self) -> PyResult<Vec<(String, u8)>> {
        self.get()?.read(|l| l.decisions()).map_err(to_py)
    }

    /// Writes a snapshot and removes the log it covers; returns its last record.
    fn snapshot(&self, py: Python<'_>) -> PyResult<u64> {
        let ledger = self.get()?;
        py.detach(|| ledger.snapshot()).map_err(to_py)
    }

    /// The last log sequence number handed out.
    fn last_seq(&self) -> PyResult<u64> {
        Ok(self.get()?.last_seq())
    }

    /// (accounts, transfers) held in memory.
    fn counts(&self) -> PyResult<(usize, usize)> {
        self.get()?.read(|l| l.counts()).map_err(to_py)
    }

    /// Entries held in each bounded table beside its bound: [(table, held, bound)].
    fn usage(&self) -> PyResult<Vec<(&'static str, usize, usize)>> {
        self.get()?.read(|l| l.usage().to_vec()).map_err(to_py)
    }

    /// What the log has written since open: a dict of flushes, records, bytes,
    /// flush_ns (summed) and flush_buckets (flushes per `WAL_FLUSH_BUCKETS_NS` bucket,
    /// then one for slower; not cumulative).
    fn wal_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.get()?.wal_stats();
        let out = PyDict::new(py);
        out.set_item("flushes", stats.flushes)?;
        out.set_item("records", stats.records)?;
        out.set_item("bytes", stats.bytes)?;
        out.set_item("flush_ns", stats.flush_ns)?;
        out.set_item("flush_buckets", stats.buckets)?;
        Ok(out)
    }

    /// Closes the ledger once the saga steps queued have ended; later calls raise
    /// `LedgerClosed`. Everything acknowledged is already durable, so there is nothing
    /// to flush.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.workers.close());
        self.inner.write().expect("ledger handle lock").take();
    }
}

fn check_ledger_batch(n: usize) -> PyResult<()> {
    if n > core::BATCH_MAX {
        let err = LedgerError::BatchTooLarge {
            len: n,
            max: core::BATCH_MAX,
        };
        return Err(to_py(DurableError::Ledger(err)));
    }
    Ok(())
}

fn report_dict<'py>(py: Python<'py>, report: &RecoveryReport) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("snapshot_seq", report.snapshot_seq)?;
    out.set_item("snapshots_skipped", report.snapshots_skipped.clone())?;
    out.set_item("records_replayed", report.records_replayed)?;
    out.set_item("records", report.scan.records)?;
    out.set_item("segments", report.scan.segments)?;
    out.set_item("first_seq", report.scan.first_seq)?;
    out.set_item("last_seq", report.scan.last_seq)?;
    let torn = match &report.scan.torn_tail {
        Some(tail) => {
            let d = PyDict::new(py);
            d.set_item("segment", tail.segment.clone())?;
            d.set_item("offset", tail.offset)?;
            d.set_item("bytes", tail.bytes)?;
            d.set_item("reason", tail.reason.clone())?;
            Some(d)
        }
        None => None,
    };
    out.set_item("torn_tail", torn)?;
    Ok(out)
}

/// Checks a log directory offline without changing it: snapshot and record checksums,
/// the chain, and a full replay under the given bounds (those the ledger was opened
/// with; the defaults when not given). Returns the report (a torn tail is reported, not
/// repaired); raises `WalCorruption` naming file and offset.
#[pyfunction]
#[pyo3(signature = (dir, *, transfers_max = None, payments_max = None))]
fn wal_verify(
    py: Python<'_>,
    dir: PathBuf,
    transfers_max: Option<usize>,
    payments_max: Option<usize>,
) -> PyResult<Bound<'_, PyDict>> {
    if !dir.is_dir() {
        return Err(WalFailure::new_err(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    // The bounds the live ledger ran with: a replay under smaller ones would refuse
    // what it took.
    let d = Limits::default();
    let limits = Limits {
        transfers_max: transfers_max.unwrap_or(d.transfers_max),
        payments_max: payments_max.unwrap_or(d.payments_max),
        ..d
    };
    let report = py.detach(|| core::verify(&dir, limits)).map_err(to_py)?;
    report_dict(py, &report)
}

/// One record as `wal_inspect` lists it.
type RecordRow = (u64, PathBuf, u64, u64, u32, &'static str, usize, usize, u64);

/// Lists records offline: (seq, segment, offset, bytes, checksum, kind, events,
/// events_ok, now_ns) from `from_seq`, at most `limit`.
#[pyfunction]
#[pyo3(signature = (dir, from_seq = 0, limit = 1000))]
fn wal_inspect(
    py: Python<'_>,
    dir: PathBuf,
    from_seq: u64,
    limit: usize,
) -> PyResult<Vec<RecordRow>> {
    if !dir.is_dir() {
        return Err(WalFailure::new_err(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let records = py
        .detach(|| core::inspect(&dir, from_seq, limit))
        .map_err(to_py)?;
    Ok(records
        .into_iter()
        .map(|r| {
            (
                r.seq,
                r.segment,
                r.offset,
                r.bytes,
                r.checksum,
                r.kind,
                r.events,
                r.events_ok,
                r.now_ns,
            )
        })
        .collect())
}

/// Python ints (0 <= x < 2**128) as an (n, 2) uint64 id array.
#[pyfunction]
fn ids_array(py: Python<'_>, values: Vec<u128>) -> Bound<'_, PyArray2<u64>> {
    ids_out(py, values.into_iter())
}

/// An (n, 2) uint64 id array as Python ints.
#[pyfunction]
fn ids_list(array: PyReadonlyArray2<'_, u64>) -> PyResult<Vec<u128>> {
    ids("array", &array, None)
}

type CodeTable = Vec<(u16, &'static str)>;

/// Every ledger result code, by family: [("account", [(number, NAME), ...]),
/// ("transfer", ...), ("payment", ...), ("claim", ...), ("entry", ...)].
#[pyfunction]
fn ledger_result_codes() -> Vec<(&'static str, CodeTable)> {
    fn table<C: Copy>(all: &[C], num: fn(C) -> u16, name: fn(C) -> &'static str) -> CodeTable {
        all.iter().map(|c| (num(*c), name(*c))).collect()
    }
    vec![
        (
            "account",
            table(AccountResult::ALL, |c| c as u16, AccountResult::name),
        ),
        (
            "transfer",
            table(TransferResult::ALL, |c| c as u16, TransferResult::name),
        ),
        (
            "payment",
            table(PaymentResult::ALL, |c| c as u16, PaymentResult::name),
        ),
        (
            "claim",
            table(ClaimResult::ALL, |c| c as u16, ClaimResult::name),
        ),
        (
            "entry",
            table(EntryResult::ALL, |c| c as u16, EntryResult::name),
        ),
        (
            "anchor",
            table(AnchorResult::ALL, |c| c as u16, AnchorResult::name),
        ),
    ]
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Ledger>()?;
    m.add_function(wrap_pyfunction!(wal_verify, m)?)?;
    m.add_function(wrap_pyfunction!(wal_inspect, m)?)?;
    m.add_function(wrap_pyfunction!(ids_array, m)?)?;
    m.add_function(wrap_pyfunction!(ids_list, m)?)?;
    m.add_function(wrap_pyfunction!(ledger_result_codes, m)?)?;
    m.add("WalFailure", py.get_type::<WalFailure>())?;
    m.add("WalCorruption", py.get_type::<WalCorruption>())?;
    m.add("LedgerClosed", py.get_type::<LedgerClosed>())?;
    m.add("LEDGER_BATCH_MAX", core::BATCH_MAX)?;
    m.add(
        "WAL_FLUSH_BUCKETS_NS",
        crate::wal::FLUSH_BUCKETS_NS.to_vec(),
    )?;
    m.add("ACCOUNT_LINKED", account_flags::LINKED)?;
    m.add(
        "ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS",
        account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS,
    )?;
    m.add(
        "ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS",
        account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS,
    )?;
    m.add("TRANSFER_LINKED", transfer_flags::LINKED)?;
    m.add("TRANSFER_PENDING", transfer_flags::PENDING)?;
    m.add("TRANSFER_POST_PENDING", transfer_flags::POST_PENDING)?;
    m.add("TRANSFER_VOID_PENDING", transfer_flags::VOID_PENDING)?;
    Ok(())
}
