//! The PyO3 bindings: convert, release the GIL, call the core, convert back.
//!
//! Nothing else in the crate imports pyo3. Every error crosses into Python here, once,
//! as a subclass of `EngineError` (re-exported by `quickpay_engine.errors`). Each area
//! keeps its bindings, including its `Engine` methods, in `python/<area>.rs`.

mod completions;
mod fraud;
mod http;
mod ids;
mod ledger;
mod proto;
mod reconcile;
mod requests;
mod saga;
mod sale;
mod sim;
mod store;
mod validate;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};

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

/// A new instance of `cls` with no field set: a frozen dataclass's fields are then set
/// as its own `__init__` sets them, through `object.__setattr__` (`set_field`). How the
/// core builds the domain's objects (intents, fraud assessments) without running an
/// `__init__` per object: the caller sets every field.
pub(crate) fn blank<'py>(py: Python<'py>, cls: &Py<PyType>) -> PyResult<Bound<'py, PyAny>> {
    let tp = cls.bind(py).as_type_ptr();
    // SAFETY: `tp` is a live type object (held by `cls`); tp_alloc returns a new
    // reference or NULL with an exception set, which from_owned_ptr_or_err turns into
    // an error.
    unsafe {
        let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        Bound::from_owned_ptr_or_err(py, alloc(tp, 0))
    }
}

/// `obj`'s attribute `name`, which must be a str (a TypeError names the type if not).
pub(crate) fn str_attr<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyString>> {
    Ok(obj.getattr(name)?.cast_into::<PyString>()?)
}

pub(crate) fn set_field(
    obj: &Bound<'_, PyAny>,
    name: &Py<PyString>,
    value: Bound<'_, PyAny>,
) -> PyResult<()> {
    // SAFETY: all three are live objects; PyObject_GenericSetAttr borrows them and
    // returns -1 with an exception set on failure.
    let done = unsafe { ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) };
    if done < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    Ok(())
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
    completions::register(m)?;
    reconcile::register(m)?;
    requests::register(m)?;
    fraud::register(m)?;
    http::register(m)?;
    m.add_class::<sale::Sales>()?;
    proto::register(m)?;
    ids::register(m)?;
    store::register(m)?;
    Ok(())
}
