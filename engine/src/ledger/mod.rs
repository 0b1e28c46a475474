//! The in-memory double-entry ledger: accounts, two-phase transfers, linked chains,
//! payment settlement states, the idempotency index and 2PC decisions.
//!
//! `Ledger` is a deterministic state machine: the same records applied in the same
//! order give the same state and the same result codes, which is what lets the
//! write-ahead log replay it. It never reads a clock; every mutation carries the
//! caller's `now_ns`, and the ledger's own clock is the largest `now_ns` seen so far.
//! `DurableLedger` (durable.rs) puts the log in front of it.

mod codes;
mod durable;
mod idmap;
mod payments;
mod transfer_table;
mod transfers;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};

use borsh::{BorshDeserialize, BorshSerialize};
use rustc_hash::FxHashMap;

use idmap::IdMap;
use transfer_table::TransferTable;

pub use codes::{
    AccountResult, AnchorResult, ClaimResult, EntryResult, PaymentResult, TransferResult,
};
pub use durable::{
    inspect, recover, verify, DurableConfig, DurableError, DurableLedger, RecordInfo,
    RecoveryReport,
};
pub use types::{
    account_flags, transfer_flags, Account, AccountInput, AccountKind, Balances, ClaimInput,
    Decision, IdempotencyEntry, PaymentState, PendingState, PendingStatus, Transfer, TransferInput,
};

/// At most this many events (accounts, transfers, payment states, claims, decisions)
/// in one batch, as in TigerBeetle. At the bound: the whole batch is refused with
/// `LedgerError::BatchTooLarge` before anything is applied or logged.
pub const BATCH_MAX: usize = 8_190;

/// The longest idempotency key, in bytes (as the front end's validation allows).
/// Above it: `KEY_INVALID` for that key.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// The longest two-phase-commit global transaction id, in bytes (PostgreSQL's limit
/// for a prepared transaction's gid is 200). Above it: `KEY_INVALID`.
pub const GTID_BYTES_MAX: usize = 200;

/// Bounds of the in-memory tables. At a bound, a batch that could cross it is
/// refused whole with `LedgerError::CapacityExceeded` (nothing applied, nothing
/// logged); the operator raises the bound. Finished payments, idempotency keys and
/// transfers age out after the retention window, so the bounds cap one window's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Accounts held in memory (about 100 bytes each).
    pub accounts_max: usize,
    /// Transfers held in memory (about 200 bytes each); those older than the retention
    /// window are forgotten, except holds still pending.
    pub transfers_max: usize,
    /// Payments whose settlement state is tracked (finished ones age out after the
    /// retention window given with each batch).
    pub payments_max: usize,
    /// Idempotency keys remembered (they age out after the retention window).
    pub idempotency_keys_max: usize,
    /// Two-phase-commit decisions not yet forgotten by the coordinator.
    pub decisions_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            accounts_max: 1 << 22,
            transfers_max: 1 << 23,
            payments_max: 1 << 22,
            idempotency_keys_max: 1 << 22,
            decisions_max: 1 << 16,
        }
    }
}

/// A whole batch refused before anything was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerError {
    BatchTooLarge { len: usize, max: usize },
    CapacityExceeded { table: &'static str, max: usize },
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::BatchTooLarge { len, max } => {
                write!(f, "batch of {len} events is over the bound of {max}")
            }
            LedgerError::CapacityExceeded { table, max } => {
                write!(
                    f,
                    "the {table} table would exceed its bound of {max} entries"
                )
            }
        }
    }
}

impl std::error::Error for LedgerError {}

/// One logged mutation: what the client asked, with the time it was asked at.
/// This is the payload of a write-ahead log record (borsh-encoded; variant order and
/// field order are the log format and never change; new kinds go at the end).
#[derive(BorshSerialize, BorshDeserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateAccounts {
        accounts: Vec<AccountInput>,
    },
    CreateTransfers {
        transfers: Vec<TransferInput>,
    },
    PaymentStates {
        retention_ns: u64,
        entries: Vec<(u128, u8)>,
    },
    ClaimKeys {
        retention_ns: u64,
        claims: Vec<ClaimInput>,
    },
    SetOutcomes {
        entries: Vec<(String, u16)>,
    },
    RecordDecisions {
        entries: Vec<(String, u8)>,
    },
    ForgetDecisions {
        gtids: Vec<String>,
    },
    /// The audit trail's head (its last row's sequence number and hash) after a
    /// database commit, so that a trail cut back behind it is found
    /// (`quickpay audit verify`). The ledger keeps the furthest one.
    AnchorAudit {
        seq: u64,
        hash: [u8; 32],
    },
}

