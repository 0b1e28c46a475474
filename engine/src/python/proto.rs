//! PayRequest frames decoded in the core, a call's or a batch's frames in one crossing:
//! the gRPC handlers hand over the request bytes unparsed.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyType};

use super::{blank, set_field, str_attr as text};
use crate::proto::reply::{ConfirmationRef, FraudRef, ResponseRef};
use crate::proto::{self, v1};

/// The bound on frames decoded in one call: PayBatch's 1,000, with room for a batch of
/// the micro-batcher's largest size.
const FRAMES_MAX: usize = 10_000;

/// What a request's method is, as the engine may keep it (never a full card number):
/// the kind's number (`MethodKind`) and its display text.
fn method_of(method: Option<&v1::PaymentMethod>) -> (u8, String) {
    use v1::payment_method::Kind;
    match method.and_then(|m| m.kind.as_ref()) {
        None => (0, String::new()),
        Some(Kind::Card(card)) => {
            let pan = &card.pan;
            let shown = pan.len() >= 12 && pan.bytes().all(|b| b.is_ascii_digit());
            let display = if shown {
                format!("card ****{}", &pan[pan.len() - 4..])
            } else {
                "card".to_owned()
            };
            (1, display)
        }
        Some(Kind::Wallet(wallet)) => {
            let provider: String = wallet.provider.chars().take(32).collect();
            (2, format!("wallet {provider}"))
        }
        Some(Kind::BankAccount(account)) => {
            let chars: Vec<char> = account.iban.chars().collect();
            let display = if chars.len() >= 12 {
                let head: String = chars[..4].iter().collect();
                let tail: String = chars[chars.len() - 4..].iter().collect();
                format!("iban {head}****{tail}")
            } else {
                "iban".to_owned()
            };
            (3, display)
        }
        Some(Kind::CarrierBalance(_)) => (4, "carrier balance".to_owned()),
    }
}

/// The fields of a decoded request, in the order `convert.intent_of_decoded` reads them:
/// the intent's own fields, then the method detail validation reads.
type Intent = (
    String, // idempotency_key
    String, // fingerprint, hex
    String, // account_id
    String, // msisdn
    i64,    // amount_minor
    String, // currency
    i32,    // purpose
    u8,     // method kind
    String, // method display
    String, // channel
    String, // device_id
    String, // ip
);
type Detail = (
    String, // card_pan
    u32,    // card_expiry_month
    u32,    // card_expiry_year
    String, // wallet_provider
    String, // wallet_id
    String, // iban
    String, // subscriber_assertion
);

fn fields(request: v1::PayRequest, fingerprint: [u8; 32]) -> (Intent, Detail) {
    use v1::payment_method::Kind;
    let (kind, display) = method_of(request.method.as_ref());
    let amount = request.amount.unwrap_or_default();
    let mut detail: Detail = Default::default();
    match request.method.and_then(|m| m.kind) {
        Some(Kind::Card(card)) => {
            detail.0 = card.pan;
            detail.1 = card.expiry_month;
            detail.2 = card.expiry_year;
        }
        Some(Kind::Wallet(wallet)) => {
            detail.3 = wallet.provider;
            detail.4 = wallet.wallet_id;
        }
        Some(Kind::BankAccount(account)) => detail.5 = account.iban,
        Some(Kind::CarrierBalance(_)) | None => {}
    }
    detail.6 = request.subscriber_assertion;
    let hex = crate::hex::lower(&fingerprint);
    let intent = (
        request.idempotency_key,
        hex,
        request.account_id,
        request.msisdn,
        amount.amount_minor,
        amount.currency,
        request.purpose,
        kind,
        display,
        request.channel,
        request.device_id,
        request.ip,
    );
    (intent, detail)
}

fn decode_all(frames: &[&[u8]], key: &[u8]) -> Vec<Result<(Intent, Detail), proto::DecodeError>> {
    let fingerprinter = proto::Fingerprinter::new(key);
    let mut buffer = Vec::new();
    frames
        .iter()
        .map(|frame| {
            let request = proto::decode_pay_request(frame)?;
            let fingerprint = fingerprinter.fingerprint(&request, &mut buffer);
            Ok(fields(request, fingerprint))
        })
        .collect()
}

