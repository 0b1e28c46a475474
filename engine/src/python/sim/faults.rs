//! The simulator's seeded fault dice: latency, declines by reason and transport faults.
//!
//! The model itself (its knobs, their bounds, their meaning) is
//! `quickpay_engine.gateways.sim.faults.FaultModel`, which checks it; this side only
//! rolls it. Every draw is derived from (seed, operation, merchant reference, attempt
//! number) by SHA-256, not from one shared random stream, so a run's faults do not
//! depend on the order in which concurrent requests arrive: the same seed and the same
//! requests give the same declines and the same lost responses.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Attempt counters are kept per (operation, reference) for this many keys; at the
/// bound the one counted first is forgotten, and a later retry of it counts from zero
/// again, which only changes which fault it draws.
const ATTEMPTS_TRACKED_MAX: usize = 100_000;
/// The standard normal quantile of 0.99: turns a p99 latency into a log-normal sigma.
const Z_P99: f64 = 2.326_347_874_040_840_8;

/// The fault model as `FaultModel.to_dict()` writes it (already checked there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultModel {
    seed: i64,
    latency_ms_median: f64,
    latency_ms_p99: f64,
    server_error_rate: f64,
    timeout_rate: f64,
    lost_response_rate: f64,
    slow_body_rate: f64,
    reset_before_rate: f64,
    reset_after_rate: f64,
    pub(super) hang_ms: u64,
    // Ordered by reason: a draw walks the reasons in this order.
    declines: BTreeMap<String, f64>,
}

impl FaultModel {
    /// The probability that a request draws some transport fault.
    fn transport_rate(&self) -> f64 {
        self.server_error_rate
            + self.timeout_rate
            + self.lost_response_rate
            + self.slow_body_rate
            + self.reset_before_rate
            + self.reset_after_rate
    }
}

/// What goes wrong with one request, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    /// 503 at once; nothing was processed.
    ServerError,
    /// Held for hang_ms before processing: the caller times out first.
    Timeout,
    /// Processed and recorded, then the response withheld and the connection closed.
    LostResponse,
    /// Processed and recorded, then answered 200 with the status line, the headers and
    /// half the body at once, the rest trickled a byte at a time over hang_ms: the
    /// caller's deadline passes mid-body.
    SlowBody,
    /// The connection reset (RST) once the request is read, nothing processed.
    ResetBefore,
    /// Processed and recorded, then the connection reset (RST) instead of an answer.
    ResetAfter,
}

/// The operations that draw, each with its own dice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Op {
    Sale,
    Authorize,
    Capture,
    Void,
    Refund,
    Lookup,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Sale => "sale",
            Op::Authorize => "authorize",
            Op::Capture => "capture",
            Op::Void => "void",
            Op::Refund => "refund",
            Op::Lookup => "lookup",
        }
    }

    /// Transport faults apply to sale, authorize, capture and refund; status lookups
    /// and voids only get latency, so an unknown outcome can always be resolved.
    fn transport(self) -> bool {
        !matches!(self, Op::Void | Op::Lookup)
    }
}

/// The fate of one request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Draw {
    pub(super) latency: Duration,
    pub(super) fault: Fault,
    /// A decline reason, or None to approve.
    pub(super) decline: Option<String>,
}

/// Draws each request's fate from the model, deterministically per request.
pub(super) struct Roller {
    pub(super) model: FaultModel,
    attempts: HashMap<(Op, String), u32>,
    // Keys in the order they were first counted, for the bound.
    counted: VecDeque<(Op, String)>,
}

impl Roller {
    pub(super) fn new(model: FaultModel) -> Roller {
        Roller {
            model,
            attempts: HashMap::new(),
            counted: VecDeque::new(),
        }
    }

