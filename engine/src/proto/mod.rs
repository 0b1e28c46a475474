//! The gRPC contract's payment messages (protos/quickpay/v1/settlement.proto), decoded
//! and encoded in the core, so the Pay path hands request bytes in and reply bytes out.
//!
//! The types are generated at build time by prost from the same .proto file the Python
//! stubs come from; a Python test round-trips every field between the two encodings.

use hmac::{Hmac, KeyInit, Mac};
use prost::Message;
use sha2::Sha256;

/// The generated messages of package `quickpay.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/quickpay.v1.rs"));
}

pub use v1::{PayRequest, PayResponse};

pub mod reply;

/// The largest PayRequest frame decoded; a larger one is refused unread. gRPC's own
/// message bound (4 MiB by default) comes first; this is the core's.
pub const PAY_REQUEST_BYTES_MAX: usize = 4 << 20;

/// The longest text field a PayRequest may carry, in bytes. Every field's own rule is
/// tighter (the longest, a subscriber assertion, is 512); this bound refuses an absurd
/// value before it is batched, so one caller's 4 MB msisdn costs nobody else anything
/// (a batch's validation columns are as wide as its widest value).
pub const FIELD_BYTES_MAX: usize = 1_024;

/// Why a frame is not a PayRequest, in words that name the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes one PayRequest frame, and normalizes it: channel names are taken in any
/// case (gateway nodes and operators write "USSD", "APP"), so the ASCII letters of
/// `channel` are lower-cased before anything reads the request, the fingerprint
/// included; a retry that differs only in the channel's case is the same payment. ASCII
/// only: a non-ASCII look-alike is left for validation to refuse.
pub fn decode_pay_request(frame: &[u8]) -> Result<PayRequest, DecodeError> {
    if frame.len() > PAY_REQUEST_BYTES_MAX {
        return Err(DecodeError(format!(
            "{} bytes, over the bound of {PAY_REQUEST_BYTES_MAX}",
            frame.len()
        )));
    }
    let mut request = PayRequest::decode(frame).map_err(|err| DecodeError(describe(&err)))?;
    check_lengths(&request)?;
    request.channel.make_ascii_lowercase();
    Ok(request)
}

/// Refuses a text field over FIELD_BYTES_MAX, naming it as the contract does.
fn check_lengths(request: &PayRequest) -> Result<(), DecodeError> {
    use v1::payment_method::Kind;
    let mut fields: Vec<(&str, &str)> = vec![
        ("idempotency_key", &request.idempotency_key),
        ("account_id", &request.account_id),
        ("msisdn", &request.msisdn),
        ("channel", &request.channel),
        ("device_id", &request.device_id),
        ("ip", &request.ip),
        ("subscriber_assertion", &request.subscriber_assertion),
    ];
    if let Some(amount) = &request.amount {
        fields.push(("amount.currency", &amount.currency));
    }
    match request.method.as_ref().and_then(|m| m.kind.as_ref()) {
        Some(Kind::Card(card)) => fields.push(("method.card.pan", &card.pan)),
        Some(Kind::Wallet(wallet)) => {
            fields.push(("method.wallet.provider", &wallet.provider));
            fields.push(("method.wallet.wallet_id", &wallet.wallet_id));
        }
        Some(Kind::BankAccount(account)) => {
            fields.push(("method.bank_account.iban", &account.iban));
        }
        Some(Kind::CarrierBalance(_)) | None => {}
    }
    match fields
        .iter()
        .find(|(_, value)| value.len() > FIELD_BYTES_MAX)
    {
        Some((name, value)) => Err(DecodeError(format!(
            "{name}: {} bytes, over the bound of {FIELD_BYTES_MAX}",
            value.len()
        ))),
        None => Ok(()),
    }
}

