//! The Reconcile RPC's reply (`quickpay.v1.ReconcileReport`) encoded in the core, from
//! the matcher's outcome and each discrepancy's investigation state, so a run of 50,000
//! discrepancies never becomes 50,000 Python messages.
//!
//! The bytes are what Python's protobuf (upb) writes for the same message with
//! `SerializeToString(deterministic=True)`: fields in number order, proto3 defaults left
//! out, and the `counts_by_category` map's entries sorted by key, each with its key and
//! value written even when zero (upb writes map entries in full; prost's own map encoder
//! leaves zeros out, hence the entries are written here). Without `deterministic` upb
//! writes map entries in its hash table's order, which changes from process to process;
//! the entries are the same. tests/test_reconcile_reply.py compares the two encoders.

use prost::encoding::{self, WireType};

use super::matcher::{Category, Outcome};
use crate::proto::v1;

/// An investigation's state of one discrepancy, as the store keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// OPEN, INVESTIGATING or RESOLVED.
    pub status: String,
    pub note: String,
}

/// Per category, in `Category::ALL` order, how many discrepancies the outcome has.
pub fn counts(outcome: &Outcome) -> [u64; 7] {
    let mut counts = [0u64; 7];
    for d in &outcome.discrepancies {
        counts[index(d.category)] += 1;
    }
    counts
}

fn index(category: Category) -> usize {
    Category::ALL
        .iter()
        .position(|&c| c == category)
        .expect("every category is in ALL")
}

/// The ReconcileReport of `outcome`; `states[k]` is the state of its k-th discrepancy.
pub fn encode(outcome: &Outcome, states: &[State], gateway: &str, business_day: &str) -> Vec<u8> {
    assert_eq!(
        states.len(),
        outcome.discrepancies.len(),
        "one state a discrepancy"
    );
    let messages: Vec<v1::Discrepancy> = outcome
        .discrepancies
        .iter()
        .zip(states)
        .map(|(d, state)| {
            let money = |amount: Option<i64>| {
                amount.map(|amount_minor| v1::Money {
                    amount_minor,
                    currency: d.currency.clone(),
                })
            };
            v1::Discrepancy {
                discrepancy_id: d.id.clone(),
                category: d.category.name().to_owned(),
                payment_id: d.payment_id.clone(),
                gateway_reference: d.gateway_reference.clone(),
                gateway_amount: money(d.gateway_amount_minor),
                billing_amount: money(d.billing_amount_minor),
                status: state.status.clone(),
                note: state.note.clone(),
                detail: d.detail.clone(),
            }
        })
        .collect();
    let mut entries: Vec<(&str, u64)> = Category::ALL
        .iter()
        .map(|c| c.name())
        .zip(counts(outcome))
        .collect();
    entries.sort_unstable();
    let size: usize = messages
        .iter()
        .map(|m| encoding::message::encoded_len(3, m))
        .sum::<usize>()
        + 256;
    let mut out = Vec::with_capacity(size);
    if outcome.records != 0 {
        encoding::uint64::encode(1, &outcome.records, &mut out);
    }
    if outcome.matched != 0 {
        encoding::uint64::encode(2, &outcome.matched, &mut out);
    }
    for message in &messages {
        encoding::message::encode(3, message, &mut out);
    }
    for (key, value) in entries {
        let len = encoding::string::encoded_len(1, &key.to_owned())
            + encoding::uint64::encoded_len(2, &value);
        encoding::encode_key(4, WireType::LengthDelimited, &mut out);
        encoding::encode_varint(len as u64, &mut out);
        encoding::string::encode(1, &key.to_owned(), &mut out);
        encoding::uint64::encode(2, &value, &mut out);
    }
    if !gateway.is_empty() {
        encoding::string::encode(5, &gateway.to_owned(), &mut out);
    }
    if !business_day.is_empty() {
        encoding::string::encode(6, &business_day.to_owned(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::reconcile::Discrepancy;

    fn outcome() -> Outcome {
        Outcome {
            records: 3,
            matched: 1,
            discrepancies: vec![Discrepancy {
                id: "dsc_0123".into(),
                category: Category::AmountMismatch,
                payment_id: "pay_1".into(),
                gateway_reference: "gw-1".into(),
                gateway_amount_minor: Some(-5),
                billing_amount_minor: Some(0),
                currency: "EUR".into(),
                detail: "gateway -5, billing 0 minor units".into(),
            }],
        }
    }

    #[test]
    fn the_reply_decodes_to_the_outcome_with_every_category_counted() {
        let states = [State {
            status: "INVESTIGATING".into(),
            note: "asked the acquirer".into(),
        }];
        let bytes = encode(&outcome(), &states, "acq-a", "2026-11-24");
        let report = v1::ReconcileReport::decode(bytes.as_slice()).expect("decodes");
        assert_eq!((report.records, report.matched), (3, 1));
        assert_eq!(report.gateway, "acq-a");
        assert_eq!(report.business_day, "2026-11-24");
        assert_eq!(report.counts_by_category.len(), 7);
        assert_eq!(report.counts_by_category["AMOUNT_MISMATCH"], 1);
        assert_eq!(report.counts_by_category["OUTSIDE_WINDOW"], 0);
        let d = &report.discrepancies[0];
        assert_eq!(d.status, "INVESTIGATING");
        assert_eq!(d.note, "asked the acquirer");
        assert_eq!(d.gateway_amount.as_ref().map(|m| m.amount_minor), Some(-5));
        // Zero is still an amount: the message is there, empty.
        assert_eq!(
            d.billing_amount,
            Some(v1::Money {
                amount_minor: 0,
                currency: "EUR".into()
            })
        );
    }

    #[test]
    fn map_entries_are_sorted_and_written_in_full() {
        let bytes = encode(&Outcome::default(), &[], "", "");
        // The first entry is AMOUNT_MISMATCH's, with its zero value written (0x10 0x00).
        let mut expected = vec![0x22, 0x13, 0x0a, 0x0f];
        expected.extend_from_slice(b"AMOUNT_MISMATCH");
        expected.extend_from_slice(&[0x10, 0x00]);
        assert_eq!(&bytes[..expected.len()], expected.as_slice());
        assert_eq!(
            v1::ReconcileReport::decode(bytes.as_slice())
                .unwrap()
                .counts_by_category
                .len(),
            7
        );
    }
}
