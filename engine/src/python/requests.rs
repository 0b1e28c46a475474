//! A batch's payment requests, read once from their `PaymentIntent`s into the core.
//!
//! The saga's stages each want the requests as columns: validation and fraud scoring
//! as numpy arrays, the journal and the commit as lists the store's writer reads, the
//! gateways' sales as the core's `Sales`, the ledger's holds as lists of their own.
//! Walked in Python, that was one list comprehension per field per stage, some sixty
//! attribute reads a payment and a fifth of the event loop's time under PayBatch
//! (benches/RESULTS.md). Here each intent is read once, by the core, and every stage's
//! columns are cut from what it read, for the rows the stage needs, with no Python step
//! per payment.
//!
//! The values are the intents' own Python objects (no copy, no new string): a column
//! of text is a list of the same `str` objects, and a numpy column is built from their
//! UTF-8 bytes.

use std::borrow::Cow;

use numpy::{PyArray1, PyArrayDescr};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use super::sale::{Sale, Sales};
use super::{str_attr, CoreError};

/// The text fields of a request, by their place in `Request::text`.
const KEY: usize = 0;
const FINGERPRINT: usize = 1;
const ACCOUNT: usize = 2;
const MSISDN: usize = 3;
const CURRENCY: usize = 4;
const DISPLAY: usize = 5;
const CHANNEL: usize = 6;
const DEVICE: usize = 7;
const IP: usize = 8;
const SENDER: usize = 9;
const PAN: usize = 10;
const PROVIDER: usize = 11;
const WALLET: usize = 12;
const IBAN: usize = 13;
const ASSERTION: usize = 14;
const TEXT: usize = 15;

/// One payment's request, as its intent holds it.
struct Request {
    text: [Py<PyString>; TEXT],
    amount_minor: i64,
    purpose: u8,
    kind: u8,
    // The `MethodKind` member itself: the sales' columns carry the members.
    kind_member: Py<PyAny>,
    expiry_month: u32,
    expiry_year: u32,
    // None, or when the caller stops waiting (a float on the event loop's clock).
    deadline: Option<f64>,
}

impl Request {
    fn read(intent: &Bound<'_, PyAny>, names: &Names<'_>) -> PyResult<Request> {
        let method = intent.getattr(&names.method)?;
        let detail = intent.getattr(&names.detail)?;
        let kind_member = method.getattr(&names.kind)?;
        let on = |obj: &Bound<'_, PyAny>, name| Ok::<_, PyErr>(str_attr(obj, name)?.unbind());
        Ok(Request {
            text: [
                on(intent, &names.idempotency_key)?,
                on(intent, &names.fingerprint)?,
                on(intent, &names.account_id)?,
                on(intent, &names.msisdn)?,
                on(intent, &names.currency)?,
                on(&method, &names.display)?,
                on(intent, &names.channel)?,
                on(intent, &names.device_id)?,
                on(intent, &names.ip)?,
                on(intent, &names.sender)?,
                on(&detail, &names.card_pan)?,
                on(&detail, &names.wallet_provider)?,
                on(&detail, &names.wallet_id)?,
                on(&detail, &names.iban)?,
                on(&detail, &names.subscriber_assertion)?,
            ],
            amount_minor: intent.getattr(&names.amount_minor)?.extract()?,
            purpose: intent.getattr(&names.purpose)?.extract()?,
            kind: kind_member.extract()?,
            kind_member: kind_member.unbind(),
            expiry_month: detail.getattr(&names.card_expiry_month)?.extract()?,
            expiry_year: detail.getattr(&names.card_expiry_year)?.extract()?,
            deadline: intent.getattr(&names.deadline)?.extract()?,
        })
    }
}

/// The attribute names read from each intent, interned once per batch.
struct Names<'py> {
    idempotency_key: Bound<'py, PyString>,
    fingerprint: Bound<'py, PyString>,
    account_id: Bound<'py, PyString>,
    msisdn: Bound<'py, PyString>,
    amount_minor: Bound<'py, PyString>,
    currency: Bound<'py, PyString>,
    purpose: Bound<'py, PyString>,
    method: Bound<'py, PyString>,
    kind: Bound<'py, PyString>,
    display: Bound<'py, PyString>,
    channel: Bound<'py, PyString>,
    device_id: Bound<'py, PyString>,
    ip: Bound<'py, PyString>,
    sender: Bound<'py, PyString>,
    deadline: Bound<'py, PyString>,
    detail: Bound<'py, PyString>,
    card_pan: Bound<'py, PyString>,
    card_expiry_month: Bound<'py, PyString>,
    card_expiry_year: Bound<'py, PyString>,
    wallet_provider: Bound<'py, PyString>,
    wallet_id: Bound<'py, PyString>,
    iban: Bound<'py, PyString>,
    subscriber_assertion: Bound<'py, PyString>,
}

