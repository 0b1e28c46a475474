//! Fraud scoring: features from bounded in-memory state, an explainable logistic model,
//! rules that force a decision, and reason codes.
//!
//! Flow per payment, in payment order: compute the features from the state before the
//! payment, score them, apply the rules, map the score to a decision, then record the
//! payment as an attempt (velocity windows, distinct sets). When its outcome is known
//! the caller reports it with `observe_batch`: a settled payment teaches the account's
//! amount habit and makes its device and method known; a failed or declined one counts
//! as a recent failure. Payments never attempted (malformed, replayed duplicates) are
//! neither scored nor observed. So the state is a function of the payments and their
//! outcomes in order, and replaying the same traffic gives the same scores, however it
//! is cut into batches (with `replay_batch`, which observes each outcome right after
//! its payment; a live pipeline that observes after the batch differs only inside a
//! batch, and only in outcome-derived features).
//!
//! Settlement semantics (wired by the pipeline, not here): DECLINE is
//! `status = DECLINED, decline_reason = FRAUD_DECLINED`; REVIEW is declined with
//! `FRAUD_REVIEW` and queued for review, unless the request carries a valid subscriber
//! assertion (step-up authentication) and the score is below the decline threshold,
//! in which case the payment proceeds. Every PayResponse carries the assessment.

mod bins;
mod features;
mod model;
mod reasons;
mod rules;
mod state;
mod window;

#[cfg(test)]
mod tests;

use std::fmt;

pub use bins::{BinTable, BINS_MAX};
pub use features::{Channel, Feature, FEATURE_COUNT};
pub use model::{Model, Thresholds, MODEL_FORMAT, MODEL_FORMAT_VERSION, SCORE_MAX};
pub use reasons::{Decision, ReasonCode};
pub use rules::{Rules, CONDITIONS_MAX, RULES_MAX};
pub use state::{Bounds, DISTINCT_MAX, KEYS_MAX_DEFAULT};

use features::{BinLookup, Context};
use state::{ip_prefix_key, key_of, optional_key, record_link, KeyKind, Tracker};

use crate::validate::{MethodKind, Plan, Purpose};

/// How many rows ahead a batch prefetches state: far enough for a miss to memory to
/// complete while the rows in between are scored, near enough to stay in the cache.
const PREFETCH_AHEAD: usize = 2;

/// Reason codes per assessment; unused slots are `ReasonCode::None`.
pub const REASONS_MAX: usize = 3;

/// One payment as the scorer sees it, borrowed from the caller's columns. The
/// subscriber fields come from the engine's subscriber table.
#[derive(Clone, Copy, Debug)]
pub struct FraudInput<'a> {
    pub account_id: &'a str,
    /// The line paid for (E.164); empty when unknown.
    pub msisdn: &'a str,
    pub amount_minor: i64,
    pub purpose: Purpose,
    pub method: MethodKind,
    /// The card's keyed fingerprint (never the number); 0 when not a card payment.
    pub card_fingerprint: u64,
    /// The card number's first 6 to 8 digits, for the issuer country; empty if none.
    pub card_bin: &'a str,
    pub device_id: &'a str,
    pub ip: &'a str,
    pub channel: &'a str,
    pub plan: Plan,
    /// ISO 3166 alpha-2 country of the subscriber.
    pub country: [u8; 2],
    pub sim_swapped_at_s: Option<i64>,
    pub created_at_s: i64,
}

/// What became of a scored payment. Numbers are the wire form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// Not attempted after all (the state is left alone).
    NotAttempted = 0,
    Settled = 1,
    /// Declined (by fraud, the gateway or the issuer) or failed.
    Failed = 2,
}

impl Outcome {
    pub fn from_u8(n: u8) -> Option<Outcome> {
        match n {
            0 => Some(Outcome::NotAttempted),
            1 => Some(Outcome::Settled),
            2 => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// The scorer's verdict on one payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Assessment {
    /// 0..=1000, the model's probability of fraud in thousandths.
    pub score: u16,
    pub decision: Decision,
    /// A matching rule's reason first, then the features that raised the score most.
    pub reasons: [ReasonCode; REASONS_MAX],
}

/// A model, rules or BIN file that cannot be used; the message names the place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FraudError {
    Model(String),
    Rules(String),
    Bins(String),
}

impl fmt::Display for FraudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FraudError::Model(m) => write!(f, "fraud model: {m}"),
            FraudError::Rules(m) => write!(f, "fraud rules: {m}"),
            FraudError::Bins(m) => write!(f, "BIN table: {m}"),
        }
    }
}

impl std::error::Error for FraudError {}

/// Everything a scorer is built from.
#[derive(Clone, Debug)]
pub struct FraudConfig {
    pub model: Model,
    pub rules: Rules,
    pub bins: BinTable,
    /// Overrides the model file's thresholds when set.
    pub thresholds: Option<Thresholds>,
    pub bounds: Bounds,
}

