//! Subscriber assertions: a step-up token the carrier's app obtains after the
//! subscriber authenticated, binding an account and an MSISDN until an expiry.
//!
//! Wire form (ASCII, dot-separated, no field contains a dot):
//!
//! ```text
//! v1.<key id>.<account id>.<msisdn>.<expires at, Unix s>.<signature>
//! ```
//!
//! The signature is the lowercase hex HMAC-SHA256, under the key named by the key id,
//! of everything before the last dot. Several keys may be active (rotation); a token
//! names its key, so verification is one MAC, compared in constant time by the `hmac`
//! crate's `verify_slice`. The signature is checked before any claim is believed.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::config::Rules;
use super::formats::{is_account_id, is_e164};
use super::RejectCode;

/// The longest token accepted, in bytes. At the bound: `ASSERTION_MALFORMED`.
pub const ASSERTION_LEN_MAX: usize = 512;
/// Key ids are 1 to 32 characters of `[A-Za-z0-9_-]`.
pub const KEY_ID_LEN_MAX: usize = 32;
const VERSION: &[u8] = b"v1";
const SIGNATURE_HEX_LEN: usize = 64;

/// A token split into its parts; nothing in it is trusted until `verify` says so.
#[derive(Debug, PartialEq, Eq)]
pub struct Assertion<'a> {
    pub key_id: &'a [u8],
    pub account_id: &'a [u8],
    pub msisdn: &'a [u8],
    pub expires_at_s: i64,
    /// The signed text: everything before the last dot.
    pub signed: &'a [u8],
    pub signature: [u8; 32],
}

/// Whether `key_id` is a well-formed key id.
pub fn is_key_id(key_id: &[u8]) -> bool {
    (1..=KEY_ID_LEN_MAX).contains(&key_id.len())
        && key_id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_seconds(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
    )
}

/// Lowercase hex digit values; 0xff marks every other byte.
static HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut d = 0;
    while d < 10 {
        table[b'0' as usize + d] = d as u8;
        d += 1;
    }
    let mut x = 0;
    while x < 6 {
        table[b'a' as usize + x] = 10 + x as u8;
        x += 1;
    }
    table
};

/// 64 lowercase hex digits to 32 bytes. Table-driven and branch-free per digit: the
/// validity of all 64 is folded into one check at the end.
fn parse_signature(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != SIGNATURE_HEX_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        invalid |= (high | low) & 0xf0;
        *byte = high << 4 | low;
    }
    (invalid == 0).then_some(out)
}

/// Splits a token into its parts, or None when it is malformed.
pub fn parse(token: &[u8]) -> Option<Assertion<'_>> {
    if token.len() > ASSERTION_LEN_MAX {
        return None;
    }
    let mut parts = token.split(|&b| b == b'.');
    let (version, key_id, account_id, msisdn, expires, signature) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some()
        || version != VERSION
        || !is_key_id(key_id)
        || !is_account_id(account_id)
    {
        return None;
    }
    if !is_e164(msisdn) {
        return None;
    }
    Some(Assertion {
        key_id,
        account_id,
        msisdn,
        expires_at_s: parse_seconds(expires)?,
        signed: &token[..token.len() - SIGNATURE_HEX_LEN - 1],
        signature: parse_signature(signature)?,
    })
}

/// Verifies a token for a payment by `account_id` / `msisdn` at `now_s` (Unix
/// seconds): key, then
/// signature, then expiry, then subject. The token was format-checked already.
pub fn verify(
    rules: &Rules,
    token: &[u8],
    account_id: &[u8],
    msisdn: &[u8],
    now_s: i64,
) -> Option<RejectCode> {
    match parse(token) {
        Some(assertion) => verify_parsed(rules, &assertion, account_id, msisdn, now_s),
        None => Some(RejectCode::AssertionMalformed),
    }
}