fn into_python<'py>(
    py: Python<'py>,
    decoded: Vec<Result<(Intent, Detail), proto::DecodeError>>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    decoded
        .into_iter()
        .map(|d| match d {
            Ok(fields) => Ok(fields.into_pyobject(py)?.into_any()),
            Err(err) => Ok(err.0.into_pyobject(py)?.into_any()),
        })
        .collect()
}

/// Below this many request bytes a decode keeps the GIL: one PayRequest (every unary
/// Pay, every PayStream frame) decodes in a few microseconds, and releasing the GIL for
/// it hands the event loop's thread to whichever thread wants it (the store's, the
/// ledger's, gRPC's poller), to wait for it back: a switch per call.
const DETACH_BYTES_MIN: usize = 16 * 1024;

/// Decodes PayRequest frames, with the GIL released when they are many bytes. Each frame gives
/// `(intent fields, method detail)` or, when it is not a PayRequest, a message that
/// names the field (the caller answers INVALID_ARGUMENT). ``fingerprint_key`` keys the
/// payload fingerprint.
#[pyfunction]
fn decode_pay_requests<'py>(
    py: Python<'py>,
    frames: Vec<Vec<u8>>,
    fingerprint_key: Vec<u8>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let decoded = decoded_frames(py, &frames, &fingerprint_key)?;
    into_python(py, decoded)
}

type Decoded = Vec<Result<(Intent, Detail), proto::DecodeError>>;

/// The frames decoded (with the GIL released when they are many bytes).
fn decoded_frames(py: Python<'_>, frames: &[Vec<u8>], key: &[u8]) -> PyResult<Decoded> {
    if frames.len() > FRAMES_MAX {
        let (len, max) = (frames.len(), FRAMES_MAX);
        return Err(super::CoreError::BatchTooLarge { len, max }.into());
    }
    let decode = || {
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        decode_all(&frames, key)
    };
    let bytes: usize = frames.iter().map(Vec::len).sum();
    Ok(if bytes < DETACH_BYTES_MIN {
        decode()
    } else {
        py.detach(decode)
    })
}

/// A PayBatchRequest's payments decoded (see `decode_pay_batch`).
fn decoded_batch(
    py: Python<'_>,
    request: &[u8],
    key: &[u8],
    payments_max: usize,
) -> PyResult<Decoded> {
    let decode = || {
        let frames = proto::split_pay_batch(request, payments_max)?;
        Ok::<_, proto::DecodeError>(decode_all(&frames, key))
    };
    let decoded = if request.len() < DETACH_BYTES_MIN {
        decode()
    } else {
        py.detach(decode)
    };
    decoded.map_err(|err| super::RequestUndecodable::new_err(err.0))
}

/// Decodes a PayBatchRequest's payments, each on its own, as `decode_pay_requests`
/// does. A call of more than `payments_max` payments, or whose own framing is broken, is
/// refused whole with `RequestUndecodable`, before any payment is decoded.
#[pyfunction]
fn decode_pay_batch<'py>(
    py: Python<'py>,
    request: Vec<u8>,
    fingerprint_key: Vec<u8>,
    payments_max: usize,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let decoded = decoded_batch(py, &request, &fingerprint_key, payments_max)?;
    into_python(py, decoded)
}

/// The Python types a decoded request becomes (`quickpay_engine.domain`'s
/// `PaymentIntent`, `Method`, `MethodDetail`, and the `Purpose` and `MethodKind`
/// members), handed over once, so that the decode builds each payment's intent itself:
/// no tuple per payment for Python to unpack and no dataclass `__init__` run per field.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct IntentTypes {
    intent: Py<PyType>,
    method: Py<PyType>,
    detail: Py<PyType>,
    // The contract's purpose numbers with a member; any other number is `purpose_other`.
    purposes: Vec<(i32, Py<PyAny>)>,
    purpose_other: Py<PyAny>,
    // MethodKind's members by number (0 to 4).
    kinds: Vec<Py<PyAny>>,
    names: Names,
}

