//! Tests of the fraud core: windows, bounds, features, model, rules, BIN table, replay.

use super::state::{ip_prefix_key, AccountState, KeyMap, LinkState};
use super::window::{DistinctSet, Window};
use super::*;

const T0: i64 = 1_700_000_000;

/// A model whose weights are given by feature name (scale 1, mean 0).
fn model_json(bias: f64, weights: &[(&str, f64)], review: u16, decline: u16) -> String {
    let names: Vec<String> = weights.iter().map(|(n, _)| format!("{n:?}")).collect();
    let ws: Vec<String> = weights.iter().map(|(_, w)| format!("{w:?}")).collect();
    let ones = vec!["1.0"; weights.len()].join(",");
    let zeros = vec!["0.0"; weights.len()].join(",");
    format!(
        r#"{{"format":"quickpay-fraud-model","format_version":1,"model_id":"test",
        "features":[{}],"mean":[{zeros}],"scale":[{ones}],"weights":[{}],"bias":{bias:?},
        "thresholds":{{"review":{review},"decline":{decline}}}}}"#,
        names.join(","),
        ws.join(",")
    )
}

fn scorer_with(model: &str, rules: &str, bins: &str, bounds: Bounds) -> FraudScorer {
    let mut config = FraudConfig::from_texts(model, rules, bins).expect("valid config");
    config.bounds = bounds;
    FraudScorer::new(config).expect("valid scorer")
}

fn card_testing_scorer() -> FraudScorer {
    let model = model_json(
        -6.0,
        &[
            ("card_count_1m", 2.0),
            ("account_count_1m", 2.0),
            ("account_cards_24h", 1.5),
        ],
        500,
        900,
    );
    scorer_with(&model, "", "", Bounds::default())
}

fn payment<'a>(account_id: &'a str, device_id: &'a str, amount_minor: i64) -> FraudInput<'a> {
    FraudInput {
        account_id,
        msisdn: "+447700900001",
        amount_minor,
        purpose: Purpose::BillPayment,
        method: MethodKind::Card,
        card_fingerprint: 42,
        card_bin: "457173",
        device_id,
        ip: "203.0.113.7",
        channel: "app",
        plan: Plan::Postpaid,
        country: *b"GB",
        sim_swapped_at_s: None,
        created_at_s: T0 - 400 * 86_400,
    }
}

fn score(scorer: &mut FraudScorer, input: FraudInput<'_>, at_s: i64) -> Assessment {
    let mut out = [Assessment::default()];
    scorer.score_batch(&[input], at_s, &mut out);
    out[0]
}

fn features_of(
    scorer: &mut FraudScorer,
    input: FraudInput<'_>,
    at_s: i64,
    outcome: Outcome,
) -> Vec<f64> {
    let mut out = [Assessment::default()];
    let mut row = vec![0.0; FEATURE_COUNT];
    scorer.replay_batch(&[input], &[at_s], &[outcome], &mut out, Some(&mut row));
    row
}

#[test]
fn window_counts_inside_and_forgets_outside() {
    let mut w: Window<4, 15> = Window::default();
    w.add(T0, 100);
    w.add(T0 + 10, 250);
    assert_eq!(w.totals(T0 + 10).count, 2);
    assert_eq!(w.totals(T0 + 10).amount_minor, 350);
    // Four 15 s buckets: still inside at +45 s, gone a full minute later.
    assert_eq!(w.totals(T0 + 44).count, 2);
    assert_eq!(w.totals(T0 + 75).count, 0);
    // A slot reused by a newer bucket drops the old one's counts.
    w.add(T0 + 120, 5);
    assert_eq!(
        w.totals(T0 + 120),
        super::window::Totals {
            count: 1,
            amount_minor: 5
        }
    );
}

#[test]
fn distinct_set_saturates_and_ages() {
    let mut s: DistinctSet<DISTINCT_MAX> = DistinctSet::default();
    for id in 1..=20u64 {
        s.insert(id, T0 + id as i64);
    }
    assert_eq!(
        s.count_since(T0),
        DISTINCT_MAX as u32,
        "a count saturates at the bound"
    );
    assert!(
        s.contains(20) && !s.contains(1),
        "the oldest ids are displaced"
    );
    s.insert(20, T0 + 100);
    assert_eq!(s.count_since(T0 + 50), 1);
}

