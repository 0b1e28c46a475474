//! Accounts and transfers: validation in TigerBeetle's order, two-phase holds,
//! expiry, and linked chains applied all or nothing through an undo log.

use super::codes::{AccountResult, TransferResult};
use super::types::{
    account_flags as af, transfer_flags as tf, Account, AccountInput, AccountKind, Balances,
    PendingState, PendingStatus, Transfer, TransferInput,
};
use super::{Ledger, Undo};
use crate::money::AMOUNT_MINOR_MAX;

/// The three codes every chained event kind has.
trait ChainCode: Copy + PartialEq {
    const OK: Self;
    const LINKED_EVENT_FAILED: Self;
    const LINKED_EVENT_CHAIN_OPEN: Self;
}

impl ChainCode for AccountResult {
    const OK: Self = AccountResult::Ok;
    const LINKED_EVENT_FAILED: Self = AccountResult::LinkedEventFailed;
    const LINKED_EVENT_CHAIN_OPEN: Self = AccountResult::LinkedEventChainOpen;
}

impl ChainCode for TransferResult {
    const OK: Self = TransferResult::Ok;
    const LINKED_EVENT_FAILED: Self = TransferResult::LinkedEventFailed;
    const LINKED_EVENT_CHAIN_OPEN: Self = TransferResult::LinkedEventChainOpen;
}

/// Whether an ISO 4217 numeric code names a currency with a minor unit.
fn currency_known(numeric: u16) -> bool {
    iso_currency::Currency::from_numeric(numeric)
        .and_then(|c| c.exponent())
        .is_some()
}

impl Ledger {
    /// Runs events through `apply_one`, honouring linked chains: a chain is the run of
    /// events with the LINKED flag plus the first one without it. If any event of a
    /// chain fails, the events of the chain already applied are undone and reported
    /// `LINKED_EVENT_FAILED`, as are the ones after it.
    fn run_chains<C: ChainCode>(
        &mut self,
        n: usize,
        linked: impl Fn(usize) -> bool,
        mut apply_one: impl FnMut(&mut Ledger, usize) -> C,
    ) -> Vec<C> {
        let mut results = vec![C::OK; n];
        let mut chain_start: Option<usize> = None;
        let mut chain_failed = false;
        for i in 0..n {
            let is_linked = linked(i);
            if chain_start.is_none() && is_linked {
                chain_start = Some(i);
                chain_failed = false;
                self.undo.clear();
            }
            if chain_failed {
                results[i] = C::LINKED_EVENT_FAILED;
            } else {
                let code = if is_linked && i + 1 == n {
                    C::LINKED_EVENT_CHAIN_OPEN
                } else {
                    apply_one(self, i)
                };
                results[i] = code;
                if code != C::OK {
                    if let Some(start) = chain_start {
                        self.rollback();
                        results[start..i]
                            .iter_mut()
                            .for_each(|r| *r = C::LINKED_EVENT_FAILED);
                        chain_failed = true;
                    }
                }
            }
            if chain_start.is_some() && !is_linked {
                chain_start = None;
                chain_failed = false;
            }
            if chain_start.is_none() {
                self.undo.clear();
            }
        }
        self.undo.clear();
        results
    }

