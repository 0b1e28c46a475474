//! Bindings of the fraud scorer: `FraudScorer`, its codes and feature names.
//!
//! A batch crosses as one dict of columns (lists of str, copied into one buffer per
//! column; numpy arrays of the documented dtypes, borrowed); the work runs with the
//! GIL released.

use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple, PyType};
use sha2::Sha256;

use super::validate::{typed, StrColumn};
use super::{
    blank, check_batch, check_len, set_field, slice, CoreError, Engine, EngineError, NO_TIME,
};
use crate::fraud::{
    Assessment, Bounds, Decision, Feature, FraudConfig, FraudError, FraudInput, Outcome,
    ReasonCode, Thresholds, FEATURE_COUNT, KEYS_MAX_DEFAULT, REASONS_MAX,
};
use crate::validate::{MethodKind, Plan, Purpose, NEVER};

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
    fn with_capacity(rows: usize, bytes: usize) -> TextColumn {
        TextColumn {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(rows),
        }
    }

    fn push_str(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(self.text.len());
    }

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

/// The keyed 64-bit fingerprint of a card number: the first 8 bytes, big-endian, of
/// HMAC-SHA256 under the card key; 0 for no card, and never 0 for a card (a digest
/// whose first 8 bytes are zero gives 1). The fraud state tracks cards by it, so it
/// must stay the same as `fraud_gate.card_fingerprint` in Python, its definition.
fn card_fingerprint(keyed: &Hmac<Sha256>, pan: &[u8]) -> u64 {
    if pan.is_empty() {
        return 0;
    }
    let mut mac = keyed.clone();
    mac.update(pan);
    let digest = mac.finalize().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    match u64::from_be_bytes(first) {
        0 => 1,
        value => value,
    }
}

/// The BIN the scorer looks up: the first 6 digits of a PAN of at least 12 ASCII
/// digits, else empty. (A card payment that passed validation always has such a
/// PAN; the other methods carry no PAN, and the scorer reads no BIN for them.)
fn card_bin(pan: &str) -> &str {
    if pan.len() >= 12 && pan.bytes().all(|b| b.is_ascii_digit()) {
        &pan[..6]
    } else {
        ""
    }
}

/// A batch's fraud inputs, built in the core from the validation columns: owned, so
/// `observe` takes the same rows back after the commit without Python rebuilding them.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct FraudBatch {
    account_ids: TextColumn,
    msisdns: TextColumn,
    card_bins: TextColumn,
    device_ids: TextColumn,
    ips: TextColumn,
    channels: TextColumn,
    amounts: Vec<i64>,
    purposes: Vec<Purpose>,
    methods: Vec<MethodKind>,
    fingerprints: Vec<u64>,
    plans: Vec<Plan>,
    countries: Vec<[u8; 2]>,
    swapped: Vec<Option<i64>>,
    created: Vec<i64>,
    /// The request carried a subscriber assertion (validation verified it).
    asserted: Vec<bool>,
}

impl FraudBatch {
    fn inputs(&self) -> Vec<FraudInput<'_>> {
        (0..self.amounts.len())
            .map(|row| FraudInput {
                account_id: self.account_ids.get(row),
                msisdn: self.msisdns.get(row),
                amount_minor: self.amounts[row],
                purpose: self.purposes[row],
                method: self.methods[row],
                card_fingerprint: self.fingerprints[row],
                card_bin: self.card_bins.get(row),
                device_id: self.device_ids.get(row),
                ip: self.ips.get(row),
                channel: self.channels.get(row),
                plan: self.plans[row],
                country: self.countries[row],
                sim_swapped_at_s: self.swapped[row],
                created_at_s: self.created[row],
            })
            .collect()
    }
}

#[pymethods]
impl FraudBatch {
    fn __len__(&self) -> usize {
        self.amounts.len()
    }

    /// The card fingerprints computed for the rows, in order (0: no card).
    #[getter]
    fn card_fingerprints<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        PyArray1::from_slice(py, &self.fingerprints)
    }

    /// The card BINs taken for the rows, in order ("" for none).
    #[getter]
    fn card_bins(&self) -> Vec<&str> {
        (0..self.card_bins.len())
            .map(|row| self.card_bins.get(row))
            .collect()
    }
}

