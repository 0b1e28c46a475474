//! Bindings of the reconciliation core: `SettlementReport` (a gateway report parsed
//! through a column mapping, held in the engine) and its `reconcile` against billed
//! captures. The GIL is released while the text is parsed and while rows are matched.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{EngineError, InvalidBatch};
use crate::reconcile::{
    self as core, AmountUnit, Capture, Mapping, Outcome, Row, RowKind, RowStatus, State, Window,
    FIELDS,
};

create_exception!(
    _engine,
    ReportInvalid,
    EngineError,
    "A settlement report row cannot be read; the message names its line."
);

const DAY_US: i64 = 86_400_000_000;

/// One row as Python sees it: (line, gateway_reference, merchant_reference,
/// amount_minor, currency, type, status, captured_at_us).
type RowTuple = (u64, String, String, i64, String, String, String, i64);

/// One discrepancy as Python sees it: (discrepancy_id, category, payment_id,
/// gateway_reference, gateway_amount_minor, billing_amount_minor, currency, detail).
type DiscrepancyTuple = (
    String,
    &'static str,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    String,
);

/// A gateway settlement report, parsed and held by the engine.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct SettlementReport {
    rows: Vec<Row>,
}

#[pymethods]
impl SettlementReport {
    /// Parses report text; `columns` names the CSV column of each field in the order
    /// of `report_fields()`, `amount_unit` is "minor" or "major", `values` maps the
    /// gateway's words to ours. Raises `ReportInvalid` naming the first bad line.
    #[staticmethod]
    fn parse(
        py: Python<'_>,
        text: &str,
        columns: Vec<String>,
        amount_unit: &str,
        values: HashMap<String, String>,
    ) -> PyResult<SettlementReport> {
        let columns: [String; 7] = columns.try_into().map_err(|got: Vec<String>| {
            InvalidBatch::new_err(format!("columns names {} fields, expected 7", got.len()))
        })?;
        let amount_unit = match amount_unit {
            "minor" => AmountUnit::Minor,
            "major" => AmountUnit::Major,
            other => {
                let message = format!("amount_unit must be 'minor' or 'major', not {other:?}");
                return Err(InvalidBatch::new_err(message));
            }
        };
        let mapping = Mapping {
            columns,
            amount_unit,
            values,
        };
        let rows = py
            .detach(|| core::read_rows(text, &mapping))
            .map_err(|err| ReportInvalid::new_err(err.to_string()))?;
        Ok(SettlementReport { rows })
    }