#[test]
fn state_sizes_match_the_documented_memory_per_key() {
    assert_eq!(std::mem::size_of::<AccountState>(), 608);
    assert_eq!(std::mem::size_of::<LinkState>(), 328);
}

#[test]
fn a_full_map_evicts_a_key_not_seen_again_before_one_seen_again() {
    let mut map: KeyMap<u32> = KeyMap::new(4);
    for key in 1..=4u64 {
        *map.entry(key) = key as u32;
    }
    assert_eq!(*map.entry(1), 1, "key 1 is seen again");
    *map.entry(5) = 5;
    assert_eq!(map.len(), 4);
    assert_eq!(*map.entry(1), 1, "the key seen again survives");
    assert_eq!(
        *map.entry(2),
        0,
        "key 2, seen once and longest ago, was evicted"
    );
    // Keys are never lost twice over: the map holds exactly its bound.
    for key in 100..1_100u64 {
        map.entry(key);
        assert_eq!(map.len(), 4);
    }
}

#[test]
fn flooding_keeps_every_map_at_its_bound_and_evicts_the_least_recent() {
    let model = model_json(-3.0, &[("first_payment", 4.0)], 500, 900);
    let mut scorer = scorer_with(&model, "", "", Bounds::uniform(100));
    let ids: Vec<String> = (0..10_000).map(|i| format!("acct-{i}")).collect();
    let devices: Vec<String> = (0..10_000).map(|i| format!("dev-{i}")).collect();
    let mut inputs: Vec<FraudInput<'_>> = Vec::new();
    for i in 0..10_000 {
        let mut p = payment(&ids[i], &devices[i], 1_000);
        p.card_fingerprint = i as u64 + 1;
        p.msisdn = &ids[i];
        p.ip = "";
        inputs.push(p);
    }
    let outcomes = vec![Outcome::Settled; inputs.len()];
    let at: Vec<i64> = (0..inputs.len() as i64).map(|i| T0 + i).collect();
    let mut out = vec![Assessment::default(); inputs.len()];
    scorer.replay_batch(&inputs, &at, &outcomes, &mut out, None);
    let tracked = scorer.tracked();
    assert_eq!(
        tracked[..4],
        [100, 100, 100, 100],
        "every map stays at its bound"
    );
    // The newest account is remembered (no longer a first payment); the first one
    // was evicted and scores as new again.
    let recent = score(&mut scorer, inputs[9_999], T0 + 20_000);
    let evicted = score(&mut scorer, inputs[0], T0 + 20_000);
    assert!(recent.score < evicted.score, "{recent:?} vs {evicted:?}");
    assert_eq!(evicted.reasons[0], ReasonCode::FirstPayment);
    assert_ne!(recent.reasons[0], ReasonCode::FirstPayment);
}

#[test]
fn a_card_testing_burst_raises_the_score_inside_one_batch() {
    let mut scorer = card_testing_scorer();
    let fps: Vec<u64> = (1..=12).collect();
    let inputs: Vec<FraudInput<'_>> = fps
        .iter()
        .map(|&fp| FraudInput {
            card_fingerprint: fp,
            ..payment("acct-1", "dev-1", 100)
        })
        .collect();
    let mut out = vec![Assessment::default(); inputs.len()];
    scorer.score_batch(&inputs, T0, &mut out);
    assert_eq!(
        out[0].decision,
        Decision::Approve,
        "the first attempt is ordinary: {:?}",
        out[0]
    );
    assert_eq!(
        out[11].decision,
        Decision::Decline,
        "the twelfth card in a minute: {:?}",
        out[11]
    );
    assert_eq!(
        out[11].reasons[..2],
        [ReasonCode::AccountVelocity, ReasonCode::AccountManyCards]
    );
    assert!(
        out.windows(2).all(|w| w[0].score <= w[1].score),
        "scores rise with the burst"
    );
    // The same account a day later, one card: the windows have emptied.
    let later = score(
        &mut scorer,
        payment("acct-1", "dev-1", 100),
        T0 + 2 * 86_400,
    );
    assert_eq!(later.decision, Decision::Approve);
}

