//! The PyO3 bindings: convert, release the GIL, call the core, convert back.
//!
//! Nothing else in the crate imports pyo3. Every error crosses into Python here, once,
//! as a subclass of `EngineError` (re-exported by `quickpay_engine.errors`). Each area
//! keeps its bindings, including its `Engine` methods, in `python/<area>.rs`.

mod ledger;
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
    CapacityExceeded,
    EngineError,
    "An engine table is at its bound."
);

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
    m.add_class::<Engine>()?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("BatchTooLarge", py.get_type::<BatchTooLarge>())?;
    m.add("InvalidBatch", py.get_type::<InvalidBatch>())?;
    m.add("CapacityExceeded", py.get_type::<CapacityExceeded>())?;
    validate::register(m)?;
    ledger::register(m)?;
    Ok(())
}
