//! PayResponse bytes written straight from borrowed fields.
//!
//! The reply of every payment RPC is encoded here: one PayResponse (Pay, PayStream) or
//! a PayBatchResponse of them. Going through prost's generated `PayResponse` meant an
//! owned `String` for each of a reply's dozen text fields, copied out of the Python
//! outcome, a vector of the batch's messages, and the lengths walked twice; that cost
//! more than reading the outcome. Here the fields are borrowed where they live and
//! written once, into one buffer. The generated types stay the reference: a test holds
//! these bytes equal to prost's for any values (`tests` below), so the field numbers and
//! proto3's rules (a default scalar is not written; a present sub-message is, even
//! empty; each element of a repeated string is) cannot drift from the .proto file.

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

/// A FraudAssessment's fields.
#[derive(Debug, Clone, Copy)]
pub struct FraudRef<'a> {
    pub score: u32,
    pub decision: &'a str,
    pub reasons: &'a [&'a str],
}

/// A SettlementConfirmation's fields; `settled_at_us` becomes its Timestamp and
/// `balance_after_minor` with `currency` its Money.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmationRef<'a> {
    pub confirmation_id: &'a str,
    pub ledger_sequence: u64,
    pub settled_at_us: i64,
    pub gateway: &'a str,
    pub gateway_reference: &'a str,
    pub balance_after_minor: i64,
    pub currency: &'a str,
    pub service_state_after: &'a str,
}

/// A PayResponse's fields.
#[derive(Debug, Clone, Copy)]
pub struct ResponseRef<'a> {
    pub payment_id: &'a str,
    pub idempotency_key: &'a str,
    pub status: i32,
    pub decline_reason: &'a str,
    pub decline_detail: &'a str,
    pub fraud: Option<FraudRef<'a>>,
    pub confirmation: Option<ConfirmationRef<'a>>,
    pub replayed: bool,
}

// proto3 integers on the wire: a signed value as its two's complement in 64 bits, as
// prost writes int32 and int64.
fn signed(value: i64) -> u64 {
    value as u64
}

fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn put_varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn text_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        delimited_len(tag, value.len())
    }
}

fn put_text(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        put_delimited(tag, value.len(), buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// A Timestamp's (seconds, nanos) for microseconds since the epoch.
fn timestamp(us: i64) -> (i64, i32) {
    (
        us.div_euclid(1_000_000),
        (us.rem_euclid(1_000_000) * 1_000) as i32,
    )
}

impl FraudRef<'_> {
    fn body_len(&self) -> usize {
        varint_len(1, u64::from(self.score))
            + text_len(2, self.decision)
            + self
                .reasons
                .iter()
                .map(|r| delimited_len(3, r.len()))
                .sum::<usize>()
    }

    fn put(&self, buf: &mut Vec<u8>) {
        put_varint(1, u64::from(self.score), buf);
        put_text(2, self.decision, buf);
        for reason in self.reasons {
            put_delimited(3, reason.len(), buf);
            buf.extend_from_slice(reason.as_bytes());
        }
    }
}

impl ConfirmationRef<'_> {
    fn timestamp_len(&self) -> usize {
        let (seconds, nanos) = timestamp(self.settled_at_us);
        varint_len(1, signed(seconds)) + varint_len(2, signed(i64::from(nanos)))
    }

    fn money_len(&self) -> usize {
        varint_len(1, signed(self.balance_after_minor)) + text_len(2, self.currency)
    }

    fn body_len(&self) -> usize {
        text_len(1, self.confirmation_id)
            + varint_len(2, self.ledger_sequence)
            + delimited_len(3, self.timestamp_len())
            + text_len(4, self.gateway)
            + text_len(5, self.gateway_reference)
            + delimited_len(6, self.money_len())
            + text_len(7, self.service_state_after)
    }

    fn put(&self, buf: &mut Vec<u8>) {
        put_text(1, self.confirmation_id, buf);
        put_varint(2, self.ledger_sequence, buf);
        let (seconds, nanos) = timestamp(self.settled_at_us);
        put_delimited(3, self.timestamp_len(), buf);
        put_varint(1, signed(seconds), buf);
        put_varint(2, signed(i64::from(nanos)), buf);
        put_text(4, self.gateway, buf);
        put_text(5, self.gateway_reference, buf);
        put_delimited(6, self.money_len(), buf);
        put_varint(1, signed(self.balance_after_minor), buf);
        put_text(2, self.currency, buf);
        put_text(7, self.service_state_after, buf);
    }
}

