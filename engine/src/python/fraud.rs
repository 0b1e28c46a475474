//! Bindings of the fraud scorer: `FraudScorer`, its codes and feature names.
//!
//! A batch crosses as one dict of columns (lists of str, copied into one buffer per
//! column; numpy arrays of the documented dtypes, borrowed); the work runs with the
//! GIL released.

use std::sync::Mutex;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use super::{check_batch, check_len, slice, CoreError, EngineError, NO_TIME};
use crate::fraud::{
    Assessment, Bounds, Decision, Feature, FraudConfig, FraudError, FraudInput, Outcome,
    ReasonCode, Thresholds, FEATURE_COUNT, KEYS_MAX_DEFAULT, REASONS_MAX,
};
use crate::validate::{MethodKind, Plan, Purpose};

create_exception!(
    _engine,
    FraudConfigError,
    EngineError,
    "A fraud model, rules or BIN file cannot be used."
);

fn config_error(err: FraudError) -> PyErr {
    FraudConfigError::new_err(err.to_string())
}

/// A column of str, copied into one buffer while the GIL is held.
///
/// The scorer reads the values with the GIL released, so it must not borrow them from
/// Python objects another thread could free. Copying a batch's short identifiers into
/// one `String` costs less than holding a reference to each (an extraction, an
/// increment and a decrement per value, and a 32-byte handle each): extracting the
/// six text columns that way was about a fifth of the scoring call.
struct TextColumn {
    text: String,
    /// `ends[i]` is where value `i` ends in `text`; it starts where `i - 1` ended.
    ends: Vec<usize>,
}

impl TextColumn {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Value `i`.
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    fn push(&mut self, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = item.cast::<PyString>()?.to_str()?;
        self.text.push_str(value);
        self.ends.push(self.text.len());
        Ok(())
    }
}

impl FromPyObject<'_, '_> for TextColumn {
    type Error = PyErr;

    /// A list or tuple of str (the fast paths), or any other sequence of str; a str
    /// itself is refused, as a sequence of its characters is never what was meant.
    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<TextColumn> {
        let mut column = TextColumn {
            text: String::new(),
            ends: Vec::new(),
        };
        // Room for typical identifiers up front, so the buffer seldom moves.
        const BYTES_PER_VALUE: usize = 16;
        if let Ok(list) = obj.cast::<PyList>() {
            column.ends.reserve(list.len());
            column.text.reserve(list.len() * BYTES_PER_VALUE);
            for item in list.iter() {
                column.push(&item)?;
            }
        } else if let Ok(tuple) = obj.cast::<PyTuple>() {
            column.ends.reserve(tuple.len());
            column.text.reserve(tuple.len() * BYTES_PER_VALUE);
            for item in tuple.iter() {
                column.push(&item)?;
            }
        } else if obj.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(
                "a text column must be a sequence of str, not a str",
            ));
        } else {
            for item in obj.try_iter()? {
                column.push(&item?)?;
            }
        }
        Ok(column)
    }
}

/// The scorer's per-payment columns, held for the length of one call: one mapping
/// (a dict) from column name to column, the same for `score`, `observe` and `replay`,
/// so the fourteen columns are named once here and once in the stub's `FraudColumns`.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Columns<'py> {
    account_ids: TextColumn,
    msisdns: TextColumn,
    amounts_minor: PyReadonlyArray1<'py, i64>,
    purposes: PyReadonlyArray1<'py, u8>,
    methods: PyReadonlyArray1<'py, u8>,
    card_fingerprints: PyReadonlyArray1<'py, u64>,
    card_bins: TextColumn,
    device_ids: TextColumn,
    ips: TextColumn,
    channels: TextColumn,
    plans: PyReadonlyArray1<'py, u8>,
    countries: TextColumn,
    sim_swapped_at_s: PyReadonlyArray1<'py, i64>,
    created_at_s: PyReadonlyArray1<'py, i64>,
}

fn enum_check<T>(
    column: &'static str,
    values: &[u8],
    parse: impl Fn(u8) -> Option<T>,
) -> Result<Vec<T>, CoreError> {
    values
        .iter()
        .enumerate()
        .map(|(row, &value)| parse(value).ok_or(CoreError::BadEnum { column, row, value }))
        .collect()
}

