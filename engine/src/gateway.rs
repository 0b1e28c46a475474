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
    let mut body = Vec::new();
    write_sale_body(&mut body, reference, amount_minor, currency, method);
    body
}

/// The JSON body of one sale, appended to `out` (a batch's bodies share one buffer).
pub fn write_sale_body(
    out: &mut Vec<u8>,
    reference: &str,
    amount_minor: i64,
    currency: &str,
    method: Instrument,
) {
    let body = SaleBody {
        merchant_reference: reference,
        amount_minor,
        currency,
        method,
    };
    // Serializing borrowed strings and integers into a Vec cannot fail.
    serde_json::to_writer(out, &body).expect("a sale body serializes");
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
    // Read in one pass into the fields the router needs, with no `Value` tree: the
    // other members are skipped, only checked for fractions.
    let scan: Scan = match serde_json::from_slice(body) {
        Ok(scan) => scan,
        Err(_) => return Answer::Ambiguous("not JSON".into()),
    };
    if scan.fraction {
        return Answer::Ambiguous("a non-integer number".into());
    }
    match scan.fields.ok_or("(not an object)").and_then(payment) {
        Ok(payment) => Answer::Payment(payment),
        Err(field) => Answer::Ambiguous(format!("no payment: field {field}")),
    }
}

/// One member of a payment answer the router reads, as it came.
#[derive(Default)]
enum Slot {
    /// Not in the object.
    #[default]
    Absent,
    Null,
    Text(String),
    /// An integer that fits 64 bits signed.
    Integer(i64),
    /// Anything else: a boolean, an array, an object, a float, an integer past i64.
    Other,
}

/// The members of a payment answer the router reads (the last of duplicates wins, as
/// serde_json's `Value` kept it).
#[derive(Default)]
struct Fields {
    state: Slot,
    gateway_reference: Slot,
    decline_reason: Slot,
    captured_minor: Slot,
    refunded_minor: Slot,
    currency: Slot,
}

/// A whole answer document read in one pass: its payment members when it is an
/// object, and whether any number anywhere in it is not an integer (a fraction, an
/// exponent, or an integer too large for 64 bits, which serde_json reads as a float).
/// Stricter than a `Value` only for a duplicated member: a fraction in a member that a
/// later duplicate replaces still counts (the answer is then ambiguous).
struct Scan {
    fields: Option<Fields>,
    fraction: bool,
}