    /// The fate of the next `op` request for `reference`.
    pub(super) fn draw(&mut self, op: Op, reference: &str) -> Draw {
        let attempt = self.count(op, reference);
        let m = &self.model;
        // The decline draw ignores the attempt: a retried sale meets the same issuer
        // answer, as it would in life (and the books replay it anyway).
        let decline = if m.declines.is_empty() {
            None
        } else {
            pick(uniforms(m.seed, "decline", reference, 0)[0], &m.declines)
        };
        let transport = op.transport() && m.transport_rate() > 0.0;
        if m.latency_ms_median <= 0.0 && !transport {
            return Draw {
                latency: Duration::ZERO,
                fault: Fault::None,
                decline,
            };
        }
        let u = uniforms(m.seed, op.name(), reference, attempt);
        let latency = self.latency(u[0], u[1]);
        let mut fault = Fault::None;
        if transport {
            // Each fault has its slice of [0, 1), in this order (a kind added later goes
            // last, so a seed's earlier kinds keep their draws).
            let slices = [
                (m.server_error_rate, Fault::ServerError),
                (m.timeout_rate, Fault::Timeout),
                (m.lost_response_rate, Fault::LostResponse),
                (m.slow_body_rate, Fault::SlowBody),
                (m.reset_before_rate, Fault::ResetBefore),
                (m.reset_after_rate, Fault::ResetAfter),
            ];
            let mut edge = 0.0;
            for (rate, kind) in slices {
                edge += rate;
                if u[2] < edge {
                    fault = kind;
                    break;
                }
            }
        }
        Draw {
            latency,
            fault,
            decline,
        }
    }

    /// This request's attempt number for (op, reference), counting it.
    fn count(&mut self, op: Op, reference: &str) -> u32 {
        let key = (op, reference.to_owned());
        if let Some(n) = self.attempts.get_mut(&key) {
            *n += 1;
            return *n - 1;
        }
        self.attempts.insert(key.clone(), 1);
        self.counted.push_back(key);
        if self.counted.len() > ATTEMPTS_TRACKED_MAX {
            if let Some(oldest) = self.counted.pop_front() {
                self.attempts.remove(&oldest);
            }
        }
        0
    }

    /// A log-normal latency with the model's median and p99, from two uniforms.
    fn latency(&self, u0: f64, u1: f64) -> Duration {
        let (median, p99) = (self.model.latency_ms_median, self.model.latency_ms_p99);
        if median <= 0.0 {
            return Duration::ZERO;
        }
        let sigma = if p99 > median {
            (p99 / median).ln() / Z_P99
        } else {
            0.0
        };
        // Box-Muller: 1 - u0 is in (0, 1], so its logarithm is finite.
        let z = (-2.0 * (1.0 - u0).ln()).sqrt() * (std::f64::consts::TAU * u1).cos();
        let ms = (median.ln() + sigma * z).exp();
        Duration::from_secs_f64((ms / 1_000.0).min(3_600.0))
    }
}

/// Four uniforms in [0, 1) from SHA-256 of "seed|op|reference|attempt".
fn uniforms(seed: i64, op: &str, reference: &str, attempt: u32) -> [f64; 4] {
    let digest = Sha256::digest(format!("{seed}|{op}|{reference}|{attempt}"));
    let mut out = [0.0; 4];
    for (i, chunk) in digest.chunks_exact(8).enumerate() {
        let word = u64::from_be_bytes(chunk.try_into().expect("8-byte chunk"));
        // The top 53 bits: every value is an exact double in [0, 1).
        out[i] = (word >> 11) as f64 / (1u64 << 53) as f64;
    }
    out
}