/// The attribute names set on each object, interned once.
struct Names {
    intent: [Py<PyString>; 14],
    method: [Py<PyString>; 2],
    detail: [Py<PyString>; 7],
}

const INTENT_FIELDS: [&str; 14] = [
    "idempotency_key",
    "fingerprint",
    "account_id",
    "msisdn",
    "amount_minor",
    "currency",
    "purpose",
    "method",
    "channel",
    "device_id",
    "ip",
    "detail",
    "deadline",
    "sender",
];
const METHOD_FIELDS: [&str; 2] = ["kind", "display"];
const DETAIL_FIELDS: [&str; 7] = [
    "card_pan",
    "card_expiry_month",
    "card_expiry_year",
    "wallet_provider",
    "wallet_id",
    "iban",
    "subscriber_assertion",
];

fn interned<const N: usize>(py: Python<'_>, fields: [&str; N]) -> [Py<PyString>; N] {
    fields.map(|f| PyString::intern(py, f).unbind())
}

#[pymethods]
impl IntentTypes {
    #[new]
    fn new(
        py: Python<'_>,
        intent: Py<PyType>,
        method: Py<PyType>,
        detail: Py<PyType>,
        purposes: Vec<(i32, Py<PyAny>)>,
        purpose_other: Py<PyAny>,
        kinds: Vec<Py<PyAny>>,
    ) -> PyResult<Self> {
        // Picked by the contract's number: a list in another order would decode a card
        // payment as a wallet one, without a word.
        let by_number = kinds.len() == 5
            && kinds
                .iter()
                .enumerate()
                .all(|(n, k)| k.bind(py).extract::<i64>().is_ok_and(|v| v == n as i64));
        if !by_number {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "kinds: MethodKind's five members, by number",
            ));
        }
        Ok(IntentTypes {
            intent,
            method,
            detail,
            purposes,
            purpose_other,
            kinds,
            names: Names {
                intent: interned(py, INTENT_FIELDS),
                method: interned(py, METHOD_FIELDS),
                detail: interned(py, DETAIL_FIELDS),
            },
        })
    }
}

impl IntentTypes {
    fn build<'py>(
        &self,
        py: Python<'py>,
        (intent, detail): (Intent, Detail),
        deadline: &Bound<'py, PyAny>,
        sender: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = &self.names;
        let method = blank(py, &self.method)?;
        let kind = self
            .kinds
            .get(usize::from(intent.7))
            .unwrap_or(&self.kinds[0]);
        set_field(&method, &n.method[0], kind.bind(py).clone())?;
        set_field(
            &method,
            &n.method[1],
            intent.8.into_pyobject(py)?.into_any(),
        )?;
        let shown = blank(py, &self.detail)?;
        set_field(&shown, &n.detail[0], detail.0.into_pyobject(py)?.into_any())?;
        set_field(&shown, &n.detail[1], detail.1.into_pyobject(py)?.into_any())?;
        set_field(&shown, &n.detail[2], detail.2.into_pyobject(py)?.into_any())?;
        set_field(&shown, &n.detail[3], detail.3.into_pyobject(py)?.into_any())?;
        set_field(&shown, &n.detail[4], detail.4.into_pyobject(py)?.into_any())?;
        set_field(&shown, &n.detail[5], detail.5.into_pyobject(py)?.into_any())?;
        set_field(&shown, &n.detail[6], detail.6.into_pyobject(py)?.into_any())?;
        let purpose = self
            .purposes
            .iter()
            .find(|(number, _)| *number == intent.6)
            .map_or(&self.purpose_other, |(_, member)| member);
        let obj = blank(py, &self.intent)?;
        let f = &n.intent;
        set_field(&obj, &f[0], intent.0.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[1], intent.1.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[2], intent.2.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[3], intent.3.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[4], intent.4.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[5], intent.5.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[6], purpose.bind(py).clone())?;
        set_field(&obj, &f[7], method)?;
        set_field(&obj, &f[8], intent.9.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[9], intent.10.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[10], intent.11.into_pyobject(py)?.into_any())?;
        set_field(&obj, &f[11], shown)?;
        set_field(&obj, &f[12], deadline.clone())?;
        set_field(&obj, &f[13], sender.clone())?;
        Ok(obj)
    }

    fn build_all<'py>(
        &self,
        py: Python<'py>,
        decoded: Vec<Result<(Intent, Detail), proto::DecodeError>>,
        deadline: Option<f64>,
        sender: &str,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let deadline = deadline.into_pyobject(py)?.into_any();
        let sender = PyString::new(py, sender).into_any();
        decoded
            .into_iter()
            .map(|d| match d {
                Ok(fields) => self.build(py, fields, &deadline, &sender),
                Err(err) => Ok(err.0.into_pyobject(py)?.into_any()),
            })
            .collect()
    }
}

