//! The acquirer API's sale, as the gateway adapters send it and read its answer: the
//! request body built from a batch's columns and the answer read into the fields the
//! router needs, with no Python object per payment.
//!
//! The wire format is the one `quickpay_engine.gateways.types.Instrument.wire()` and
//! `GatewayClient.sale` wrote before (the simulators and real acquirers read it):
//! `{"merchant_reference", "amount_minor", "currency", "method": {"kind", ...}}`.
//!
//! Reading an answer decides exactly as `GatewayClient._call` does: a 4xx is a definite
//! refusal (its `error.code` and `error.message`, or `HTTP_<status>`); any other status
//! outside 2xx leaves the sale's fate unknown (ambiguous); so does a 2xx body that is
//! not JSON, not UTF-8, or holds a number that is not an integer anywhere (amounts are
//! minor units: a fraction is an unreadable answer, never a float amount). Stricter
//! than before, and for the same reason: a 2xx that is not a payment object with a
//! known `state` and a string `gateway_reference`, or whose amounts do not fit 64 bits,
//! is ambiguous too (Python raised on those).

use serde::Serialize;
use serde_json::Value;

/// What a payment is charged to, borrowed from the batch's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Instrument<'a> {
    /// A card: its number travels only in the request body.
    Card {
        pan: &'a str,
        expiry_month: i64,
        expiry_year: i64,
    },
    /// A mobile-money or e-wallet account.
    Wallet {
        provider: &'a str,
        wallet_id: &'a str,
    },
    /// A direct debit.
    BankAccount { iban: &'a str },
    /// The line's own credit.
    CarrierBalance,
}

/// The request body of a sale (or an authorization: the same body on another path).
#[derive(Serialize)]
struct SaleBody<'a> {
    merchant_reference: &'a str,
    amount_minor: i64,
    currency: &'a str,
    method: Instrument<'a>,
}

/// The JSON body of one sale.
pub fn sale_body(
    reference: &str,
    amount_minor: i64,
    currency: &str,
    method: Instrument,
) -> Vec<u8> {
    let body = SaleBody {
        merchant_reference: reference,
        amount_minor,
        currency,
        method,
    };
    // Serializing borrowed strings and integers into a Vec cannot fail.
    serde_json::to_vec(&body).expect("a sale body serializes")
}

/// The payment states a gateway may answer with (the router's `STATES`).
pub const STATES: [&str; 6] = [
    "CAPTURED",
    "DECLINED",
    "AUTHORIZED",
    "VOIDED",
    "REFUNDED",
    "PARTIALLY_REFUNDED",
];

/// The fields of a payment the router reads from a 2xx answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payment {
    pub state: String,
    pub gateway_reference: String,
    pub decline_reason: String,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
}

/// How a gateway's answer to a sale reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx with a payment in it: final, or VOIDED (cancelled there earlier).
    Payment(Payment),
    /// A 4xx: the gateway refused the request; nothing was done.
    Refused { code: String, message: String },
    /// It may have been processed; the reason is for logs and names no payment data.
    Ambiguous(String),
}

/// Reads one answer (its HTTP status and body).
pub fn read_answer(status: u16, body: &[u8]) -> Answer {
    if (400..500).contains(&status) {
        return refusal(status, body);
    }
    if !(200..300).contains(&status) {
        return Answer::Ambiguous(format!("HTTP {status}"));
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => return Answer::Ambiguous("not JSON".into()),
    };
    if has_fraction(&value) {
        return Answer::Ambiguous("a non-integer number".into());
    }
    match payment(&value) {
        Ok(payment) => Answer::Payment(payment),
        Err(field) => Answer::Ambiguous(format!("no payment: field {field}")),
    }
}

/// Whether any number in the document is not an integer (a fraction, an exponent, or
/// an integer too large for 64 bits, which serde_json reads as a float).
fn has_fraction(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_fraction),
        Value::Object(map) => map.values().any(has_fraction),
        _ => false,
    }
}

fn payment(value: &Value) -> Result<Payment, &'static str> {
    let map = value.as_object().ok_or("(not an object)")?;
    let text = |name: &'static str, required: bool| -> Result<String, &'static str> {
        match map.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            _ => Err(name),
        }
    };
    let minor = |name: &'static str| -> Result<i64, &'static str> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_i64().ok_or(name),
        }
    };
    let state = text("state", true)?;
    if !STATES.contains(&state.as_str()) {
        return Err("state");
    }
    Ok(Payment {
        state,
        gateway_reference: text("gateway_reference", true)?,
        decline_reason: text("decline_reason", false)?,
        captured_minor: minor("captured_minor")?,
        refunded_minor: minor("refunded_minor")?,
        currency: text("currency", false)?,
    })
}

