//! The PyO3 bindings: convert, release the GIL, call the core, convert back.
//!
//! Nothing else in the crate imports pyo3. Every error crosses into Python here, once,
//! as a subclass of `EngineError` (re-exported by `quickpay_engine.errors`).

mod fraud;

use std::sync::RwLock;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::money::Currency;
use crate::validate::{
    self, MethodKind, PaymentView, Plan, Purpose, RejectCode, Status, Subscriber, SubscriberTable,
    TableError, BATCH_MAX,
};

create_exception!(_engine, EngineError, PyException, "Base class of every engine error.");
create_exception!(_engine, BatchTooLarge, EngineError, "A batch is over the engine's bound.");
create_exception!(_engine, InvalidBatch, EngineError, "Columns of unequal length or an unknown enum number.");
create_exception!(_engine, CapacityExceeded, EngineError, "An engine table is at its bound.");

/// The core's errors, each mapped to one Python exception in `From<CoreError> for PyErr`.
enum CoreError {
    BatchTooLarge { len: usize, max: usize },
    ColumnLength { column: &'static str, len: usize, expected: usize },
    BadEnum { column: &'static str, row: usize, value: u8 },
    BadCurrency { row: usize, code: String },
    BadCountry { row: usize, code: String },
    Table(TableError),
    NotContiguous { column: &'static str },
}

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        match err {
            CoreError::BatchTooLarge { len, max } => {
                BatchTooLarge::new_err(format!("batch of {len} is over the bound of {max}"))
            }
            CoreError::ColumnLength { column, len, expected } => InvalidBatch::new_err(format!(
                "column {column} has {len} rows, expected {expected}"
            )),
            CoreError::BadEnum { column, row, value } => {
                InvalidBatch::new_err(format!("column {column} row {row}: unknown value {value}"))
            }
            CoreError::BadCurrency { row, code } => {
                InvalidBatch::new_err(format!("row {row}: {code:?} is not an ISO 4217 currency"))
            }
            CoreError::BadCountry { row, code } => InvalidBatch::new_err(format!(
                "row {row}: {code:?} is not an ISO 3166 alpha-2 country code"
            )),
            CoreError::Table(TableError::TableFull { max }) => {
                CapacityExceeded::new_err(format!("subscriber table is full ({max} subscribers)"))
            }
            CoreError::NotContiguous { column } => InvalidBatch::new_err(format!(
                "column {column} must be a C-contiguous array of the documented dtype"
            )),
        }
    }
}

fn check_len(column: &'static str, len: usize, expected: usize) -> Result<(), CoreError> {
    if len != expected {
        return Err(CoreError::ColumnLength { column, len, expected });
    }
    Ok(())
}

fn check_batch(len: usize) -> Result<(), CoreError> {
    if len > BATCH_MAX {
        return Err(CoreError::BatchTooLarge { len, max: BATCH_MAX });
    }
    Ok(())
}

fn slice<'a, T: numpy::Element>(
    column: &'static str,
    array: &'a PyReadonlyArray1<'_, T>,
) -> Result<&'a [T], CoreError> {
    array.as_slice().map_err(|_| CoreError::NotContiguous { column })
}

/// In time columns, "no such moment" (a SIM never swapped).
const NO_TIME: i64 = i64::MIN;

/// The engine: one per process, the single owner of the in-memory state.
#[pyclass(frozen)]
struct Engine {
    subscribers: RwLock<SubscriberTable>,
}

#[pymethods]
impl Engine {
    #[new]
    fn new() -> Engine {
        Engine { subscribers: RwLock::new(SubscriberTable::new()) }
    }

    /// Number of subscribers the engine knows.
    fn subscriber_count(&self) -> usize {
        self.subscribers.read().expect("subscriber lock poisoned").len()
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
        let swapped = slice("sim_swapped_at_s", &sim_swapped_at_s)?;
        let created = slice("created_at_s", &created_at_s)?;
        check_len("sim_swapped_at_s", swapped.len(), n)?;
        check_len("created_at_s", created.len(), n)?;
        let plans = slice("plans", &plans)?;
        let statuses = slice("statuses", &statuses)?;
        let balances = slice("balances_minor", &balances_minor)?;
        check_len("plans", plans.len(), n)?;
        check_len("statuses", statuses.len(), n)?;
        check_len("balances_minor", balances.len(), n)?;
        let mut rows = Vec::with_capacity(n);
        for (row, (account_id, msisdn)) in account_ids.into_iter().zip(msisdns).enumerate() {
            let plan = Plan::from_u8(plans[row])
                .ok_or(CoreError::BadEnum { column: "plans", row, value: plans[row] })?;
            let status = Status::from_u8(statuses[row])
                .ok_or(CoreError::BadEnum { column: "statuses", row, value: statuses[row] })?;
            let currency = Currency::from_code(&currencies[row])
                .ok_or_else(|| CoreError::BadCurrency { row, code: currencies[row].clone() })?;
            let country = match countries[row].as_bytes() {
                &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => [a, b],
                _ => return Err(CoreError::BadCountry { row, code: countries[row].clone() }.into()),
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
            let mut table = self.subscribers.write().expect("subscriber lock poisoned");
            rows.into_iter().try_for_each(|row| table.upsert(row)).map_err(CoreError::Table)
        })?;
        Ok(())
    }

