//! The scorer's memory: per-key state in bounded maps; at a bound, a key not seen
//! recently is evicted (CLOCK, see `KeyMap`).
//!
//! Keys are 64-bit hashes of the identifiers (account id, msisdn, device id, IP
//! prefix) or the caller's card fingerprint, so a key costs 8 bytes whatever the string.
//! Two identifiers that hash alike share velocity state; at 64 bits that needs about
//! four billion tracked keys to become likely, past every bound here.
//!
//! Memory per tracked key (state size from `size_of`, asserted in the tests, plus 8
//! bytes of key, 1 of seen bit and about 20 of index; see `KeyMap`):
//!
//! | map          | state bytes | with overhead |
//! |--------------|-------------|---------------|
//! | accounts     | 608         | ~640          |
//! | msisdns, cards, devices, IP prefixes | 328 | ~360 |
//!
//! With the default bound of 1,048,576 keys per map the worst case is about 2.0 GiB
//! (about 2.1 KB per active account when each has its own line, card, device and
//! network); a smaller partition sets smaller bounds in `Bounds`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use rustc_hash::{FxBuildHasher, FxHasher};

use super::window::{AmountStats, DistinctSet, Totals, Window};
use crate::validate::formats::ipv4_octets;

/// Velocity windows of one key: 1 minute (4 x 15 s), 1 hour (4 x 15 min) and 24 hours
/// (8 x 3 h). Coarse buckets keep a key at 256 bytes; the model sees counts, where an
/// edge error of one bucket width is noise next to an attack's burst.
#[derive(Clone, Copy, Debug, Default)]
pub struct Velocity {
    minute: Window<4, 15>,
    hour: Window<4, 900>,
    day: Window<8, 10_800>,
}

/// Velocity totals at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct VelocityTotals {
    pub minute: Totals,
    pub hour: Totals,
    pub day: Totals,
}

impl Velocity {
    pub fn add(&mut self, at_s: i64, amount_minor: i64) {
        self.minute.add(at_s, amount_minor);
        self.hour.add(at_s, amount_minor);
        self.day.add(at_s, amount_minor);
    }

    /// The 1-minute window's totals alone (a feature row reads some windows of a
    /// key and not others; each window summed costs a loop over its buckets).
    pub fn minute(&self, at_s: i64) -> Totals {
        self.minute.totals(at_s)
    }

    /// The 1-hour window's totals alone.
    pub fn hour(&self, at_s: i64) -> Totals {
        self.hour.totals(at_s)
    }

    /// The 24-hour window's totals alone.
    pub fn day(&self, at_s: i64) -> Totals {
        self.day.totals(at_s)
    }

    pub fn totals(&self, at_s: i64) -> VelocityTotals {
        VelocityTotals {
            minute: self.minute.totals(at_s),
            hour: self.hour.totals(at_s),
            day: self.day.totals(at_s),
        }
    }
}

/// Distinct-count sets hold this many ids; counts saturate here (8 cards on one account
/// in a day is already card testing).
pub const DISTINCT_MAX: usize = 8;

/// What the scorer remembers about one paying account.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccountState {
    /// The account's clock: the latest time seen, so out-of-order input cannot rewind it.
    pub last_seen_s: i64,
    /// Every scored payment (attempts, settled or not).
    pub velocity: Velocity,
    /// Declined or failed attempts, over 24 hours.
    pub failed: Window<8, 10_800>,
    /// Settled amounts.
    pub amounts: AmountStats,
    /// Devices with a settled payment: "new device" is one not among them.
    pub devices: DistinctSet<DISTINCT_MAX>,
    /// Payment methods (card fingerprints, or the method kind) with a settled payment.
    pub methods: DistinctSet<DISTINCT_MAX>,
    /// Cards attempted, for distinct cards per account in 24 hours.
    pub cards: DistinctSet<DISTINCT_MAX>,
}

/// What the scorer remembers about a msisdn, card, device or IP prefix.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkState {
    pub last_seen_s: i64,
    pub velocity: Velocity,
    /// Accounts that paid with or through this key (distinct accounts per card, device
    /// or IP prefix; accounts paying for one msisdn).
    pub accounts: DistinctSet<DISTINCT_MAX>,
}