/// `decode_pay_requests`, each frame built into a `PaymentIntent` (with ``deadline``
/// and ``sender``) by the core, or the message of a frame that is not a PayRequest.
#[pyfunction]
#[pyo3(signature = (types, frames, fingerprint_key, deadline = None, sender = ""))]
fn decode_pay_intents<'py>(
    py: Python<'py>,
    types: &IntentTypes,
    frames: Vec<Vec<u8>>,
    fingerprint_key: Vec<u8>,
    deadline: Option<f64>,
    sender: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let decoded = decoded_frames(py, &frames, &fingerprint_key)?;
    types.build_all(py, decoded, deadline, sender)
}

/// `decode_pay_batch`, each payment built into a `PaymentIntent` as
/// `decode_pay_intents` builds it.
#[pyfunction]
#[pyo3(signature = (types, request, fingerprint_key, payments_max, deadline = None, sender = ""))]
fn decode_pay_batch_intents<'py>(
    py: Python<'py>,
    types: &IntentTypes,
    request: Vec<u8>,
    fingerprint_key: Vec<u8>,
    payments_max: usize,
    deadline: Option<f64>,
    sender: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let decoded = decoded_batch(py, &request, &fingerprint_key, payments_max)?;
    types.build_all(py, decoded, deadline, sender)
}

