//! Bindings of the validation layers and the subscriber table: columns in, reject
//! codes out, the GIL released for the work.
//!
//! Text columns are fixed-width numpy byte arrays (dtype `S<n>`, one-dimensional,
//! C-contiguous): read in place, with no Python object per value. numpy pads a value
//! shorter than the width with NUL bytes; a value is the bytes before its first NUL. Numeric columns must have exactly the
//! documented dtype in native byte order. Anything else is a `ColumnError` naming the
//! column; nothing is converted silently.

use std::path::PathBuf;
use std::sync::RwLock;

use numpy::{
    IntoPyArray, PyArray1, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::prelude::*;

use super::{BatchTooLarge, CapacityExceeded, Engine, EngineError, InvalidBatch, NO_TIME};
use crate::money::Currency;
use crate::validate::{
    assertion, card, cell, formats, ConfigError, EngineConfig, MethodKind, PaymentView, Plan,
    Profile, Purpose, RejectCode, StateError, Status, Subscriber, TableError, Validator, BATCH_MAX,
    NEVER,
};

create_exception!(
    _engine,
    ColumnError,
    InvalidBatch,
    "A column has the wrong dtype, shape or memory layout."
);
create_exception!(
    _engine,
    ConfigInvalid,
    EngineError,
    "The engine configuration was refused; the message names the setting."
);
create_exception!(
    _engine,
    StateRefused,
    InvalidBatch,
    "A hold, release or settlement batch was refused; none of it was applied."
);

/// This file's errors, each mapped to one Python exception in `From<BindError> for PyErr`.
pub(super) enum BindError {
    BatchTooLarge {
        len: usize,
        max: usize,
    },
    ColumnLength {
        column: &'static str,
        len: usize,
        expected: usize,
    },
    ColumnType {
        column: &'static str,
        expected: &'static str,
    },
    BadEnum {
        column: &'static str,
        row: usize,
        value: u8,
    },
    BadCurrency {
        row: usize,
        code: String,
    },
    BadCountry {
        row: usize,
        code: String,
    },
    Table(TableError),
    State(StateError),
    Config(ConfigError),
}

impl From<BindError> for PyErr {
    fn from(err: BindError) -> PyErr {
        match err {
            BindError::BatchTooLarge { len, max } => {
                BatchTooLarge::new_err(format!("batch of {len} is over the bound of {max}"))
            }
            BindError::ColumnLength {
                column,
                len,
                expected,
            } => InvalidBatch::new_err(format!(
                "column {column} has {len} rows, expected {expected}"
            )),
            BindError::ColumnType { column, expected } => ColumnError::new_err(format!(
                "column {column} must be a one-dimensional C-contiguous numpy array of {expected}"
            )),
            BindError::BadEnum { column, row, value } => {
                InvalidBatch::new_err(format!("column {column} row {row}: unknown value {value}"))
            }
            BindError::BadCurrency { row, code } => {
                InvalidBatch::new_err(format!("row {row}: {code:?} is not an ISO 4217 currency"))
            }
            BindError::BadCountry { row, code } => InvalidBatch::new_err(format!(
                "row {row}: {code:?} is not an ISO 3166 alpha-2 country code"
            )),
            BindError::Table(TableError::TableFull { max }) => {
                CapacityExceeded::new_err(format!("subscriber table is full ({max} subscribers)"))
            }
            BindError::Table(TableError::Malformed { account_id }) => InvalidBatch::new_err(format!(
                "subscriber {account_id:?}: account_id must be 1 to 64 of [A-Za-z0-9_-] and msisdn at most 16 bytes"
            )),
            BindError::State(state) => StateRefused::new_err(match state {
                StateError::UnknownAccount { row, account_id } => {
                    format!("row {row}: no account {account_id:?}")
                }
                StateError::AmountInvalid { row, amount_minor } => {
                    format!(
                        "row {row}: amount_minor {amount_minor} is not a positive payment amount"
                    )
                }
                StateError::ReleaseExceedsHold {
                    row,
                    held_minor,
                    release_minor,
                } => {
                    format!("row {row}: releasing {release_minor} but only {held_minor} is held")
                }
                StateError::HoldsFull { row, max } => {
                    format!("row {row}: holds on the account would pass {max}")
                }
            }),
            BindError::Config(ConfigError(message)) => ConfigInvalid::new_err(message),
        }
    }
}

/// Rows per batch the load's reader hands its inserter.
const LOAD_BATCH_ROWS: usize = 4096;

/// A batch of decoded rows: each row's account id then msisdn in `bytes`, and where
/// they end.
#[derive(Default)]
struct LoadBatch {
    bytes: Vec<u8>,
    rows: Vec<(Profile, u32, u32)>,
}

/// Reads the store's subscriber rows into the table, holding its lock for the load.
/// The file is read through a memory map (a full scan then copies no page through
/// SQLite's cache) and each row's text straight from SQLite's buffers. Two threads: one
/// steps SQLite and decodes rows into batches, the other inserts them into the table
/// (its hash inserts are a third of the work, a cache miss per new id), so a start at
/// carrier scale uses two cores.
fn load_sqlite(state: &ValidationState, path: &std::path::Path) -> Result<usize, String> {
    use rusqlite::{Connection, OpenFlags};
    let text = |e: rusqlite::Error| e.to_string();
    // One thread reads this connection: no SQLite mutex per call (9% of a load's time).
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(text)?;
    db.busy_timeout(crate::store::sqlite::BUSY_TIMEOUT)
        .map_err(text)?;
    db.execute_batch("PRAGMA mmap_size = 68719476736")
        .map_err(text)?;
    // The largest rowid bounds the count without a scan: room for them all at once.
    let rows_max: i64 = db
        .query_row("SELECT coalesce(max(rowid), 0) FROM subscribers", [], |r| {
            r.get(0)
        })
        .map_err(text)?;
    let (batches, inserted) = std::sync::mpsc::sync_channel::<Result<LoadBatch, String>>(8);
    let (spent, reuse) = std::sync::mpsc::channel::<LoadBatch>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Err(err) = read_batches(&db, &batches, &reuse) {
                // The inserter may have stopped already (its own error): then no one hears.
                let _ = batches.send(Err(err));
            }
        });
        let mut validator = state.write();
        validator
            .subscribers
            .reserve(usize::try_from(rows_max).unwrap_or(0));
        let mut n = 0;
        for batch in inserted {
            let batch = batch?;
            let mut start = 0usize;
            for &(profile, id_end, msisdn_end) in &batch.rows {
                let (id_end, msisdn_end) = (id_end as usize, msisdn_end as usize);
                validator
                    .subscribers
                    .upsert_parts(
                        &batch.bytes[start..id_end],
                        &batch.bytes[id_end..msisdn_end],
                        profile,
                    )
                    .map_err(|e| format!("{e:?}"))?;
                start = msisdn_end;
            }
            n += batch.rows.len();
            let _ = spent.send(batch);
        }
        Ok(n)
    })
}