#[test]
fn replay_gives_the_same_scores_however_the_traffic_is_batched() {
    let model = model_json(
        -4.0,
        &[
            ("account_count_1h", 1.0),
            ("new_device", 2.0),
            ("amount_z", 0.5),
            ("account_failed_24h", 1.0),
        ],
        500,
        900,
    );
    let devices = ["d1", "d2", "d3"];
    let inputs: Vec<FraudInput<'_>> = (0..300)
        .map(|i| {
            payment(
                ["a", "b", "c", "d"][i % 4],
                devices[i % 3],
                100 + (i as i64 * 37) % 5_000,
            )
        })
        .collect();
    let at: Vec<i64> = (0..300).map(|i| T0 + i * 97).collect();
    let outcomes: Vec<Outcome> = (0..300)
        .map(|i| {
            if i % 7 == 0 {
                Outcome::Failed
            } else {
                Outcome::Settled
            }
        })
        .collect();
    let run = |cut: usize| {
        let mut scorer = scorer_with(&model, "", "", Bounds::default());
        let mut out = vec![Assessment::default(); inputs.len()];
        let mut start = 0;
        while start < inputs.len() {
            let end = (start + cut).min(inputs.len());
            scorer.replay_batch(
                &inputs[start..end],
                &at[start..end],
                &outcomes[start..end],
                &mut out[start..end],
                None,
            );
            start = end;
        }
        out
    };
    let whole = run(300);
    assert_eq!(whole, run(1));
    assert_eq!(whole, run(17));
    assert!(
        whole.iter().any(|a| a.score != whole[0].score),
        "the traffic exercises the state"
    );
}

#[test]
fn settled_payments_make_a_device_known_and_failed_ones_count() {
    let model = model_json(
        -2.0,
        &[("new_device", 3.0), ("account_failed_24h", 2.0)],
        500,
        900,
    );
    let mut scorer = scorer_with(&model, "", "", Bounds::default());
    let f = |s: &mut FraudScorer, dev, outcome, t| {
        features_of(s, payment("acct-1", dev, 1_000), t, outcome)
    };
    f(&mut scorer, "phone", Outcome::Settled, T0);
    let known = f(&mut scorer, "phone", Outcome::Settled, T0 + 60);
    assert_eq!(known[Feature::NewDevice as usize], 0.0);
    let new = f(&mut scorer, "laptop", Outcome::Failed, T0 + 120);
    assert_eq!(new[Feature::NewDevice as usize], 1.0);
    // The failed attempt from the laptop neither taught the device nor went unseen.
    let again = f(&mut scorer, "laptop", Outcome::NotAttempted, T0 + 180);
    assert_eq!(again[Feature::NewDevice as usize], 1.0);
    assert_eq!(again[Feature::AccountFailed24h as usize], 2f64.ln());
}

#[test]
fn amount_z_flags_an_amount_far_from_the_account_habit() {
    let model = model_json(0.0, &[("amount_z", 1.0)], 500, 900);
    let mut scorer = scorer_with(&model, "", "", Bounds::default());
    for day in 0..10 {
        features_of(
            &mut scorer,
            payment("acct-1", "phone", 2_000 + day * 10),
            T0 + day * 86_400,
            Outcome::Settled,
        );
    }
    let usual = features_of(
        &mut scorer,
        payment("acct-1", "phone", 2_050),
        T0 + 11 * 86_400,
        Outcome::Settled,
    );
    let odd = features_of(
        &mut scorer,
        payment("acct-1", "phone", 90_000),
        T0 + 12 * 86_400,
        Outcome::Settled,
    );
    assert!(usual[Feature::AmountZ as usize].abs() < 1.0, "{usual:?}");
    assert!(odd[Feature::AmountZ as usize] > 5.0, "{odd:?}");
}

#[test]
fn ip_prefixes_group_a_v4_slash_24_and_a_v6_slash_64() {
    assert_eq!(ip_prefix_key("203.0.113.7"), ip_prefix_key("203.0.113.200"));
    assert_ne!(ip_prefix_key("203.0.113.7"), ip_prefix_key("203.0.114.7"));
    assert_eq!(
        ip_prefix_key("2001:db8:1:2::1"),
        ip_prefix_key("2001:db8:1:2:ffff::9")
    );
    assert_ne!(
        ip_prefix_key("2001:db8:1:2::1"),
        ip_prefix_key("2001:db8:1:3::1")
    );
    assert_eq!(ip_prefix_key(""), 0);
}

