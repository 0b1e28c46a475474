//! The fixed-size building blocks of per-key state: bucketed sliding windows, small
//! distinct-count sets and exponentially weighted amount statistics.
//!
//! Each has a size known at compile time, so the memory per tracked key is a constant
//! (see `state.rs`) and a flood of payments can grow no structure.

/// One bucket of a sliding window: what happened during one bucket width.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// The bucket's index in time (`at_s / WIDTH_S`); a slot whose epoch is not the
    /// current one holds an older bucket that is reset before reuse.
    epoch: u32,
    count: u32,
    amount_minor: i64,
}

/// Count and amount over the last `N` buckets of `WIDTH_S` seconds each, the current
/// bucket partly filled: the window covers between `(N - 1) * WIDTH_S` and
/// `N * WIDTH_S` seconds. Memory: `16 * N` bytes.
///
/// Times must not go backwards for one window; `state.rs` clamps each key's clock to
/// its last seen time so that out-of-order input lands in the newest bucket.
#[derive(Clone, Copy, Debug)]
pub struct Window<const N: usize, const WIDTH_S: i64> {
    buckets: [Bucket; N],
}

impl<const N: usize, const WIDTH_S: i64> Default for Window<N, WIDTH_S> {
    fn default() -> Self {
        Window {
            buckets: [Bucket::default(); N],
        }
    }
}

/// Totals over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub count: u32,
    pub amount_minor: i64,
}

impl<const N: usize, const WIDTH_S: i64> Window<N, WIDTH_S> {
    fn epoch(at_s: i64) -> u32 {
        // Times before 1970 or after 2106 do not occur in payments; clamping keeps the
        // arithmetic total instead of wrapping.
        (at_s.max(0) / WIDTH_S).min(i64::from(u32::MAX)) as u32
    }

    /// Adds one event of `amount_minor` at `at_s`.
    pub fn add(&mut self, at_s: i64, amount_minor: i64) {
        let epoch = Self::epoch(at_s);
        let bucket = &mut self.buckets[epoch as usize % N];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                count: 0,
                amount_minor: 0,
            };
        }
        bucket.count = bucket.count.saturating_add(1);
        bucket.amount_minor = bucket.amount_minor.saturating_add(amount_minor);
    }

    /// Totals of the buckets still inside the window at `at_s`.
    pub fn totals(&self, at_s: i64) -> Totals {
        let epoch = Self::epoch(at_s);
        let oldest = epoch.saturating_sub(N as u32 - 1);
        let mut totals = Totals::default();
        for bucket in &self.buckets {
            if bucket.count > 0 && bucket.epoch >= oldest && bucket.epoch <= epoch {
                totals.count = totals.count.saturating_add(bucket.count);
                totals.amount_minor = totals.amount_minor.saturating_add(bucket.amount_minor);
            }
        }
        totals
    }
}

/// Up to `K` distinct ids with the time each was last seen; at the bound the id seen
/// longest ago is replaced, so a count saturates at `K`. Memory: `8 * K` bytes (one
/// cache line for `K = 8`: the sets are read on every payment).
///
/// Ids are folded to 32 bits: two of a key's eight ids colliding (a count one short, or a
/// new device taken for a known one) has odds of about one in 600 million. Times are
/// Unix seconds clamped to 0..=u32::MAX (until 2106). Id 0 marks an empty slot.
#[derive(Clone, Copy, Debug)]
pub struct DistinctSet<const K: usize> {
    ids: [u32; K],
    seen_s: [u32; K],
}

impl<const K: usize> Default for DistinctSet<K> {
    fn default() -> Self {
        DistinctSet {
            ids: [0; K],
            seen_s: [0; K],
        }
    }
}

fn fold_id(id: u64) -> u32 {
    ((id ^ (id >> 32)) as u32).max(1)
}

fn clamp_s(at_s: i64) -> u32 {
    at_s.clamp(0, i64::from(u32::MAX)) as u32
}

impl<const K: usize> DistinctSet<K> {
    /// Records `id` as seen at `at_s`.
    pub fn insert(&mut self, id: u64, at_s: i64) {
        let (id, at_s) = (fold_id(id), clamp_s(at_s));
        let mut slot = 0;
        for i in 0..K {
            if self.ids[i] == id {
                self.seen_s[i] = self.seen_s[i].max(at_s);
                return;
            }
            if self.seen_s[i] < self.seen_s[slot] || (self.ids[i] == 0 && self.ids[slot] != 0) {
                slot = i;
            }
        }
        self.ids[slot] = id;
        self.seen_s[slot] = at_s;
    }

    /// Whether `id` is held (it may have been displaced by `K` newer ids).
    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains(&fold_id(id))
    }

    /// Distinct ids seen at or after `since_s`, at most `K`.
    pub fn count_since(&self, since_s: i64) -> u32 {
        let since_s = clamp_s(since_s);
        (0..K)
            .filter(|&i| self.ids[i] != 0 && self.seen_s[i] >= since_s)
            .count() as u32
    }
}

/// Exponentially weighted mean and variance of `ln(1 + amount_minor)` over settled
/// payments. The logarithm is a feature transform for the model; the amounts
/// themselves stay integers. Memory: 24 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct AmountStats {
    mean: f64,
    variance: f64,
    settled: u32,
}

/// Weight of the newest payment; about the last 10 payments dominate the statistics,
/// so a habit change is learned within a month of bills and top-ups.
const EWMA_ALPHA: f64 = 0.1;

/// Below this many settled payments the account has no usable history.
pub const AMOUNT_HISTORY_MIN: u32 = 3;

/// A floor on the standard deviation (in log units, about a factor of 1.35): an account
/// that always pays exactly the same bill must not turn a few cents into a large z.
const STDDEV_MIN: f64 = 0.3;

impl AmountStats {
    /// Folds in one settled payment.
    pub fn add(&mut self, amount_minor: i64) {
        let x = log_amount(amount_minor);
        if self.settled == 0 {
            self.mean = x;
            self.variance = 0.0;
        } else {
            let delta = x - self.mean;
            self.mean += EWMA_ALPHA * delta;
            self.variance = (1.0 - EWMA_ALPHA) * (self.variance + EWMA_ALPHA * delta * delta);
        }
        self.settled = self.settled.saturating_add(1);
    }

    /// How unusual an amount is for this account, in standard deviations, clamped to
    /// +-10; 0 without enough history. Takes the amount as `log_amount(amount_minor)`,
    /// which the caller has at hand: a logarithm is among the dearest steps of scoring.
    pub fn z(&self, log_amount: f64) -> f64 {
        if self.settled < AMOUNT_HISTORY_MIN {
            return 0.0;
        }
        let stddev = self.variance.sqrt().max(STDDEV_MIN);
        ((log_amount - self.mean) / stddev).clamp(-10.0, 10.0)
    }

    /// Number of settled payments folded in (saturating).
    pub fn settled(&self) -> u32 {
        self.settled
    }
}

/// `ln(1 + amount_minor)`, the model's view of an amount; negative amounts (refused by
/// validation before scoring) count as 0.
pub fn log_amount(amount_minor: i64) -> f64 {
    (amount_minor.max(0) as f64).ln_1p()
}
