//! The engine's subscriber table: who may pay, for which line, in which currency.
//!
//! Loaded from the store at start and kept current by every settlement. The billing
//! system owns this data; the engine holds a copy so that account authentication costs
//! a hash lookup, not a database round trip.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::HashTable;
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

/// What the engine keeps of a subscriber's billing record, fixed size: the account id
/// and MSISDN are kept apart (see `Entry`), and "never swapped" is `NEVER`, not an
/// `Option` (which would double the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub plan: Plan,
    pub status: Status,
    pub currency: Currency,
    pub balance_minor: i64,
    pub country: [u8; 2],
    /// When the SIM was last swapped, Unix seconds; `NEVER` if never.
    pub sim_swapped_at_s: i64,
    pub created_at_s: i64,
}

/// `Profile::sim_swapped_at_s` of a SIM never swapped (the bindings' `NO_TIME`).
pub const NEVER: i64 = i64::MIN;

/// What the engine keeps per account beside the billing system's copy: about 120
/// bytes, plus the account id's bytes in the table's arena and a 4-byte index slot.
#[derive(Clone, Debug)]
pub struct Entry {
    pub subscriber: Profile,
    /// The subscriber's MSISDN, inline (see `InlineBytes`).
    pub msisdn: InlineBytes<MSISDN_BYTES_MAX>,
    /// Where the account id lies in `SubscriberTable::ids`.
    account_at: u32,
    account_len: u8,
    /// Pending holds on the line's credit (carrier-balance payments in flight).
    pub held_minor: i64,
    pub usage: Usage,
}

/// Subscribers by account id, compact: at ten million subscribers the table is the
/// engine's largest, so it holds no allocation per subscriber. The entries lie in one
/// `Vec`, the account ids one after another in one byte arena, and the hash index maps
/// an id's hash to the entry's position (4 bytes a slot).
///
/// FxHash rather than the default SipHash: the lookup runs once per payment and Fx
/// is several times cheaper on short ids. SipHash's flooding resistance guards a
/// table whose keys an attacker chooses; these keys come from the billing system,
/// and a request's account id is only ever looked up, never inserted.
#[derive(Default)]
pub struct SubscriberTable {
    index: HashTable<u32>,
    entries: Vec<Entry>,
    ids: Vec<u8>,
}

impl std::fmt::Debug for SubscriberTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberTable")
            .field("len", &self.entries.len())
            .finish()
    }
}

fn hash_of(account_id: &[u8]) -> u64 {
    FxBuildHasher.hash_one(account_id)
}

fn id_of<'a>(ids: &'a [u8], entry: &Entry) -> &'a [u8] {
    let at = entry.account_at as usize;
    &ids[at..at + usize::from(entry.account_len)]
}

impl SubscriberTable {
    pub fn new() -> SubscriberTable {
        SubscriberTable::default()
    }

    /// Room for `additional` more subscribers without growing (a load that knows its
    /// count grows the table once).
    pub fn reserve(&mut self, additional: usize) {
        let additional = additional.min(SUBSCRIBERS_MAX.saturating_sub(self.entries.len()));
        self.entries.reserve_exact(additional);
        let (entries, ids) = (&self.entries, &self.ids);
        self.index
            .reserve(additional, |&i| hash_of(id_of(ids, &entries[i as usize])));
    }

    fn position(&self, account_id: &[u8]) -> Option<usize> {
        let (entries, ids) = (&self.entries, &self.ids);
        self.index
            .find(hash_of(account_id), |&i| {
                id_of(ids, &entries[i as usize]) == account_id
            })
            .map(|&i| i as usize)
    }

    /// Inserts or replaces a subscriber (the billing system's copy wins); holds and
    /// usage counters of a known account are kept.
    pub fn upsert(&mut self, subscriber: Subscriber) -> Result<(), TableError> {
        let profile = Profile {
            plan: subscriber.plan,
            status: subscriber.status,
            currency: subscriber.currency,
            balance_minor: subscriber.balance_minor,
            country: subscriber.country,
            sim_swapped_at_s: subscriber.sim_swapped_at_s.unwrap_or(NEVER),
            created_at_s: subscriber.created_at_s,
        };
        self.upsert_parts(
            subscriber.account_id.as_bytes(),
            subscriber.msisdn.as_bytes(),
            profile,
        )
    }