/// A 4xx's stable code and message, from `{"error": {"code", "message"}}` when the body
/// has it (read leniently, as text with bad bytes replaced).
fn refusal(status: u16, body: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(body);
    let error = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let field = |error: &Value, name: &str| -> Option<String> {
        match error.get(name)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    };
    match error.and_then(|e| Some((field(&e, "code")?, field(&e, "message")?))) {
        Some((code, message)) => Answer::Refused { code, message },
        None => Answer::Refused {
            code: format!("HTTP_{status}"),
            message: "no error body".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn bodies_are_the_wire_format_of_each_instrument() {
        let card = Instrument::Card {
            pan: "4242424242424242",
            expiry_month: 12,
            expiry_year: 2031,
        };
        let body = sale_body("pay_1", 3_000, "EUR", card);
        assert_eq!(
            json(&body),
            serde_json::json!({"merchant_reference": "pay_1", "amount_minor": 3000,
                "currency": "EUR", "method": {"kind": "card", "pan": "4242424242424242",
                "expiry_month": 12, "expiry_year": 2031}})
        );
        // The key order Python's json.dumps wrote (the simulator does not depend on it).
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(r#"{"merchant_reference":"pay_1","amount_minor":3000,"#));
        assert!(text.contains(r#""method":{"kind":"card","pan""#));
        for (method, expected) in [
            (
                Instrument::Wallet {
                    provider: "mpesa",
                    wallet_id: "254700000003",
                },
                serde_json::json!({"kind": "wallet", "provider": "mpesa",
                    "wallet_id": "254700000003"}),
            ),
            (
                Instrument::BankAccount {
                    iban: "GR1601101250000000012300695",
                },
                serde_json::json!({"kind": "bank_account",
                    "iban": "GR1601101250000000012300695"}),
            ),
            (
                Instrument::CarrierBalance,
                serde_json::json!({"kind": "carrier_balance"}),
            ),
        ] {
            let body = json(&sale_body("r", -1, "KES", method));
            assert_eq!(body["method"], expected);
            assert_eq!(body["amount_minor"], -1);
        }
        // A reference with quotes and non-ASCII text stays one JSON string.
        let odd = "a\"b\\c\u{e9}\n";
        let body = json(&sale_body(odd, 1, "EUR", Instrument::CarrierBalance));
        assert_eq!(body["merchant_reference"], odd);
    }

    fn captured() -> Payment {
        Payment {
            state: "CAPTURED".into(),
            gateway_reference: "ACQA-1".into(),
            decline_reason: String::new(),
            captured_minor: 3_000,
            refunded_minor: 0,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn a_payment_answer_is_read() {
        let body = br#"{"merchant_reference":"pay_1","gateway_reference":"ACQA-1",
            "state":"CAPTURED","amount_minor":3000,"currency":"EUR","captured_minor":3000,
            "refunded_minor":0,"decline_reason":"","method":{"kind":"card","last4":"4242"},
            "created_at":"2026-12-06T07:00:00Z","captured_at":null,"captured_at_us":17}"#;
        assert_eq!(read_answer(200, body), Answer::Payment(captured()));
        assert_eq!(read_answer(201, body), Answer::Payment(captured()));
        // Absent optional fields read as Python's payment.get defaults.
        let short =
            br#"{"state":"DECLINED","gateway_reference":"G","decline_reason":"EXPIRED_CARD"}"#;
        assert_eq!(
            read_answer(200, short),
            Answer::Payment(Payment {
                state: "DECLINED".into(),
                gateway_reference: "G".into(),
                decline_reason: "EXPIRED_CARD".into(),
                ..Payment::default()
            })
        );
    }

    #[test]
    fn a_fraction_anywhere_makes_the_answer_ambiguous() {
        for body in [
            &br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":3000.5}"#[..],
            br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":3000.0}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":3e3}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","x":[{"y":0.1}]}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","x":123456789012345678901234}"#,
        ] {
            assert!(
                matches!(read_answer(200, body), Answer::Ambiguous(_)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn unreadable_and_server_errors_are_ambiguous() {
        let ok = br#"{"state":"CAPTURED","gateway_reference":"G"}"#;
        for (status, body) in [
            (500, &ok[..]),
            (503, b"busy"),
            (302, b""),
            (100, b""),
            (200, b"not json"),
            (200, b""),
            (200, b"{\"state\":\"CAPTURED\",\"gateway_reference\":\"\xff\"}"),
            (200, b"[1, 2]"),
            (200, br#"{"gateway_reference":"G"}"#),
            (200, br#"{"state":"CAPTURED"}"#),
            (200, br#"{"state":"SHIPPED","gateway_reference":"G"}"#),
            (200, br#"{"state":"CAPTURED","gateway_reference":7}"#),
            (200, br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":"1"}"#),
            (200, br#"{"state":"CAPTURED","gateway_reference":"G","refunded_minor":18446744073709551615}"#),
            (200, b"NaN"),
        ] {
            assert!(
                matches!(read_answer(status, body), Answer::Ambiguous(_)),
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(read_answer(503, b""), Answer::Ambiguous("HTTP 503".into()));
    }

    #[test]
    fn a_4xx_is_a_refusal_with_its_code() {
        let body = br#"{"error":{"code":"INVALID_METHOD","message":"no such kind"}}"#;
        assert_eq!(
            read_answer(422, body),
            Answer::Refused {
                code: "INVALID_METHOD".into(),
                message: "no such kind".into()
            }
        );
        // A fraction in a refusal does not matter: nothing was done either way.
        let body = br#"{"error":{"code":5,"message":"x"},"t":0.5}"#;
        assert_eq!(
            read_answer(400, body),
            Answer::Refused {
                code: "5".into(),
                message: "x".into()
            }
        );
        for body in [&b"<html>"[..], b"{}", br#"{"error":{"code":"X"}}"#] {
            assert_eq!(
                read_answer(409, body),
                Answer::Refused {
                    code: "HTTP_409".into(),
                    message: "no error body".into()
                }
            );
        }
    }
}
