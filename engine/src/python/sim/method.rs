//! What the simulator's books keep of a payment method, and the declines a method
//! forces: sandbox cards, a failed Luhn check, an impossible or past expiry.
//!
//! A card is kept as its last four digits and a keyed fingerprint, never the number
//! (invariant 7); no error message repeats a request value.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::http::BadRequest;

/// Sandbox cards, as real acquirers offer them, and the decline each one gets.
const SANDBOX_DECLINES: [(&str, &str); 4] = [
    ("4000000000000002", "DO_NOT_HONOUR"),
    ("4000000000009995", "INSUFFICIENT_FUNDS"),
    ("4000000000000069", "EXPIRED_CARD"),
    ("4100000000000019", "SUSPECTED_FRAUD"),
];
/// Method kinds are kept up to this many characters ("wallet:" and the provider).
const KIND_CHARS_MAX: usize = 32;

/// What the books keep of a method.
pub(super) struct MethodSummary {
    pub(super) kind: String,
    pub(super) last4: String,
    pub(super) fingerprint: String,
}

/// The method's summary and a decline it forces (None if it forces none).
///
/// `keyed` is HMAC-SHA256 keyed with the simulator's fingerprint secret; `year_month`
/// the current UTC (year, month), against which a card's expiry is checked.
pub(super) fn summarize(
    method: &Map<String, Value>,
    keyed: &Hmac<Sha256>,
    year_month: (i64, i64),
) -> Result<(MethodSummary, Option<&'static str>), BadRequest> {
    let fingerprint = |secret: &str| {
        let mut mac = keyed.clone();
        mac.update(secret.as_bytes());
        let digest = mac.finalize().into_bytes();
        crate::hex::lower(&digest[..16])
    };
    match method.get("kind").and_then(Value::as_str) {
        Some("card") => {
            let pan = text(method, "pan")?;
            let month = integer(method, "expiry_month")?;
            let year = integer(method, "expiry_year")?;
            if !(12..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadRequest("method.pan must be 12 to 19 digits".into()));
            }
            let summary = MethodSummary {
                kind: "card".into(),
                last4: pan[pan.len() - 4..].into(),
                fingerprint: fingerprint(pan),
            };
            let decline = SANDBOX_DECLINES
                .iter()
                .find(|(card, _)| *card == pan)
                .map(|(_, reason)| *reason)
                .or_else(|| (!luhn_ok(pan)).then_some("INVALID_CARD_NUMBER"))
                .or_else(|| (!(1..=12).contains(&month)).then_some("INVALID_CARD_NUMBER"))
                .or_else(|| ((year, month) < year_month).then_some("EXPIRED_CARD"));
            Ok((summary, decline))
        }
        Some("wallet") => {
            let wallet = text(method, "wallet_id")?;
            let provider = text(method, "provider")?;
            let kind = format!("wallet:{provider}")
                .chars()
                .take(KIND_CHARS_MAX)
                .collect();
            Ok((
                MethodSummary {
                    kind,
                    last4: last_chars(wallet, 4),
                    fingerprint: fingerprint(wallet),
                },
                None,
            ))
        }
        Some("bank_account") => {
            let iban = text(method, "iban")?;
            Ok((
                MethodSummary {
                    kind: "bank_account".into(),
                    last4: last_chars(iban, 4),
                    fingerprint: fingerprint(iban),
                },
                None,
            ))
        }
        Some("carrier_balance") => Ok((
            MethodSummary {
                kind: "carrier_balance".into(),
                last4: String::new(),
                fingerprint: String::new(),
            },
            None,
        )),
        _ => Err(BadRequest(
            "method.kind must be card, wallet, bank_account or carrier_balance".into(),
        )),
    }
}

/// A string field, or the error naming it.
pub(super) fn text<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, BadRequest> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest(format!("{name} must be a str")))
}

/// An integer field (a JSON number without a fraction or exponent), or the error naming
/// it: 30.0 is never an amount.
pub(super) fn integer(body: &Map<String, Value>, name: &str) -> Result<i64, BadRequest> {
    body.get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| BadRequest(format!("{name} must be a int")))
}

fn last_chars(text: &str, n: usize) -> String {
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}

fn luhn_ok(digits: &str) -> bool {
    let total: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            match (i % 2 == 1, d > 4) {
                (true, true) => d * 2 - 9,
                (true, false) => d * 2,
                (false, _) => d,
            }
        })
        .sum();
    total % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::KeyInit;

    fn key() -> Hmac<Sha256> {
        Hmac::new_from_slice(b"k").unwrap()
    }

    fn card(pan: &str, month: i64, year: i64) -> Map<String, Value> {
        serde_json::json!({"kind": "card", "pan": pan, "expiry_month": month,
                           "expiry_year": year})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn cards_decline_by_reason_and_keep_no_number() {
        let now = (2026, 12);
        for (pan, month, year, reason) in [
            ("4242424242424242", 12, 2031, None),
            ("4000000000009995", 12, 2031, Some("INSUFFICIENT_FUNDS")),
            ("4242424242424241", 12, 2031, Some("INVALID_CARD_NUMBER")),
            ("4242424242424242", 13, 2031, Some("INVALID_CARD_NUMBER")),
            ("4242424242424242", 11, 2026, Some("EXPIRED_CARD")),
            ("4242424242424242", 12, 2026, None),
        ] {
            let (summary, decline) = summarize(&card(pan, month, year), &key(), now).unwrap();
            assert_eq!(decline, reason, "{pan} {month}/{year}");
            assert_eq!(summary.last4, &pan[12..]);
            assert_eq!(summary.fingerprint.len(), 32);
            assert!(!summary.fingerprint.contains(pan));
        }
        assert!(summarize(&card("4242", 12, 2031), &key(), now).is_err());
        let mut month_text = card("4242424242424242", 12, 2031);
        month_text.insert("expiry_month".into(), "12".into());
        let err = summarize(&month_text, &key(), now).err().unwrap();
        assert!(!err.0.contains("4242"), "no value in the message");
    }
}