/// The furthest audit-trail head anchored in the log: (row sequence number, row hash);
/// sequence 0 when none was.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditAnchor {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Command {
    /// The kind's name, for `quickpay wal inspect`.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateAccounts { .. } => "create_accounts",
            Command::CreateTransfers { .. } => "create_transfers",
            Command::PaymentStates { .. } => "payment_states",
            Command::ClaimKeys { .. } => "claim_keys",
            Command::SetOutcomes { .. } => "set_outcomes",
            Command::RecordDecisions { .. } => "record_decisions",
            Command::ForgetDecisions { .. } => "forget_decisions",
            Command::AnchorAudit { .. } => "anchor_audit",
        }
    }

    /// Events in the command.
    pub fn len(&self) -> usize {
        match self {
            Command::CreateAccounts { accounts } => accounts.len(),
            Command::CreateTransfers { transfers } => transfers.len(),
            Command::PaymentStates { entries, .. } => entries.len(),
            Command::ClaimKeys { claims, .. } => claims.len(),
            Command::SetOutcomes { entries } => entries.len(),
            Command::RecordDecisions { entries } => entries.len(),
            Command::ForgetDecisions { gtids } => gtids.len(),
            Command::AnchorAudit { .. } => 1,
        }
    }

    /// True when the command carries no event (an expiry tick).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A log record's payload: the command, its time, and the result codes it produced,
/// so that replay can prove it reached the same outcome.
#[derive(BorshSerialize, BorshDeserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub now_ns: u64,
    pub command: Command,
    pub results: Vec<u16>,
}

/// Undo steps of the linked chain being applied; replayed backwards on failure.
#[derive(Clone, Debug)]
enum Undo {
    AccountInserted(u128),
    Balances(u128, Balances),
    TransferInserted(u128),
    Pending(u128, Option<PendingState>),
    ExpiryInserted(u64, u128),
    ExpiryRemoved(u64, u128),
}

/// The ledger's whole state.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    limits: Limits,
    now_ns: u64,
    // Ids are 128-bit values the orchestrator derives (UUIDs, hashes), so a fast
    // non-keyed hash is safe here; the string-keyed tables below keep SipHash.
    accounts: IdMap<Account>,
    transfers: TransferTable,
    pending: IdMap<PendingState>,
    /// Pending transfers with a deadline, by deadline: the expiry sweep's queue.
    expiry: BTreeSet<(u64, u128)>,
    payments: FxHashMap<u128, (PaymentState, u64)>,
    /// Finished payments in the order they finished: the retention sweep's queue.
    payments_finished: VecDeque<(u64, u128)>,
    idempotency: HashMap<String, IdempotencyEntry>,
    /// Keys in the order they were claimed: the retention sweep's queue.
    idempotency_order: VecDeque<(u64, String)>,
    decisions: HashMap<String, u8>,
    audit_anchor: AuditAnchor,
    undo: Vec<Undo>,
}

/// The state a snapshot holds (every table as a sorted list, so the file is
/// deterministic).
#[derive(BorshSerialize, BorshDeserialize, Debug, PartialEq, Eq)]
pub struct LedgerImage {
    pub now_ns: u64,
    pub accounts: Vec<Account>,
    pub transfers: Vec<Transfer>,
    pub pending: Vec<(u128, PendingState)>,
    pub payments: Vec<(u128, PaymentState, u64)>,
    pub payments_finished: Vec<(u64, u128)>,
    pub idempotency: Vec<(String, IdempotencyEntry)>,
    pub idempotency_order: Vec<(u64, String)>,
    pub decisions: Vec<(String, u8)>,
    /// Not in the derived encoding: snapshots written before anchors existed end
    /// after `decisions`, so it is a trailer (`encode` / `decode`).
    #[borsh(skip)]
    pub audit_anchor: AuditAnchor,
}

impl LedgerImage {
    /// The snapshot body: the image, then the audit anchor.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = borsh::to_vec(self).expect("in-memory encoding");
        borsh::to_writer(&mut out, &self.audit_anchor).expect("in-memory encoding");
        out
    }

    /// The inverse of `encode`; also reads a body written before the anchor existed
    /// (it ends after the image: no anchor).
    pub fn decode(body: &[u8]) -> std::io::Result<LedgerImage> {
        let mut rest = body;
        let mut image = LedgerImage::deserialize(&mut rest)?;
        if !rest.is_empty() {
            image.audit_anchor = AuditAnchor::try_from_slice(rest)?;
        }
        Ok(image)
    }

    /// Puts every table in id order, so equal ledgers have equal images and bytes.
    pub fn sort(&mut self) {
        self.accounts.sort_unstable_by_key(|a| a.input.id);
        self.transfers.sort_unstable_by_key(|t| t.input.id);
        self.pending.sort_unstable_by_key(|(id, _)| *id);
        self.payments.sort_unstable_by_key(|(id, _, _)| *id);
        self.idempotency.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
}

