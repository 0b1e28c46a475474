//! Layer 2, account authentication: the account exists, the MSISDN is the one bound
//! to it, its state allows the purpose, and a subscriber assertion, when present,
//! verifies.

use super::assertion::{self, Assertion};
use super::clock::Now;
use super::config::Rules;
use super::subscribers::{Entry, Plan, Status};
use super::{PaymentView, Purpose, RejectCode};
use crate::money::Currency;

/// The account's entry when the payment authenticates, else the first failure.
/// `entry` is the table's entry for `p.account_id`, looked up by the batch driver.
/// `currency` and `assertion` are the payment's currency and subscriber assertion as
/// the format layer parsed them.
pub fn check<'t>(
    rules: &Rules,
    entry: Option<&'t Entry>,
    p: &PaymentView<'_>,
    currency: Currency,
    assertion: Option<&Assertion<'_>>,
    now: &Now,
) -> Result<&'t Entry, RejectCode> {
    let Some(entry) = entry else {
        return Err(RejectCode::AccountNotFound);
    };
    let subscriber = &entry.subscriber;
    if !entry.msisdn.eq_bytes(p.msisdn) {
        return Err(RejectCode::MsisdnMismatch);
    }
    if subscriber.status == Status::Closed {
        return Err(RejectCode::AccountClosed);
    }
    if subscriber.currency != currency {
        return Err(RejectCode::CurrencyMismatch);
    }
    let plan_fits = match p.purpose {
        Purpose::BillPayment => subscriber.plan == Plan::Postpaid,
        Purpose::PrepaidTopup => subscriber.plan == Plan::Prepaid,
        Purpose::Unspecified => false,
    };
    if !plan_fits {
        return Err(RejectCode::PurposeNotAllowedForPlan);
    }
    // A payment is how a barred line (non-payment, or a prepaid line out of credit)
    // is restored: the bill for postpaid, a top-up for prepaid, so both stay open.
    // A suspended line may pay what it owes, but takes no new credit: suspension is
    // a hold (lost SIM, fraud review), and credit loaded onto a held line is what a
    // fraudster with the SIM would do.
    if subscriber.status == Status::Suspended && p.purpose != Purpose::BillPayment {
        return Err(RejectCode::AccountStatusForbidsPurpose);
    }
    if let Some(assertion) = assertion {
        if let Some(code) =
            assertion::verify_parsed(rules, assertion, p.account_id, p.msisdn, now.unix_s)
        {
            return Err(code);
        }
    }
    Ok(entry)
}
