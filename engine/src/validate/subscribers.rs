//! The engine's subscriber table: who may pay, for which line, in which currency.
//!
//! Loaded from the store at start and kept current by every settlement. The billing
//! system owns this data; the engine holds a copy so that account authentication costs
//! a hash lookup, not a database round trip.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use rustc_hash::FxBuildHasher;

use super::clock::{day_index, month_index, Now};
use super::formats::{is_account_id, ACCOUNT_ID_LEN_MAX};
use crate::money::{Currency, AMOUNT_MINOR_MAX};

/// At most this many subscribers per engine process (one partition of the carrier's
/// base). At the bound: `SubscriberTable::upsert` returns `TableFull` and the load fails.
pub const SUBSCRIBERS_MAX: usize = 20_000_000;

/// Prepaid lines buy credit; postpaid lines owe a bill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Plan {
    Prepaid = 1,
    Postpaid = 2,
}

/// The line's state in the carrier's provisioning system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Active = 1,
    Suspended = 2,
    Barred = 3,
    Closed = 4,
}

impl Plan {
    /// From the stable number used across the Python boundary.
    pub fn from_u8(n: u8) -> Option<Plan> {
        match n {
            1 => Some(Plan::Prepaid),
            2 => Some(Plan::Postpaid),
            _ => None,
        }
    }
}

impl Status {
    /// From the stable number used across the Python boundary.
    pub fn from_u8(n: u8) -> Option<Status> {
        match n {
            1 => Some(Status::Active),
            2 => Some(Status::Suspended),
            3 => Some(Status::Barred),
            4 => Some(Status::Closed),
            _ => None,
        }
    }
}

/// One subscriber account as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub account_id: String,
    pub msisdn: String,
    pub plan: Plan,
    pub status: Status,
    pub currency: Currency,
    /// Prepaid credit, or the postpaid amount owed as a positive number.
    pub balance_minor: i64,
    /// ISO 3166 alpha-2 country of the subscriber, ASCII uppercase.
    pub country: [u8; 2],
    /// When the SIM was last swapped, Unix seconds; `None` if never.
    pub sim_swapped_at_s: Option<i64>,
    /// When the account was opened, Unix seconds.
    pub created_at_s: i64,
}

/// Why a subscriber could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    TableFull {
        max: usize,
    },
    /// The account id is not 1 to 64 characters of `[A-Za-z0-9_-]`, or the MSISDN is
    /// longer than E.164's 16 bytes: no payment could ever authenticate against it.
    Malformed {
        account_id: String,
    },
}

/// Bytes an MSISDN occupies at most: '+' and 15 digits (E.164).
const MSISDN_BYTES_MAX: usize = 16;

/// Up to `N` bytes stored inline, zero-padded. The table keeps account ids and
/// MSISDNs this way so that authenticating a payment reads the hash bucket only:
/// with `String`s every comparison chased a pointer to another cache line, and at
/// ten thousand subscribers and up those misses were most of a lookup's cost.
#[derive(Clone, Copy, Debug)]
pub struct InlineBytes<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> InlineBytes<N> {
    fn new(value: &[u8]) -> Option<InlineBytes<N>> {
        let mut bytes = [0u8; N];
        bytes.get_mut(..value.len())?.copy_from_slice(value);
        Some(InlineBytes {
            len: u8::try_from(value.len()).ok()?,
            bytes,
        })
    }

    /// The stored bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether the stored bytes are `other`, the same as `as_bytes() == other`.
    /// Values of 8 to 16 bytes (every MSISDN) are compared as their first and last
    /// eight bytes, overlapping, with no call: `==` on slices calls `memcmp`, whose
    /// call and length dispatch cost more than the comparison itself here.
    #[inline]
    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        let len = other.len();
        if len != usize::from(self.len) {
            return false;
        }
        if !(8..=16).contains(&len) || N < len {
            return self.as_bytes() == other;
        }
        let word = |bytes: &[u8], at: usize| {
            u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
        };
        word(&self.bytes, 0) == word(other, 0) && word(&self.bytes, len - 8) == word(other, len - 8)
    }
}

// Hash and equality are those of the byte slice, so a `&[u8]` from a batch column
// looks an entry up directly (the `Borrow` contract).
impl<const N: usize> PartialEq for InlineBytes<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for InlineBytes<N> {}

impl<const N: usize> Hash for InlineBytes<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl<const N: usize> Borrow<[u8]> for InlineBytes<N> {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

type AccountKey = InlineBytes<ACCOUNT_ID_LEN_MAX>;

/// Why a batch of state changes was refused; nothing of the batch was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The account is not in the table: a caller bug, since holds and settlements
    /// only follow a successful validation of that account.
    UnknownAccount { row: usize, account_id: String },
    /// An amount was zero or negative, or above `AMOUNT_MINOR_MAX`.
    AmountInvalid { row: usize, amount_minor: i64 },
    /// Releasing more than the account holds.
    ReleaseExceedsHold {
        row: usize,
        held_minor: i64,
        release_minor: i64,
    },
    /// The sum of holds on one account would pass `HELD_MINOR_MAX`.
    HoldsFull { row: usize, max: i64 },
}