/// The validation columns a fraud batch is built from, borrowed from their arrays.
struct Validated<'a> {
    account_ids: StrColumn<'a>,
    msisdns: StrColumn<'a>,
    card_pans: StrColumn<'a>,
    device_ids: StrColumn<'a>,
    ips: StrColumn<'a>,
    channels: StrColumn<'a>,
    assertions: StrColumn<'a>,
    amounts: &'a [i64],
    purposes: &'a [u8],
    methods: &'a [u8],
}

fn utf8<'a>(column: &'static str, row: usize, bytes: &'a [u8]) -> Result<&'a str, CoreError> {
    std::str::from_utf8(bytes).map_err(|_| CoreError::NotUtf8 { column, row })
}

impl Validated<'_> {
    /// The rows at `rows` (positions in the columns) as a fraud batch: text copied,
    /// card fingerprints and BINs computed, the subscriber's profile looked up.
    fn batch(
        &self,
        rows: &[i64],
        card_key: &[u8],
        subscribers: &crate::validate::SubscriberTable,
    ) -> Result<FraudBatch, CoreError> {
        let n = rows.len();
        let keyed =
            Hmac::<Sha256>::new_from_slice(card_key).expect("HMAC takes a key of any length");
        const BYTES_PER_VALUE: usize = 16;
        let text = || TextColumn::with_capacity(n, n * BYTES_PER_VALUE);
        let mut b = FraudBatch {
            account_ids: text(),
            msisdns: text(),
            card_bins: TextColumn::with_capacity(n, n * 6),
            device_ids: text(),
            ips: text(),
            channels: text(),
            amounts: Vec::with_capacity(n),
            purposes: Vec::with_capacity(n),
            methods: Vec::with_capacity(n),
            fingerprints: Vec::with_capacity(n),
            plans: Vec::with_capacity(n),
            countries: Vec::with_capacity(n),
            swapped: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            asserted: Vec::with_capacity(n),
        };
        let len = self.amounts.len();
        for &at in rows {
            let row = usize::try_from(at)
                .ok()
                .filter(|&r| r < len)
                .ok_or(CoreError::RowOutOfRange { row: at, len })?;
            let account = utf8("account_ids", row, self.account_ids.get(row))?;
            b.account_ids.push_str(account);
            b.msisdns
                .push_str(utf8("msisdns", row, self.msisdns.get(row))?);
            b.device_ids
                .push_str(utf8("device_ids", row, self.device_ids.get(row))?);
            b.ips.push_str(utf8("ips", row, self.ips.get(row))?);
            b.channels
                .push_str(utf8("channels", row, self.channels.get(row))?);
            let pan = utf8("card_pans", row, self.card_pans.get(row))?;
            b.fingerprints
                .push(card_fingerprint(&keyed, pan.as_bytes()));
            b.card_bins.push_str(card_bin(pan));
            b.amounts.push(self.amounts[row]);
            let purpose = self.purposes[row];
            if purpose > 2 {
                return Err(CoreError::BadEnum {
                    column: "purposes",
                    row,
                    value: purpose,
                });
            }
            b.purposes.push(Purpose::from_u8(purpose));
            let method = self.methods[row];
            if method > 4 {
                return Err(CoreError::BadEnum {
                    column: "methods",
                    row,
                    value: method,
                });
            }
            b.methods.push(MethodKind::from_u8(method));
            b.asserted.push(!self.assertions.get(row).is_empty());
            // An account the table does not hold (validation refuses it, so only a
            // caller scoring unvalidated rows meets this) has no plan.
            let Some(entry) = subscribers.entry(account.as_bytes()) else {
                return Err(CoreError::BadEnum {
                    column: "plans",
                    row,
                    value: 0,
                });
            };
            let p = &entry.subscriber;
            let [c0, c1] = p.country;
            if !(c0.is_ascii_uppercase() && c1.is_ascii_uppercase()) {
                return Err(CoreError::BadCountry {
                    row,
                    code: String::from_utf8_lossy(&p.country).into_owned(),
                });
            }
            b.plans.push(p.plan);
            b.countries.push(p.country);
            b.swapped
                .push((p.sim_swapped_at_s != NEVER).then_some(p.sim_swapped_at_s));
            b.created.push(p.created_at_s);
        }
        Ok(b)
    }
}