/// Appends the PayResponse of `outcome` (a `quickpay_engine.domain.Outcome`, with its
/// `Confirmation` and `FraudAssessment`, read by attribute) to `buf`: on its own, or
/// as one of a PayBatchResponse's results. Text is borrowed from the Python strings
/// (`reply` writes it once); nothing is copied into an owned message first.
fn encode_outcome(outcome: &Bound<'_, PyAny>, buf: &mut Vec<u8>, as_result: bool) -> PyResult<()> {
    let py = outcome.py();
    let payment_id = text(outcome, intern!(py, "payment_id"))?;
    let idempotency_key = text(outcome, intern!(py, "idempotency_key"))?;
    let decline_reason = text(outcome, intern!(py, "decline_reason"))?;
    let decline_detail = text(outcome, intern!(py, "decline_detail"))?;
    let status: i32 = outcome.getattr(intern!(py, "status"))?.extract()?;
    let replayed: bool = outcome.getattr(intern!(py, "replayed"))?.extract()?;
    let fraud = outcome.getattr(intern!(py, "fraud"))?;
    let fraud = if fraud.is_none() {
        None
    } else {
        let score: u32 = fraud.getattr(intern!(py, "score"))?.extract()?;
        let decision = text(&fraud, intern!(py, "decision"))?;
        // As `Vec<String>` took them: any sequence of str, but not a str itself.
        let reasons: Vec<Bound<'_, PyString>> = fraud.getattr(intern!(py, "reasons"))?.extract()?;
        Some((score, decision, reasons))
    };
    let reasons: Vec<&str> = match &fraud {
        Some((_, _, reasons)) => reasons
            .iter()
            .map(|r| r.to_str())
            .collect::<PyResult<_>>()?,
        None => Vec::new(),
    };
    let confirmation = outcome.getattr(intern!(py, "confirmation"))?;
    let confirmation = if confirmation.is_none() {
        None
    } else {
        let c = &confirmation;
        Some((
            text(c, intern!(py, "confirmation_id"))?,
            c.getattr(intern!(py, "ledger_sequence"))?
                .extract::<u64>()?,
            c.getattr(intern!(py, "settled_at_us"))?.extract::<i64>()?,
            text(c, intern!(py, "gateway"))?,
            text(c, intern!(py, "gateway_reference"))?,
            c.getattr(intern!(py, "balance_after_minor"))?
                .extract::<i64>()?,
            text(c, intern!(py, "currency"))?,
            c.getattr(intern!(py, "service_state_after"))?
                .extract::<u8>()?,
        ))
    };
    let response = ResponseRef {
        payment_id: payment_id.to_str()?,
        idempotency_key: idempotency_key.to_str()?,
        status,
        decline_reason: decline_reason.to_str()?,
        decline_detail: decline_detail.to_str()?,
        fraud: match &fraud {
            Some((score, decision, _)) => Some(FraudRef {
                score: *score,
                decision: decision.to_str()?,
                reasons: &reasons,
            }),
            None => None,
        },
        confirmation: match &confirmation {
            Some(c) => Some(ConfirmationRef {
                confirmation_id: c.0.to_str()?,
                ledger_sequence: c.1,
                settled_at_us: c.2,
                gateway: c.3.to_str()?,
                gateway_reference: c.4.to_str()?,
                balance_after_minor: c.5,
                currency: c.6.to_str()?,
                service_state_after: crate::store::rows::status_name(c.7),
            }),
            None => None,
        },
        replayed,
    };
    if as_result {
        response.encode_as_result(buf);
    } else {
        response.encode(buf);
    }
    Ok(())
}

/// Each outcome as the bytes of its PayResponse (Pay, PayStream): the reply is encoded
/// here, so no Python protobuf message is built for it.
#[pyfunction]
fn encode_pay_responses<'py>(
    py: Python<'py>,
    outcomes: Vec<Bound<'py, PyAny>>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let mut buf = Vec::with_capacity(REPLY_BYTES_GUESS);
    outcomes
        .iter()
        .map(|o| {
            buf.clear();
            encode_outcome(o, &mut buf, false)?;
            Ok(PyBytes::new(py, &buf))
        })
        .collect()
}

/// The outcomes, in order, as the bytes of one PayBatchResponse.
#[pyfunction]
fn encode_pay_batch_response<'py>(
    py: Python<'py>,
    outcomes: Vec<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut buf = Vec::with_capacity(outcomes.len() * REPLY_BYTES_GUESS);
    for outcome in &outcomes {
        encode_outcome(outcome, &mut buf, true)?;
    }
    Ok(PyBytes::new(py, &buf))
}

/// About the size of a settled payment's reply, with its fraud assessment: what the
/// buffers start with, so a batch's grows once or not at all.
const REPLY_BYTES_GUESS: usize = 256;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_pay_responses, m)?)?;
    m.add_function(wrap_pyfunction!(encode_pay_batch_response, m)?)?;
    m.add_function(wrap_pyfunction!(decode_pay_requests, m)?)?;
    m.add_function(wrap_pyfunction!(decode_pay_batch, m)?)?;
    m.add_function(wrap_pyfunction!(decode_pay_intents, m)?)?;
    m.add_function(wrap_pyfunction!(decode_pay_batch_intents, m)?)?;
    m.add_class::<IntentTypes>()?;
    m.add("PAY_REQUEST_BYTES_MAX", proto::PAY_REQUEST_BYTES_MAX)?;
    m.add("PAY_REQUEST_FIELD_BYTES_MAX", proto::FIELD_BYTES_MAX)?;
    Ok(())
}