    /// `upsert` from borrowed parts (a load reads them straight from the store's rows).
    pub fn upsert_parts(
        &mut self,
        account_id: &[u8],
        msisdn: &[u8],
        profile: Profile,
    ) -> Result<(), TableError> {
        let malformed = || TableError::Malformed {
            account_id: String::from_utf8_lossy(account_id).into_owned(),
        };
        if !is_account_id(account_id) || account_id.len() > ACCOUNT_ID_LEN_MAX {
            return Err(malformed());
        }
        let msisdn = InlineBytes::new(msisdn).ok_or_else(malformed)?;
        let hash = hash_of(account_id);
        let (entries, ids) = (&self.entries, &self.ids);
        let found = self
            .index
            .find(hash, |&i| id_of(ids, &entries[i as usize]) == account_id)
            .copied();
        if let Some(at) = found {
            let entry = &mut self.entries[at as usize];
            entry.subscriber = profile;
            entry.msisdn = msisdn;
            return Ok(());
        }
        if self.entries.len() >= SUBSCRIBERS_MAX {
            return Err(TableError::TableFull {
                max: SUBSCRIBERS_MAX,
            });
        }
        let position = u32::try_from(self.entries.len()).expect("SUBSCRIBERS_MAX fits u32");
        let account_at =
            u32::try_from(self.ids.len()).expect("SUBSCRIBERS_MAX ids of 64 bytes fit u32");
        self.ids.extend_from_slice(account_id);
        self.entries.push(Entry {
            subscriber: profile,
            msisdn,
            account_at,
            account_len: account_id.len() as u8,
            held_minor: 0,
            usage: Usage::default(),
        });
        let (entries, ids) = (&self.entries, &self.ids);
        self.index.insert_unique(hash, position, |&i| {
            hash_of(id_of(ids, &entries[i as usize]))
        });
        Ok(())
    }

    /// A subscriber as the billing system's copy has it (a copy).
    pub fn get(&self, account_id: &str) -> Option<Subscriber> {
        let entry = self.entry(account_id.as_bytes())?;
        let p = entry.subscriber;
        Some(Subscriber {
            account_id: account_id.to_string(),
            msisdn: String::from_utf8_lossy(entry.msisdn.as_bytes()).into_owned(),
            plan: p.plan,
            status: p.status,
            currency: p.currency,
            balance_minor: p.balance_minor,
            country: p.country,
            sim_swapped_at_s: (p.sim_swapped_at_s != NEVER).then_some(p.sim_swapped_at_s),
            created_at_s: p.created_at_s,
        })
    }

    /// The account's entry, looked up by the raw bytes of a batch column.
    #[inline]
    pub fn entry(&self, account_id: &[u8]) -> Option<&Entry> {
        self.position(account_id).map(|at| &self.entries[at])
    }

    /// Bytes the table holds (its allocations' capacities), for the memory budget.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.ids.capacity()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    fn entry_mut(&mut self, row: usize, account_id: &str) -> Result<&mut Entry, StateError> {
        match self.position(account_id.as_bytes()) {
            Some(at) => Ok(&mut self.entries[at]),
            None => Err(StateError::UnknownAccount {
                row,
                account_id: account_id.to_string(),
            }),
        }
    }

    fn known_mut(&mut self, account_id: &str) -> &mut Entry {
        let at = self.position(account_id.as_bytes()).expect("checked above");
        &mut self.entries[at]
    }

    /// Records settled balances and service states, all or nothing.
    pub fn set_states(&mut self, rows: &[(&str, i64, Status)]) -> Result<(), StateError> {
        for (row, (account_id, _, _)) in rows.iter().enumerate() {
            self.entry_mut(row, account_id)?;
        }
        for &(account_id, balance_minor, status) in rows {
            let entry = self.known_mut(account_id);
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
                self.known_mut(account_id).held_minor -= sign * amount_minor;
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
            self.known_mut(account_id).usage.record(amount_minor, at_s);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