    fn rollback(&mut self) {
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::AccountInserted(id) => {
                    self.accounts.remove(&id);
                }
                Undo::Balances(id, balances) => {
                    self.accounts
                        .get_mut(&id)
                        .expect("undo of a known account")
                        .balances = balances;
                }
                Undo::TransferInserted(id) => self.transfers.remove_last(&id),
                Undo::Pending(id, Some(state)) => {
                    self.pending.insert(id, state);
                }
                Undo::Pending(id, None) => {
                    self.pending.remove(&id);
                }
                Undo::ExpiryInserted(at, id) => {
                    self.expiry.remove(&(at, id));
                }
                Undo::ExpiryRemoved(at, id) => {
                    self.expiry.insert((at, id));
                }
            }
        }
    }

    /// Creates accounts; one result per input.
    pub(super) fn create_accounts(&mut self, inputs: &[AccountInput]) -> Vec<AccountResult> {
        self.run_chains(
            inputs.len(),
            |i| inputs[i].flags & af::LINKED != 0,
            |ledger, i| ledger.create_account(&inputs[i]),
        )
    }

    fn create_account(&mut self, a: &AccountInput) -> AccountResult {
        if a.id == 0 {
            return AccountResult::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return AccountResult::IdMustNotBeIntMax;
        }
        if a.flags & !af::KNOWN != 0 {
            return AccountResult::ReservedFlag;
        }
        let both = af::DEBITS_MUST_NOT_EXCEED_CREDITS | af::CREDITS_MUST_NOT_EXCEED_DEBITS;
        if a.flags & both == both {
            return AccountResult::FlagsAreMutuallyExclusive;
        }
        if !currency_known(a.currency) {
            return AccountResult::CurrencyInvalid;
        }
        if AccountKind::from_u16(a.kind).is_none() {
            return AccountResult::KindInvalid;
        }
        if let Some(existing) = self.accounts.get(&a.id) {
            // The LINKED flag says where the batch's chain ends, not what the account
            // is, so a retry in another chain shape is still the same account.
            let same = existing.input.currency == a.currency
                && existing.input.kind == a.kind
                && (existing.input.flags & !af::LINKED) == (a.flags & !af::LINKED);
            return if same {
                AccountResult::Exists
            } else {
                AccountResult::ExistsWithDifferentFields
            };
        }
        let account = Account {
            input: AccountInput {
                flags: a.flags & !af::LINKED,
                ..*a
            },
            balances: Balances::default(),
            timestamp_ns: self.now_ns,
        };
        self.accounts.insert(a.id, account);
        self.undo.push(Undo::AccountInserted(a.id));
        AccountResult::Ok
    }

    /// Creates transfers (plain, pending, post, void); one result per input.
    pub(super) fn create_transfers(&mut self, inputs: &[TransferInput]) -> Vec<TransferResult> {
        self.run_chains(
            inputs.len(),
            |i| inputs[i].flags & tf::LINKED != 0,
            |ledger, i| ledger.create_transfer(&inputs[i]),
        )
    }

    /// Voids every pending transfer whose deadline is at or before the clock.
    pub(super) fn expire_due(&mut self) {
        while let Some(&(at, id)) = self.expiry.first() {
            if at > self.now_ns {
                break;
            }
            self.expiry.pop_first();
            let pending = *self.transfers.get(&id).expect("expiry of a known transfer");
            self.release_hold(&pending);
            self.pending.insert(
                id,
                PendingState {
                    status: PendingStatus::Expired,
                    expires_at_ns: at,
                },
            );
        }
    }

    fn release_hold(&mut self, pending: &Transfer) {
        let amount = pending.amount_minor;
        let dr = self
            .accounts
            .get_mut(&pending.debit_account_id)
            .expect("hold's debit account");
        dr.balances.debits_pending -= amount;
        let cr = self
            .accounts
            .get_mut(&pending.credit_account_id)
            .expect("hold's credit account");
        cr.balances.credits_pending -= amount;
    }

    fn create_transfer(&mut self, t: &TransferInput) -> TransferResult {
        use TransferResult as R;
        if let Err(code) = validate_transfer(t) {
            return code;
        }
        if let Some(existing) = self.transfers.get(&t.id) {
            let mut a = existing.input;
            let mut b = *t;
            a.flags &= !tf::LINKED;
            b.flags &= !tf::LINKED;
            return if a == b {
                R::Exists
            } else {
                R::ExistsWithDifferentFields
            };
        }
        if t.flags & (tf::POST_PENDING | tf::VOID_PENDING) != 0 {
            return self.post_or_void(t);
        }
        let Some(dr) = self.accounts.get(&t.debit_account_id) else {
            return R::DebitAccountNotFound;
        };
        let Some(cr) = self.accounts.get(&t.credit_account_id) else {
            return R::CreditAccountNotFound;
        };
        if dr.input.currency != t.currency || cr.input.currency != t.currency {
            return R::CurrencyMismatch;
        }
        let pending = t.flags & tf::PENDING != 0;
        let amount = t.amount_minor;
        let (mut drb, mut crb) = (dr.balances, cr.balances);
        let (dr_flags, cr_flags) = (dr.input.flags, cr.input.flags);
        let (dr_slot, cr_slot) = if pending {
            (&mut drb.debits_pending, &mut crb.credits_pending)
        } else {
            (&mut drb.debits_posted, &mut crb.credits_posted)
        };
        let (Some(d), Some(c)) = (dr_slot.checked_add(amount), cr_slot.checked_add(amount)) else {
            return R::OverflowsBalance;
        };
        *dr_slot = d;
        *cr_slot = c;
        let (Some(dr_debits), Some(cr_credits)) = (
            drb.debits_pending.checked_add(drb.debits_posted),
            crb.credits_pending.checked_add(crb.credits_posted),
        ) else {
            return R::OverflowsBalance;
        };
        if dr_flags & af::DEBITS_MUST_NOT_EXCEED_CREDITS != 0 && dr_debits > drb.credits_posted {
            return R::ExceedsCredits;
        }
        if cr_flags & af::CREDITS_MUST_NOT_EXCEED_DEBITS != 0 && cr_credits > crb.debits_posted {
            return R::ExceedsDebits;
        }
        self.set_balances(t.debit_account_id, drb);
        self.set_balances(t.credit_account_id, crb);
        if pending {
            let expires_at_ns = if t.timeout_s == 0 {
                0
            } else {
                self.now_ns
                    .saturating_add(u64::from(t.timeout_s) * 1_000_000_000)
            };
            self.set_pending(
                t.id,
                PendingState {
                    status: PendingStatus::Pending,
                    expires_at_ns,
                },
            );
            if expires_at_ns != 0 {
                self.expiry.insert((expires_at_ns, t.id));
                self.undo.push(Undo::ExpiryInserted(expires_at_ns, t.id));
            }
        }
        self.insert_transfer(Transfer {
            input: *t,
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            currency: t.currency,
            amount_minor: amount,
            timestamp_ns: self.now_ns,
        });
        R::Ok
    }

    fn post_or_void(&mut self, t: &TransferInput) -> TransferResult {
        use TransferResult as R;
        let Some(p) = self.transfers.get(&t.pending_id).copied() else {
            return R::PendingTransferNotFound;
        };
        if p.input.flags & tf::PENDING == 0 {
            return R::PendingTransferNotPending;
        }
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return R::PendingTransferHasDifferentDebitAccountId;
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return R::PendingTransferHasDifferentCreditAccountId;
        }
        if t.currency != 0 && t.currency != p.currency {
            return R::PendingTransferHasDifferentCurrency;
        }
        let post = t.flags & tf::POST_PENDING != 0;
        if post && t.amount_minor > p.amount_minor {
            return R::ExceedsPendingTransferAmount;
        }
        if !post && t.amount_minor != 0 && t.amount_minor != p.amount_minor {
            return R::PendingTransferHasDifferentAmount;
        }
        let state = *self
            .pending
            .get(&t.pending_id)
            .expect("a pending transfer has a state");
        match state.status {
            PendingStatus::Posted => return R::PendingTransferAlreadyPosted,
            PendingStatus::Voided => return R::PendingTransferAlreadyVoided,
            PendingStatus::Expired => return R::PendingTransferExpired,
            PendingStatus::Pending => {}
        }
        // The sweep at the start of the batch voided everything due, so a hold still
        // pending here is within its deadline.
        debug_assert!(state.expires_at_ns == 0 || state.expires_at_ns > self.now_ns);
        let posted = if !post {
            0
        } else if t.amount_minor == 0 {
            p.amount_minor
        } else {
            t.amount_minor
        };
        let mut drb = self.accounts[&p.debit_account_id].balances;
        let mut crb = self.accounts[&p.credit_account_id].balances;
        let (Some(d), Some(c)) = (
            drb.debits_posted.checked_add(posted),
            crb.credits_posted.checked_add(posted),
        ) else {
            return R::OverflowsBalance;
        };
        drb.debits_pending -= p.amount_minor;
        crb.credits_pending -= p.amount_minor;
        drb.debits_posted = d;
        crb.credits_posted = c;
        self.set_balances(p.debit_account_id, drb);
        self.set_balances(p.credit_account_id, crb);
        let status = if post {
            PendingStatus::Posted
        } else {
            PendingStatus::Voided
        };
        self.set_pending(t.pending_id, PendingState { status, ..state });
        if state.expires_at_ns != 0 {
            self.expiry.remove(&(state.expires_at_ns, t.pending_id));
            self.undo
                .push(Undo::ExpiryRemoved(state.expires_at_ns, t.pending_id));
        }
        self.insert_transfer(Transfer {
            input: *t,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            currency: p.currency,
            amount_minor: if post { posted } else { p.amount_minor },
            timestamp_ns: self.now_ns,
        });
        R::Ok
    }

    fn set_balances(&mut self, id: u128, balances: Balances) {
        let account = self
            .accounts
            .get_mut(&id)
            .expect("balances of a known account");
        self.undo.push(Undo::Balances(id, account.balances));
        account.balances = balances;
    }

    fn set_pending(&mut self, id: u128, state: PendingState) {
        let old = self.pending.insert(id, state);
        self.undo.push(Undo::Pending(id, old));
    }

    fn insert_transfer(&mut self, transfer: Transfer) {
        let id = transfer.input.id;
        self.transfers.insert(transfer);
        self.undo.push(Undo::TransferInserted(id));
    }
}