/// Maximum tracked keys per map. At a bound, inserting a new key evicts a key not seen
/// recently (its history is forgotten: it scores as new).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub accounts_max: usize,
    pub msisdns_max: usize,
    pub cards_max: usize,
    pub devices_max: usize,
    pub ip_prefixes_max: usize,
}

/// Default per-map bound: a million recently active keys per engine partition.
pub const KEYS_MAX_DEFAULT: usize = 1 << 20;

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            accounts_max: KEYS_MAX_DEFAULT,
            msisdns_max: KEYS_MAX_DEFAULT,
            cards_max: KEYS_MAX_DEFAULT,
            devices_max: KEYS_MAX_DEFAULT,
            ip_prefixes_max: KEYS_MAX_DEFAULT,
        }
    }
}

impl Bounds {
    /// The same bound for every map.
    pub fn uniform(keys_max: usize) -> Bounds {
        Bounds {
            accounts_max: keys_max,
            msisdns_max: keys_max,
            cards_max: keys_max,
            devices_max: keys_max,
            ip_prefixes_max: keys_max,
        }
    }
}

/// Slots per arena chunk: the arena grows a chunk at a time, so reaching a large
/// bound never copies the state already held (no multi-megabyte pause).
const CHUNK_SLOTS: usize = 1_024;

/// One tracked key and its state.
struct Slot<V> {
    key: u64,
    value: V,
}

/// A bounded map from key to state.
///
/// States live inline in an arena of fixed-size chunks, found through a hash index
/// (key to slot number). At the bound, a new key takes the slot of a key not seen
/// recently, chosen by the CLOCK algorithm (second chance): each lookup sets the slot's
/// "seen" bit; to make room, a hand sweeps the slots in a circle, clearing set bits and
/// stopping at the first clear one. That key was not seen since the hand last passed,
/// one full turn ago, so it is among the least recently seen. Exact LRU order would
/// relink two list neighbours on every lookup, two more cache misses per key per
/// payment, and the lookups' cache misses are the scorer's main cost.
///
/// Memory per key: the state, its 8-byte key, 1 byte of seen bit and about 20 bytes
/// of index (a 12-byte entry and a control byte, at most 7/8 full).
pub struct KeyMap<V> {
    index: HashMap<u64, u32, FxBuildHasher>,
    chunks: Vec<Vec<Slot<V>>>,
    seen: Vec<bool>,
    hand: usize,
    keys_max: usize,
}

impl<V: Default> KeyMap<V> {
    /// A map of at most `keys_max` keys (at least 1; at most `u32::MAX`).
    pub fn new(keys_max: usize) -> KeyMap<V> {
        KeyMap {
            // The index grows with use rather than being allocated at the bound: a table
            // sized for a million keys that holds a few thousand spreads them over tens
            // of megabytes, and every lookup would miss the cache.
            index: HashMap::with_hasher(FxBuildHasher),
            chunks: Vec::new(),
            seen: Vec::new(),
            hand: 0,
            keys_max: keys_max.clamp(1, u32::MAX as usize),
        }
    }

    /// The key's state, created if new (taking a slot from a key not seen recently at
    /// the bound) and marked as seen.
    pub fn entry(&mut self, key: u64) -> &mut V {
        // A new key starts without its bit: a flood of keys seen once each displaces
        // itself first and spares the keys seen again since the hand last passed.
        let slot = match self.index.get(&key) {
            Some(&slot) => {
                self.seen[slot as usize] = true;
                slot as usize
            }
            None => self.insert(key),
        };
        &mut self.chunks[slot / CHUNK_SLOTS][slot % CHUNK_SLOTS].value
    }