impl FraudConfig {
    /// A configuration from file texts (rules and BIN table may be empty).
    pub fn from_texts(
        model_json: &str,
        rules: &str,
        bins: &str,
    ) -> Result<FraudConfig, FraudError> {
        Ok(FraudConfig {
            model: Model::from_json(model_json)?,
            rules: Rules::parse(rules)?,
            bins: BinTable::parse(bins)?,
            thresholds: None,
            bounds: Bounds::default(),
        })
    }
}

/// The keys of one payment's identifiers.
struct Keys {
    account: u64,
    msisdn: u64,
    card: u64,
    device: u64,
    ip: u64,
    /// The card, or the method kind when not a card: what "new method" compares.
    method: u64,
}

impl Keys {
    fn of(input: &FraudInput<'_>) -> Keys {
        let card = if input.card_fingerprint == 0 {
            0
        } else {
            key_of(KeyKind::Card, &input.card_fingerprint.to_le_bytes())
        };
        Keys {
            account: key_of(KeyKind::Account, input.account_id.as_bytes()),
            msisdn: optional_key(KeyKind::Msisdn, input.msisdn),
            card,
            device: optional_key(KeyKind::Device, input.device_id),
            ip: ip_prefix_key(input.ip),
            method: if card != 0 {
                card
            } else {
                key_of(KeyKind::Method, &[input.method as u8])
            },
        }
    }
}

/// The fraud scorer: the single owner of the fraud state.
pub struct FraudScorer {
    model: Model,
    rules: Rules,
    bins: BinTable,
    thresholds: Thresholds,
    tracker: Tracker,
}