/// The PayRequest frames of a PayBatchRequest (`repeated PayRequest payments = 1`),
/// undecoded, so that each payment is decoded, and refused, on its own. More than
/// `payments_max` frames is refused whole; so is a message whose own framing is broken
/// (no payment of it can be trusted then). Other fields are skipped, as a decoder skips
/// fields it does not know.
pub fn split_pay_batch(bytes: &[u8], payments_max: usize) -> Result<Vec<&[u8]>, DecodeError> {
    let broken = |what: &str| DecodeError(format!("request is not a PayBatchRequest: {what}"));
    let mut frames = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let key = varint(&mut rest).ok_or_else(|| broken("a field key is cut short"))?;
        let (field, wire) = (key >> 3, key & 7);
        let len = match wire {
            0 => {
                varint(&mut rest).ok_or_else(|| broken("a varint is cut short"))?;
                0
            }
            1 => 8,
            2 => varint(&mut rest).ok_or_else(|| broken("a length is cut short"))?,
            5 => 4,
            _ => return Err(broken(&format!("field {field} has wire type {wire}"))),
        };
        let len = usize::try_from(len).map_err(|_| broken("a length is over the message"))?;
        if len > rest.len() {
            return Err(broken(&format!(
                "field {field} runs past the message's end"
            )));
        }
        let (value, after) = rest.split_at(len);
        if field == 1 && wire == 2 {
            frames.push(value);
        } else if field == 1 {
            return Err(broken("payments: not a message"));
        }
        rest = after;
    }
    if frames.len() > payments_max {
        return Err(DecodeError(format!(
            "payments: {} in one call; at most {payments_max}",
            frames.len()
        )));
    }
    Ok(frames)
}

/// A base-128 varint off the front of `bytes`; None when it is cut short or longer
/// than 10 bytes.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

/// prost says "failed to decode Protobuf message: PayRequest.amount: Money.currency:
/// invalid string value: data is not UTF-8 encoded"; the caller gets "not a PayRequest: "
/// and the part after prost's prefix, which names the message path and the field.
fn describe(err: &prost::DecodeError) -> String {
    let text = err.to_string();
    let text = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    format!("not a PayRequest: {text}")
}

/// The keyed fingerprint of a request's payload: HMAC-SHA256 over its canonical encoding
/// (fields in number order, defaults left out), so the same payload sent twice, however
/// a client laid out its bytes, has one fingerprint. Keyed, because the payload holds a
/// card number and an unkeyed hash of one can be reversed by search. Unknown fields are
/// not part of the payload.
pub fn fingerprint(key: &[u8], request: &PayRequest) -> [u8; 32] {
    Fingerprinter::new(key).fingerprint(request, &mut Vec::new())
}

/// `fingerprint` for many requests under one key: the key's HMAC state is made once,
/// not once per request, and the canonical encoding reuses one buffer.
pub struct Fingerprinter(Hmac<Sha256>);