    /// A report from rows already in our terms (tuples as `rows()` returns them).
    #[staticmethod]
    fn from_rows(rows: Vec<RowTuple>) -> PyResult<SettlementReport> {
        let rows = rows
            .into_iter()
            .map(
                |(line, reference, merchant, amount, currency, kind, status, at)| {
                    let kind = match kind.as_str() {
                        "CAPTURE" => RowKind::Capture,
                        "REFUND" => RowKind::Refund,
                        _ => {
                            return Err(InvalidBatch::new_err(format!(
                                "line {line}: type {kind:?}"
                            )))
                        }
                    };
                    let status = match status.as_str() {
                        "SETTLED" => RowStatus::Settled,
                        "VOIDED" => RowStatus::Voided,
                        _ => {
                            let message = format!("line {line}: status {status:?}");
                            return Err(InvalidBatch::new_err(message));
                        }
                    };
                    Ok(Row {
                        line,
                        gateway_reference: reference,
                        merchant_reference: merchant,
                        amount_minor: amount,
                        currency,
                        kind,
                        status,
                        captured_at_us: at,
                    })
                },
            )
            .collect::<PyResult<_>>()?;
        Ok(SettlementReport { rows })
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// The rows as tuples (line, gateway_reference, merchant_reference, amount_minor,
    /// currency, type, status, captured_at_us).
    fn rows(&self) -> Vec<RowTuple> {
        self.rows
            .iter()
            .map(|r| {
                (
                    r.line,
                    r.gateway_reference.clone(),
                    r.merchant_reference.clone(),
                    r.amount_minor,
                    r.currency.clone(),
                    r.kind.name().to_string(),
                    r.status.name().to_string(),
                    r.captured_at_us,
                )
            })
            .collect()
    }

    /// The UTC day (days since 1970-01-01) most captures fall on, the later day on a
    /// tie; None for a report without rows.
    fn business_day(&self) -> Option<i64> {
        let mut days: HashMap<i64, u64> = HashMap::new();
        for row in &self.rows {
            *days
                .entry(row.captured_at_us.div_euclid(DAY_US))
                .or_default() += 1;
        }
        days.into_iter()
            .max_by_key(|&(day, count)| (count, day))
            .map(|(day, _)| day)
    }

    /// Matches the rows against `billed` (objects with payment_id, gateway_reference,
    /// amount_minor, currency, settled_at_us, refunded); the outcome stays in the
    /// engine (`Reconciled`), its discrepancies in the order found.
    #[allow(clippy::too_many_arguments)]
    fn reconcile(
        &self,
        py: Python<'_>,
        gateway: String,
        business_day: String,
        start_us: i64,
        end_us: i64,
        tolerance_s: i64,
        billed: &Bound<'_, PyAny>,
    ) -> PyResult<Reconciled> {
        let captures = captures(py, billed)?;
        let window = Window {
            gateway,
            business_day,
            start_us,
            end_us,
            tolerance_us: tolerance_s.saturating_mul(1_000_000),
        };
        let outcome = py.detach(|| core::reconcile(&window, &self.rows, &captures));
        let states = Mutex::new(vec![None; outcome.discrepancies.len()]);
        Ok(Reconciled { outcome, states })
    }
}

/// A reconciliation's outcome held by the engine: its discrepancies are written to the
/// store (`SqliteWriter.record_discrepancies`, or `set_states` after another store
/// wrote them) and encoded as the Reconcile reply without a Python object per row;
/// `discrepancies` gives them as tuples where a caller wants them (the CLI).
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct Reconciled {
    pub(crate) outcome: Outcome,
    /// Each discrepancy's investigation state, once the store has it.
    pub(crate) states: Mutex<Vec<Option<State>>>,
}

impl Reconciled {
    /// `start..stop` checked against the discrepancies (stop None: to the end).
    pub(crate) fn range(&self, start: usize, stop: Option<usize>) -> PyResult<(usize, usize)> {
        let len = self.outcome.discrepancies.len();
        let stop = stop.unwrap_or(len).min(len);
        if start > stop {
            let message = format!("start {start} is past stop {stop} ({len} discrepancies)");
            return Err(PyValueError::new_err(message));
        }
        Ok((start, stop))
    }

    pub(crate) fn put_states(&self, start: usize, found: Vec<State>) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, state) in states[start..].iter_mut().zip(found) {
            *slot = Some(state);
        }
    }

    fn all_states(&self) -> PyResult<Vec<State>> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states
            .iter()
            .enumerate()
            .map(|(k, state)| {
                state.clone().ok_or_else(|| {
                    let id = &self.outcome.discrepancies[k].id;
                    PyValueError::new_err(format!("discrepancy {id} has no state: not recorded"))
                })
            })
            .collect()
    }
}

#[pymethods]
impl Reconciled {
    /// Report rows read.
    #[getter]
    fn records(&self) -> u64 {
        self.outcome.records
    }

    /// Rows (and voided captures) that agree with billing.
    #[getter]
    fn matched(&self) -> u64 {
        self.outcome.matched
    }

    /// How many discrepancies.
    fn __len__(&self) -> usize {
        self.outcome.discrepancies.len()
    }

    /// Discrepancies per category, in `discrepancy_categories()` order.
    fn counts(&self) -> Vec<u64> {
        core::counts(&self.outcome).to_vec()
    }