impl Ledger {
    /// An empty ledger with these bounds.
    pub fn new(limits: Limits) -> Ledger {
        Ledger {
            limits,
            ..Ledger::default()
        }
    }

    /// The ledger's clock: the largest `now_ns` any command carried.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Applies one command at `now_ns`; returns one result code per event.
    pub fn apply(&mut self, now_ns: u64, command: &Command) -> Result<Vec<u16>, LedgerError> {
        if command.len() > BATCH_MAX {
            return Err(LedgerError::BatchTooLarge {
                len: command.len(),
                max: BATCH_MAX,
            });
        }
        self.check_capacity(command)?;
        // The clock never runs backwards, so deadlines and retention are monotonic
        // even when the caller's clock steps back.
        self.now_ns = self.now_ns.max(now_ns);
        let codes = match command {
            Command::CreateAccounts { accounts } => self
                .create_accounts(accounts)
                .into_iter()
                .map(|c| c as u16)
                .collect(),
            Command::CreateTransfers { transfers } => {
                self.expire_due();
                self.create_transfers(transfers)
                    .into_iter()
                    .map(|c| c as u16)
                    .collect()
            }
            Command::PaymentStates {
                retention_ns,
                entries,
            } => self.record_payment_states(*retention_ns, entries),
            Command::ClaimKeys {
                retention_ns,
                claims,
            } => self.claim_keys(*retention_ns, claims),
            Command::SetOutcomes { entries } => self.set_outcomes(entries),
            Command::RecordDecisions { entries } => self.record_decisions(entries),
            Command::ForgetDecisions { gtids } => self.forget_decisions(gtids),
            Command::AnchorAudit { seq, hash } => vec![self.anchor_audit(*seq, *hash) as u16],
        };
        Ok(codes)
    }

    fn check_capacity(&self, command: &Command) -> Result<(), LedgerError> {
        let (table, len, max) = match command {
            Command::CreateAccounts { accounts } => (
                "accounts",
                self.accounts.len() + accounts.len(),
                self.limits.accounts_max,
            ),
            Command::CreateTransfers { transfers } => (
                "transfers",
                self.transfers.len() + transfers.len(),
                self.limits.transfers_max,
            ),
            // Only a payment not tracked yet takes room: a later state of one held
            // (CAPTURED after the gateway took the money) is never refused for space.
            Command::PaymentStates { entries, .. } => (
                "payments",
                self.payments.len()
                    + entries
                        .iter()
                        .filter(|(id, _)| !self.payments.contains_key(id))
                        .count(),
                self.limits.payments_max,
            ),
            Command::ClaimKeys { claims, .. } => (
                "idempotency",
                self.idempotency.len() + claims.len(),
                self.limits.idempotency_keys_max,
            ),
            Command::RecordDecisions { entries } => (
                "decisions",
                self.decisions.len() + entries.len(),
                self.limits.decisions_max,
            ),
            Command::SetOutcomes { .. }
            | Command::ForgetDecisions { .. }
            | Command::AnchorAudit { .. } => return Ok(()),
        };
        // Conservative: counts every event as new, before retention sweeps, so a
        // batch is never half-applied at the bound.
        if len > max {
            return Err(LedgerError::CapacityExceeded { table, max });
        }
        Ok(())
    }

    /// The account with this id.
    pub fn account(&self, id: u128) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// The transfer with this id.
    pub fn transfer(&self, id: u128) -> Option<&Transfer> {
        self.transfers.get(&id)
    }

