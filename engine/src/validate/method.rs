//! Layer 3, payment-method authorization: the method is accepted for the purpose on
//! the channel, the card is current and not from a blocked issuer range, the wallet
//! provider is one we settle with, and the amount is within the method's limit.

use super::card;
use super::clock::Now;
use super::config::Rules;
use super::{MethodKind, PaymentView, RejectCode};
use crate::money::Currency;

/// The first method failure, if any.
pub fn check(
    rules: &Rules,
    p: &PaymentView<'_>,
    currency: Currency,
    now: &Now,
) -> Option<RejectCode> {
    if !rules.methods_for(p.purpose, p.channel).allows(p.method) {
        return Some(RejectCode::MethodNotAllowed);
    }
    match p.method {
        MethodKind::Card if card::expired(p.card_expiry_month, p.card_expiry_year, now) => {
            return Some(RejectCode::CardExpired);
        }
        MethodKind::Card if rules.bin_blocked(p.card_pan) => {
            return Some(RejectCode::CardBinBlocked)
        }
        MethodKind::Wallet if !rules.wallet_provider_known(p.wallet_provider) => {
            return Some(RejectCode::WalletProviderUnknown);
        }
        _ => {}
    }
    (p.amount_minor > rules.method_amount_max(p.method, currency))
        .then_some(RejectCode::MethodAmountLimitExceeded)
}