impl Columns<'_> {
    /// Checks every column and borrows the rows as scorer inputs.
    fn inputs(&self) -> Result<Vec<FraudInput<'_>>, CoreError> {
        let n = self.account_ids.len();
        check_batch(n)?;
        for (column, len) in [
            ("msisdns", self.msisdns.len()),
            ("card_bins", self.card_bins.len()),
            ("device_ids", self.device_ids.len()),
            ("ips", self.ips.len()),
            ("channels", self.channels.len()),
            ("countries", self.countries.len()),
        ] {
            check_len(column, len, n)?;
        }
        let amounts = slice("amounts_minor", &self.amounts_minor)?;
        let fingerprints = slice("card_fingerprints", &self.card_fingerprints)?;
        let swapped = slice("sim_swapped_at_s", &self.sim_swapped_at_s)?;
        let created = slice("created_at_s", &self.created_at_s)?;
        let purposes = slice("purposes", &self.purposes)?;
        let methods = slice("methods", &self.methods)?;
        let plans = slice("plans", &self.plans)?;
        for (column, len) in [
            ("amounts_minor", amounts.len()),
            ("card_fingerprints", fingerprints.len()),
            ("sim_swapped_at_s", swapped.len()),
            ("created_at_s", created.len()),
            ("purposes", purposes.len()),
            ("methods", methods.len()),
            ("plans", plans.len()),
        ] {
            check_len(column, len, n)?;
        }
        let purposes = enum_check("purposes", purposes, |v| {
            (v <= 2).then(|| Purpose::from_u8(v))
        })?;
        let methods = enum_check("methods", methods, |v| {
            (v <= 4).then(|| MethodKind::from_u8(v))
        })?;
        let plans = enum_check("plans", plans, Plan::from_u8)?;
        (0..n)
            .map(|row| {
                let country = match self.countries.get(row).as_bytes() {
                    &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => [a, b],
                    _ => {
                        return Err(CoreError::BadCountry {
                            row,
                            code: self.countries.get(row).to_string(),
                        })
                    }
                };
                Ok(FraudInput {
                    account_id: self.account_ids.get(row),
                    msisdn: self.msisdns.get(row),
                    amount_minor: amounts[row],
                    purpose: purposes[row],
                    method: methods[row],
                    card_fingerprint: fingerprints[row],
                    card_bin: self.card_bins.get(row),
                    device_id: self.device_ids.get(row),
                    ip: self.ips.get(row),
                    channel: self.channels.get(row),
                    plan: plans[row],
                    country,
                    sim_swapped_at_s: (swapped[row] != NO_TIME).then_some(swapped[row]),
                    created_at_s: created[row],
                })
            })
            .collect()
    }
}

type Verdicts<'py> = (
    Bound<'py, PyArray1<u16>>,
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray2<u16>>,
);

/// A replay's verdicts and, when asked for, its feature rows.
type Replayed<'py> = (
    Bound<'py, PyArray1<u16>>,
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray2<u16>>,
    Option<Bound<'py, PyArray2<f64>>>,
);

fn verdicts<'py>(py: Python<'py>, out: &[Assessment]) -> PyResult<Verdicts<'py>> {
    let scores: Vec<u16> = out.iter().map(|a| a.score).collect();
    let decisions: Vec<u8> = out.iter().map(|a| a.decision as u8).collect();
    let reasons: Vec<u16> = out
        .iter()
        .flat_map(|a| a.reasons.map(|r| r as u16))
        .collect();
    let reasons = PyArray1::from_vec(py, reasons).reshape([out.len(), REASONS_MAX])?;
    Ok((
        PyArray1::from_vec(py, scores),
        PyArray1::from_vec(py, decisions),
        reasons,
    ))
}

fn outcomes(values: &PyReadonlyArray1<'_, u8>, n: usize) -> Result<Vec<Outcome>, CoreError> {
    let values = slice("outcomes", values)?;
    check_len("outcomes", values.len(), n)?;
    enum_check("outcomes", values, Outcome::from_u8)
}

/// The fraud scorer: one per engine, the single owner of the fraud state.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct FraudScorer {
    inner: Mutex<crate::fraud::FraudScorer>,
}

impl FraudScorer {
    fn lock(&self) -> std::sync::MutexGuard<'_, crate::fraud::FraudScorer> {
        self.inner.lock().expect("fraud scorer lock poisoned")
    }
}

#[pymethods]
impl FraudScorer {
    #[new]
    #[pyo3(signature = (model_json, rules = "", bin_table = "", *, review_threshold = None, decline_threshold = None, keys_max = KEYS_MAX_DEFAULT))]
    fn new(
        model_json: &str,
        rules: &str,
        bin_table: &str,
        review_threshold: Option<u16>,
        decline_threshold: Option<u16>,
        keys_max: usize,
    ) -> PyResult<FraudScorer> {
        let mut config =
            FraudConfig::from_texts(model_json, rules, bin_table).map_err(config_error)?;
        if review_threshold.is_some() || decline_threshold.is_some() {
            let model = config.model.thresholds;
            config.thresholds = Some(Thresholds {
                review: review_threshold.unwrap_or(model.review),
                decline: decline_threshold.unwrap_or(model.decline),
            });
        }
        config.bounds = Bounds::uniform(keys_max);
        let scorer = crate::fraud::FraudScorer::new(config).map_err(config_error)?;
        Ok(FraudScorer {
            inner: Mutex::new(scorer),
        })
    }

