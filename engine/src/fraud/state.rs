//! The scorer's memory: per-key state in bounded maps, least recently seen evicted.
//!
//! Keys are 64-bit hashes of the identifiers (account id, msisdn, device id, IP
//! prefix) or the caller's card fingerprint, so a key costs 8 bytes whatever the string.
//! Two identifiers that hash alike share velocity state; at 64 bits that needs about
//! four billion tracked keys to become likely, past every bound here.
//!
//! Memory per tracked key (value size from `size_of`, asserted in the tests, plus about
//! 48 bytes of LRU list node and hash-table slot):
//!
//! | map          | value bytes | with overhead |
//! |--------------|-------------|---------------|
//! | accounts     | 800         | ~848          |
//! | msisdns, cards, devices, IP prefixes | 392 | ~440 |
//!
//! With the default bound of 1,048,576 keys per map the worst case is about 2.5 GiB
//! (about 2.6 KB per active account when each has its own line, card, device and
//! network); a smaller partition sets smaller bounds in `Bounds`.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroUsize;

use lru::LruCache;
use rustc_hash::{FxBuildHasher, FxHasher};

use super::window::{AmountStats, DistinctSet, Totals, Window};

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

/// Maximum tracked keys per map. At a bound, inserting a new key evicts the key seen
/// least recently (its history is forgotten: it scores as new).
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

/// A bounded map from key to state.
pub struct KeyMap<V> {
    map: LruCache<u64, V, FxBuildHasher>,
}

impl<V: Default> KeyMap<V> {
    /// A map of at most `keys_max` keys (at least 1).
    pub fn new(keys_max: usize) -> KeyMap<V> {
        let cap = NonZeroUsize::new(keys_max.max(1)).expect("max(1) is non-zero");
        KeyMap {
            map: LruCache::with_hasher(cap, FxBuildHasher),
        }
    }

    /// The key's state without touching its recency (scoring reads, recording writes).
    pub fn peek(&self, key: u64) -> Option<&V> {
        self.map.peek(&key)
    }

    /// The key's state, created (evicting the least recently seen key at the bound)
    /// and marked most recently seen.
    pub fn entry(&mut self, key: u64) -> &mut V {
        self.map.get_or_insert_mut(key, V::default)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
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

/// Records one attempt on a link key (no-op for key 0).
pub fn record_link(
    map: &mut KeyMap<LinkState>,
    key: u64,
    account: u64,
    at_s: i64,
    amount_minor: i64,
) {
    if key == 0 {
        return;
    }
    let state = map.entry(key);
    state.last_seen_s = state.last_seen_s.max(at_s);
    let at_s = state.last_seen_s;
    state.velocity.add(at_s, amount_minor);
    state.accounts.insert(account, at_s);
}
