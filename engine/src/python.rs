//! The PyO3 bindings: convert, release the GIL, call the core, convert back.
//!
//! Nothing else in the crate imports pyo3. Every error crosses into Python here, once,
//! as a subclass of `EngineError` (re-exported by `quickpay_engine.errors`). Each area
//! keeps its bindings, including its `Engine` methods, in `python/<area>.rs`.

mod fraud;
mod http;
mod ledger;
mod proto;
mod reconcile;
mod sale;
mod sim;
mod store;
mod validate;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _engine,
    EngineError,
    PyException,
    "Base class of every engine error."
);
create_exception!(
    _engine,
    BatchTooLarge,
    EngineError,
    "A batch is over the engine's bound."
);
create_exception!(
    _engine,
    InvalidBatch,
    EngineError,
    "Columns of unequal length or an unknown enum number."
);
create_exception!(
    _engine,
    RequestUndecodable,
    EngineError,
    "The request bytes are not the contract's message; the message names the field."
);
create_exception!(
    _engine,
    CapacityExceeded,
    EngineError,
    "An engine table is at its bound."
);

/// In time columns, "no such moment" (a SIM never swapped).
const NO_TIME: i64 = i64::MIN;

/// Column errors shared by the areas' bindings, each mapped to one Python exception.
enum CoreError {
    BatchTooLarge {
        len: usize,
        max: usize,
    },
    ColumnLength {
        column: &'static str,
        len: usize,
        expected: usize,
    },
    BadEnum {
        column: &'static str,
        row: usize,
        value: u8,
    },
    BadCountry {
        row: usize,
        code: String,
    },
    NotContiguous {
        column: &'static str,
    },
    NotUtf8 {
        column: &'static str,
        row: usize,
    },
    RowOutOfRange {
        row: i64,
        len: usize,
    },
}

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        match err {
            CoreError::BatchTooLarge { len, max } => {
                BatchTooLarge::new_err(format!("batch of {len} is over the bound of {max}"))
            }
            CoreError::ColumnLength {
                column,
                len,
                expected,
            } => InvalidBatch::new_err(format!(
                "column {column} has {len} rows, expected {expected}"
            )),
            CoreError::BadEnum { column, row, value } => {
                InvalidBatch::new_err(format!("column {column} row {row}: unknown value {value}"))
            }
            CoreError::BadCountry { row, code } => InvalidBatch::new_err(format!(
                "row {row}: {code:?} is not an ISO 3166 alpha-2 country code"
            )),
            CoreError::NotContiguous { column } => InvalidBatch::new_err(format!(
                "column {column} must be a C-contiguous array of the documented dtype"
            )),
            CoreError::NotUtf8 { column, row } => {
                InvalidBatch::new_err(format!("column {column} row {row}: not UTF-8"))
            }
            CoreError::RowOutOfRange { row, len } => {
                InvalidBatch::new_err(format!("rows: {row} is not a row of columns of {len}"))
            }
        }
    }
}

/// A column of `len` rows where `expected` were due is refused, naming the column.
fn check_len(column: &'static str, len: usize, expected: usize) -> Result<(), CoreError> {
    if len != expected {
        return Err(CoreError::ColumnLength {
            column,
            len,
            expected,
        });
    }
    Ok(())
}

/// A batch over the engine's bound is refused before any work.
fn check_batch(len: usize) -> Result<(), CoreError> {
    if len > crate::validate::BATCH_MAX {
        return Err(CoreError::BatchTooLarge {
            len,
            max: crate::validate::BATCH_MAX,
        });
    }
    Ok(())
}

/// A numpy column as a slice; a non-contiguous array is refused, never silently copied.
fn slice<'a, T: numpy::Element>(
    column: &'static str,
    array: &'a numpy::PyReadonlyArray1<'_, T>,
) -> Result<&'a [T], CoreError> {
    array
        .as_slice()
        .map_err(|_| CoreError::NotContiguous { column })
}

/// The engine: one per process, the single owner of the in-memory state.
#[pyclass(frozen)]
struct Engine {
    validation: validate::ValidationState,
}

#[pymethods]
impl Engine {
    /// `config_json`: the engine configuration (see `default_engine_config()`); every
    /// field is optional and unknown fields are refused.
    #[new]
    #[pyo3(signature = (config_json=None))]
    fn new(config_json: Option<&str>) -> PyResult<Engine> {
        Ok(Engine {
            validation: validate::ValidationState::new(config_json)?,
        })
    }
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // The core's own version (engine/Cargo.toml), for `quickpay --version`: the wheel's
    // version says which package is installed, this one which core it was built from.
    m.add("ENGINE_VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Engine>()?;
    m.add_class::<sim::GatewaySim>()?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("BatchTooLarge", py.get_type::<BatchTooLarge>())?;
    m.add("InvalidBatch", py.get_type::<InvalidBatch>())?;
    m.add("CapacityExceeded", py.get_type::<CapacityExceeded>())?;
    m.add("RequestUndecodable", py.get_type::<RequestUndecodable>())?;
    validate::register(m)?;
    ledger::register(m)?;
    reconcile::register(m)?;
    fraud::register(m)?;
    http::register(m)?;
    proto::register(m)?;
    store::register(m)?;
    Ok(())
}