/// The load's reader: every subscriber row, decoded and checked, in batches.
fn read_batches(
    db: &rusqlite::Connection,
    out: &std::sync::mpsc::SyncSender<Result<LoadBatch, String>>,
    reuse: &std::sync::mpsc::Receiver<LoadBatch>,
) -> Result<(), String> {
    let text = |e: rusqlite::Error| e.to_string();
    let mut statement = db
        .prepare(
            "SELECT account_id, msisdn, plan, status, currency, balance_minor, country,\
             sim_swapped_at_s, created_at_s FROM subscribers",
        )
        .map_err(text)?;
    let mut rows = statement.query([]).map_err(text)?;
    let fresh = |reuse: &std::sync::mpsc::Receiver<LoadBatch>| {
        let mut batch = reuse.try_recv().unwrap_or_default();
        batch.bytes.clear();
        batch.rows.clear();
        batch.rows.reserve(LOAD_BATCH_ROWS);
        batch
    };
    let mut batch = fresh(reuse);
    while let Some(row) = rows.next().map_err(text)? {
        let bytes = |i: usize| -> Result<&[u8], String> {
            row.get_ref(i)
                .map_err(text)?
                .as_bytes()
                .map_err(|e| e.to_string())
        };
        let account_id = bytes(0)?;
        let bad = |what: &str| {
            format!(
                "subscriber {:?}: {what}",
                String::from_utf8_lossy(account_id)
            )
        };
        let plan = Plan::from_u8(row.get(2).map_err(text)?).ok_or_else(|| bad("unknown plan"))?;
        let status =
            Status::from_u8(row.get(3).map_err(text)?).ok_or_else(|| bad("unknown status"))?;
        let currency = Currency::from_bytes(bytes(4)?).ok_or_else(|| bad("unknown currency"))?;
        let country = match bytes(6)? {
            &[a, b] => [a, b],
            _ => return Err(bad("country is not two letters")),
        };
        let swapped: Option<i64> = row.get(7).map_err(text)?;
        let profile = Profile {
            plan,
            status,
            currency,
            balance_minor: row.get(5).map_err(text)?,
            country,
            sim_swapped_at_s: swapped.unwrap_or(NEVER),
            created_at_s: row.get(8).map_err(text)?,
        };
        let end = |bytes: &Vec<u8>| u32::try_from(bytes.len()).map_err(|_| bad("batch too large"));
        batch.bytes.extend_from_slice(account_id);
        let id_end = end(&batch.bytes)?;
        batch.bytes.extend_from_slice(bytes(1)?);
        let msisdn_end = end(&batch.bytes)?;
        batch.rows.push((profile, id_end, msisdn_end));
        if batch.rows.len() == LOAD_BATCH_ROWS {
            let full = std::mem::replace(&mut batch, fresh(reuse));
            if out.send(Ok(full)).is_err() {
                return Ok(()); // the inserter stopped, with its own error
            }
        }
    }
    if !batch.rows.is_empty() {
        let _ = out.send(Ok(batch));
    }
    Ok(())
}