/// `verify` for a token already split by `parse` (the format layer parses every
/// token; the pipeline hands its result on rather than parsing twice).
pub fn verify_parsed(
    rules: &Rules,
    assertion: &Assertion<'_>,
    account_id: &[u8],
    msisdn: &[u8],
    now_s: i64,
) -> Option<RejectCode> {
    let Some(key) = rules
        .assertion_keys
        .iter()
        .find(|k| *k.key_id == *assertion.key_id)
    else {
        return Some(RejectCode::AssertionKeyUnknown);
    };
    let mut mac = key.mac.clone();
    mac.update(assertion.signed);
    if mac.verify_slice(&assertion.signature).is_err() {
        return Some(RejectCode::AssertionSignatureInvalid);
    }
    if assertion.expires_at_s <= now_s {
        return Some(RejectCode::AssertionExpired);
    }
    if assertion.account_id != account_id || assertion.msisdn != msisdn {
        return Some(RejectCode::AssertionSubjectMismatch);
    }
    None
}

/// Makes a token (for the issuing side and for tests). `secret` is the raw key.
pub fn sign(
    key_id: &str,
    secret: &[u8],
    account_id: &str,
    msisdn: &str,
    expires_at_s: i64,
) -> String {
    let signed = format!("v1.{key_id}.{account_id}.{msisdn}.{expires_at_s}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(signed.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{signed}.{}", crate::hex::lower(&tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::config::{AssertionKey, EngineConfig};

    const SECRET_A: [u8; 32] = [7; 32];
    const SECRET_B: [u8; 32] = [9; 32];

    fn rules() -> Rules {
        let hex = crate::hex::lower;
        let config = EngineConfig {
            assertion_keys: vec![
                AssertionKey {
                    key_id: "2026-10".into(),
                    secret_hex: hex(&SECRET_A),
                },
                AssertionKey {
                    key_id: "2026-11".into(),
                    secret_hex: hex(&SECRET_B),
                },
            ],
            ..EngineConfig::default()
        };
        Rules::new(&config).unwrap()
    }

    const NOW: i64 = 1_795_629_600;

    fn check(token: &str) -> Option<RejectCode> {
        verify(&rules(), token.as_bytes(), b"acc-1", b"+306912345678", NOW)
    }

    #[test]
    fn both_rotated_keys_verify() {
        assert_eq!(
            check(&sign(
                "2026-10",
                &SECRET_A,
                "acc-1",
                "+306912345678",
                NOW + 60
            )),
            None
        );
        assert_eq!(
            check(&sign(
                "2026-11",
                &SECRET_B,
                "acc-1",
                "+306912345678",
                NOW + 60
            )),
            None
        );
    }

    #[test]
    fn near_misses() {
        let good = sign("2026-11", &SECRET_B, "acc-1", "+306912345678", NOW + 60);
        assert_eq!(
            check(&sign(
                "2026-09",
                &SECRET_B,
                "acc-1",
                "+306912345678",
                NOW + 60
            )),
            Some(RejectCode::AssertionKeyUnknown)
        );
        assert_eq!(
            check(&sign(
                "2026-11",
                &SECRET_A,
                "acc-1",
                "+306912345678",
                NOW + 60
            )),
            Some(RejectCode::AssertionSignatureInvalid)
        );
        assert_eq!(
            check(&sign("2026-11", &SECRET_B, "acc-1", "+306912345678", NOW)),
            Some(RejectCode::AssertionExpired)
        );
        assert_eq!(
            check(&sign(
                "2026-11",
                &SECRET_B,
                "acc-2",
                "+306912345678",
                NOW + 60
            )),
            Some(RejectCode::AssertionSubjectMismatch)
        );
        assert_eq!(
            check(&sign(
                "2026-11",
                &SECRET_B,
                "acc-1",
                "+306912345679",
                NOW + 60
            )),
            Some(RejectCode::AssertionSubjectMismatch)
        );
        // Extending the expiry without re-signing breaks the signature.
        let forged = good.replace(&format!(".{}.", NOW + 60), &format!(".{}.", NOW + 6_000));
        assert_eq!(check(&forged), Some(RejectCode::AssertionSignatureInvalid));
        // Malformed: uppercase hex, a missing part, another version, too long.
        assert_eq!(
            check(&good.to_uppercase()),
            Some(RejectCode::AssertionMalformed)
        );
        assert_eq!(
            check(&good[..good.len() - 1]),
            Some(RejectCode::AssertionMalformed)
        );
        assert_eq!(
            check(&good.replacen("v1.", "v2.", 1)),
            Some(RejectCode::AssertionMalformed)
        );
        assert_eq!(
            check(&format!("{good}.x")),
            Some(RejectCode::AssertionMalformed)
        );
    }
}