impl ResponseRef<'_> {
    /// The length of the PayResponse's bytes.
    pub fn encoded_len(&self) -> usize {
        text_len(1, self.payment_id)
            + text_len(2, self.idempotency_key)
            + varint_len(3, signed(i64::from(self.status)))
            + text_len(4, self.decline_reason)
            + text_len(5, self.decline_detail)
            + self.fraud.map_or(0, |f| delimited_len(6, f.body_len()))
            + self
                .confirmation
                .map_or(0, |c| delimited_len(7, c.body_len()))
            + varint_len(8, u64::from(self.replayed))
    }

    /// Appends the PayResponse's bytes to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_text(1, self.payment_id, buf);
        put_text(2, self.idempotency_key, buf);
        put_varint(3, signed(i64::from(self.status)), buf);
        put_text(4, self.decline_reason, buf);
        put_text(5, self.decline_detail, buf);
        if let Some(fraud) = &self.fraud {
            put_delimited(6, fraud.body_len(), buf);
            fraud.put(buf);
        }
        if let Some(confirmation) = &self.confirmation {
            put_delimited(7, confirmation.body_len(), buf);
            confirmation.put(buf);
        }
        put_varint(8, u64::from(self.replayed), buf);
    }

    /// Appends the PayResponse as one element of a PayBatchResponse's `results` (field
    /// 1): the whole batch's bytes are these, one after another, in order.
    pub fn encode_as_result(&self, buf: &mut Vec<u8>) {
        put_delimited(1, self.encoded_len(), buf);
        self.encode(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1;
    use proptest::prelude::*;
    use prost::Message;

    /// A confirmation's owned values, in `ConfirmationRef`'s order.
    type OwnedConfirmation = (String, u64, i64, String, String, i64, String, String);

    /// The owned values a `ResponseRef` borrows from.
    #[derive(Debug, Clone)]
    struct Owned {
        text: [String; 4],
        status: i32,
        fraud: Option<(u32, String, Vec<String>)>,
        confirmation: Option<OwnedConfirmation>,
        replayed: bool,
    }

    impl Owned {
        fn with<T>(&self, f: impl FnOnce(ResponseRef<'_>) -> T) -> T {
            let reasons: Vec<&str> = self
                .fraud
                .as_ref()
                .map(|(_, _, r)| r.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let response = ResponseRef {
                payment_id: &self.text[0],
                idempotency_key: &self.text[1],
                status: self.status,
                decline_reason: &self.text[2],
                decline_detail: &self.text[3],
                fraud: self.fraud.as_ref().map(|(score, decision, _)| FraudRef {
                    score: *score,
                    decision,
                    reasons: &reasons,
                }),
                confirmation: self.confirmation.as_ref().map(|c| ConfirmationRef {
                    confirmation_id: &c.0,
                    ledger_sequence: c.1,
                    settled_at_us: c.2,
                    gateway: &c.3,
                    gateway_reference: &c.4,
                    balance_after_minor: c.5,
                    currency: &c.6,
                    service_state_after: &c.7,
                }),
                replayed: self.replayed,
            };
            f(response)
        }

        /// The same reply as prost's generated message.
        fn message(&self) -> v1::PayResponse {
            v1::PayResponse {
                payment_id: self.text[0].clone(),
                idempotency_key: self.text[1].clone(),
                status: self.status,
                decline_reason: self.text[2].clone(),
                decline_detail: self.text[3].clone(),
                fraud: self
                    .fraud
                    .clone()
                    .map(|(score, decision, reasons)| v1::FraudAssessment {
                        score,
                        decision,
                        reasons,
                    }),
                confirmation: self.confirmation.clone().map(|c| {
                    let (seconds, nanos) = timestamp(c.2);
                    v1::SettlementConfirmation {
                        confirmation_id: c.0,
                        ledger_sequence: c.1,
                        settled_at: Some(prost_types::Timestamp { seconds, nanos }),
                        gateway: c.3,
                        gateway_reference: c.4,
                        balance_after: Some(v1::Money {
                            amount_minor: c.5,
                            currency: c.6,
                        }),
                        service_state_after: c.7,
                    }
                }),
                replayed: self.replayed,
            }
        }
    }

    // Empty strings and zeros often, so that the defaults proto3 leaves out are tried.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-zA-Z0-9_ é€-]{1,40}", ".{0,300}"]
    }

    fn number() -> impl Strategy<Value = i64> {
        prop_oneof![Just(0i64), Just(-1i64), any::<i64>(), 0i64..1_000_000]
    }

    fn owned() -> impl Strategy<Value = Owned> {
        let fraud = proptest::option::of((
            prop_oneof![Just(0u32), any::<u32>()],
            text(),
            proptest::collection::vec(text(), 0..4),
        ));
        let confirmation = proptest::option::of((
            text(),
            prop_oneof![Just(0u64), any::<u64>()],
            number(),
            text(),
            text(),
            number(),
            text(),
            text(),
        ));
        (
            [text(), text(), text(), text()],
            prop_oneof![Just(0i32), -2i32..6, any::<i32>()],
            fraud,
            confirmation,
            any::<bool>(),
        )
            .prop_map(|(text, status, fraud, confirmation, replayed)| Owned {
                text,
                status,
                fraud,
                confirmation,
                replayed,
            })
    }

    proptest! {
        #[test]
        fn a_reply_is_the_bytes_prost_writes(reply in owned()) {
            let ours = reply.with(|r| {
                let mut buf = Vec::new();
                r.encode(&mut buf);
                assert_eq!(buf.len(), r.encoded_len());
                buf
            });
            prop_assert_eq!(ours, reply.message().encode_to_vec());
        }

        #[test]
        fn a_batch_is_the_bytes_prost_writes(replies in proptest::collection::vec(owned(), 0..6)) {
            let mut ours = Vec::new();
            for reply in &replies {
                reply.with(|r| r.encode_as_result(&mut ours));
            }
            let theirs = v1::PayBatchResponse {
                results: replies.iter().map(Owned::message).collect(),
            };
            prop_assert_eq!(ours, theirs.encode_to_vec());
        }
    }

    #[test]
    fn a_settled_reply_with_everything_is_the_bytes_prost_writes() {
        let reply = Owned {
            text: [
                "pay_0001".into(),
                "key-1".into(),
                String::new(),
                String::new(),
            ],
            status: 2,
            fraud: Some((
                120,
                "APPROVE".into(),
                vec!["velocity".into(), String::new()],
            )),
            confirmation: Some((
                "conf_1".into(),
                7,
                -1,
                "acq-a".into(),
                "ref-1".into(),
                -12_345,
                "EUR".into(),
                "ACTIVE".into(),
            )),
            replayed: true,
        };
        let ours = reply.with(|r| {
            let mut buf = Vec::new();
            r.encode(&mut buf);
            buf
        });
        assert_eq!(ours, reply.message().encode_to_vec());
    }
}