#[test]
fn the_model_file_is_checked() {
    let good = model_json(-1.0, &[("log_amount", 0.5)], 500, 900);
    assert!(Model::from_json(&good).is_ok());
    let cases = [
        good.replace("\"format_version\":1", "\"format_version\":2"),
        good.replace("log_amount", "log_amount_v2"),
        good.replace("\"scale\":[1.0]", "\"scale\":[0.0]"),
        good.replace("\"review\":500", "\"review\":950"),
        good.replace("\"decline\":900", "\"decline\":1002"),
        model_json(-1.0, &[("log_amount", 0.5), ("log_amount", 1.0)], 500, 900),
        good.replace("\"bias\"", "\"bias_typo\""),
    ];
    for bad in cases {
        assert!(
            matches!(Model::from_json(&bad), Err(FraudError::Model(_))),
            "accepted {bad}"
        );
    }
    // A feature the file leaves out weighs nothing.
    let mut scorer = scorer_with(&good, "", "", Bounds::default());
    let a = score(&mut scorer, payment("x", "d", 100), T0);
    let b = score(
        &mut scorer,
        FraudInput {
            sim_swapped_at_s: Some(T0 - 60),
            ..payment("y", "e", 100)
        },
        T0,
    );
    assert_eq!(a.score, b.score);
}

#[test]
fn scores_map_to_decisions_at_the_thresholds() {
    // With only a bias, the score is the bias's probability in thousandths.
    let at = |bias: f64| {
        let mut s = scorer_with(&model_json(bias, &[], 500, 900), "", "", Bounds::default());
        score(&mut s, payment("a", "d", 1), T0)
    };
    assert_eq!(at(0.0).score, 500);
    assert_eq!(at(0.0).decision, Decision::Review);
    assert_eq!(
        at(-0.01).decision,
        Decision::Approve,
        "just under the review threshold"
    );
    assert_eq!(at(2.2).decision, Decision::Decline, "{:?}", at(2.2));
    assert_eq!(at(2.19).decision, Decision::Review, "{:?}", at(2.19));
    assert_eq!(at(0.0).reasons, [ReasonCode::None; REASONS_MAX]);
}

#[test]
fn a_rule_forces_a_decline_and_a_near_miss_does_not() {
    let model = model_json(-8.0, &[], 500, 900);
    let rules = "# SIM swapped in the last day and a large amount\n\
                 DECLINE SIM_SWAP_RECENT if sim_swap_age_s < 86_400 and amount_minor > 50000\n\
                 REVIEW if new_account_7d >= 1\n";
    let mut scorer = scorer_with(&model, rules, "", Bounds::default());
    let swapped = FraudInput {
        sim_swapped_at_s: Some(T0 - 3_600),
        ..payment("a", "d", 50_001)
    };
    let hit = score(&mut scorer, swapped, T0);
    assert_eq!(hit.decision, Decision::Decline);
    assert_eq!(hit.reasons[0], ReasonCode::SimSwapRecent);
    assert_eq!(
        score(
            &mut scorer,
            FraudInput {
                amount_minor: 50_000,
                ..swapped
            },
            T0
        )
        .decision,
        Decision::Approve
    );
    let old_swap = FraudInput {
        sim_swapped_at_s: Some(T0 - 86_400),
        ..swapped
    };
    assert_eq!(score(&mut scorer, old_swap, T0).decision, Decision::Approve);
    assert_eq!(
        score(
            &mut scorer,
            FraudInput {
                sim_swapped_at_s: None,
                ..swapped
            },
            T0
        )
        .decision,
        Decision::Approve
    );
    let young = FraudInput {
        created_at_s: T0 - 86_400,
        ..payment("b", "d", 100)
    };
    let review = score(&mut scorer, young, T0);
    assert_eq!(
        (review.decision, review.reasons[0]),
        (Decision::Review, ReasonCode::RuleMatched)
    );
}