/// The checks that need nothing but the transfer itself.
fn validate_transfer(t: &TransferInput) -> Result<(), TransferResult> {
    use TransferResult as R;
    if t.id == 0 {
        return Err(R::IdMustNotBeZero);
    }
    if t.id == u128::MAX {
        return Err(R::IdMustNotBeIntMax);
    }
    if t.flags & !tf::KNOWN != 0 {
        return Err(R::ReservedFlag);
    }
    let kinds = t.flags & (tf::PENDING | tf::POST_PENDING | tf::VOID_PENDING);
    if kinds.count_ones() > 1 {
        return Err(R::FlagsAreMutuallyExclusive);
    }
    let resolves = t.flags & (tf::POST_PENDING | tf::VOID_PENDING) != 0;
    if resolves {
        if t.pending_id == 0 {
            return Err(R::PendingIdMustNotBeZero);
        }
        if t.pending_id == t.id {
            return Err(R::PendingIdMustBeDifferent);
        }
    } else if t.pending_id != 0 {
        return Err(R::PendingIdMustBeZero);
    }
    if t.timeout_s != 0 && t.flags & tf::PENDING == 0 {
        return Err(R::TimeoutReservedForPendingTransfer);
    }
    if t.amount_minor < 0 {
        return Err(R::AmountMustNotBeNegative);
    }
    if t.amount_minor == 0 && !resolves {
        return Err(R::AmountMustNotBeZero);
    }
    if t.amount_minor > AMOUNT_MINOR_MAX {
        return Err(R::AmountTooLarge);
    }
    if !resolves {
        if t.debit_account_id == 0 {
            return Err(R::DebitAccountIdMustNotBeZero);
        }
        if t.credit_account_id == 0 {
            return Err(R::CreditAccountIdMustNotBeZero);
        }
        if t.currency == 0 {
            return Err(R::CurrencyMustNotBeZero);
        }
    }
    if t.debit_account_id != 0 && t.debit_account_id == t.credit_account_id {
        return Err(R::AccountsMustBeDifferent);
    }
    Ok(())
}
