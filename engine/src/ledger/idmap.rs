//! A map from 128-bit ids, split into shards so that growing it never stops the
//! ledger for long.
//!
//! A single hash table doubles in one step: at millions of transfers that is a pause of
//! hundreds of milliseconds (seconds on a loaded machine) inside one commit, which
//! shows as the p99 of every caller waiting behind it. Splitting it into equal shards
//! does not help: equal shards fill at the same pace and double in the same batch. So
//! the shards get unequal shares of the ids, shard k a share proportional to 2^(k/64):
//! their sizes are spread evenly over one doubling, and as the table grows they double
//! one after another, each pause about 1/64 of the table.

use std::sync::OnceLock;

use rustc_hash::FxHashMap;

/// Shards per map. 64 keeps each shard's doubling near 1/64 of the table while the
/// per-map overhead (64 empty tables) stays a few kilobytes.
const SHARDS: usize = 64;

/// An id as the tables store it: two u64 halves, so a bucket is aligned to 8 bytes
/// rather than the 16 of a `u128`. A bucket of an `IdMap<u64>` is 24 bytes instead of
/// 32: growing a table of millions then copies, and the kernel zeroes, a quarter less.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Key(u64, u64);

impl Key {
    fn of(id: u128) -> Key {
        Key((id >> 64) as u64, id as u64)
    }

    fn id(self) -> u128 {
        (u128::from(self.0) << 64) | u128::from(self.1)
    }
}

/// A map from ids, sharded by a mix of all 128 bits.
#[derive(Clone, Debug)]
pub struct IdMap<V> {
    shards: Vec<FxHashMap<Key, V>>,
    len: usize,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap {
            shards: (0..SHARDS).map(|_| FxHashMap::default()).collect(),
            len: 0,
        }
    }
}

/// Routing slots: the top bits of an id's mix pick a slot, the slot names a shard.
const SLOTS: usize = 4096;

/// Which shard each slot routes to, shard k owning a share of slots proportional to
/// 2^(k/SHARDS). Built once; the floats only size the shares, no amount goes near them.
fn routes() -> &'static [u8; SLOTS] {
    static ROUTES: OnceLock<[u8; SLOTS]> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let weights: Vec<f64> = (0..SHARDS)
            .map(|k| (k as f64 / SHARDS as f64).exp2())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut routes = [0u8; SLOTS];
        let (mut shard, mut upto) = (0, weights[0]);
        for (slot, route) in routes.iter_mut().enumerate() {
            let at = (slot as f64 + 0.5) / SLOTS as f64 * total;
            while at > upto && shard + 1 < SHARDS {
                shard += 1;
                upto += weights[shard];
            }
            *route = shard as u8;
        }
        routes
    })
}

fn shard_of(id: u128) -> usize {
    // A multiplicative mix of each half with its own constant, top bits: independent
    // of the bits the shard's own hash table uses to place the id, and not fooled by
    // ids whose halves are equal (a plain xor of the halves would send them all to 0).
    let (lo, hi) = (id as u64, (id >> 64) as u64);
    let mixed = lo.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hi.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    routes()[(mixed >> 52) as usize] as usize
}

impl<V> IdMap<V> {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The value for `id`.
    pub fn get(&self, id: &u128) -> Option<&V> {
        self.shards[shard_of(*id)].get(&Key::of(*id))
    }

    /// The value for `id`, to change it in place.
    pub fn get_mut(&mut self, id: &u128) -> Option<&mut V> {
        self.shards[shard_of(*id)].get_mut(&Key::of(*id))
    }

    /// Sets the value for `id`; returns the old one.
    pub fn insert(&mut self, id: u128, value: V) -> Option<V> {
        let old = self.shards[shard_of(id)].insert(Key::of(id), value);
        self.len += usize::from(old.is_none());
        old
    }

    /// Removes `id`; returns its value.
    pub fn remove(&mut self, id: &u128) -> Option<V> {
        let old = self.shards[shard_of(*id)].remove(&Key::of(*id));
        self.len -= usize::from(old.is_some());
        old
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, &V)> {
        self.shards
            .iter()
            .flat_map(|shard| shard.iter().map(|(key, value)| (key.id(), value)))
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|shard| shard.values())
    }
}

impl<V> FromIterator<(u128, V)> for IdMap<V> {
    fn from_iter<I: IntoIterator<Item = (u128, V)>>(iter: I) -> Self {
        let mut map = IdMap::default();
        for (id, value) in iter {
            map.insert(id, value);
        }
        map
    }
}

impl<V> std::ops::Index<&u128> for IdMap<V> {
    type Output = V;

    fn index(&self, id: &u128) -> &V {
        self.get(id).expect("id present")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_and_spreads_ids_over_shards() {
        let mut map = IdMap::default();
        for id in 0..10_000u128 {
            assert_eq!(map.insert(id << 64 | id, id), None);
        }
        assert_eq!(map.insert(5 << 64 | 5, 0), Some(5));
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.remove(&(7 << 64 | 7)), Some(7));
        assert_eq!(map.remove(&(7 << 64 | 7)), None);
        assert_eq!((map.len(), map.get(&(9 << 64 | 9))), (9_999, Some(&9)));
        assert_eq!(map.iter().count(), 9_999);
        let smallest = map.shards.iter().map(|s| s.len()).min().unwrap();
        assert!(
            smallest > 50,
            "ids with equal halves reach every shard ({smallest})"
        );
        let low: IdMap<()> = (0..10_000u128).map(|id| (id, ())).collect();
        let high: IdMap<()> = (0..10_000u128).map(|id| (id << 64, ())).collect();
        for map in [low, high] {
            let smallest = map.shards.iter().map(|s| s.len()).min().unwrap();
            assert!(
                smallest > 50,
                "sequential ids reach every shard ({smallest})"
            );
        }
    }

    #[test]
    fn shard_sizes_are_spread_over_one_doubling_so_they_grow_one_at_a_time() {
        let map: IdMap<()> = (1..=200_000u128)
            .map(|id| (id * 0x1_0000_0001, ()))
            .collect();
        let sizes: Vec<usize> = map.shards.iter().map(|s| s.len()).collect();
        let ratio = sizes[SHARDS - 1] as f64 / sizes[0] as f64;
        assert!(
            (1.8..2.2).contains(&ratio),
            "largest / smallest shard = {ratio}"
        );
        let capacities: std::collections::HashSet<usize> =
            map.shards.iter().map(|s| s.capacity()).collect();
        assert!(
            capacities.len() > 1,
            "shards are not all at the same doubling step"
        );
    }
}