impl Fingerprinter {
    pub fn new(key: &[u8]) -> Self {
        Fingerprinter(Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length"))
    }

    /// The request's fingerprint; `buffer` is scratch space for its encoding.
    pub fn fingerprint(&self, request: &PayRequest, buffer: &mut Vec<u8>) -> [u8; 32] {
        buffer.clear();
        request
            .encode(buffer)
            .expect("a Vec grows to take any message");
        let mut mac = self.0.clone();
        mac.update(buffer);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PayRequest {
        PayRequest {
            idempotency_key: "k-1".into(),
            account_id: "acc-1".into(),
            msisdn: "+306900000001".into(),
            amount: Some(v1::Money {
                amount_minor: 3_000,
                currency: "EUR".into(),
            }),
            purpose: v1::Purpose::BillPayment as i32,
            method: Some(v1::PaymentMethod {
                kind: Some(v1::payment_method::Kind::Card(v1::Card {
                    pan: "4242424242424242".into(),
                    expiry_month: 12,
                    expiry_year: 2031,
                })),
            }),
            channel: "app".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_request_round_trips() {
        let bytes = request().encode_to_vec();
        assert_eq!(decode_pay_request(&bytes).unwrap(), request());
    }

    #[test]
    fn the_channel_is_taken_in_any_case_and_fingerprinted_lower_cased() {
        let mut upper = request();
        upper.channel = "APP".into();
        let decoded = decode_pay_request(&upper.encode_to_vec()).unwrap();
        assert_eq!(decoded, request());
        assert_eq!(fingerprint(b"k", &decoded), fingerprint(b"k", &request()));
        // The Kelvin sign is not a K: left as it is, for validation to refuse.
        upper.channel = "\u{212A}ELVIN".into();
        let decoded = decode_pay_request(&upper.encode_to_vec()).unwrap();
        assert_eq!(decoded.channel, "\u{212A}elvin");
    }

    #[test]
    fn a_truncated_or_mangled_frame_is_refused_naming_the_field() {
        let bytes = request().encode_to_vec();
        let err = decode_pay_request(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(err.0.starts_with("not a PayRequest: "), "{err}");
        // Field 4 (amount), a Money whose currency (field 2) is not UTF-8.
        let bad = [0x22, 0x04, 0x12, 0x02, 0xff, 0xfe];
        let err = decode_pay_request(&bad).unwrap_err();
        assert!(err.0.contains("PayRequest.amount"), "{err}");
        assert!(err.0.contains("Money.currency"), "{err}");
    }

    #[test]
    fn an_over_long_field_is_refused_naming_it() {
        let mut long = request();
        long.msisdn = "+".repeat(FIELD_BYTES_MAX + 1);
        let err = decode_pay_request(&long.encode_to_vec()).unwrap_err();
        assert_eq!(err.0, "msisdn: 1025 bytes, over the bound of 1024");
        long.msisdn = "+".repeat(FIELD_BYTES_MAX);
        assert!(
            decode_pay_request(&long.encode_to_vec()).is_ok(),
            "the bound is taken"
        );
        let mut pan = request();
        if let Some(v1::payment_method::Kind::Card(card)) =
            pan.method.as_mut().and_then(|m| m.kind.as_mut())
        {
            card.pan = "4".repeat(4_000_000);
        }
        let err = decode_pay_request(&pan.encode_to_vec()).unwrap_err();
        assert!(err.0.starts_with("method.card.pan: 4000000 bytes"), "{err}");
    }

    #[test]
    fn an_oversized_frame_is_refused_unread() {
        let big = vec![0u8; PAY_REQUEST_BYTES_MAX + 1];
        assert!(decode_pay_request(&big)
            .unwrap_err()
            .0
            .contains("over the bound"));
    }

    #[test]
    fn a_batch_splits_into_its_payments_each_decoded_alone() {
        let good = request().encode_to_vec();
        let batch = v1::PayBatchRequest {
            payments: vec![request(), PayRequest::default(), request()],
        }
        .encode_to_vec();
        let frames = split_pay_batch(&batch, 3).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], &good[..]);
        assert_eq!(
            decode_pay_request(frames[1]).unwrap(),
            PayRequest::default()
        );
        // One payment whose bytes are broken inside: the others still split out.
        let mut mixed = Vec::new();
        for frame in [&good[..], &[0x22, 0x02, 0x12, 0x05][..], &good[..]] {
            mixed.push(0x0a);
            mixed.push(u8::try_from(frame.len()).unwrap());
            mixed.extend_from_slice(frame);
        }
        let frames = split_pay_batch(&mixed, 3).unwrap();
        assert!(decode_pay_request(frames[0]).is_ok());
        assert!(decode_pay_request(frames[1]).is_err());
        assert!(decode_pay_request(frames[2]).is_ok());
    }

    #[test]
    fn a_batch_over_its_bound_or_broken_framing_is_refused_whole() {
        let batch = v1::PayBatchRequest {
            payments: vec![request(); 4],
        }
        .encode_to_vec();
        let err = split_pay_batch(&batch, 3).unwrap_err();
        assert_eq!(err.0, "payments: 4 in one call; at most 3");
        let err = split_pay_batch(&batch[..batch.len() - 1], 10).unwrap_err();
        assert!(err.0.contains("runs past the message's end"), "{err}");
        assert!(split_pay_batch(&[0x0a], 10).is_err());
        assert!(split_pay_batch(&[0x08, 0x96, 0x01], 10)
            .unwrap_err()
            .0
            .contains("payments"));
        assert_eq!(split_pay_batch(&[], 10).unwrap(), Vec::<&[u8]>::new());
        // An unknown field is skipped, as any decoder would.
        assert_eq!(split_pay_batch(&[0x10, 0x01], 10).unwrap().len(), 0);
    }

    #[test]
    fn the_fingerprint_is_keyed_and_ignores_layout() {
        let a = fingerprint(b"key-a", &request());
        assert_eq!(a, fingerprint(b"key-a", &request()));
        assert_ne!(a, fingerprint(b"key-b", &request()));
        let mut other = request();
        other.amount.as_mut().unwrap().amount_minor += 1;
        assert_ne!(a, fingerprint(b"key-a", &other));
    }
}
