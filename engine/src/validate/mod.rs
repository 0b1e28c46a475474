//! Validation: formats, then account authentication, stopping at the first failure.
//!
//! Pure and deterministic: the same batch against the same subscriber table gives the
//! same codes. Batch first; `validate_one` calls `validate_batch`.

mod codes;
mod subscribers;

pub use codes::RejectCode;
pub use subscribers::{Plan, Status, Subscriber, SubscriberTable, TableError, SUBSCRIBERS_MAX};

use crate::money::{Currency, AMOUNT_MINOR_MAX};

/// At most this many payments in one validation batch. At the bound: the bindings
/// refuse the call with a `BatchTooLarge` error before any work is done.
pub const BATCH_MAX: usize = 65_536;

/// What the payment is for (the contract's `Purpose`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    Unspecified = 0,
    BillPayment = 1,
    PrepaidTopup = 2,
}

impl Purpose {
    pub fn from_u8(n: u8) -> Purpose {
        match n {
            1 => Purpose::BillPayment,
            2 => Purpose::PrepaidTopup,
            _ => Purpose::Unspecified,
        }
    }
}

/// Which `PaymentMethod` oneof arm is set; 0 when none is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MethodKind {
    Missing = 0,
    Card = 1,
    Wallet = 2,
    BankAccount = 3,
    CarrierBalance = 4,
}

impl MethodKind {
    pub fn from_u8(n: u8) -> MethodKind {
        match n {
            1 => MethodKind::Card,
            2 => MethodKind::Wallet,
            3 => MethodKind::BankAccount,
            4 => MethodKind::CarrierBalance,
            _ => MethodKind::Missing,
        }
    }
}

/// One payment as validation sees it; borrowed from the caller's columns.
#[derive(Clone, Copy, Debug)]
pub struct PaymentView<'a> {
    pub idempotency_key: &'a str,
    pub account_id: &'a str,
    pub msisdn: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub purpose: Purpose,
    pub method: MethodKind,
}

/// Validates each payment; `out[i]` is the first failure of `payments[i]` or `Ok`.
pub fn validate_batch(table: &SubscriberTable, payments: &[PaymentView<'_>], out: &mut [RejectCode]) {
    assert_eq!(payments.len(), out.len(), "one result slot per payment");
    for (payment, slot) in payments.iter().zip(out.iter_mut()) {
        *slot = validate_format(payment).unwrap_or_else(|| authenticate(table, payment));
    }
}

/// Validates a single payment through the batch path.
pub fn validate_one(table: &SubscriberTable, payment: &PaymentView<'_>) -> RejectCode {
    let mut out = [RejectCode::Ok];
    validate_batch(table, std::slice::from_ref(payment), &mut out);
    out[0]
}

fn validate_format(p: &PaymentView<'_>) -> Option<RejectCode> {
    if !is_idempotency_key(p.idempotency_key) {
        return Some(RejectCode::IdempotencyKeyInvalid);
    }
    if !is_account_id(p.account_id) {
        return Some(RejectCode::AccountIdInvalid);
    }
    if !is_e164(p.msisdn) {
        return Some(RejectCode::MsisdnInvalid);
    }
    if p.amount_minor <= 0 {
        return Some(RejectCode::AmountNotPositive);
    }
    if p.amount_minor > AMOUNT_MINOR_MAX {
        return Some(RejectCode::AmountTooLarge);
    }
    if Currency::from_code(p.currency).is_none() {
        return Some(RejectCode::CurrencyUnknown);
    }
    if p.purpose == Purpose::Unspecified {
        return Some(RejectCode::PurposeInvalid);
    }
    if p.method == MethodKind::Missing {
        return Some(RejectCode::MethodMissing);
    }
    None
}

fn authenticate(table: &SubscriberTable, p: &PaymentView<'_>) -> RejectCode {
    let Some(subscriber) = table.get(p.account_id) else {
        return RejectCode::AccountNotFound;
    };
    if subscriber.msisdn != p.msisdn {
        return RejectCode::MsisdnMismatch;
    }
    if subscriber.status == Status::Closed {
        return RejectCode::AccountClosed;
    }
    if subscriber.currency.code() != p.currency {
        return RejectCode::CurrencyMismatch;
    }
    let plan_fits = match p.purpose {
        Purpose::BillPayment => subscriber.plan == Plan::Postpaid,
        Purpose::PrepaidTopup => subscriber.plan == Plan::Prepaid,
        Purpose::Unspecified => false,
    };
    if !plan_fits {
        return RejectCode::PurposeNotAllowedForPlan;
    }
    RejectCode::Ok
}

/// 1 to 255 printable ASCII characters (space through tilde).
pub fn is_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn is_account_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// E.164: '+', a non-zero first digit, 8 to 15 digits in all.
pub fn is_e164(msisdn: &str) -> bool {
    let Some(digits) = msisdn.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests;