fn check_len(column: &'static str, len: usize, expected: usize) -> Result<(), BindError> {
    if len != expected {
        return Err(BindError::ColumnLength {
            column,
            len,
            expected,
        });
    }
    Ok(())
}

/// A fixed-width byte-string column read in place.
#[derive(Clone, Copy)]
pub(super) struct StrColumn<'a> {
    data: &'a [u8],
    width: usize,
}

impl<'a> StrColumn<'a> {
    /// Checks dtype `S<n>`, one dimension, C order and the row count, and borrows the
    /// array's memory.
    pub(super) fn new(
        column: &'static str,
        obj: &'a Bound<'_, PyAny>,
        rows: usize,
    ) -> Result<StrColumn<'a>, BindError> {
        let bad = || BindError::ColumnType {
            column,
            expected: "fixed-width bytes (dtype 'S<n>')",
        };
        let array = obj.cast::<PyUntypedArray>().map_err(|_| bad())?;
        let dtype = array.dtype();
        if array.ndim() != 1 || dtype.kind() != b'S' || !array.is_c_contiguous() {
            return Err(bad());
        }
        check_len(column, array.len(), rows)?;
        let width = dtype.itemsize();
        // SAFETY: the array is one-dimensional, C-contiguous and of a plain byte dtype,
        // so its buffer is `len * itemsize` initialised bytes starting at `data`. The
        // borrow is tied to `obj`, which holds a reference to the array for as long as
        // the slice lives, so the buffer is not freed; numpy refuses to resize an array
        // that other references can see. A Python thread writing into the array while
        // the GIL is released would race with this read (the same holds for every numpy
        // binding that releases the GIL); the engine's own callers build fresh arrays.
        let data = unsafe {
            let raw = (*array.as_array_ptr()).fields.data as *const u8;
            if rows * width == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(raw, rows * width)
            }
        };
        Ok(StrColumn { data, width })
    }

    /// Row `i`: the bytes before its first NUL. numpy pads with NULs (and strips
    /// only trailing ones on read); we end a value at its first NUL, C-string style,
    /// so an unused wide cell costs one byte. The two readings differ only for a
    /// value with an embedded NUL, which no field rule accepts and which
    /// `text_column` never produces (it maps NUL to DEL, also refused everywhere).
    #[inline]
    pub(super) fn get(&self, i: usize) -> &'a [u8] {
        let bytes = &self.data[i * self.width..(i + 1) * self.width];
        &bytes[..cell::first_nul(bytes)]
    }
}