    /// The status of a pending transfer.
    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.pending.get(&id).map(|p| p.status)
    }

    /// Number of accounts and transfers held.
    pub fn counts(&self) -> (usize, usize) {
        (self.accounts.len(), self.transfers.len())
    }

    /// Entries held in each bounded table, beside its bound: (table, held, bound), the
    /// tables named as `LedgerError::CapacityExceeded` names them.
    pub fn usage(&self) -> [(&'static str, usize, usize); 5] {
        let l = &self.limits;
        [
            ("accounts", self.accounts.len(), l.accounts_max),
            ("transfers", self.transfers.len(), l.transfers_max),
            ("payments", self.payments.len(), l.payments_max),
            (
                "idempotency",
                self.idempotency.len(),
                l.idempotency_keys_max,
            ),
            ("decisions", self.decisions.len(), l.decisions_max),
        ]
    }

    /// Payments not finished (RESERVED or CAPTURED), sorted by id: what the
    /// orchestrator must resolve after a restart.
    pub fn unfinished_payments(&self) -> Vec<(u128, PaymentState)> {
        let mut out: Vec<_> = self
            .payments
            .iter()
            .filter(|(_, (state, _))| !state.is_finished())
            .map(|(id, (state, _))| (*id, *state))
            .collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    /// The recorded state of a payment.
    pub fn payment_state(&self, id: u128) -> Option<PaymentState> {
        self.payments.get(&id).map(|(state, _)| *state)
    }

    /// What the idempotency index remembers about a key.
    pub fn idempotency_entry(&self, key: &str) -> Option<&IdempotencyEntry> {
        self.idempotency.get(key)
    }

    /// Every two-phase-commit decision not yet forgotten, sorted by gtid.
    pub fn decisions(&self) -> Vec<(String, u8)> {
        let mut out: Vec<_> = self
            .decisions
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        out.sort_unstable();
        out
    }

    /// Keeps the furthest audit-trail head: a later one replaces it, an earlier or
    /// equal one changes nothing.
    fn anchor_audit(&mut self, seq: u64, hash: [u8; 32]) -> AnchorResult {
        let held = self.audit_anchor;
        if seq == 0 {
            AnchorResult::SeqMustNotBeZero
        } else if seq < held.seq {
            AnchorResult::Behind
        } else if seq == held.seq && hash == held.hash {
            AnchorResult::Exists
        } else if seq == held.seq {
            AnchorResult::ExistsWithDifferentHash
        } else {
            self.audit_anchor = AuditAnchor { seq, hash };
            AnchorResult::Ok
        }
    }

    /// The furthest audit-trail head anchored (sequence 0: none).
    pub fn audit_anchor(&self) -> AuditAnchor {
        self.audit_anchor
    }

    /// Checks the double-entry invariant: per currency, total debits equal total
    /// credits, posted and pending separately. Returns the first currency that fails.
    pub fn check_balanced(&self) -> Result<(), u16> {
        let mut sums: HashMap<u16, [i128; 4]> = HashMap::new();
        for account in self.accounts.values() {
            let s = sums.entry(account.input.currency).or_default();
            let b = account.balances;
            s[0] += i128::from(b.debits_posted);
            s[1] += i128::from(b.credits_posted);
            s[2] += i128::from(b.debits_pending);
            s[3] += i128::from(b.credits_pending);
        }
        match sums.into_iter().find(|(_, s)| s[0] != s[1] || s[2] != s[3]) {
            Some((currency, _)) => Err(currency),
            None => Ok(()),
        }
    }

    /// The whole state as a snapshot image.
    pub fn image(&self) -> LedgerImage {
        let mut image = self.image_unsorted();
        image.sort();
        image
    }

    /// The state copied as it lies in memory: what a snapshot takes under the ledger's
    /// lock, sorting it (`LedgerImage::sort`) after the lock is let go, so appends wait
    /// for the copy only.
    pub fn image_unsorted(&self) -> LedgerImage {
        LedgerImage {
            now_ns: self.now_ns,
            accounts: self.accounts.values().copied().collect(),
            transfers: self.transfers.values().copied().collect(),
            pending: self.pending.iter().map(|(k, v)| (k, *v)).collect(),
            payments: self.payments.iter().map(|(k, v)| (*k, v.0, v.1)).collect(),
            payments_finished: self.payments_finished.iter().copied().collect(),
            idempotency: self
                .idempotency
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            idempotency_order: self.idempotency_order.iter().cloned().collect(),
            decisions: self.decisions(),
            audit_anchor: self.audit_anchor,
        }
    }

    /// A ledger restored from a snapshot image.
    pub fn from_image(limits: Limits, image: LedgerImage) -> Ledger {
        let pending: IdMap<PendingState> = image.pending.into_iter().collect();
        let expiry = pending
            .iter()
            .filter(|(_, p)| p.status == PendingStatus::Pending && p.expires_at_ns != 0)
            .map(|(id, p)| (p.expires_at_ns, id))
            .collect();
        Ledger {
            limits,
            now_ns: image.now_ns,
            accounts: image
                .accounts
                .into_iter()
                .map(|a| (a.input.id, a))
                .collect(),
            transfers: image.transfers.into_iter().collect(),
            pending,
            expiry,
            payments: image
                .payments
                .into_iter()
                .map(|(id, s, t)| (id, (s, t)))
                .collect(),
            payments_finished: image.payments_finished.into_iter().collect(),
            idempotency: image.idempotency.into_iter().collect(),
            idempotency_order: image.idempotency_order.into_iter().collect(),
            decisions: image.decisions.into_iter().collect(),
            audit_anchor: image.audit_anchor,
            undo: Vec::new(),
        }
    }
}