#[test]
fn bad_rules_lines_are_rejected_with_their_number() {
    let bad = [
        "ALLOW if amount_minor > 1",
        "DECLINE if amount_minor > 1.5",
        "DECLINE if amount_minor >> 1",
        "DECLINE NOT_A_REASON if amount_minor > 1",
        "DECLINE if no_such_feature > 1",
        "DECLINE amount_minor > 1",
        "DECLINE if amount_minor > 1 and",
    ];
    for line in bad {
        let err = Rules::parse(&format!("# ok\n{line}\n")).expect_err(line);
        assert!(
            matches!(&err, FraudError::Rules(m) if m.starts_with("line 2:")),
            "{err}"
        );
    }
    let many = "REVIEW if plan == 1\n".repeat(RULES_MAX + 1);
    assert!(Rules::parse(&many).is_err());
    assert_eq!(
        Rules::parse(&"REVIEW if plan == 1\n".repeat(RULES_MAX)).map(|r| r.len()),
        Ok(RULES_MAX)
    );
}

#[test]
fn bin_country_is_found_by_longest_prefix() {
    let table = BinTable::parse("# test BINs\n457173,GB\n45717399,FR\n").expect("valid");
    assert_eq!(table.country("4571731234"), Some(*b"GB"));
    assert_eq!(table.country("45717399"), Some(*b"FR"));
    assert_eq!(table.country("411111"), None);
    for bad in ["45717,GB", "457173,gb", "457173", "4571x3,GB", "457173,GBR"] {
        let err = BinTable::parse(&format!("\n{bad}\n")).expect_err(bad);
        assert!(
            matches!(&err, FraudError::Bins(m) if m.starts_with("line 2:")),
            "{err}"
        );
    }
    let model = model_json(
        -4.0,
        &[("bin_country_mismatch", 5.0), ("bin_unknown", 2.0)],
        500,
        900,
    );
    let mut scorer = scorer_with(&model, "", "457173,GB\n535522,NG\n", Bounds::default());
    let home = score(&mut scorer, payment("a", "d", 100), T0);
    let abroad = score(
        &mut scorer,
        FraudInput {
            card_bin: "535522",
            ..payment("b", "d", 100)
        },
        T0,
    );
    let unknown = score(
        &mut scorer,
        FraudInput {
            card_bin: "999999",
            ..payment("c", "d", 100)
        },
        T0,
    );
    assert_eq!(home.decision, Decision::Approve);
    assert_eq!(
        (abroad.decision, abroad.reasons[0]),
        (Decision::Review, ReasonCode::BinCountryMismatch)
    );
    assert_eq!(unknown.reasons[0], ReasonCode::BinUnknown);

    // With no BIN table at all, the same card is not "unknown": nothing can be known.
    let mut blind = scorer_with(&model, "", "", Bounds::default());
    let no_table = score(
        &mut blind,
        FraudInput {
            card_bin: "999999",
            ..payment("c", "d", 100)
        },
        T0,
    );
    assert_eq!(no_table.decision, Decision::Approve);
    assert!(!no_table.reasons.contains(&ReasonCode::BinUnknown));
}

#[test]
fn reason_codes_have_stable_numbers_and_names() {
    for (i, code) in ReasonCode::ALL.iter().enumerate() {
        assert_eq!(*code as usize, i);
        assert_eq!(ReasonCode::from_name(code.name()), Some(*code));
    }
    assert_eq!(ReasonCode::SimSwapRecent as u16, 15);
    assert_eq!(Decision::Decline as u8, 2);
    for f in Feature::ALL {
        assert_eq!(Feature::from_name(f.name()), Some(f));
        assert_eq!(Feature::ALL[f as usize], f);
    }
}

#[test]
fn extreme_times_and_amounts_score_without_panicking() {
    let model = model_json(
        -1.0,
        &[("sim_swap_24h", 1.0), ("account_age_log_days", 0.1)],
        500,
        900,
    );
    let rules = "REVIEW if sim_swap_age_s < 10 and account_age_s > 5\n";
    let mut scorer = scorer_with(&model, rules, "", Bounds::default());
    for at_s in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
        for (swap, created) in [(Some(i64::MIN + 1), i64::MAX), (Some(i64::MAX), i64::MIN)] {
            for amount_minor in [i64::MIN, -1, 0, i64::MAX] {
                let input = FraudInput {
                    sim_swapped_at_s: swap,
                    created_at_s: created,
                    amount_minor,
                    ..payment("acct", "dev", 1)
                };
                let mut out = [Assessment::default()];
                scorer.replay_batch(&[input], &[at_s], &[Outcome::Settled], &mut out, None);
                assert!(out[0].score <= SCORE_MAX);
            }
        }
    }
}