/// A numeric column of exactly dtype `T`, read-only and contiguous.
pub(super) fn typed<'py, T: numpy::Element>(
    column: &'static str,
    obj: &Bound<'py, PyAny>,
    expected: &'static str,
    rows: usize,
) -> Result<PyReadonlyArray1<'py, T>, BindError> {
    let bad = || BindError::ColumnType { column, expected };
    let array = obj.cast::<PyArray1<T>>().map_err(|_| bad())?;
    let readonly = array.try_readonly().map_err(|_| bad())?;
    if !readonly.is_c_contiguous() {
        return Err(bad());
    }
    check_len(column, readonly.len(), rows)?;
    Ok(readonly)
}

fn as_slice<'a, T: numpy::Element>(
    column: &'static str,
    array: &'a PyReadonlyArray1<'_, T>,
) -> Result<&'a [T], BindError> {
    array.as_slice().map_err(|_| BindError::ColumnType {
        column,
        expected: "a C-contiguous array",
    })
}

/// The validation state the `Engine` pyclass holds.
pub(crate) struct ValidationState {
    validator: RwLock<Validator>,
}

impl ValidationState {
    /// From the configuration JSON; `None` takes every default.
    pub(crate) fn new(config_json: Option<&str>) -> PyResult<ValidationState> {
        let config = match config_json {
            Some(json) => EngineConfig::from_json(json).map_err(BindError::Config)?,
            None => EngineConfig::default(),
        };
        let validator = Validator::new(&config).map_err(BindError::Config)?;
        Ok(ValidationState {
            validator: RwLock::new(validator),
        })
    }

    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, Validator> {
        self.validator.read().expect("validator lock poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Validator> {
        self.validator.write().expect("validator lock poisoned")
    }
}

/// `(account_id, amount)` rows from a list of str and an int64 column.
fn account_amounts(account_ids: &[String], amounts: &[i64]) -> Vec<(String, i64)> {
    account_ids
        .iter()
        .cloned()
        .zip(amounts.iter().copied())
        .collect()
}

#[pymethods]
impl Engine {
    /// Number of subscribers the engine knows.
    fn subscriber_count(&self) -> usize {
        self.validation.read().subscribers.len()
    }

    /// Inserts or replaces subscribers, given as columns of equal length.
    #[allow(clippy::too_many_arguments)]
    fn upsert_subscribers(
        &self,
        py: Python<'_>,
        account_ids: Vec<String>,
        msisdns: Vec<String>,
        plans: PyReadonlyArray1<'_, u8>,
        statuses: PyReadonlyArray1<'_, u8>,
        currencies: Vec<String>,
        balances_minor: PyReadonlyArray1<'_, i64>,
        countries: Vec<String>,
        sim_swapped_at_s: PyReadonlyArray1<'_, i64>,
        created_at_s: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let n = account_ids.len();
        check_len("msisdns", msisdns.len(), n)?;
        check_len("currencies", currencies.len(), n)?;
        check_len("countries", countries.len(), n)?;
        let swapped = as_slice("sim_swapped_at_s", &sim_swapped_at_s)?;
        let created = as_slice("created_at_s", &created_at_s)?;
        let plans = as_slice("plans", &plans)?;
        let statuses = as_slice("statuses", &statuses)?;
        let balances = as_slice("balances_minor", &balances_minor)?;
        check_len("sim_swapped_at_s", swapped.len(), n)?;
        check_len("created_at_s", created.len(), n)?;
        check_len("plans", plans.len(), n)?;
        check_len("statuses", statuses.len(), n)?;
        check_len("balances_minor", balances.len(), n)?;
        let mut rows = Vec::with_capacity(n);
        for (row, (account_id, msisdn)) in account_ids.into_iter().zip(msisdns).enumerate() {
            let plan = Plan::from_u8(plans[row]).ok_or(BindError::BadEnum {
                column: "plans",
                row,
                value: plans[row],
            })?;
            let status = Status::from_u8(statuses[row]).ok_or(BindError::BadEnum {
                column: "statuses",
                row,
                value: statuses[row],
            })?;
            let currency =
                Currency::from_code(&currencies[row]).ok_or_else(|| BindError::BadCurrency {
                    row,
                    code: currencies[row].clone(),
                })?;
            let country = match countries[row].as_bytes() {
                &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => [a, b],
                _ => {
                    return Err(BindError::BadCountry {
                        row,
                        code: countries[row].clone(),
                    }
                    .into())
                }
            };
            rows.push(Subscriber {
                account_id,
                msisdn,
                plan,
                status,
                currency,
                balance_minor: balances[row],
                country,
                sim_swapped_at_s: (swapped[row] != NO_TIME).then_some(swapped[row]),
                created_at_s: created[row],
            });
        }
        py.detach(|| {
            let mut validator = self.validation.write();
            rows.into_iter()
                .try_for_each(|row| validator.subscribers.upsert(row))
                .map_err(BindError::Table)
        })?;
        Ok(())
    }