impl FraudScorer {
    pub fn new(config: FraudConfig) -> Result<FraudScorer, FraudError> {
        let thresholds = config
            .thresholds
            .unwrap_or(config.model.thresholds)
            .check()?;
        Ok(FraudScorer {
            model: config.model,
            rules: config.rules,
            bins: config.bins,
            thresholds,
            tracker: Tracker::new(config.bounds),
        })
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    pub fn model_id(&self) -> &str {
        &self.model.model_id
    }

    /// Tracked keys per map: accounts, msisdns, cards, devices, IP prefixes.
    pub fn tracked(&self) -> [usize; 5] {
        let t = &self.tracker;
        [
            t.accounts.len(),
            t.msisdns.len(),
            t.cards.len(),
            t.devices.len(),
            t.ip_prefixes.len(),
        ]
    }

    /// Scores each payment at `now_s`, in order, recording each as an attempt before
    /// the next is scored (so a burst inside one batch is seen).
    pub fn score_batch(&mut self, inputs: &[FraudInput<'_>], now_s: i64, out: &mut [Assessment]) {
        assert_eq!(inputs.len(), out.len(), "one assessment slot per payment");
        let keys: Vec<Keys> = inputs.iter().map(Keys::of).collect();
        let mut row = [0.0; FEATURE_COUNT];
        for i in 0..inputs.len() {
            self.prefetch(&keys, i + PREFETCH_AHEAD);
            out[i] = self.score_one(&inputs[i], &keys[i], now_s, &mut row);
        }
    }

    /// Starts loading the state of the payment `ahead` rows on into the cache. The
    /// scorer is bound by cache misses at random addresses; the lookups of different
    /// payments are independent, so issuing the next rows' early lets the misses
    /// overlap with this row's work instead of following it.
    fn prefetch(&self, keys: &[Keys], ahead: usize) {
        if let Some(k) = keys.get(ahead) {
            let t = &self.tracker;
            t.accounts.prefetch(k.account);
            for (map, key) in [
                (&t.msisdns, k.msisdn),
                (&t.cards, k.card),
                (&t.devices, k.device),
                (&t.ip_prefixes, k.ip),
            ] {
                if key != 0 {
                    map.prefetch(key);
                }
            }
        }
    }

    /// Records the outcomes of scored payments, in payment order.
    pub fn observe_batch(&mut self, inputs: &[FraudInput<'_>], outcomes: &[Outcome], now_s: i64) {
        assert_eq!(inputs.len(), outcomes.len(), "one outcome per payment");
        for (input, &outcome) in inputs.iter().zip(outcomes) {
            self.observe_one(input, &Keys::of(input), outcome, now_s);
        }
    }

    /// Replays recorded traffic: each payment scored at its own time `at_s[i]` and its
    /// outcome observed before the next. `features`, when given, receives each
    /// payment's feature row (`FEATURE_COUNT` floats per payment, row-major).
    pub fn replay_batch(
        &mut self,
        inputs: &[FraudInput<'_>],
        at_s: &[i64],
        outcomes: &[Outcome],
        out: &mut [Assessment],
        mut features: Option<&mut [f64]>,
    ) {
        let n = inputs.len();
        assert!(
            at_s.len() == n && outcomes.len() == n && out.len() == n,
            "one of each per payment"
        );
        if let Some(f) = features.as_deref() {
            assert_eq!(f.len(), n * FEATURE_COUNT, "one feature row per payment");
        }
        let keys: Vec<Keys> = inputs.iter().map(Keys::of).collect();
        let mut row = [0.0; FEATURE_COUNT];
        for i in 0..n {
            self.prefetch(&keys, i + PREFETCH_AHEAD);
            out[i] = self.score_one(&inputs[i], &keys[i], at_s[i], &mut row);
            self.observe_one(&inputs[i], &keys[i], outcomes[i], at_s[i]);
            if let Some(f) = features.as_deref_mut() {
                f[i * FEATURE_COUNT..(i + 1) * FEATURE_COUNT].copy_from_slice(&row);
            }
        }
    }

    fn score_one(
        &mut self,
        input: &FraudInput<'_>,
        keys: &Keys,
        at_s: i64,
        row: &mut [f64; FEATURE_COUNT],
    ) -> Assessment {
        // Without a BIN table (none configured) a card's country is unknowable, not
        // suspicious: its BIN features stay silent rather than flag every card.
        let bin = if input.method != MethodKind::Card
            || input.card_bin.is_empty()
            || self.bins.is_empty()
        {
            BinLookup::NoCard
        } else {
            self.bins
                .country(input.card_bin)
                .map_or(BinLookup::Unknown, BinLookup::Country)
        };
        // One lookup per map: the entry is created (a new key's default state reads as
        // "never seen") and marked most recently seen, read for the features, then
        // updated with this attempt. Lookups dominate the cost, as cache misses.
        let t = &mut self.tracker;
        let account = t.accounts.entry(keys.account);
        let mut msisdn = link_entry(&mut t.msisdns, keys.msisdn);
        let mut card = link_entry(&mut t.cards, keys.card);
        let mut device = link_entry(&mut t.devices, keys.device);
        let mut ip = link_entry(&mut t.ip_prefixes, keys.ip);
        let ctx = Context {
            input,
            at_s,
            account: Some(&*account),
            msisdn: msisdn.as_deref(),
            card: card.as_deref(),
            device: device.as_deref(),
            ip: ip.as_deref(),
            device_key: keys.device,
            method_key: keys.method,
            bin,
        };
        features::compute(&ctx, row);
        let assessment = decide(&self.model, &self.rules, self.thresholds, input, at_s, row);

        account.last_seen_s = account.last_seen_s.max(at_s);
        let at = account.last_seen_s;
        account.velocity.add(at, input.amount_minor);
        if keys.card != 0 {
            account.cards.insert(keys.card, at);
        }
        for link in [&mut msisdn, &mut card, &mut device, &mut ip]
            .into_iter()
            .flatten()
        {
            record_link(link, keys.account, at_s, input.amount_minor);
        }
        assessment
    }

    fn observe_one(&mut self, input: &FraudInput<'_>, keys: &Keys, outcome: Outcome, at_s: i64) {
        if outcome == Outcome::NotAttempted {
            return;
        }
        let account = self.tracker.accounts.entry(keys.account);
        account.last_seen_s = account.last_seen_s.max(at_s);
        let at = account.last_seen_s;
        match outcome {
            Outcome::NotAttempted => unreachable!("returned above"),
            Outcome::Settled => {
                account.amounts.add(input.amount_minor);
                if keys.device != 0 {
                    account.devices.insert(keys.device, at);
                }
                account.methods.insert(keys.method, at);
            }
            Outcome::Failed => account.failed.add(at, input.amount_minor),
        }
    }
}

/// A link key's state, created if new and marked most recently seen; None for key 0.
fn link_entry(
    map: &mut state::KeyMap<state::LinkState>,
    key: u64,
) -> Option<&mut state::LinkState> {
    (key != 0).then(|| map.entry(key))
}

/// The score, the decision (thresholds, then rules) and the reasons of one row.
fn decide(
    model: &Model,
    rules: &Rules,
    thresholds: Thresholds,
    input: &FraudInput<'_>,
    at_s: i64,
    row: &[f64; FEATURE_COUNT],
) -> Assessment {
    let mut contributions = [0.0; FEATURE_COUNT];
    let score = model.score(row, &mut contributions);
    let by_score = if score >= thresholds.decline {
        Decision::Decline
    } else if score >= thresholds.review {
        Decision::Review
    } else {
        Decision::Approve
    };
    let (by_rule, rule_reason) = rules.apply(input, at_s, row);
    let mut reasons = [ReasonCode::None; REASONS_MAX];
    let mut used = 0;
    if rule_reason != ReasonCode::None {
        reasons[0] = rule_reason;
        used = 1;
    }
    // The reasons whose features raised the log-odds most (a reason's weight is its
    // largest feature contribution), one slot per reason, strongest first.
    let mut by_reason = [0.0f64; ReasonCode::ALL.len()];
    for (f, &c) in contributions.iter().enumerate() {
        let r = Feature::ALL[f].reason() as usize;
        by_reason[r] = by_reason[r].max(c);
    }
    if rule_reason != ReasonCode::None {
        by_reason[rule_reason as usize] = 0.0;
    }
    while used < REASONS_MAX {
        let mut best = 0;
        for r in 1..by_reason.len() {
            if by_reason[r] > by_reason[best] {
                best = r;
            }
        }
        if by_reason[best] <= 0.0 {
            break;
        }
        reasons[used] = ReasonCode::ALL[best];
        by_reason[best] = 0.0;
        used += 1;
    }
    Assessment {
        score,
        decision: by_score.max(by_rule),
        reasons,
    }
}