    /// The discrepancies `start..stop` as tuples (discrepancy_id, category, payment_id,
    /// gateway_reference, gateway_amount_minor, billing_amount_minor, currency, detail).
    #[pyo3(signature = (start=0, stop=None))]
    fn discrepancies(&self, start: usize, stop: Option<usize>) -> PyResult<Vec<DiscrepancyTuple>> {
        let (start, stop) = self.range(start, stop)?;
        Ok(self.outcome.discrepancies[start..stop]
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    d.category.name(),
                    d.payment_id.clone(),
                    d.gateway_reference.clone(),
                    d.gateway_amount_minor,
                    d.billing_amount_minor,
                    d.currency.clone(),
                    d.detail.clone(),
                )
            })
            .collect())
    }

    /// Records the (status, note) of the discrepancies from `start` on, as a store other
    /// than SQLite's core writer read them back.
    fn set_states(&self, start: usize, states: Vec<(String, String)>) -> PyResult<()> {
        let (start, stop) = self.range(start, None)?;
        if states.len() > stop - start {
            let message = format!(
                "{} states from {start}, past the end ({stop})",
                states.len()
            );
            return Err(PyValueError::new_err(message));
        }
        let states = states
            .into_iter()
            .map(|(status, note)| State { status, note })
            .collect();
        self.put_states(start, states);
        Ok(())
    }

    /// The (status, note) of every discrepancy; ValueError when one was not recorded.
    fn states(&self) -> PyResult<Vec<(String, String)>> {
        Ok(self
            .all_states()?
            .into_iter()
            .map(|s| (s.status, s.note))
            .collect())
    }

    /// The Reconcile RPC's reply (quickpay.v1.ReconcileReport), encoded without the GIL:
    /// the bytes Python's `SerializeToString(deterministic=True)` gives for the message
    /// `api.convert` used to build (engine/src/reconcile/reply.rs).
    fn encode_report<'py>(
        &self,
        py: Python<'py>,
        gateway: &str,
        business_day: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let states = self.all_states()?;
        let bytes = py.detach(|| core::encode_reply(&self.outcome, &states, gateway, business_day));
        Ok(PyBytes::new(py, &bytes))
    }
}

/// Reads billed captures by attribute (the domain's `BilledCapture`).
fn captures(py: Python<'_>, billed: &Bound<'_, PyAny>) -> PyResult<Vec<Capture>> {
    let mut out = Vec::with_capacity(billed.len().unwrap_or(0));
    for item in billed.try_iter()? {
        let item = item?;
        out.push(Capture {
            payment_id: item.getattr(intern!(py, "payment_id"))?.extract()?,
            gateway_reference: item.getattr(intern!(py, "gateway_reference"))?.extract()?,
            amount_minor: item.getattr(intern!(py, "amount_minor"))?.extract()?,
            currency: item.getattr(intern!(py, "currency"))?.extract()?,
            settled_at_us: item.getattr(intern!(py, "settled_at_us"))?.extract()?,
            refunded: item.getattr(intern!(py, "refunded"))?.extract()?,
        });
    }
    Ok(out)
}

/// The report fields a column mapping names, in the order `SettlementReport.parse`
/// takes them.
#[pyfunction]
fn report_fields() -> Vec<&'static str> {
    FIELDS.to_vec()
}

/// The discrepancy categories, in the order reports list them.
#[pyfunction]
fn discrepancy_categories() -> Vec<&'static str> {
    core::Category::ALL.iter().map(|c| c.name()).collect()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<SettlementReport>()?;
    m.add_class::<Reconciled>()?;
    m.add_function(wrap_pyfunction!(report_fields, m)?)?;
    m.add_function(wrap_pyfunction!(discrepancy_categories, m)?)?;
    m.add("ReportInvalid", py.get_type::<ReportInvalid>())?;
    Ok(())
}