    /// Records settled balances and service states (numbers as in
    /// `upsert_subscribers`), all or nothing.
    fn set_states(
        &self,
        py: Python<'_>,
        account_ids: Vec<String>,
        balances_minor: PyReadonlyArray1<'_, i64>,
        statuses: PyReadonlyArray1<'_, u8>,
    ) -> PyResult<()> {
        let n = account_ids.len();
        let balances = as_slice("balances_minor", &balances_minor)?;
        let statuses = as_slice("statuses", &statuses)?;
        check_len("balances_minor", balances.len(), n)?;
        check_len("statuses", statuses.len(), n)?;
        let statuses = statuses
            .iter()
            .enumerate()
            .map(|(row, &value)| {
                Status::from_u8(value).ok_or(BindError::BadEnum {
                    column: "statuses",
                    row,
                    value,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        py.detach(|| {
            let rows: Vec<(&str, i64, Status)> = (0..n)
                .map(|i| (account_ids[i].as_str(), balances[i], statuses[i]))
                .collect();
            self.validation
                .write()
                .subscribers
                .set_states(&rows)
                .map_err(BindError::State)
        })?;
        Ok(())
    }

    /// Puts holds on the accounts' credit (carrier-balance payments in flight), all or
    /// nothing; `validate` subtracts them from the available credit.
    fn reserve_holds(
        &self,
        py: Python<'_>,
        account_ids: Vec<String>,
        amounts_minor: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let amounts = as_slice("amounts_minor", &amounts_minor)?;
        check_len("amounts_minor", amounts.len(), account_ids.len())?;
        let rows = account_amounts(&account_ids, amounts);
        py.detach(|| {
            let rows: Vec<(&str, i64)> = rows.iter().map(|(a, m)| (a.as_str(), *m)).collect();
            self.validation
                .write()
                .subscribers
                .reserve_holds(&rows)
                .map_err(BindError::State)
        })?;
        Ok(())
    }

    /// Removes holds (the payment settled, failed or was voided), all or nothing.
    fn release_holds(
        &self,
        py: Python<'_>,
        account_ids: Vec<String>,
        amounts_minor: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let amounts = as_slice("amounts_minor", &amounts_minor)?;
        check_len("amounts_minor", amounts.len(), account_ids.len())?;
        let rows = account_amounts(&account_ids, amounts);
        py.detach(|| {
            let rows: Vec<(&str, i64)> = rows.iter().map(|(a, m)| (a.as_str(), *m)).collect();
            self.validation
                .write()
                .subscribers
                .release_holds(&rows)
                .map_err(BindError::State)
        })?;
        Ok(())
    }

    /// Loads every subscriber of the SQLite store at `path` into the table (inserting or
    /// replacing, as `upsert_subscribers`), straight from the file: no Python object per
    /// subscriber. Returns how many rows were read. Runs without the GIL.
    fn load_subscribers_sqlite(&self, py: Python<'_>, path: PathBuf) -> PyResult<usize> {
        py.detach(|| load_sqlite(&self.validation, &path))
            .map_err(|err| {
                EngineError::new_err(format!(
                    "loading subscribers from {}: {err}",
                    path.display()
                ))
            })
    }

    /// The fraud features only the carrier knows, for a batch of accounts: (plans,
    /// countries, sim_swapped_at_s, created_at_s), in order; an unknown account has plan
    /// 0, country "", `NO_TIME` and 0.
    #[allow(clippy::type_complexity)]
    fn subscriber_profiles<'py>(
        &self,
        py: Python<'py>,
        account_ids: Vec<String>,
    ) -> (
        Bound<'py, PyArray1<u8>>,
        Vec<String>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
    ) {
        let n = account_ids.len();
        let (mut plans, mut countries, mut swapped, mut created) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        {
            let validator = self.validation.read();
            for account_id in &account_ids {
                match validator.subscribers.entry(account_id.as_bytes()) {
                    Some(entry) => {
                        let p = &entry.subscriber;
                        plans.push(p.plan as u8);
                        countries.push(String::from_utf8_lossy(&p.country).into_owned());
                        swapped.push(p.sim_swapped_at_s);
                        created.push(p.created_at_s);
                    }
                    None => {
                        plans.push(0);
                        countries.push(String::new());
                        swapped.push(NO_TIME);
                        created.push(0);
                    }
                }
            }
        }
        (
            plans.into_pyarray(py),
            countries,
            swapped.into_pyarray(py),
            created.into_pyarray(py),
        )
    }

    /// Bytes the subscriber table holds (its allocations), for the memory budget.
    fn subscriber_table_bytes(&self) -> usize {
        self.validation.read().subscribers.heap_bytes()
    }

    /// The amount on hold for an account, in minor units; None for an unknown account.
    fn held_minor(&self, account_id: &str) -> Option<i64> {
        self.validation
            .read()
            .subscribers
            .entry(account_id.as_bytes())
            .map(|e| e.held_minor)
    }

    /// Counts settled payments against the daily and monthly limits, all or nothing.
    /// `settled_at_s` is each settlement's time (Unix seconds) from the caller's clock.
    fn record_settled(
        &self,
        py: Python<'_>,
        account_ids: Vec<String>,
        amounts_minor: PyReadonlyArray1<'_, i64>,
        settled_at_s: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let amounts = as_slice("amounts_minor", &amounts_minor)?;
        let times = as_slice("settled_at_s", &settled_at_s)?;
        check_len("amounts_minor", amounts.len(), account_ids.len())?;
        check_len("settled_at_s", times.len(), account_ids.len())?;
        py.detach(|| {
            let rows: Vec<(&str, i64, i64)> = (0..account_ids.len())
                .map(|i| (account_ids[i].as_str(), amounts[i], times[i]))
                .collect();
            self.validation
                .write()
                .subscribers
                .record_settled(&rows)
                .map_err(BindError::State)
        })?;
        Ok(())
    }

    /// Validates a batch given as columns at the clock `now_s` (Unix seconds); returns
    /// one reject code (uint16) per row, 0 for passed. See the stub for the dtypes.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        idempotency_keys, account_ids, msisdns, amounts_minor, currencies, purposes, methods,
        card_pans, card_expiry_months, card_expiry_years, wallet_providers, wallet_ids, ibans,
        channels, device_ids, ips, assertions, *, now_s
    ))]
    fn validate<'py>(
        &self,
        py: Python<'py>,
        idempotency_keys: &Bound<'py, PyAny>,
        account_ids: &Bound<'py, PyAny>,
        msisdns: &Bound<'py, PyAny>,
        amounts_minor: &Bound<'py, PyAny>,
        currencies: &Bound<'py, PyAny>,
        purposes: &Bound<'py, PyAny>,
        methods: &Bound<'py, PyAny>,
        card_pans: &Bound<'py, PyAny>,
        card_expiry_months: &Bound<'py, PyAny>,
        card_expiry_years: &Bound<'py, PyAny>,
        wallet_providers: &Bound<'py, PyAny>,
        wallet_ids: &Bound<'py, PyAny>,
        ibans: &Bound<'py, PyAny>,
        channels: &Bound<'py, PyAny>,
        device_ids: &Bound<'py, PyAny>,
        ips: &Bound<'py, PyAny>,
        assertions: &Bound<'py, PyAny>,
        now_s: i64,
    ) -> PyResult<Bound<'py, PyArray1<u16>>> {
        let n = idempotency_keys.len()?;
        if n > BATCH_MAX {
            return Err(BindError::BatchTooLarge {
                len: n,
                max: BATCH_MAX,
            }
            .into());
        }
        let amounts = typed::<i64>("amounts_minor", amounts_minor, "int64", n)?;
        let purposes = typed::<u8>("purposes", purposes, "uint8", n)?;
        let methods = typed::<u8>("methods", methods, "uint8", n)?;
        let months = typed::<u32>("card_expiry_months", card_expiry_months, "uint32", n)?;
        let years = typed::<u32>("card_expiry_years", card_expiry_years, "uint32", n)?;
        let (amounts, purposes, methods) = (
            amounts.as_slice()?,
            purposes.as_slice()?,
            methods.as_slice()?,
        );
        let (months, years) = (months.as_slice()?, years.as_slice()?);
        let text = |column, obj| StrColumn::new(column, obj, n);
        let keys = text("idempotency_keys", idempotency_keys)?;
        let accounts = text("account_ids", account_ids)?;
        let msisdns = text("msisdns", msisdns)?;
        let currencies = text("currencies", currencies)?;
        let pans = text("card_pans", card_pans)?;
        let providers = text("wallet_providers", wallet_providers)?;
        let wallet_ids = text("wallet_ids", wallet_ids)?;
        let ibans = text("ibans", ibans)?;
        let channels = text("channels", channels)?;
        let devices = text("device_ids", device_ids)?;
        let ips = text("ips", ips)?;
        let assertions = text("assertions", assertions)?;
        let codes = py.detach(|| {
            let validator = self.validation.read();
            let mut out = vec![RejectCode::Ok; n];
            // A method's own fields are read only for that method: no layer looks at
            // the card of a wallet payment, and the view's contract is that a field
            // that does not apply is empty. Skipping them saves reading cells (the
            // column memory is much of a row's cost) for every payment.
            let view = |i: usize| {
                let method = MethodKind::from_u8(methods[i]);
                let (is_card, is_wallet) =
                    (method == MethodKind::Card, method == MethodKind::Wallet);
                PaymentView {
                    idempotency_key: keys.get(i),
                    account_id: accounts.get(i),
                    msisdn: msisdns.get(i),
                    amount_minor: amounts[i],
                    currency: currencies.get(i),
                    purpose: Purpose::from_u8(purposes[i]),
                    method,
                    card_pan: if is_card { pans.get(i) } else { &[] },
                    card_expiry_month: months[i],
                    card_expiry_year: years[i],
                    wallet_provider: if is_wallet { providers.get(i) } else { &[] },
                    wallet_id: if is_wallet { wallet_ids.get(i) } else { &[] },
                    iban: if method == MethodKind::BankAccount {
                        ibans.get(i)
                    } else {
                        &[]
                    },
                    channel: channels.get(i),
                    device_id: devices.get(i),
                    ip: ips.get(i),
                    assertion: assertions.get(i),
                }
            };
            validator.validate_rows(n, now_s, view, &mut out);
            out.into_iter()
                .map(|code| code as u16)
                .collect::<Vec<u16>>()
        });
        Ok(PyArray1::from_vec(py, codes))
    }

    /// Replaces the configuration (limits, matrix, block list, assertion keys) at
    /// once; subscribers, holds and usage counters are kept. How keys rotate without
    /// a restart. On error the old configuration stays in force.
    fn configure(&self, py: Python<'_>, config_json: &str) -> PyResult<()> {
        let config = EngineConfig::from_json(config_json).map_err(BindError::Config)?;
        py.detach(|| self.validation.write().configure(&config))
            .map_err(BindError::Config)?;
        Ok(())
    }

    /// The configuration in force, as JSON (defaults filled in).
    fn config_json(&self) -> String {
        self.validation.read().config.to_json()
    }
}

