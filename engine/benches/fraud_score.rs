//! Fraud scoring cost in the core alone (no Python): a batch of 10,000 payments,
//! including the state update, against a scorer that already tracks 10,000, then 100,000 accounts.
//!
//! Also scores the same payments one call each on a twin scorer in the same state
//! (no lookahead prefetch), as the batch-first baseline.
//!
//! Run: `cargo bench -p quickpay-engine --bench fraud_score`. Prints nanoseconds per
//! payment (the fastest of the rounds: the machine is shared, and preemption only adds time) and, as the same-run baseline, the cost of hashing
//! the payment's five identifiers alone.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use quickpay_engine::fraud::{Assessment, FraudConfig, FraudInput, FraudScorer, FEATURE_COUNT};
use quickpay_engine::validate::{MethodKind, Plan, Purpose};

const BATCH: usize = 10_000;
const ROUNDS: usize = 15;
const T0: i64 = 1_767_225_600;

fn model() -> String {
    let names: Vec<String> = (0..FEATURE_COUNT)
        .map(|i| format!("{:?}", quickpay_engine::fraud::Feature::ALL[i].name()))
        .collect();
    let w: Vec<String> = (0..FEATURE_COUNT)
        .map(|i| format!("{:.3}", (i as f64 * 0.37).sin()))
        .collect();
    let ones = vec!["1.0"; FEATURE_COUNT].join(",");
    let zeros = vec!["0.0"; FEATURE_COUNT].join(",");
    format!(
        r#"{{"format":"quickpay-fraud-model","format_version":1,"model_id":"bench","features":[{}],
        "mean":[{zeros}],"scale":[{ones}],"weights":[{}],"bias":-3.0,
        "thresholds":{{"review":500,"decline":900}}}}"#,
        names.join(","),
        w.join(",")
    )
}

/// A small deterministic generator (xorshift), so the bench needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Ids {
    accounts: Vec<String>,
    msisdns: Vec<String>,
    devices: Vec<String>,
    ips: Vec<String>,
}

fn input<'a>(ids: &'a Ids, i: usize, rng: &mut Rng) -> FraudInput<'a> {
    FraudInput {
        account_id: &ids.accounts[i],
        msisdn: &ids.msisdns[i],
        amount_minor: 500 + (rng.next() % 5_000) as i64,
        purpose: Purpose::PrepaidTopup,
        method: MethodKind::Card,
        card_fingerprint: (i as u64 + 1) * 7_919,
        card_bin: "410001",
        device_id: &ids.devices[i],
        ip: &ids.ips[i],
        channel: "app",
        plan: Plan::Prepaid,
        country: *b"GB",
        sim_swapped_at_s: None,
        created_at_s: T0 - 400 * 86_400,
    }
}

fn minimum(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[0]
}

fn main() {
    for accounts in [10_000, 100_000] {
        run(accounts);
    }
}

fn run(accounts: usize) {
    let ids = Ids {
        accounts: (0..accounts).map(|i| format!("A{i:07}")).collect(),
        msisdns: (0..accounts).map(|i| format!("+44770{i:07}")).collect(),
        devices: (0..accounts)
            .map(|i| format!("dev-{:016x}", i * 2_654_435_761))
            .collect(),
        ips: (0..accounts)
            .map(|i| format!("81.{}.{}.{}", i % 200, i / 200 % 250, i % 7 + 1))
            .collect(),
    };
    // Two scorers in the same state: one scores each round as a batch, the other
    // row by row (no lookahead), so the ratio is fair however loaded the machine is.
    let build =
        || FraudScorer::new(FraudConfig::from_texts(&model(), "", "410001,GB\n").unwrap()).unwrap();
    let (mut batched, mut single) = (build(), build());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Warm: every account pays three times over three days.
    for day in 0..3 {
        let inputs: Vec<FraudInput<'_>> = (0..accounts).map(|i| input(&ids, i, &mut rng)).collect();
        let mut out = vec![Assessment::default(); inputs.len()];
        batched.score_batch(&inputs, T0 + day * 86_400, &mut out);
        single.score_batch(&inputs, T0 + day * 86_400, &mut out);
    }
    let (mut batch_ns, mut single_ns, mut hash_ns) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let rows: Vec<usize> = (0..BATCH)
            .map(|_| (rng.next() % accounts as u64) as usize)
            .collect();
        let inputs: Vec<FraudInput<'_>> = rows.iter().map(|&i| input(&ids, i, &mut rng)).collect();
        let now_s = T0 + 3 * 86_400 + round as i64;
        let mut out = vec![Assessment::default(); BATCH];
        let start = Instant::now();
        batched.score_batch(&inputs, now_s, &mut out);
        batch_ns.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        let mut one_by_one = vec![Assessment::default(); BATCH];
        let start = Instant::now();
        for i in 0..BATCH {
            single.score_batch(&inputs[i..=i], now_s, &mut one_by_one[i..=i]);
        }
        single_ns.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        assert_eq!(
            out, one_by_one,
            "batching changes the speed, never the result"
        );
        let start = Instant::now();
        let mut acc = 0u64;
        for p in &inputs {
            for s in [p.account_id, p.msisdn, p.device_id, p.ip, p.card_bin] {
                let mut h = rustc_hash::FxHasher::default();
                s.hash(&mut h);
                acc ^= h.finish();
            }
        }
        std::hint::black_box(acc);
        hash_ns.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    let (batch, single, hash) = (minimum(batch_ns), minimum(single_ns), minimum(hash_ns));
    println!("fraud score_batch({BATCH}) with {accounts} tracked accounts: {batch:.0} ns/payment");
    println!(
        "  the same payments one call each (no lookahead): {single:.0} ns/payment (batch {:.2}x faster)",
        single / batch
    );
    println!(
        "  baseline, hashing five identifiers: {hash:.0} ns/payment (batch is {:.1}x that)",
        batch / hash
    );
}
