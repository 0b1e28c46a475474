//! The ledger's plain data: accounts, transfers, flags, settlement states.
//!
//! Ids are 128-bit, as in TigerBeetle, so a client can derive them from a UUID and
//! retry without asking the ledger for one. Amounts and balances are `i64` minor units
//! of the account's currency (ISO 4217 numeric code); no float ever holds one.

use borsh::{BorshDeserialize, BorshSerialize};

/// Account flags (bit values are part of the log format and the Python contract).
pub mod account_flags {
    /// The account is linked to the next event of the batch: all or nothing.
    pub const LINKED: u16 = 1 << 0;
    /// Debits (posted and pending) may never exceed posted credits: a prepaid wallet.
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: u16 = 1 << 1;
    /// Credits (posted and pending) may never exceed posted debits.
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: u16 = 1 << 2;
    /// Every flag this version knows; any other bit is `RESERVED_FLAG`.
    pub const KNOWN: u16 = LINKED | DEBITS_MUST_NOT_EXCEED_CREDITS | CREDITS_MUST_NOT_EXCEED_DEBITS;
}

/// Transfer flags (bit values are part of the log format and the Python contract).
pub mod transfer_flags {
    /// The transfer is linked to the next event of the batch: all or nothing.
    pub const LINKED: u16 = 1 << 0;
    /// A hold: moves pending balances only, until posted, voided or expired.
    pub const PENDING: u16 = 1 << 1;
    /// Posts the pending transfer `pending_id`, in full (amount 0) or for less.
    pub const POST_PENDING: u16 = 1 << 2;
    /// Voids the pending transfer `pending_id`, releasing the hold.
    pub const VOID_PENDING: u16 = 1 << 3;
    /// Every flag this version knows; any other bit is `RESERVED_FLAG`.
    pub const KNOWN: u16 = LINKED | PENDING | POST_PENDING | VOID_PENDING;
}

/// What an account is for; numbers are stable. Zero is `KIND_INVALID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum AccountKind {
    SubscriberReceivable = 1,
    PrepaidCredit = 2,
    GatewayClearing = 3,
    SettlementCash = 4,
    Refunds = 5,
    Fees = 6,
    Suspense = 7,
}

impl AccountKind {
    /// The kind with this number, if any.
    pub fn from_u16(n: u16) -> Option<AccountKind> {
        use AccountKind::*;
        [
            SubscriberReceivable,
            PrepaidCredit,
            GatewayClearing,
            SettlementCash,
            Refunds,
            Fees,
            Suspense,
        ]
        .into_iter()
        .find(|kind| *kind as u16 == n)
    }
}

/// An account as a client asks for it.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountInput {
    pub id: u128,
    /// ISO 4217 numeric code; a transfer between two accounts needs the same one.
    pub currency: u16,
    /// An `AccountKind` number.
    pub kind: u16,
    pub flags: u16,
}

/// The four balances of an account, kept apart as in TigerBeetle.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
}

/// An account held by the ledger.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    pub input: AccountInput,
    pub balances: Balances,
    pub timestamp_ns: u64,
}

/// A transfer as a client asks for it. For a post or void, zero accounts and currency
/// mean "those of the pending transfer"; an amount of zero posts the full hold.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferInput {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount_minor: i64,
    pub pending_id: u128,
    /// The payment this money movement belongs to (0 when none).
    pub payment_id: u128,
    /// Seconds a pending transfer holds before it expires; 0 holds until posted or voided.
    pub timeout_s: u32,
    pub currency: u16,
    pub flags: u16,
}

/// A transfer held by the ledger: the input as given, and what it resolved to.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub input: TransferInput,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub currency: u16,
    /// For a post: the amount posted; for a void: the amount released; else the input amount.
    pub amount_minor: i64,
    pub timestamp_ns: u64,
}

/// Where a pending transfer stands. Numbers are stable.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum PendingStatus {
    Pending = 1,
    Posted = 2,
    Voided = 3,
    Expired = 4,
}

/// A pending transfer's status and deadline (0: none).
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingState {
    pub status: PendingStatus,
    pub expires_at_ns: u64,
}

/// The settlement state of a payment (DESIGN.md's saga). Numbers are stable.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum PaymentState {
    /// The hold is in place; nothing has left the engine yet.
    Reserved = 1,
    /// The gateway captured: the point of no return, roll forward from here.
    Captured = 2,
    /// Settled everywhere.
    Settled = 3,
    /// Settled nowhere: the hold was voided or the capture refunded.
    RolledBack = 4,
}

impl PaymentState {
    /// The state with this number, if any.
    pub fn from_u8(n: u8) -> Option<PaymentState> {
        match n {
            1 => Some(PaymentState::Reserved),
            2 => Some(PaymentState::Captured),
            3 => Some(PaymentState::Settled),
            4 => Some(PaymentState::RolledBack),
            _ => None,
        }
    }

    /// Settled or rolled back: nothing left to do for this payment.
    pub fn is_finished(self) -> bool {
        matches!(self, PaymentState::Settled | PaymentState::RolledBack)
    }

    /// Whether the saga may move from `self` to `next`.
    pub fn may_become(self, next: PaymentState) -> bool {
        use PaymentState::*;
        matches!(
            (self, next),
            (Reserved, Captured)
                | (Reserved, RolledBack)
                | (Captured, Settled)
                | (Captured, RolledBack)
        )
    }
}

/// A two-phase-commit decision of the settlement coordinator. Numbers are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Decision {
    Commit = 1,
    Abort = 2,
}

/// An idempotency key's claim as a client makes it.
#[derive(BorshSerialize, BorshDeserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClaimInput {
    pub key: String,
    /// A digest of the request payload (the caller's choice of keyed hash).
    pub fingerprint: u128,
    pub payment_id: u128,
}

/// What the idempotency index remembers about a key.
#[derive(BorshSerialize, BorshDeserialize, Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyEntry {
    pub fingerprint: u128,
    pub payment_id: u128,
    /// The caller's outcome code; 0 while the payment is in flight.
    pub outcome: u16,
    pub created_ns: u64,
}