impl<'py> Names<'py> {
    fn new(py: Python<'py>) -> Names<'py> {
        let n = |s| PyString::intern(py, s);
        Names {
            idempotency_key: n("idempotency_key"),
            fingerprint: n("fingerprint"),
            account_id: n("account_id"),
            msisdn: n("msisdn"),
            amount_minor: n("amount_minor"),
            currency: n("currency"),
            purpose: n("purpose"),
            method: n("method"),
            kind: n("kind"),
            display: n("display"),
            channel: n("channel"),
            device_id: n("device_id"),
            ip: n("ip"),
            sender: n("sender"),
            deadline: n("deadline"),
            detail: n("detail"),
            card_pan: n("card_pan"),
            card_expiry_month: n("card_expiry_month"),
            card_expiry_year: n("card_expiry_year"),
            wallet_provider: n("wallet_provider"),
            wallet_id: n("wallet_id"),
            iban: n("iban"),
            subscriber_assertion: n("subscriber_assertion"),
        }
    }
}

/// A batch's payment requests, read from their intents once (see the module's text).
/// Rows are the intents' places in the list it was made from; every method that takes
/// `rows` gives its columns in that order.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct Requests {
    rows: Vec<Request>,
}

impl Requests {
    fn picked<'a>(&'a self, rows: &[usize]) -> Result<Vec<&'a Request>, CoreError> {
        rows.iter()
            .map(|&row| {
                self.rows.get(row).ok_or(CoreError::RowOutOfRange {
                    row: i64::try_from(row).unwrap_or(i64::MAX),
                    len: self.rows.len(),
                })
            })
            .collect()
    }
}

/// A list of the `field`th text of each request.
fn text_list<'py>(
    py: Python<'py>,
    picked: &[&Request],
    field: usize,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, picked.iter().map(|r| r.text[field].bind(py)))
}

/// A value's UTF-8 bytes as `text_column` (settlement/validation.py) encodes them: a
/// lone surrogate (only a Python-built intent can hold one) is encoded as
/// `surrogatepass` does.
fn utf8<'a>(value: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, [u8]>> {
    match value.to_str() {
        Ok(s) => Ok(Cow::Borrowed(s.as_bytes())),
        Err(_) => {
            let encoded = value.call_method1("encode", ("utf-8", "surrogatepass"))?;
            Ok(Cow::Owned(encoded.cast::<PyBytes>()?.as_bytes().to_vec()))
        }
    }
}

/// A 1-D `S<n>` numpy array of the values' UTF-8 bytes, `n` the longest (at least 1),
/// as numpy builds one from `bytes`: NUL, which an `S<n>` cell cannot end with, becomes
/// DEL (no field rule accepts either; validation.py's `text_column` does the same).
fn text_column<'py>(
    py: Python<'py>,
    rows: &[Request],
    field: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let values: Vec<Bound<'py, PyString>> = rows
        .iter()
        .map(|r| r.text[field].bind(py).clone())
        .collect();
    let bytes = values.iter().map(utf8).collect::<PyResult<Vec<_>>>()?;
    let width = bytes.iter().map(|b| b.len()).max().unwrap_or(0).max(1);
    let mut buffer = vec![0_u8; bytes.len() * width];
    for (cell, value) in buffer.chunks_exact_mut(width).zip(&bytes) {
        for (to, &from) in cell.iter_mut().zip(value.iter()) {
            *to = if from == 0 { 0x7f } else { from };
        }
    }
    let dtype = PyArrayDescr::new(py, format!("S{width}"))?;
    PyArray1::from_vec(py, buffer).call_method1("view", (dtype,))
}

#[pymethods]
impl Requests {
    /// Reads each intent's request fields (those of `domain.PaymentIntent`, its
    /// `method` and its `detail`).
    #[new]
    fn new(py: Python<'_>, intents: &Bound<'_, PyAny>) -> PyResult<Requests> {
        let names = Names::new(py);
        let rows = intents
            .try_iter()?
            .map(|intent| Request::read(&intent?, &names))
            .collect::<PyResult<Vec<_>>>()?;
        super::check_batch(rows.len())?;
        Ok(Requests { rows })
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// `Engine.validate`'s columns (all but `now_s`) for every row, by keyword: what
    /// `build_validation_columns` builds from the same intents.
    fn validation_columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rows = &self.rows;
        let out = PyDict::new(py);
        for (name, field) in [
            ("idempotency_keys", KEY),
            ("account_ids", ACCOUNT),
            ("msisdns", MSISDN),
            ("currencies", CURRENCY),
            ("card_pans", PAN),
            ("wallet_providers", PROVIDER),
            ("wallet_ids", WALLET),
            ("ibans", IBAN),
            ("channels", CHANNEL),
            ("device_ids", DEVICE),
            ("ips", IP),
            ("assertions", ASSERTION),
        ] {
            out.set_item(name, text_column(py, rows, field)?)?;
        }
        let amounts: Vec<i64> = rows.iter().map(|r| r.amount_minor).collect();
        out.set_item("amounts_minor", PyArray1::from_vec(py, amounts))?;
        let purposes: Vec<u8> = rows.iter().map(|r| r.purpose).collect();
        out.set_item("purposes", PyArray1::from_vec(py, purposes))?;
        let methods: Vec<u8> = rows.iter().map(|r| r.kind).collect();
        out.set_item("methods", PyArray1::from_vec(py, methods))?;
        let months: Vec<u32> = rows.iter().map(|r| r.expiry_month).collect();
        out.set_item("card_expiry_months", PyArray1::from_vec(py, months))?;
        let years: Vec<u32> = rows.iter().map(|r| r.expiry_year).collect();
        out.set_item("card_expiry_years", PyArray1::from_vec(py, years))?;
        Ok(out)
    }