    /// The model file's `model_id`.
    #[getter]
    fn model_id(&self) -> String {
        self.lock().model_id().to_string()
    }

    /// The (review, decline) score thresholds in force.
    #[getter]
    fn thresholds(&self) -> (u16, u16) {
        let t = self.lock().thresholds();
        (t.review, t.decline)
    }

    /// Tracked keys per map: (accounts, msisdns, cards, devices, IP prefixes).
    fn tracked(&self) -> (usize, usize, usize, usize, usize) {
        let [a, m, c, d, i] = self.lock().tracked();
        (a, m, c, d, i)
    }

    /// Scores a batch at `now_s`, in order, recording each payment as an attempt.
    #[pyo3(signature = (columns, *, now_s))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        columns: Columns<'py>,
        now_s: i64,
    ) -> PyResult<Verdicts<'py>> {
        let inputs = columns.inputs()?;
        let out = py.detach(|| {
            let mut out = vec![Assessment::default(); inputs.len()];
            self.lock().score_batch(&inputs, now_s, &mut out);
            out
        });
        verdicts(py, &out)
    }

    /// Records the outcomes (0 not attempted, 1 settled, 2 failed) of scored payments.
    #[pyo3(signature = (columns, outcomes, *, now_s))]
    fn observe<'py>(
        &self,
        py: Python<'py>,
        columns: Columns<'py>,
        outcomes: PyReadonlyArray1<'py, u8>,
        now_s: i64,
    ) -> PyResult<()> {
        let inputs = columns.inputs()?;
        let outcomes = self::outcomes(&outcomes, inputs.len())?;
        py.detach(|| self.lock().observe_batch(&inputs, &outcomes, now_s));
        Ok(())
    }

    /// Replays recorded traffic: each payment scored at its own `at_s` and its outcome
    /// observed before the next. With `with_features`, also returns the feature rows
    /// as a float64 array of shape (n, FEATURE_COUNT); otherwise that item is None.
    #[pyo3(signature = (columns, at_s, outcomes, with_features = false))]
    fn replay<'py>(
        &self,
        py: Python<'py>,
        columns: Columns<'py>,
        at_s: PyReadonlyArray1<'py, i64>,
        outcomes: PyReadonlyArray1<'py, u8>,
        with_features: bool,
    ) -> PyResult<Replayed<'py>> {
        let inputs = columns.inputs()?;
        let n = inputs.len();
        let outcomes = self::outcomes(&outcomes, n)?;
        let at = slice("at_s", &at_s)?;
        check_len("at_s", at.len(), n)?;
        let (out, rows) = py.detach(|| {
            let mut out = vec![Assessment::default(); n];
            let mut rows = if with_features {
                vec![0.0; n * FEATURE_COUNT]
            } else {
                Vec::new()
            };
            let features = with_features.then_some(rows.as_mut_slice());
            self.lock()
                .replay_batch(&inputs, at, &outcomes, &mut out, features);
            (out, rows)
        });
        let (scores, decisions, reasons) = verdicts(py, &out)?;
        let features = if with_features {
            Some(PyArray1::from_vec(py, rows).reshape([n, FEATURE_COUNT])?)
        } else {
            None
        };
        Ok((scores, decisions, reasons, features))
    }
}

/// The model's feature names, in feature-row column order.
#[pyfunction]
fn fraud_feature_names() -> Vec<&'static str> {
    Feature::ALL.iter().map(|f| f.name()).collect()
}

/// Every reason code as (number, name); 0 is NONE, the padding of unused slots.
#[pyfunction]
fn fraud_reason_codes() -> Vec<(u16, &'static str)> {
    ReasonCode::ALL
        .iter()
        .map(|&r| (r as u16, r.name()))
        .collect()
}

/// Every decision as (number, name): APPROVE 0, REVIEW 1, DECLINE 2.
#[pyfunction]
fn fraud_decisions() -> Vec<(u8, &'static str)> {
    Decision::ALL.iter().map(|&d| (d as u8, d.name())).collect()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<FraudScorer>()?;
    m.add_function(wrap_pyfunction!(fraud_feature_names, m)?)?;
    m.add_function(wrap_pyfunction!(fraud_reason_codes, m)?)?;
    m.add_function(wrap_pyfunction!(fraud_decisions, m)?)?;
    m.add("FRAUD_FEATURE_COUNT", FEATURE_COUNT)?;
    m.add("FRAUD_REASONS_MAX", REASONS_MAX)?;
    m.add("FRAUD_KEYS_MAX_DEFAULT", KEYS_MAX_DEFAULT)?;
    m.add("FraudConfigError", py.get_type::<FraudConfigError>())?;
    Ok(())
}
