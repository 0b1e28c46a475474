//! Payment settlement states, the idempotency index and two-phase-commit decisions:
//! the small tables that let the orchestrator pick up where it stopped after a crash.

use rustc_hash::FxHashMap;

use super::codes::{ClaimResult, EntryResult, PaymentResult};
use super::idmap::IdMap;
use super::transfer_table::Keep;
use super::types::{
    transfer_flags, ClaimInput, Decision, IdempotencyEntry, PaymentState, PendingState,
    PendingStatus, Transfer,
};
use super::{Ledger, GTID_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX};

/// Whether a transfer older than the retention window stays:
/// - a plain transfer (no hold, no post or void; the saga's refunds) for good, since a
///   redo of it after any delay must find its id and not move the money again;
/// - a hold still pending, until it is posted, voided or expired;
/// - a hold, post or void of a payment not finished, until it is (recovery may redo
///   its post or void, which must find the hold);
/// - anything else goes.
fn keep(
    t: &Transfer,
    pending: &IdMap<PendingState>,
    payments: &FxHashMap<u128, (PaymentState, u64)>,
) -> Keep {
    let flags = t.input.flags;
    let two_phase =
        transfer_flags::PENDING | transfer_flags::POST_PENDING | transfer_flags::VOID_PENDING;
    if flags & two_phase == 0 {
        return Keep::Always;
    }
    if pending.get(&t.input.id).map(|p| p.status) == Some(PendingStatus::Pending) {
        return Keep::ForNow;
    }
    let payment = t.input.payment_id;
    if payment != 0
        && payments
            .get(&payment)
            .is_some_and(|(s, _)| !s.is_finished())
    {
        return Keep::ForNow;
    }
    Keep::No
}

fn key_valid(key: &str, max: usize) -> bool {
    !key.is_empty() && key.len() <= max
}

impl Ledger {
    /// Forgets finished payments, idempotency keys and transfers older than the
    /// retention window, so memory is bounded by the traffic of one window, not by
    /// everything since the ledger began (see `keep` for the transfers that stay).
    /// Deterministic: the window travels in the logged command, the clock in the record.
    fn sweep_retention(&mut self, retention_ns: u64) {
        let horizon = self.now_ns.saturating_sub(retention_ns);
        let (pending, payments) = (&self.pending, &self.payments);
        let retired = self
            .transfers
            .retire_before(horizon, |t| keep(t, pending, payments));
        for id in &retired {
            self.pending.remove(id);
        }
        while let Some(&(at, id)) = self.payments_finished.front() {
            if at >= horizon {
                break;
            }
            self.payments_finished.pop_front();
            self.payments.remove(&id);
        }
        while let Some((at, _)) = self.idempotency_order.front() {
            if *at >= horizon {
                break;
            }
            let (at, key) = self.idempotency_order.pop_front().expect("front exists");
            // The key may have expired and been claimed again since; only the claim
            // this queue entry stands for is forgotten.
            if self
                .idempotency
                .get(&key)
                .is_some_and(|e| e.created_ns == at)
            {
                self.idempotency.remove(&key);
            }
        }
    }

    /// Records settlement states; one `PaymentResult` number per entry.
    pub(super) fn record_payment_states(
        &mut self,
        retention_ns: u64,
        entries: &[(u128, u8)],
    ) -> Vec<u16> {
        self.sweep_retention(retention_ns);
        entries
            .iter()
            .map(|&(id, state)| self.record_payment_state(id, state) as u16)
            .collect()
    }

    fn record_payment_state(&mut self, id: u128, state: u8) -> PaymentResult {
        if id == 0 {
            return PaymentResult::PaymentIdMustNotBeZero;
        }
        let Some(next) = PaymentState::from_u8(state) else {
            return PaymentResult::StateInvalid;
        };
        match self.payments.get(&id).map(|(s, _)| *s) {
            Some(current) if current == next => return PaymentResult::Exists,
            Some(current) if !current.may_become(next) => return PaymentResult::TransitionInvalid,
            None if next != PaymentState::Reserved => return PaymentResult::TransitionInvalid,
            _ => {}
        }
        self.payments.insert(id, (next, self.now_ns));
        if next.is_finished() {
            self.payments_finished.push_back((self.now_ns, id));
        }
        PaymentResult::Ok
    }

    /// Claims idempotency keys; one `ClaimResult` number per claim.
    pub(super) fn claim_keys(&mut self, retention_ns: u64, claims: &[ClaimInput]) -> Vec<u16> {
        self.sweep_retention(retention_ns);
        claims
            .iter()
            .map(|claim| self.claim_key(claim) as u16)
            .collect()
    }

    fn claim_key(&mut self, claim: &ClaimInput) -> ClaimResult {
        if !key_valid(&claim.key, IDEMPOTENCY_KEY_BYTES_MAX) {
            return ClaimResult::KeyInvalid;
        }
        if let Some(entry) = self.idempotency.get(&claim.key) {
            return if entry.fingerprint == claim.fingerprint {
                ClaimResult::Replay
            } else {
                ClaimResult::PayloadMismatch
            };
        }
        let entry = IdempotencyEntry {
            fingerprint: claim.fingerprint,
            payment_id: claim.payment_id,
            outcome: 0,
            created_ns: self.now_ns,
        };
        self.idempotency.insert(claim.key.clone(), entry);
        self.idempotency_order
            .push_back((self.now_ns, claim.key.clone()));
        ClaimResult::New
    }

    /// Sets the outcome of claimed keys (once); one `EntryResult` number per entry.
    pub(super) fn set_outcomes(&mut self, entries: &[(String, u16)]) -> Vec<u16> {
        entries
            .iter()
            .map(|(key, outcome)| {
                let Some(entry) = self.idempotency.get_mut(key) else {
                    return EntryResult::NotFound as u16;
                };
                let code = match (entry.outcome, *outcome) {
                    (_, 0) => EntryResult::ValueInvalid,
                    (0, _) => {
                        entry.outcome = *outcome;
                        EntryResult::Ok
                    }
                    (old, new) if old == new => EntryResult::Exists,
                    _ => EntryResult::ExistsWithDifferentValue,
                };
                code as u16
            })
            .collect()
    }

    /// Records coordinator decisions (once each); one `EntryResult` number per entry.
    pub(super) fn record_decisions(&mut self, entries: &[(String, u8)]) -> Vec<u16> {
        entries
            .iter()
            .map(|(gtid, decision)| {
                if !key_valid(gtid, GTID_BYTES_MAX) {
                    return EntryResult::KeyInvalid as u16;
                }
                if *decision != Decision::Commit as u8 && *decision != Decision::Abort as u8 {
                    return EntryResult::ValueInvalid as u16;
                }
                let code = match self.decisions.get(gtid) {
                    Some(old) if old == decision => EntryResult::Exists,
                    Some(_) => EntryResult::ExistsWithDifferentValue,
                    None => {
                        self.decisions.insert(gtid.clone(), *decision);
                        EntryResult::Ok
                    }
                };
                code as u16
            })
            .collect()
    }

    /// Forgets decisions whose transactions are resolved everywhere.
    pub(super) fn forget_decisions(&mut self, gtids: &[String]) -> Vec<u16> {
        gtids
            .iter()
            .map(|gtid| match self.decisions.remove(gtid) {
                Some(_) => EntryResult::Ok as u16,
                None => EntryResult::NotFound as u16,
            })
            .collect()
    }
}
