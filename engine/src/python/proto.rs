//! PayRequest frames decoded in the core, a call's or a batch's frames in one crossing:
//! the gRPC handlers hand over the request bytes unparsed.

use prost::Message;
use pyo3::prelude::*;

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
    let hex: String = fingerprint.iter().map(|b| format!("{b:02x}")).collect();
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
    frames
        .iter()
        .map(|frame| {
            let request = proto::decode_pay_request(frame)?;
            let fingerprint = proto::fingerprint(key, &request);
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
    if frames.len() > FRAMES_MAX {
        let (len, max) = (frames.len(), FRAMES_MAX);
        return Err(super::CoreError::BatchTooLarge { len, max }.into());
    }
    let decode = || {
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        decode_all(&frames, &fingerprint_key)
    };
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let decoded = if bytes < DETACH_BYTES_MIN {
        decode()
    } else {
        py.detach(decode)
    };
    into_python(py, decoded)
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
    let decode = || {
        let frames = proto::split_pay_batch(&request, payments_max)?;
        Ok::<_, proto::DecodeError>(decode_all(&frames, &fingerprint_key))
    };
    let decoded = if request.len() < DETACH_BYTES_MIN {
        decode()
    } else {
        py.detach(decode)
    };
    match decoded {
        Ok(decoded) => into_python(py, decoded),
        Err(err) => Err(super::RequestUndecodable::new_err(err.0)),
    }
}

/// A confirmation as `quickpay_engine.domain.Confirmation` holds it (read by attribute).
#[derive(FromPyObject)]
struct ConfirmationView {
    confirmation_id: String,
    ledger_sequence: u64,
    settled_at_us: i64,
    gateway: String,
    gateway_reference: String,
    balance_after_minor: i64,
    currency: String,
    service_state_after: u8,
}

/// A fraud verdict as `quickpay_engine.domain.FraudAssessment` holds it.
#[derive(FromPyObject)]
struct FraudView {
    score: u32,
    decision: String,
    reasons: Vec<String>,
}

/// An outcome as `quickpay_engine.domain.Outcome` holds it: what a PayResponse says.
#[derive(FromPyObject)]
struct OutcomeView {
    payment_id: String,
    idempotency_key: String,
    status: i32,
    decline_reason: String,
    decline_detail: String,
    confirmation: Option<ConfirmationView>,
    replayed: bool,
    fraud: Option<FraudView>,
}

impl From<OutcomeView> for v1::PayResponse {
    fn from(o: OutcomeView) -> Self {
        v1::PayResponse {
            payment_id: o.payment_id,
            idempotency_key: o.idempotency_key,
            status: o.status,
            decline_reason: o.decline_reason,
            decline_detail: o.decline_detail,
            fraud: o.fraud.map(|f| v1::FraudAssessment {
                score: f.score,
                decision: f.decision,
                reasons: f.reasons,
            }),
            confirmation: o.confirmation.map(|c| v1::SettlementConfirmation {
                confirmation_id: c.confirmation_id,
                ledger_sequence: c.ledger_sequence,
                settled_at: Some(prost_types::Timestamp {
                    seconds: c.settled_at_us.div_euclid(1_000_000),
                    nanos: (c.settled_at_us.rem_euclid(1_000_000) * 1_000) as i32,
                }),
                gateway: c.gateway,
                gateway_reference: c.gateway_reference,
                balance_after: Some(v1::Money {
                    amount_minor: c.balance_after_minor,
                    currency: c.currency,
                }),
                service_state_after: crate::store::rows::status_name(c.service_state_after)
                    .to_string(),
            }),
            replayed: o.replayed,
        }
    }
}

/// Each outcome as the bytes of its PayResponse (Pay, PayStream): the reply is encoded
/// here, so no Python protobuf message is built for it.
#[pyfunction]
fn encode_pay_responses<'py>(
    py: Python<'py>,
    outcomes: Vec<OutcomeView>,
) -> Vec<Bound<'py, pyo3::types::PyBytes>> {
    outcomes
        .into_iter()
        .map(|o| pyo3::types::PyBytes::new(py, &v1::PayResponse::from(o).encode_to_vec()))
        .collect()
}

/// The outcomes, in order, as the bytes of one PayBatchResponse.
#[pyfunction]
fn encode_pay_batch_response<'py>(
    py: Python<'py>,
    outcomes: Vec<OutcomeView>,
) -> Bound<'py, pyo3::types::PyBytes> {
    let response = v1::PayBatchResponse {
        results: outcomes.into_iter().map(v1::PayResponse::from).collect(),
    };
    pyo3::types::PyBytes::new(py, &response.encode_to_vec())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_pay_responses, m)?)?;
    m.add_function(wrap_pyfunction!(encode_pay_batch_response, m)?)?;
    m.add_function(wrap_pyfunction!(decode_pay_requests, m)?)?;
    m.add_function(wrap_pyfunction!(decode_pay_batch, m)?)?;
    m.add("PAY_REQUEST_BYTES_MAX", proto::PAY_REQUEST_BYTES_MAX)?;
    m.add("PAY_REQUEST_FIELD_BYTES_MAX", proto::FIELD_BYTES_MAX)?;
    Ok(())
}