/// The most an account may have on hold at once, in minor units. At the bound:
/// `reserve_holds` refuses the batch with `HoldsFull`. Far above any real hold, it
/// keeps `balance - held` from overflowing.
pub const HELD_MINOR_MAX: i64 = 1 << 60;

/// A subscriber's settled payments in the current UTC day and calendar month, for
/// the count and amount limits. Fixed size per subscriber, so the table's bound is
/// this state's bound too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// `clock::day_index` of the day counted in `day_*`.
    pub day: i64,
    pub day_count: u32,
    pub day_amount_minor: i64,
    /// `clock::month_index` of the month counted in `month_*`.
    pub month: i64,
    pub month_count: u32,
    pub month_amount_minor: i64,
}

impl Usage {
    /// The counters as seen at `now`: a past day or month counts as zero.
    pub fn at(&self, now: &Now) -> Usage {
        let (day, month) = (now.day, now.month);
        let mut usage = *self;
        if usage.day != day {
            (usage.day, usage.day_count, usage.day_amount_minor) = (day, 0, 0);
        }
        if usage.month != month {
            (usage.month, usage.month_count, usage.month_amount_minor) = (month, 0, 0);
        }
        usage
    }

    /// Counts a payment settled at `at_s`. A settlement reported late, for a day or
    /// month already past, no longer counts against that past period's successor.
    fn record(&mut self, amount_minor: i64, at_s: i64) {
        let (day, month) = (day_index(at_s), month_index(at_s));
        if day > self.day {
            (self.day, self.day_count, self.day_amount_minor) = (day, 0, 0);
        }
        if month > self.month {
            (self.month, self.month_count, self.month_amount_minor) = (month, 0, 0);
        }
        if day == self.day {
            self.day_count = self.day_count.saturating_add(1);
            self.day_amount_minor = self.day_amount_minor.saturating_add(amount_minor);
        }
        if month == self.month {
            self.month_count = self.month_count.saturating_add(1);
            self.month_amount_minor = self.month_amount_minor.saturating_add(amount_minor);
        }
    }
}

/// What the engine keeps per account beside the billing system's copy.
#[derive(Clone, Debug)]
pub struct Entry {
    pub subscriber: Subscriber,
    /// `subscriber.msisdn`, inline (see `InlineBytes`).
    pub msisdn: InlineBytes<MSISDN_BYTES_MAX>,
    /// Pending holds on the line's credit (carrier-balance payments in flight).
    pub held_minor: i64,
    pub usage: Usage,
}

/// Subscribers by account id.
///
/// FxHash rather than the default SipHash: the lookup runs once per payment and Fx
/// is several times cheaper on short ids. SipHash's flooding resistance guards a
/// table whose keys an attacker chooses; these keys come from the billing system,
/// and a request's account id is only ever looked up, never inserted.
#[derive(Default, Debug)]
pub struct SubscriberTable {
    by_account: HashMap<AccountKey, Entry, FxBuildHasher>,
}

impl SubscriberTable {
    pub fn new() -> SubscriberTable {
        SubscriberTable::default()
    }

    /// Inserts or replaces a subscriber (the billing system's copy wins); holds and
    /// usage counters of a known account are kept.
    pub fn upsert(&mut self, subscriber: Subscriber) -> Result<(), TableError> {
        let malformed = || TableError::Malformed {
            account_id: subscriber.account_id.clone(),
        };
        let key = is_account_id(subscriber.account_id.as_bytes())
            .then(|| AccountKey::new(subscriber.account_id.as_bytes()))
            .flatten()
            .ok_or_else(malformed)?;
        let msisdn = InlineBytes::new(subscriber.msisdn.as_bytes()).ok_or_else(malformed)?;
        if let Some(entry) = self.by_account.get_mut(&key) {
            entry.subscriber = subscriber;
            entry.msisdn = msisdn;
            return Ok(());
        }
        if self.by_account.len() >= SUBSCRIBERS_MAX {
            return Err(TableError::TableFull {
                max: SUBSCRIBERS_MAX,
            });
        }
        let entry = Entry {
            subscriber,
            msisdn,
            held_minor: 0,
            usage: Usage::default(),
        };
        self.by_account.insert(key, entry);
        Ok(())
    }

    pub fn get(&self, account_id: &str) -> Option<&Subscriber> {
        self.by_account
            .get(account_id.as_bytes())
            .map(|entry| &entry.subscriber)
    }