    fn insert(&mut self, key: u64) -> usize {
        let len = self.seen.len();
        if len < self.keys_max {
            if len % CHUNK_SLOTS == 0 {
                self.chunks.push(Vec::with_capacity(CHUNK_SLOTS));
            }
            let chunk = self
                .chunks
                .last_mut()
                .expect("a chunk with room was just ensured");
            chunk.push(Slot {
                key,
                value: V::default(),
            });
            self.seen.push(false);
            self.index.insert(key, len as u32);
            return len;
        }
        // Bounded: at most one full turn clears every bit, so this ends.
        while self.seen[self.hand] {
            self.seen[self.hand] = false;
            self.hand = (self.hand + 1) % len;
        }
        let victim = self.hand;
        self.hand = (self.hand + 1) % len;
        let slot = &mut self.chunks[victim / CHUNK_SLOTS][victim % CHUNK_SLOTS];
        let evicted = std::mem::replace(
            slot,
            Slot {
                key,
                value: V::default(),
            },
        );
        self.index.remove(&evicted.key);
        self.index.insert(key, victim as u32);
        victim
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Hints the CPU to load the key's state, if tracked; changes nothing.
    pub fn prefetch(&self, key: u64) {
        if let Some(&slot) = self.index.get(&key) {
            let slot = slot as usize;
            let state = &self.chunks[slot / CHUNK_SLOTS][slot % CHUNK_SLOTS];
            prefetch_bytes(
                state as *const Slot<V> as *const u8,
                std::mem::size_of::<Slot<V>>(),
            );
        }
    }
}

/// Hints the CPU to load `len` bytes from `start` into the cache, one line at a time.
fn prefetch_bytes(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..len).step_by(64) {
        // SAFETY: a prefetch is a hint that never faults and has no effect on memory;
        // the address is inside (or one line past) a live allocation regardless.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                start.wrapping_add(offset) as *const i8,
                std::arch::x86_64::_MM_HINT_T0,
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// Which identifier space a key comes from, mixed into its hash so that an account id
/// and a device id spelled alike stay different keys.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum KeyKind {
    Account = 1,
    Msisdn = 2,
    Device = 3,
    IpPrefix = 4,
    Card = 5,
    Method = 6,
}

/// The 64-bit key of an identifier; never 0 (0 marks "none" and empty slots).
pub fn key_of(kind: KeyKind, id: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    (kind as u8).hash(&mut hasher);
    id.hash(&mut hasher);
    hasher.finish().max(1)
}

/// The key of an IP address's network: the /24 of an IPv4 address, the /64 of an IPv6
/// one (one household or one mobile carrier-grade NAT pool). A string that is not an
/// address is keyed as it is, so garbage still has velocity; empty is no key (0).
pub fn ip_prefix_key(ip: &str) -> u64 {
    if ip.is_empty() {
        return 0;
    }
    // Nearly every payment's address is IPv4: the validation layer's one-pass parser
    // takes exactly the texts the standard library's does, far faster.
    if let Some(o) = ipv4_octets(ip.as_bytes()) {
        return key_of(KeyKind::IpPrefix, &[4, o[0], o[1], o[2]]);
    }
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            key_of(KeyKind::IpPrefix, &[4, o[0], o[1], o[2]])
        }
        Ok(IpAddr::V6(v6)) => {
            let o = v6.octets();
            let mut prefix = [6u8; 9];
            prefix[1..].copy_from_slice(&o[..8]);
            key_of(KeyKind::IpPrefix, &prefix)
        }
        Err(_) => key_of(KeyKind::IpPrefix, ip.as_bytes()),
    }
}

/// The key of an optional string identifier: 0 when empty.
pub fn optional_key(kind: KeyKind, id: &str) -> u64 {
    if id.is_empty() {
        0
    } else {
        key_of(kind, id.as_bytes())
    }
}

/// All the per-key maps.
pub struct Tracker {
    pub accounts: KeyMap<AccountState>,
    pub msisdns: KeyMap<LinkState>,
    pub cards: KeyMap<LinkState>,
    pub devices: KeyMap<LinkState>,
    pub ip_prefixes: KeyMap<LinkState>,
}

impl Tracker {
    pub fn new(bounds: Bounds) -> Tracker {
        Tracker {
            accounts: KeyMap::new(bounds.accounts_max),
            msisdns: KeyMap::new(bounds.msisdns_max),
            cards: KeyMap::new(bounds.cards_max),
            devices: KeyMap::new(bounds.devices_max),
            ip_prefixes: KeyMap::new(bounds.ip_prefixes_max),
        }
    }
}

/// Records one attempt on a link key's state.
pub fn record_link(state: &mut LinkState, account: u64, at_s: i64, amount_minor: i64) {
    state.last_seen_s = state.last_seen_s.max(at_s);
    let at_s = state.last_seen_s;
    state.velocity.add(at_s, amount_minor);
    state.accounts.insert(account, at_s);
}