    /// The request's columns of the store's `CommitColumns` for `rows`, by field name:
    /// what `rows._intent_columns` builds from the same intents.
    fn intent_columns<'py>(
        &self,
        py: Python<'py>,
        rows: Vec<usize>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let picked = self.picked(&rows)?;
        let out = PyDict::new(py);
        for (name, field) in [
            ("idempotency_key", KEY),
            ("fingerprint", FINGERPRINT),
            ("account_id", ACCOUNT),
            ("msisdn", MSISDN),
            ("currency", CURRENCY),
            ("method_display", DISPLAY),
            ("channel", CHANNEL),
            ("device_id", DEVICE),
            ("ip", IP),
            ("sender", SENDER),
        ] {
            out.set_item(name, text_list(py, &picked, field)?)?;
        }
        let amounts = picked.iter().map(|r| r.amount_minor);
        out.set_item("amount_minor", PyList::new(py, amounts)?)?;
        out.set_item(
            "purpose",
            PyList::new(py, picked.iter().map(|r| r.purpose))?,
        )?;
        out.set_item(
            "method_kind",
            PyList::new(py, picked.iter().map(|r| r.kind))?,
        )?;
        Ok(out)
    }

    /// The sales of `rows`, whose merchant references are `payment_ids` (one each), as
    /// the core's `Sales`: the requests' own strings, no list per field. A request
    /// without a deadline (None, or 0.0) gets `no_deadline`.
    fn sales(
        &self,
        py: Python<'_>,
        payment_ids: Vec<Bound<'_, PyString>>,
        rows: Vec<usize>,
        no_deadline: f64,
    ) -> PyResult<Sales> {
        let picked = self.picked(&rows)?;
        super::check_len("payment_ids", payment_ids.len(), picked.len())?;
        let text = |r: &Request, field: usize| r.text[field].clone_ref(py);
        Ok(Sales::new(
            picked
                .iter()
                .zip(payment_ids)
                .map(|(r, payment_id)| Sale {
                    reference: payment_id.unbind(),
                    amount_minor: r.amount_minor,
                    currency: text(r, CURRENCY),
                    kind: r.kind,
                    kind_member: r.kind_member.clone_ref(py),
                    pan: text(r, PAN),
                    expiry_month: i64::from(r.expiry_month),
                    expiry_year: i64::from(r.expiry_year),
                    provider: text(r, PROVIDER),
                    wallet_id: text(r, WALLET),
                    iban: text(r, IBAN),
                    // 0.0 as no deadline, as the Python builder's `deadline or ...` reads it.
                    deadline: r.deadline.filter(|&d| d != 0.0).unwrap_or(no_deadline),
                })
                .collect(),
        ))
    }

    /// The holds of `rows` for the ledger's reserve step, after the payment ids:
    /// accounts, account kinds (`kinds_by_purpose[purpose]`, the last for any purpose
    /// past the list), amounts and currencies.
    fn holds<'py>(
        &self,
        py: Python<'py>,
        rows: Vec<usize>,
        kinds_by_purpose: Vec<u16>,
    ) -> PyResult<Vec<Bound<'py, PyList>>> {
        let picked = self.picked(&rows)?;
        let Some(&last) = kinds_by_purpose.last() else {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "kinds_by_purpose: at least one kind",
            ));
        };
        let kind = |r: &&Request| {
            kinds_by_purpose
                .get(usize::from(r.purpose))
                .copied()
                .unwrap_or(last)
        };
        Ok(vec![
            text_list(py, &picked, ACCOUNT)?,
            PyList::new(py, picked.iter().map(kind))?,
            PyList::new(py, picked.iter().map(|r| r.amount_minor))?,
            text_list(py, &picked, CURRENCY)?,
        ])
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Requests>()
}