    /// The account's entry, looked up by the raw bytes of a batch column.
    #[inline]
    pub fn entry(&self, account_id: &[u8]) -> Option<&Entry> {
        self.by_account.get(account_id)
    }

    fn entry_mut(&mut self, row: usize, account_id: &str) -> Result<&mut Entry, StateError> {
        self.by_account
            .get_mut(account_id.as_bytes())
            .ok_or_else(|| StateError::UnknownAccount {
                row,
                account_id: account_id.to_string(),
            })
    }

    /// Records settled balances and service states, all or nothing.
    pub fn set_states(&mut self, rows: &[(&str, i64, Status)]) -> Result<(), StateError> {
        for (row, (account_id, _, _)) in rows.iter().enumerate() {
            self.entry_mut(row, account_id)?;
        }
        for &(account_id, balance_minor, status) in rows {
            let entry = self
                .by_account
                .get_mut(account_id.as_bytes())
                .expect("checked above");
            entry.subscriber.balance_minor = balance_minor;
            entry.subscriber.status = status;
        }
        Ok(())
    }

    /// Records one settled balance and service state; see `set_states`.
    pub fn set_state(
        &mut self,
        account_id: &str,
        balance_minor: i64,
        status: Status,
    ) -> Result<(), StateError> {
        self.set_states(&[(account_id, balance_minor, status)])
    }

    /// Adds holds on the accounts' credit, all or nothing.
    pub fn reserve_holds(&mut self, rows: &[(&str, i64)]) -> Result<(), StateError> {
        self.change_holds(rows, 1)
    }

    /// Removes holds (the payment settled or failed), all or nothing.
    pub fn release_holds(&mut self, rows: &[(&str, i64)]) -> Result<(), StateError> {
        self.change_holds(rows, -1)
    }

    fn change_holds(&mut self, rows: &[(&str, i64)], sign: i64) -> Result<(), StateError> {
        let mut applied = 0;
        let result = rows
            .iter()
            .enumerate()
            .try_for_each(|(row, &(account_id, amount_minor))| {
                if !(1..=AMOUNT_MINOR_MAX).contains(&amount_minor) {
                    return Err(StateError::AmountInvalid { row, amount_minor });
                }
                let entry = self.entry_mut(row, account_id)?;
                let held = entry.held_minor + sign * amount_minor;
                if held < 0 {
                    return Err(StateError::ReleaseExceedsHold {
                        row,
                        held_minor: entry.held_minor,
                        release_minor: amount_minor,
                    });
                }
                if held > HELD_MINOR_MAX {
                    return Err(StateError::HoldsFull {
                        row,
                        max: HELD_MINOR_MAX,
                    });
                }
                entry.held_minor = held;
                applied += 1;
                Ok(())
            });
        if result.is_err() {
            // Undo the rows already applied, newest first, so a refused batch leaves
            // every hold as it was.
            for &(account_id, amount_minor) in rows[..applied].iter().rev() {
                self.by_account
                    .get_mut(account_id.as_bytes())
                    .expect("applied above")
                    .held_minor -= sign * amount_minor;
            }
        }
        result
    }

    /// Counts settled payments against the daily and monthly limits, all or nothing.
    /// `at_s` is the settlement time from the caller's clock.
    pub fn record_settled(&mut self, rows: &[(&str, i64, i64)]) -> Result<(), StateError> {
        for (row, &(account_id, amount_minor, _)) in rows.iter().enumerate() {
            if !(1..=AMOUNT_MINOR_MAX).contains(&amount_minor) {
                return Err(StateError::AmountInvalid { row, amount_minor });
            }
            self.entry_mut(row, account_id)?;
        }
        for &(account_id, amount_minor, at_s) in rows {
            self.by_account
                .get_mut(account_id.as_bytes())
                .expect("checked above")
                .usage
                .record(amount_minor, at_s);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.by_account.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_account.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `eq_bytes` against slice equality: every stored length, equal values, values
    /// one byte longer or shorter, and a difference at every position.
    #[test]
    fn eq_bytes_is_slice_equality() {
        for len in 0..=MSISDN_BYTES_MAX {
            let value: Vec<u8> = (0..len as u8).map(|i| b'0' + i % 10).collect();
            let stored = InlineBytes::<MSISDN_BYTES_MAX>::new(&value).unwrap();
            assert!(stored.eq_bytes(&value), "len {len}");
            let mut longer = value.clone();
            longer.push(0);
            assert!(!stored.eq_bytes(&longer), "len {len}, NUL appended");
            if len > 0 {
                assert!(!stored.eq_bytes(&value[..len - 1]), "len {len}, one short");
            }
            for at in 0..len {
                let mut other = value.clone();
                other[at] ^= 0x40;
                assert!(!stored.eq_bytes(&other), "len {len}, byte {at} differs");
            }
        }
    }
}
