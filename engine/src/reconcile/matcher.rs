//! Matching a settlement report against billing: every row and every billed capture
//! ends in exactly one category. Pure: the same inputs give the same outcome, and the
//! same discrepancy ids, so a re-run finds the investigations already opened.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::report::{Row, RowKind, RowStatus};

/// What is wrong with a row or a billed capture. Names are stable (persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    MissingInBilling,
    MissingAtGateway,
    AmountMismatch,
    CurrencyMismatch,
    StatusMismatch,
    DuplicateAtGateway,
    OutsideWindow,
}

impl Category {
    /// Every category, in the order reports list them.
    pub const ALL: [Category; 7] = [
        Category::MissingInBilling,
        Category::MissingAtGateway,
        Category::AmountMismatch,
        Category::CurrencyMismatch,
        Category::StatusMismatch,
        Category::DuplicateAtGateway,
        Category::OutsideWindow,
    ];

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Category::MissingInBilling => "MISSING_IN_BILLING",
            Category::MissingAtGateway => "MISSING_AT_GATEWAY",
            Category::AmountMismatch => "AMOUNT_MISMATCH",
            Category::CurrencyMismatch => "CURRENCY_MISMATCH",
            Category::StatusMismatch => "STATUS_MISMATCH",
            Category::DuplicateAtGateway => "DUPLICATE_AT_GATEWAY",
            Category::OutsideWindow => "OUTSIDE_WINDOW",
        }
    }
}

/// A payment billing settled through the gateway: what the report must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub payment_id: String,
    pub gateway_reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub settled_at_us: i64,
    pub refunded: bool,
}

/// The report being judged: whose, which business day, and the cut-off tolerance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub gateway: String,
    /// The day as ISO 8601 ("2026-11-24"): part of every discrepancy id.
    pub business_day: String,
    /// The day's bounds in microseconds since the epoch, UTC, end exclusive.
    pub start_us: i64,
    pub end_us: i64,
    /// A capture this close to midnight may land on the next day's report.
    pub tolerance_us: i64,
}

/// One thing that does not agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discrepancy {
    /// "dsc_" and 24 hex digits of a SHA-256 of what makes it this discrepancy.
    pub id: String,
    pub category: Category,
    pub payment_id: String,
    pub gateway_reference: String,
    pub gateway_amount_minor: Option<i64>,
    pub billing_amount_minor: Option<i64>,
    pub currency: String,
    pub detail: String,
}

/// The outcome of one report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub records: u64,
    pub matched: u64,
    pub discrepancies: Vec<Discrepancy>,
}

fn flag(
    window: &Window,
    out: &mut Outcome,
    category: Category,
    capture: Option<&Capture>,
    row: Option<&Row>,
    detail: String,
) {
    let payment_id = match (capture, row) {
        (Some(c), _) => c.payment_id.as_str(),
        (None, Some(r)) => r.merchant_reference.as_str(),
        (None, None) => "",
    };
    let reference = match (row, capture) {
        (Some(r), _) => r.gateway_reference.as_str(),
        (None, Some(c)) => c.gateway_reference.as_str(),
        (None, None) => "",
    };
    // A duplicate is one per extra line; everything else is one per payment and reference.
    let line = match row {
        Some(r) if category == Category::DuplicateAtGateway => r.line,
        _ => 0,
    };
    let key = format!(
        "{}|{}|{}|{payment_id}|{reference}|{line}",
        window.gateway,
        window.business_day,
        category.name()
    );
    let digest = Sha256::digest(key.as_bytes());
    let mut id = String::with_capacity(28);
    id.push_str("dsc_");
    crate::hex::push(&mut id, &digest[..12]);
    let currency = match (row, capture) {
        (Some(r), _) => r.currency.clone(),
        (None, Some(c)) => c.currency.clone(),
        (None, None) => String::new(),
    };
    out.discrepancies.push(Discrepancy {
        id,
        category,
        payment_id: payment_id.to_string(),
        gateway_reference: reference.to_string(),
        gateway_amount_minor: row.map(|r| r.amount_minor),
        billing_amount_minor: capture.map(|c| c.amount_minor),
        currency,
        detail,
    });
}