/// Runs one field check over a byte-string column, GIL released.
fn check_column<'py>(
    py: Python<'py>,
    column: &'static str,
    values: &Bound<'py, PyAny>,
    check: fn(&[u8]) -> Option<RejectCode>,
) -> PyResult<Bound<'py, PyArray1<u16>>> {
    let n = values.len()?;
    let values = StrColumn::new(column, values, n)?;
    let codes = py.detach(|| {
        (0..n)
            .map(|i| check(values.get(i)).map_or(0, |code| code as u16))
            .collect::<Vec<_>>()
    });
    Ok(PyArray1::from_vec(py, codes))
}

/// The MSISDN format check alone over a column: 0 or the reject code, per row.
#[pyfunction]
fn check_msisdns<'py>(
    py: Python<'py>,
    msisdns: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<u16>>> {
    check_column(py, "msisdns", msisdns, formats::check_msisdn)
}

/// The card number check alone (digits, Luhn, scheme, length) over a column.
#[pyfunction]
fn check_pans<'py>(
    py: Python<'py>,
    pans: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<u16>>> {
    check_column(py, "pans", pans, card::check_pan)
}

/// The IBAN check alone (charset, country, length, structure, mod 97-10) over a column.
#[pyfunction]
fn check_ibans<'py>(
    py: Python<'py>,
    ibans: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<u16>>> {
    check_column(py, "ibans", ibans, formats::check_iban)
}