/// The reason whose slice of [0, 1) holds `u`, or None past all of them.
fn pick(u: f64, rates: &BTreeMap<String, f64>) -> Option<String> {
    let mut edge = 0.0;
    for (reason, rate) in rates {
        edge += rate;
        if u < edge {
            return Some(reason.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(json: &str) -> FaultModel {
        let base = r#"{"seed": 7, "latency_ms_median": 0.0, "latency_ms_p99": 0.0,
            "server_error_rate": 0.0, "timeout_rate": 0.0, "lost_response_rate": 0.0,
            "slow_body_rate": 0.0, "reset_before_rate": 0.0, "reset_after_rate": 0.0,
            "hang_ms": 30000, "declines": {}}"#;
        let mut value: serde_json::Value = serde_json::from_str(base).unwrap();
        let patch: serde_json::Value = serde_json::from_str(json).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn same_seed_same_fates_and_rates_hold() {
        let m = model(r#"{"declines": {"INSUFFICIENT_FUNDS": 0.3}, "timeout_rate": 0.2}"#);
        let (mut a, mut b) = (Roller::new(m.clone()), Roller::new(m));
        let fates: Vec<_> = (0..2_000)
            .map(|n| a.draw(Op::Sale, &format!("pay_{n}")))
            .collect();
        let again: Vec<_> = (0..2_000)
            .map(|n| b.draw(Op::Sale, &format!("pay_{n}")))
            .collect();
        assert_eq!(fates, again);
        let declined = fates.iter().filter(|d| d.decline.is_some()).count();
        let timeouts = fates.iter().filter(|d| d.fault == Fault::Timeout).count();
        assert!((500..700).contains(&declined), "{declined}");
        assert!((320..480).contains(&timeouts), "{timeouts}");
        // A retry draws its transport fate anew but meets the same issuer answer.
        let retry = a.draw(Op::Sale, "pay_0");
        assert_eq!(retry.decline, fates[0].decline);
    }

    #[test]
    fn another_seed_other_fates_and_lookups_never_fault() {
        let seven = model(r#"{"declines": {"DO_NOT_HONOUR": 0.5}, "server_error_rate": 1.0}"#);
        let mut eight = seven.clone();
        eight.seed = 8;
        let (mut a, mut b) = (Roller::new(seven), Roller::new(eight));
        let a_declines: Vec<_> = (0..100).map(|n| a.draw(Op::Sale, &n.to_string())).collect();
        let b_declines: Vec<_> = (0..100).map(|n| b.draw(Op::Sale, &n.to_string())).collect();
        assert_ne!(a_declines, b_declines);
        assert!(a_declines.iter().all(|d| d.fault == Fault::ServerError));
        assert_eq!(a.draw(Op::Lookup, "0").fault, Fault::None);
        assert_eq!(a.draw(Op::Void, "0").fault, Fault::None);
    }

    #[test]
    fn every_kind_gets_its_share_and_old_draws_keep_theirs() {
        let kinds = [
            ("server_error_rate", Fault::ServerError),
            ("timeout_rate", Fault::Timeout),
            ("lost_response_rate", Fault::LostResponse),
            ("slow_body_rate", Fault::SlowBody),
            ("reset_before_rate", Fault::ResetBefore),
            ("reset_after_rate", Fault::ResetAfter),
        ];
        let all = kinds
            .iter()
            .map(|(name, _)| format!("\"{name}\": 0.1"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut r = Roller::new(model(&format!("{{{all}}}")));
        let fates: Vec<_> = (0..6_000)
            .map(|n| r.draw(Op::Capture, &n.to_string()).fault)
            .collect();
        for (name, kind) in kinds {
            let n = fates.iter().filter(|f| **f == kind).count();
            assert!((480..720).contains(&n), "{name}: {n} of 6000");
        }
        // Kinds added after the first three take slices past them: a model with only
        // the first three gives each request the fault it gave before.
        let mut old = Roller::new(model(
            r#"{"server_error_rate": 0.1, "timeout_rate": 0.1, "lost_response_rate": 0.1}"#,
        ));
        for (n, fate) in fates.iter().enumerate() {
            let before = old.draw(Op::Capture, &n.to_string()).fault;
            if before != Fault::None {
                assert_eq!(before, *fate);
            }
        }
        // Each new kind alone, at one, hits every transport request and no lookup.
        for (name, kind) in &kinds[3..] {
            let mut r = Roller::new(model(&format!("{{\"{name}\": 1.0}}")));
            assert_eq!(r.draw(Op::Sale, "x").fault, *kind);
            assert_eq!(r.draw(Op::Lookup, "x").fault, Fault::None);
        }
    }

    #[test]
    fn latency_has_the_asked_median() {
        let mut r = Roller::new(model(r#"{"latency_ms_median": 8, "latency_ms_p99": 60}"#));
        let mut ms: Vec<f64> = (0..4_001)
            .map(|n| r.draw(Op::Sale, &n.to_string()).latency.as_secs_f64() * 1e3)
            .collect();
        ms.sort_by(f64::total_cmp);
        assert!((7.0..9.0).contains(&ms[2_000]), "median {}", ms[2_000]);
        assert!((40.0..90.0).contains(&ms[3_960]), "p99 {}", ms[3_960]);
    }

    #[test]
    fn attempt_counters_are_bounded() {
        let mut r = Roller::new(model("{}"));
        for n in 0..ATTEMPTS_TRACKED_MAX + 10 {
            r.draw(Op::Sale, &n.to_string());
        }
        assert_eq!(r.attempts.len(), ATTEMPTS_TRACKED_MAX);
        assert_eq!(r.count(Op::Sale, "0"), 0, "the first counted was forgotten");
    }
}