    /// Records settled balances and service states (numbers as in `upsert_subscribers`).
    fn set_states(
        &self,
        py: Python<'_>,
        account_ids: Vec<String>,
        balances_minor: PyReadonlyArray1<'_, i64>,
        statuses: PyReadonlyArray1<'_, u8>,
    ) -> PyResult<()> {
        let n = account_ids.len();
        let balances = slice("balances_minor", &balances_minor)?;
        let statuses = slice("statuses", &statuses)?;
        check_len("balances_minor", balances.len(), n)?;
        check_len("statuses", statuses.len(), n)?;
        let statuses = statuses
            .iter()
            .enumerate()
            .map(|(row, &value)| {
                Status::from_u8(value).ok_or(CoreError::BadEnum { column: "statuses", row, value })
            })
            .collect::<Result<Vec<_>, _>>()?;
        py.detach(|| {
            let mut table = self.subscribers.write().expect("subscriber lock poisoned");
            for ((account_id, &balance), status) in account_ids.iter().zip(balances).zip(statuses) {
                table.set_state(account_id, balance, status);
            }
        });
        Ok(())
    }

    /// Validates a batch given as columns; returns one reject code (uint16) per row.
    #[allow(clippy::too_many_arguments)]
    fn validate<'py>(
        &self,
        py: Python<'py>,
        idempotency_keys: Vec<String>,
        account_ids: Vec<String>,
        msisdns: Vec<String>,
        amounts_minor: PyReadonlyArray1<'py, i64>,
        currencies: Vec<String>,
        purposes: PyReadonlyArray1<'py, u8>,
        methods: PyReadonlyArray1<'py, u8>,
    ) -> PyResult<Bound<'py, PyArray1<u16>>> {
        let n = idempotency_keys.len();
        check_batch(n)?;
        check_len("account_ids", account_ids.len(), n)?;
        check_len("msisdns", msisdns.len(), n)?;
        check_len("currencies", currencies.len(), n)?;
        let amounts = slice("amounts_minor", &amounts_minor)?;
        let purposes = slice("purposes", &purposes)?;
        let methods = slice("methods", &methods)?;
        check_len("amounts_minor", amounts.len(), n)?;
        check_len("purposes", purposes.len(), n)?;
        check_len("methods", methods.len(), n)?;
        let codes = py.detach(|| {
            let payments: Vec<PaymentView<'_>> = (0..n)
                .map(|i| PaymentView {
                    idempotency_key: &idempotency_keys[i],
                    account_id: &account_ids[i],
                    msisdn: &msisdns[i],
                    amount_minor: amounts[i],
                    currency: &currencies[i],
                    purpose: Purpose::from_u8(purposes[i]),
                    method: MethodKind::from_u8(methods[i]),
                })
                .collect();
            let mut out = vec![RejectCode::Ok; n];
            let table = self.subscribers.read().expect("subscriber lock poisoned");
            validate::validate_batch(&table, &payments, &mut out);
            out.into_iter().map(|code| code as u16).collect::<Vec<u16>>()
        });
        Ok(PyArray1::from_vec(py, codes))
    }
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

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Engine>()?;
    m.add_function(wrap_pyfunction!(reject_codes, m)?)?;
    m.add_function(wrap_pyfunction!(currency_exponent, m)?)?;
    m.add("BATCH_MAX", BATCH_MAX)?;
    m.add("NO_TIME", NO_TIME)?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("BatchTooLarge", py.get_type::<BatchTooLarge>())?;
    m.add("InvalidBatch", py.get_type::<InvalidBatch>())?;
    m.add("CapacityExceeded", py.get_type::<CapacityExceeded>())?;
    fraud::register(m)?;
    Ok(())
}