/// Every reject code as (number, name, field, text), for the Python side's tables.
#[pyfunction]
fn reject_codes() -> Vec<(u16, &'static str, &'static str, &'static str)> {
    RejectCode::ALL
        .iter()
        .map(|&code| (code as u16, code.name(), code.field(), code.text()))
        .collect()
}

/// The ISO 4217 minor-unit exponent of a currency, or None when it is not one.
#[pyfunction]
fn currency_exponent(code: &str) -> Option<u8> {
    Currency::from_code(code).map(|c| c.exponent())
}

/// The ISO 4217 numeric code of a currency (978 for EUR), or None when it is not one.
#[pyfunction]
fn currency_numeric(code: &str) -> Option<u16> {
    Currency::from_code(code).map(|c| c.numeric())
}

/// The default engine configuration, as JSON.
#[pyfunction]
fn default_engine_config() -> String {
    EngineConfig::default().to_json()
}

/// A subscriber assertion token signed with `secret` under `key_id`.
#[pyfunction]
fn sign_assertion(
    key_id: &str,
    secret: &[u8],
    account_id: &str,
    msisdn: &str,
    expires_at_s: i64,
) -> String {
    assertion::sign(key_id, secret, account_id, msisdn, expires_at_s)
}

/// Adds this file's functions, constants and exceptions to `_engine`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(reject_codes, m)?)?;
    m.add_function(wrap_pyfunction!(currency_exponent, m)?)?;
    m.add_function(wrap_pyfunction!(currency_numeric, m)?)?;
    m.add_function(wrap_pyfunction!(default_engine_config, m)?)?;
    m.add_function(wrap_pyfunction!(sign_assertion, m)?)?;
    m.add_function(wrap_pyfunction!(check_msisdns, m)?)?;
    m.add_function(wrap_pyfunction!(check_pans, m)?)?;
    m.add_function(wrap_pyfunction!(check_ibans, m)?)?;
    m.add("BATCH_MAX", BATCH_MAX)?;
    m.add("NO_TIME", NO_TIME)?;
    m.add("ColumnError", py.get_type::<ColumnError>())?;
    m.add("ConfigInvalid", py.get_type::<ConfigInvalid>())?;
    m.add("StateRefused", py.get_type::<StateRefused>())?;
    Ok(())
}
