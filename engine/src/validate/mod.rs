//! Validation: formats, account authentication, payment-method authorization, then
//! balance and limits, stopping at the first failure.
//!
//! Pure and deterministic: the same batch against the same rules, subscriber table and
//! clock (`now_s`, passed in) gives the same codes. Batch first; `validate_one` calls
//! `validate_batch`.

pub mod assertion;
mod auth;
mod balance;
mod calling_codes;
pub mod card;
pub mod cell;
pub mod clock;
mod codes;
pub mod config;
pub mod formats;
mod iban;
mod iban_formats;
mod iban_national;
mod method;
mod subscribers;

pub use codes::RejectCode;
pub use config::{ConfigError, EngineConfig, Rules};
pub use formats::{is_account_id, is_e164, is_idempotency_key};
pub use subscribers::{
    Entry, Plan, Profile, StateError, Status, Subscriber, SubscriberTable, TableError, Usage,
    HELD_MINOR_MAX, NEVER, SUBSCRIBERS_MAX,
};

pub use clock::Now;

/// Payments per lookahead group in `Validator::validate_rows`: their views (about
/// 16 KiB) stay in the L1 cache while their subscriber lookups overlap.
pub const LOOKAHEAD: usize = 64;

/// At most this many payments in one validation batch. At the bound: the bindings
/// refuse the call with a `BatchTooLarge` error before any work is done.
pub const BATCH_MAX: usize = 65_536;

/// What the payment is for (the contract's `Purpose`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    #[default]
    Unspecified = 0,
    BillPayment = 1,
    PrepaidTopup = 2,
}

impl Purpose {
    /// From the contract's enum number; unknown numbers are `Unspecified`, which the
    /// format layer rejects.
    pub fn from_u8(n: u8) -> Purpose {
        match n {
            1 => Purpose::BillPayment,
            2 => Purpose::PrepaidTopup,
            _ => Purpose::Unspecified,
        }
    }
}

/// Which `PaymentMethod` oneof arm is set; 0 when none is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum MethodKind {
    #[default]
    Missing = 0,
    Card = 1,
    Wallet = 2,
    BankAccount = 3,
    CarrierBalance = 4,
}

impl MethodKind {
    /// From the oneof field number; unknown numbers are `Missing`.
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

/// One payment as validation sees it, borrowed from the caller's columns. Text fields
/// are raw bytes; a field that does not apply (the card of a wallet payment) or was
/// not given is empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct PaymentView<'a> {
    pub idempotency_key: &'a [u8],
    pub account_id: &'a [u8],
    pub msisdn: &'a [u8],
    pub amount_minor: i64,
    pub currency: &'a [u8],
    pub purpose: Purpose,
    pub method: MethodKind,
    pub card_pan: &'a [u8],
    pub card_expiry_month: u32,
    pub card_expiry_year: u32,
    pub wallet_provider: &'a [u8],
    pub wallet_id: &'a [u8],
    pub iban: &'a [u8],
    pub channel: &'a [u8],
    pub device_id: &'a [u8],
    pub ip: &'a [u8],
    pub assertion: &'a [u8],
}

/// The validation state: the configuration, its resolved rules and the subscriber table.
#[derive(Debug)]
pub struct Validator {
    pub config: EngineConfig,
    pub rules: Rules,
    pub subscribers: SubscriberTable,
}

impl Validator {
    /// A validator with no subscribers yet.
    pub fn new(config: &EngineConfig) -> Result<Validator, ConfigError> {
        Ok(Validator {
            config: config.clone(),
            rules: Rules::new(config)?,
            subscribers: SubscriberTable::new(),
        })
    }

    /// Replaces the configuration; the subscriber table is kept. On error nothing
    /// changes.
    pub fn configure(&mut self, config: &EngineConfig) -> Result<(), ConfigError> {
        self.rules = Rules::new(config)?;
        self.config = config.clone();
        Ok(())
    }

    /// Validates each payment at `now_s`; `out[i]` is the first failure of
    /// `payments[i]` or `Ok`.
    pub fn validate_batch(&self, payments: &[PaymentView<'_>], now_s: i64, out: &mut [RejectCode]) {
        assert_eq!(payments.len(), out.len(), "one result slot per payment");
        self.validate_rows(payments.len(), now_s, |i| payments[i], out);
    }

    /// The batch driver: `view(i)` builds row `i`'s view (from columns, say) and
    /// `out[i]` receives its code. Rows go in groups of `LOOKAHEAD`: first every
    /// subscriber lookup of the group, back to back, then the checks. A lookup in a
    /// large table is a cache miss; issued together, the misses overlap (the CPU has
    /// several loads in flight) instead of each one stalling its payment's checks.
    /// Looking up an account that later fails a format check is wasted but harmless:
    /// the lookup reads nothing the verdict depends on before formats pass.
    pub fn validate_rows<'a>(
        &self,
        n: usize,
        now_s: i64,
        view: impl Fn(usize) -> PaymentView<'a>,
        out: &mut [RejectCode],
    ) {
        assert_eq!(n, out.len(), "one result slot per payment");
        let now = Now::at(now_s);
        let mut views = [PaymentView::default(); LOOKAHEAD];
        let mut entries: [Option<&Entry>; LOOKAHEAD] = [None; LOOKAHEAD];
        for start in (0..n).step_by(LOOKAHEAD) {
            let len = LOOKAHEAD.min(n - start);
            let (views, entries) = (&mut views[..len], &mut entries[..len]);
            for (k, slot) in views.iter_mut().enumerate() {
                *slot = view(start + k);
            }
            // Touching the entry's other cache lines here (the MSISDN and the billing
            // copy lie past the key's line) starts those misses too; the sum only
            // keeps the reads from being optimized away.
            let mut touched = 0i64;
            for (entry, payment) in entries.iter_mut().zip(views.iter()) {
                *entry = self.subscribers.entry(payment.account_id);
                if let Some(entry) = entry {
                    touched ^= i64::from(entry.msisdn.as_bytes().len() as u8)
                        ^ entry.subscriber.balance_minor
                        ^ entry.held_minor
                        ^ entry.usage.day;
                }
            }
            std::hint::black_box(touched);
            let group = out[start..start + len]
                .iter_mut()
                .zip(views.iter().zip(entries.iter()));
            for (slot, (payment, entry)) in group {
                *slot = self.validate_payment(payment, *entry, &now);
            }
        }
    }

    /// Validates a single payment through the batch path.
    pub fn validate_one(&self, payment: &PaymentView<'_>, now_s: i64) -> RejectCode {
        let mut out = [RejectCode::Ok];
        self.validate_batch(std::slice::from_ref(payment), now_s, &mut out);
        out[0]
    }

    /// The four layers in order, at the batch's clock, given the subscriber entry
    /// for `p.account_id` (`validate_rows` looks it up).
    #[inline]
    fn validate_payment(
        &self,
        p: &PaymentView<'_>,
        entry: Option<&Entry>,
        now: &Now,
    ) -> RejectCode {
        let formats::WellFormed {
            currency,
            assertion,
        } = match formats::check(&self.rules, p, now) {
            Ok(well_formed) => well_formed,
            Err(code) => return code,
        };
        let entry = match auth::check(&self.rules, entry, p, currency, assertion.as_ref(), now) {
            Ok(entry) => entry,
            Err(code) => return code,
        };
        if let Some(code) = method::check(&self.rules, p, currency, now) {
            return code;
        }
        balance::check(&self.rules, entry, p, currency, now).unwrap_or(RejectCode::Ok)
    }
}

#[cfg(test)]
mod tests;