impl<'de> serde::Deserialize<'de> for Scan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scan, D::Error> {
        struct Top;
        impl<'de> serde::de::Visitor<'de> for Top {
            type Value = Scan;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON document")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scan, A::Error> {
                let mut fields = Fields::default();
                let mut fraction = false;
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::State => &mut fields.state,
                        Key::GatewayReference => &mut fields.gateway_reference,
                        Key::DeclineReason => &mut fields.decline_reason,
                        Key::CapturedMinor => &mut fields.captured_minor,
                        Key::RefundedMinor => &mut fields.refunded_minor,
                        Key::Currency => &mut fields.currency,
                        Key::Other => {
                            fraction |= map.next_value::<Integers>()?.fraction;
                            continue;
                        }
                    };
                    let member: Member = map.next_value()?;
                    fraction |= member.fraction;
                    *slot = member.slot;
                }
                Ok(Scan {
                    fields: Some(fields),
                    fraction,
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Scan, A::Error> {
                let fraction = Integers::visit_items(seq)?;
                Ok(Scan {
                    fields: None,
                    fraction,
                })
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scan, E> {
                Ok(Scan::scalar(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Scan, E> {
                Ok(Scan::scalar(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Scan, E> {
                Ok(Scan::scalar(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Scan, E> {
                Ok(Scan::scalar(true))
            }
            fn visit_str<E>(self, _: &str) -> Result<Scan, E> {
                Ok(Scan::scalar(false))
            }
            fn visit_unit<E>(self) -> Result<Scan, E> {
                Ok(Scan::scalar(false))
            }
        }
        d.deserialize_any(Top)
    }
}

impl Scan {
    fn scalar(fraction: bool) -> Scan {
        Scan {
            fields: None,
            fraction,
        }
    }
}

/// The name of a member, matched without allocating.
enum Key {
    State,
    GatewayReference,
    DeclineReason,
    CapturedMinor,
    RefundedMinor,
    Currency,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, name: &str) -> Result<Key, E> {
                Ok(match name {
                    "state" => Key::State,
                    "gateway_reference" => Key::GatewayReference,
                    "decline_reason" => Key::DeclineReason,
                    "captured_minor" => Key::CapturedMinor,
                    "refunded_minor" => Key::RefundedMinor,
                    "currency" => Key::Currency,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(Name)
    }
}

/// A member the router reads: its value, and whether a fraction is in it.
struct Member {
    slot: Slot,
    fraction: bool,
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
        struct Value;
        impl<'de> serde::de::Visitor<'de> for Value {
            type Value = Member;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Member, E> {
                Ok(Member::of(Slot::Text(s.to_owned())))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Member, E> {
                Ok(Member::of(Slot::Integer(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Member, E> {
                Ok(Member::of(
                    i64::try_from(n).map_or(Slot::Other, Slot::Integer),
                ))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Member, E> {
                Ok(Member {
                    slot: Slot::Other,
                    fraction: true,
                })
            }
            fn visit_bool<E>(self, _: bool) -> Result<Member, E> {
                Ok(Member::of(Slot::Other))
            }
            fn visit_unit<E>(self) -> Result<Member, E> {
                Ok(Member::of(Slot::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Member, A::Error> {
                Ok(Member {
                    slot: Slot::Other,
                    fraction: Integers::visit_items(seq)?,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Member, A::Error> {
                Ok(Member {
                    slot: Slot::Other,
                    fraction: Integers::visit_members(map)?,
                })
            }
        }
        d.deserialize_any(Value)
    }
}

impl Member {
    fn of(slot: Slot) -> Member {
        Member {
            slot,
            fraction: false,
        }
    }
}

/// Any JSON value, skipped: only whether a number in it is not an integer is kept.
struct Integers {
    fraction: bool,
}

impl Integers {
    fn visit_items<'de, A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<bool, A::Error> {
        let mut fraction = false;
        while let Some(item) = seq.next_element::<Integers>()? {
            fraction |= item.fraction;
        }
        Ok(fraction)
    }

    fn visit_members<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
        let mut fraction = false;
        while let Some((serde::de::IgnoredAny, item)) =
            map.next_entry::<serde::de::IgnoredAny, Integers>()?
        {
            fraction |= item.fraction;
        }
        Ok(fraction)
    }
}

impl<'de> serde::Deserialize<'de> for Integers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Integers, D::Error> {
        struct Skip;
        impl<'de> serde::de::Visitor<'de> for Skip {
            type Value = bool;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
                Ok(true)
            }
            fn visit_str<E>(self, _: &str) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_unit<E>(self) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
                Integers::visit_items(seq)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
                Integers::visit_members(map)
            }
        }
        Ok(Integers {
            fraction: d.deserialize_any(Skip)?,
        })
    }
}

fn payment(fields: Fields) -> Result<Payment, &'static str> {
    let text = |slot: Slot, name: &'static str, required: bool| match slot {
        Slot::Text(s) => Ok(s),
        Slot::Absent | Slot::Null if !required => Ok(String::new()),
        _ => Err(name),
    };
    let minor = |slot: Slot, name: &'static str| match slot {
        Slot::Absent | Slot::Null => Ok(0),
        Slot::Integer(n) => Ok(n),
        _ => Err(name),
    };
    let state = text(fields.state, "state", true)?;
    if !STATES.contains(&state.as_str()) {
        return Err("state");
    }
    Ok(Payment {
        state,
        gateway_reference: text(fields.gateway_reference, "gateway_reference", true)?,
        decline_reason: text(fields.decline_reason, "decline_reason", false)?,
        captured_minor: minor(fields.captured_minor, "captured_minor")?,
        refunded_minor: minor(fields.refunded_minor, "refunded_minor")?,
        currency: text(fields.currency, "currency", false)?,
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

    /// The reader this module had before the one-pass `Scan`: a `Value` tree walked for
    /// fractions, then its members read. The one-pass reader must decide alike.
    fn read_with_value(body: &[u8]) -> Answer {
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
            let text = |name: &'static str, required: bool| match map.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                None | Some(Value::Null) if !required => Ok(String::new()),
                _ => Err(name),
            };
            let minor = |name: &'static str| match map.get(name) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v.as_i64().ok_or(name),
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

    #[test]
    fn the_one_pass_reader_decides_as_the_value_tree_did() {
        let bodies: &[&[u8]] = &[
            br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":3000,
                "refunded_minor":0,"currency":"EUR","decline_reason":null,
                "method":{"kind":"card","last4":"4242","n":[1,2,{"a":null}]},"ok":true}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","method":{"x":[1,{"y":2.5}]}}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":-9223372036854775808}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":9223372036854775808}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":true}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","captured_minor":[1]}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","currency":5}"#,
            br#"{"state":"CAPTURED","gateway_reference":null}"#,
            br#"{"state":null,"gateway_reference":"G"}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","decline_reason":{}}"#,
            br#"{"state":"CAPTURED","state":"DECLINED","gateway_reference":"G"}"#,
            br#"{"st\u0061te":"CAPTURED","gateway_reference":"G\u00e9\n"}"#,
            br#"{"state":"CAPTURED","gateway_reference":"G"} x"#,
            br#"{"state":"CAPTURED","gateway_reference":"G","#,
            br#"{"state":"CAPTURED","gateway_reference":"G","x":1.5"#,
            br#"[{"state":"CAPTURED","gateway_reference":"G"}]"#,
            br#"[1, 2.0]"#,
            b"1.5",
            b"7",
            b"-7",
            b"\"CAPTURED\"",
            b"null",
            b"true",
            b"{}",
            b" { } ",
        ];
        for body in bodies {
            assert_eq!(
                read_answer(200, body),
                read_with_value(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    proptest::proptest! {
        /// Random documents over the answer's member names and every kind of JSON value.
        #[test]
        fn random_documents_read_as_the_value_tree_read_them(value in document()) {
            let body = serde_json::to_vec(&value).unwrap();
            proptest::prop_assert_eq!(read_answer(200, &body), read_with_value(&body));
        }
    }

    fn document() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            prop::sample::select(vec!["CAPTURED", "DECLINED", "VOIDED", "SHIPPED", "G", ""])
                .prop_map(Value::from),
        ];
        let tree = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((name(), inner), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        });
        prop::collection::vec((name(), tree), 0..8)
            .prop_map(|members| Value::Object(members.into_iter().collect()))
    }

    fn name() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        proptest::sample::select(vec![
            "state",
            "gateway_reference",
            "decline_reason",
            "captured_minor",
            "refunded_minor",
            "currency",
            "method",
            "x",
        ])
        .prop_map(str::to_owned)
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