/// Categorizes every report row and every billed capture of the day.
///
/// A row is matched to billing by gateway reference, else by merchant reference (our
/// payment id). A capture billed in the last tolerance of the day may appear on the
/// next day's report, so its absence is not a discrepancy; a row dated outside the day
/// widened by the tolerance, or more than the tolerance away from when billing settled
/// it, is OUTSIDE_WINDOW. Where two captures share a reference or a payment id, the
/// later one in `captures` is the one matched.
pub fn reconcile(window: &Window, rows: &[Row], captures: &[Capture]) -> Outcome {
    let tolerance_us = window.tolerance_us;
    let mut by_reference: HashMap<&str, usize> = HashMap::with_capacity(captures.len());
    // Payment ids in the order first billed, each with its latest capture: the order
    // the sweep for captures the report lacks goes in.
    let mut by_payment: HashMap<&str, usize> = HashMap::with_capacity(captures.len());
    let mut payment_order: Vec<&str> = Vec::with_capacity(captures.len());
    for (k, capture) in captures.iter().enumerate() {
        by_reference.insert(capture.gateway_reference.as_str(), k);
        match by_payment.entry(capture.payment_id.as_str()) {
            Entry::Occupied(mut slot) => *slot.get_mut() = k,
            Entry::Vacant(slot) => {
                slot.insert(k);
                payment_order.push(capture.payment_id.as_str());
            }
        }
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(rows.len());
    let mut found: HashSet<&str> = HashSet::with_capacity(rows.len());
    let mut out = Outcome::default();
    for row in rows {
        out.records += 1;
        if row.kind != RowKind::Capture {
            // Refund rows are matched against billing's refunds (the refund issue); they
            // are counted, not judged, here.
            out.matched += 1;
            continue;
        }
        let reference = row.gateway_reference.as_str();
        if !seen.insert(reference) {
            let capture = by_reference.get(reference).map(|&k| &captures[k]);
            let detail = format!("gateway reference reported again at line {}", row.line);
            flag(
                window,
                &mut out,
                Category::DuplicateAtGateway,
                capture,
                Some(row),
                detail,
            );
            continue;
        }
        let capture = by_reference
            .get(reference)
            .or_else(|| by_payment.get(row.merchant_reference.as_str()))
            .map(|&k| &captures[k]);
        let Some(capture) = capture else {
            if row.status == RowStatus::Voided {
                // A capture the engine gave back (its database commit could not land):
                // no money moved at the gateway and none in billing, so the two agree.
                out.matched += 1;
                continue;
            }
            let detail = "the gateway captured a payment billing never settled".to_string();
            flag(
                window,
                &mut out,
                Category::MissingInBilling,
                None,
                Some(row),
                detail,
            );
            continue;
        };
        if !found.insert(capture.payment_id.as_str()) {
            // One payment captured again under another reference: a double charge.
            let detail = format!("payment captured again as {reference} at line {}", row.line);
            flag(
                window,
                &mut out,
                Category::DuplicateAtGateway,
                Some(capture),
                Some(row),
                detail,
            );
            continue;
        }
        let within_day = window.start_us.saturating_sub(tolerance_us) <= row.captured_at_us
            && row.captured_at_us < window.end_us.saturating_add(tolerance_us);
        let (category, detail) = if row.currency != capture.currency {
            let detail = format!("gateway {}, billing {}", row.currency, capture.currency);
            (Category::CurrencyMismatch, detail)
        } else if row.amount_minor != capture.amount_minor {
            let detail = format!(
                "gateway {}, billing {} minor units",
                row.amount_minor, capture.amount_minor
            );
            (Category::AmountMismatch, detail)
        } else if row.status != RowStatus::Settled && !capture.refunded {
            let detail = format!("gateway {}, billing SETTLED", row.status.name());
            (Category::StatusMismatch, detail)
        } else if !within_day
            || row.captured_at_us.abs_diff(capture.settled_at_us) > tolerance_us.unsigned_abs()
        {
            let detail = "captured outside the business day and its tolerance".to_string();
            (Category::OutsideWindow, detail)
        } else {
            out.matched += 1;
            continue;
        };
        flag(window, &mut out, category, Some(capture), Some(row), detail);
    }
    for payment_id in payment_order {
        if found.contains(payment_id) {
            continue;
        }
        let capture = &captures[by_payment[payment_id]];
        // Billed in the last tolerance of the day before, it was yesterday's run's to
        // skip and is today's to find; billed in today's last tolerance, it is tomorrow's.
        if window.start_us.saturating_sub(tolerance_us) <= capture.settled_at_us
            && capture.settled_at_us < window.end_us.saturating_sub(tolerance_us)
        {
            let detail = "billing settled it; the gateway's report lacks it".to_string();
            flag(
                window,
                &mut out,
                Category::MissingAtGateway,
                Some(capture),
                None,
                detail,
            );
        }
    }
    out
}