/// What a fraud verdict does to the payment: 0 proceed, 1 declined (`FRAUD_DECLINED`),
/// 2 held for review (`FRAUD_REVIEW`).
const PROCEED: u8 = 0;
const DECLINED: u8 = 1;
const HELD: u8 = 2;

/// A scored validated batch: the batch (for `observe`), the verdict columns, what each
/// verdict does, and one assessment object per payment.
type ScoredBatch<'py> = (
    Bound<'py, FraudBatch>,
    Bound<'py, PyArray1<u16>>,
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray2<u16>>,
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyList>,
);

/// The assessment objects of `out`: instances of `assessment_type` (a frozen dataclass
/// with the fields `score`, `decision` and `reasons`: `FraudAssessment`) with the score,
/// the decision's name and the reason names, in slot order without the NONE padding.
/// Built with their fields set in place, as the dataclass's `__init__` would set them,
/// without running it once per payment.
fn assessments<'py>(
    py: Python<'py>,
    assessment_type: &Bound<'py, PyType>,
    out: &[Assessment],
) -> PyResult<Bound<'py, PyList>> {
    let cls = assessment_type.clone().unbind();
    let fields = [
        PyString::intern(py, "score").unbind(),
        PyString::intern(py, "decision").unbind(),
        PyString::intern(py, "reasons").unbind(),
    ];
    let decisions: Vec<Bound<'py, PyString>> = Decision::ALL
        .iter()
        .map(|d| PyString::intern(py, d.name()))
        .collect();
    let top = ReasonCode::ALL
        .iter()
        .map(|&r| r as usize)
        .max()
        .unwrap_or(0);
    let mut reasons: Vec<Option<Bound<'py, PyString>>> = vec![None; top + 1];
    for &r in ReasonCode::ALL.iter() {
        reasons[r as usize] = Some(PyString::intern(py, r.name()));
    }
    let list = PyList::empty(py);
    for a in out {
        let names: Vec<Bound<'py, PyString>> = a
            .reasons
            .iter()
            .filter(|&&r| r as u16 != 0)
            .filter_map(|&r| reasons[r as usize].clone())
            .collect();
        let names = PyTuple::new(py, names)?;
        // Decision::ALL is in number order (APPROVE 0, REVIEW 1, DECLINE 2).
        let decision = decisions[a.decision as usize].clone();
        let object = blank(py, &cls)?;
        set_field(&object, &fields[0], a.score.into_pyobject(py)?.into_any())?;
        set_field(&object, &fields[1], decision.into_any())?;
        set_field(&object, &fields[2], names.into_any())?;
        list.append(object)?;
    }
    Ok(list)
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

    /// Scores the payments at `rows` of a batch's validation columns (the mapping
    /// `Engine.validate` took: fixed-width byte arrays and numeric arrays), at `now_s`,
    /// recording each as an attempt. The core reads the rows' fields, computes their
    /// card fingerprints (HMAC-SHA256 under `card_key`) and BINs, and looks their
    /// subscribers' profiles up in `engine`, with the GIL released. Returns the batch
    /// (for `observe_batch`), the scores, decisions and reasons, what each verdict does
    /// (0 proceed, 1 FRAUD_DECLINED, 2 FRAUD_REVIEW: a REVIEW proceeds when the request
    /// carried a subscriber assertion and the score is under the decline threshold;
    /// with `enforce` False every verdict is 0), and an `assessment_type` for each
    /// payment (see `assessments`).
    #[pyo3(signature = (engine, columns, rows, *, card_key, now_s, enforce, assessment_type))]
    #[allow(clippy::too_many_arguments)]
    fn score_validated<'py>(
        &self,
        py: Python<'py>,
        engine: PyRef<'py, Engine>,
        columns: &Bound<'py, PyAny>,
        rows: PyReadonlyArray1<'py, i64>,
        card_key: &[u8],
        now_s: i64,
        enforce: bool,
        assessment_type: &Bound<'py, PyType>,
    ) -> PyResult<ScoredBatch<'py>> {
        let rows = slice("rows", &rows)?;
        check_batch(rows.len())?;
        let account_ids = columns.get_item("account_ids")?;
        let len = account_ids.len()?;
        let text = |name: &'static str| columns.get_item(name);
        let (msisdns, card_pans, device_ids) =
            (text("msisdns")?, text("card_pans")?, text("device_ids")?);
        let (ips, channels, assertions) = (text("ips")?, text("channels")?, text("assertions")?);
        let amounts = typed::<i64>("amounts_minor", &text("amounts_minor")?, "int64", len)?;
        let purposes = typed::<u8>("purposes", &text("purposes")?, "uint8", len)?;
        let methods = typed::<u8>("methods", &text("methods")?, "uint8", len)?;
        let validated = Validated {
            account_ids: StrColumn::new("account_ids", &account_ids, len)?,
            msisdns: StrColumn::new("msisdns", &msisdns, len)?,
            card_pans: StrColumn::new("card_pans", &card_pans, len)?,
            device_ids: StrColumn::new("device_ids", &device_ids, len)?,
            ips: StrColumn::new("ips", &ips, len)?,
            channels: StrColumn::new("channels", &channels, len)?,
            assertions: StrColumn::new("assertions", &assertions, len)?,
            amounts: slice("amounts_minor", &amounts)?,
            purposes: slice("purposes", &purposes)?,
            methods: slice("methods", &methods)?,
        };
        let engine = &*engine;
        let (batch, out, effects) = py.detach(|| -> Result<_, CoreError> {
            let batch = {
                let validator = engine.validation.read();
                validated.batch(rows, card_key, &validator.subscribers)?
            };
            let inputs = batch.inputs();
            let mut out = vec![Assessment::default(); inputs.len()];
            let mut scorer = self.lock();
            scorer.score_batch(&inputs, now_s, &mut out);
            let decline = scorer.thresholds().decline;
            drop(scorer);
            let effects: Vec<u8> = out
                .iter()
                .zip(&batch.asserted)
                .map(|(a, &asserted)| match a.decision {
                    _ if !enforce => PROCEED,
                    Decision::Decline => DECLINED,
                    Decision::Review if !(asserted && a.score < decline) => HELD,
                    _ => PROCEED,
                })
                .collect();
            drop(inputs);
            Ok((batch, out, effects))
        })?;
        let (scores, decisions, reasons) = verdicts(py, &out)?;
        let objects = assessments(py, assessment_type, &out)?;
        Ok((
            Bound::new(py, batch)?,
            scores,
            decisions,
            reasons,
            PyArray1::from_vec(py, effects),
            objects,
        ))
    }

    /// `observe` for a batch `score_validated` returned: the outcomes (0 not
    /// attempted, 1 settled, 2 failed) of its payments, in its order.
    #[pyo3(signature = (batch, outcomes, *, now_s))]
    fn observe_batch<'py>(
        &self,
        py: Python<'py>,
        batch: PyRef<'py, FraudBatch>,
        outcomes: PyReadonlyArray1<'py, u8>,
        now_s: i64,
    ) -> PyResult<()> {
        let batch = &*batch;
        let outcomes = self::outcomes(&outcomes, batch.amounts.len())?;
        py.detach(|| self.lock().observe_batch(&batch.inputs(), &outcomes, now_s));
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

/// The card fingerprint `score_validated` computes for `pan` under `key` (0 for "").
#[pyfunction]
fn fraud_card_fingerprint(key: &[u8], pan: &str) -> u64 {
    let keyed = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    card_fingerprint(&keyed, pan.as_bytes())
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
    m.add_class::<FraudBatch>()?;
    m.add_function(wrap_pyfunction!(fraud_card_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(fraud_feature_names, m)?)?;
    m.add_function(wrap_pyfunction!(fraud_reason_codes, m)?)?;
    m.add_function(wrap_pyfunction!(fraud_decisions, m)?)?;
    m.add("FRAUD_FEATURE_COUNT", FEATURE_COUNT)?;
    m.add("FRAUD_REASONS_MAX", REASONS_MAX)?;
    m.add("FRAUD_KEYS_MAX_DEFAULT", KEYS_MAX_DEFAULT)?;
    m.add("FraudConfigError", py.get_type::<FraudConfigError>())?;
    Ok(())
}
