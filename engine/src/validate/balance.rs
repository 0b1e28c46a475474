//! Layer 4, balance and limits: the payment fits the line's balance and the
//! subscriber's daily and monthly allowances.
//!
//! Each payment is checked against the state as of the call. Two payments of one
//! account in the same batch are not summed here: the carrier-balance hold reserved
//! after validation (`reserve_holds`) is what stops the second from spending the same
//! credit, and the counters move when payments settle (`record_settled`).

use super::clock::Now;
use super::config::Rules;
use super::subscribers::{Entry, Plan};
use super::{MethodKind, PaymentView, Purpose, RejectCode};
use crate::money::Currency;

/// The first balance or limit failure, if any.
pub fn check(
    rules: &Rules,
    entry: &Entry,
    p: &PaymentView<'_>,
    currency: Currency,
    now: &Now,
) -> Option<RejectCode> {
    let subscriber = &entry.subscriber;
    let amount = p.amount_minor;
    match p.purpose {
        Purpose::PrepaidTopup => {
            let after = subscriber.balance_minor.checked_add(amount);
            if after.is_none_or(|after| after > rules.prepaid_balance_max.get(currency)) {
                return Some(RejectCode::TopupAbovePlanMaximum);
            }
        }
        Purpose::BillPayment => {
            let owed = subscriber.balance_minor;
            if amount > owed.saturating_add(rules.bill_overpay_allowance.get(currency)) {
                return Some(RejectCode::BillOverpayment);
            }
        }
        Purpose::Unspecified => unreachable!("the format layer refuses an unspecified purpose"),
    }
    if p.method == MethodKind::CarrierBalance {
        // A prepaid balance is credit; a postpaid balance is an amount owed, so its
        // credit is the negative of it (a bill overpaid earlier).
        let credit = match subscriber.plan {
            Plan::Prepaid => subscriber.balance_minor,
            Plan::Postpaid => subscriber.balance_minor.saturating_neg(),
        };
        if amount > credit.saturating_sub(entry.held_minor) {
            return Some(RejectCode::InsufficientCredit);
        }
    }
    let usage = entry.usage.at(now);
    if usage.day_count >= rules.daily_count_max {
        return Some(RejectCode::DailyCountLimit);
    }
    if usage.day_amount_minor.saturating_add(amount) > rules.daily_amount_max.get(currency) {
        return Some(RejectCode::DailyAmountLimit);
    }
    if usage.month_count >= rules.monthly_count_max {
        return Some(RejectCode::MonthlyCountLimit);
    }
    if usage.month_amount_minor.saturating_add(amount) > rules.monthly_amount_max.get(currency) {
        return Some(RejectCode::MonthlyAmountLimit);
    }
    None
}
