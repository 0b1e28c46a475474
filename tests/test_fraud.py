"""The fraud scorer through its Python API: shapes, codes, decisions, errors, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from quickpay_engine import fraud
from quickpay_engine._engine import BATCH_MAX, FRAUD_FEATURE_COUNT, FRAUD_REASONS_MAX, NO_TIME
from quickpay_engine.errors import BatchTooLarge, EngineError, FraudConfigError, InvalidBatch
from quickpay_engine.fraud.simulate import SIM_BIN_TABLE

T0 = 1_767_225_600
REASON_NUMBERS = {name: number for number, name in fraud.REASON_CODES.items()}


def columns(n: int, **override: object) -> dict[str, object]:
    """n ordinary card bill payments by one established postpaid account."""
    cols: dict[str, object] = {
        "account_ids": ["A1"] * n,
        "msisdns": ["+447700900001"] * n,
        "amounts_minor": np.full(n, 4_500, dtype=np.int64),
        "purposes": np.ones(n, dtype=np.uint8),
        "methods": np.ones(n, dtype=np.uint8),
        "card_fingerprints": np.full(n, 77, dtype=np.uint64),
        "card_bins": ["410001"] * n,
        "device_ids": ["phone"] * n,
        "ips": ["81.2.69.1"] * n,
        "channels": ["app"] * n,
        "plans": np.full(n, 2, dtype=np.uint8),
        "countries": ["GB"] * n,
        "sim_swapped_at_s": np.full(n, NO_TIME, dtype=np.int64),
        "created_at_s": np.full(n, T0 - 800 * 86_400, dtype=np.int64),
    }
    cols.update(override)
    return cols


def default_scorer(**kw: object) -> fraud.FraudScorer:
    return fraud.FraudScorer(fraud.default_model_json(), fraud.default_rules(), SIM_BIN_TABLE, **kw)


def settle_history(scorer: fraud.FraudScorer, days: int = 6) -> None:
    """One settled bill a day for `days` days before T0."""
    cols = columns(days)
    at = T0 - 86_400 * np.arange(days, 0, -1, dtype=np.int64)
    scorer.replay(cols, at_s=at, outcomes=np.ones(days, dtype=np.uint8))


def test_score_returns_documented_dtypes_shapes_and_names() -> None:
    scorer = default_scorer()
    scores, decisions, reasons = scorer.score(columns(5), now_s=T0)
    assert scores.dtype == np.uint16 and scores.shape == (5,)
    assert decisions.dtype == np.uint8 and decisions.shape == (5,)
    assert reasons.dtype == np.uint16 and reasons.shape == (5, FRAUD_REASONS_MAX)
    assert (scores <= 1000).all()
    assert fraud.DECISIONS == {0: "APPROVE", 1: "REVIEW", 2: "DECLINE"}
    assert fraud.REASON_CODES[0] == "NONE"
    assert all(name.isupper() and " " not in name for name in fraud.REASON_CODES.values())
    assert REASON_NUMBERS["SIM_SWAP_RECENT"] == 15
    assert len(fraud.FEATURE_NAMES) == FRAUD_FEATURE_COUNT
    assert scorer.thresholds[0] <= scorer.thresholds[1]
    assert scorer.model_id == "fraud-lr-2026-11-default"


def test_an_established_habit_is_approved_and_a_card_testing_burst_declined() -> None:
    scorer = default_scorer()
    settle_history(scorer)
    _, decisions, reasons = scorer.score(columns(1), now_s=T0)
    assert decisions[0] == fraud.APPROVE, reasons
    n = 30
    burst = columns(
        n,
        account_ids=["A9"] * n,
        amounts_minor=np.full(n, 200, dtype=np.int64),
        card_fingerprints=np.arange(1_000, 1_000 + n, dtype=np.uint64),
        card_bins=["530001"] * n,
        device_ids=["burner"] * n,
        channels=["web"] * n,
        plans=np.ones(n, dtype=np.uint8),
        purposes=np.full(n, 2, dtype=np.uint8),
        created_at_s=np.full(n, T0 - 86_400, dtype=np.int64),
    )
    _, decisions, reasons = scorer.score(burst, now_s=T0 + 60)
    assert decisions[-1] == fraud.DECLINE
    named = {fraud.REASON_CODES[int(r)] for r in reasons[-1]}
    assert named & {"ACCOUNT_MANY_CARDS", "ACCOUNT_VELOCITY", "DEVICE_VELOCITY"}, named


def test_the_sim_swap_rule_declines_and_its_near_misses_do_not() -> None:
    swapped = np.full(1, T0 - 3_600, dtype=np.int64)
    model_only = {"review_threshold": 1001, "decline_threshold": 1001}
    for amount, device, swap, expected in [
        (20_001, "new-phone", swapped, fraud.DECLINE),
        (20_000, "new-phone", swapped, fraud.APPROVE),
        (20_001, "phone", swapped, fraud.APPROVE),
        (20_001, "new-phone", swapped - 86_400, fraud.APPROVE),
    ]:
        scorer = default_scorer(**model_only)
        settle_history(scorer)
        cols = columns(
            1,
            amounts_minor=np.array([amount], dtype=np.int64),
            device_ids=[device],
            sim_swapped_at_s=swap,
        )
        _, decisions, reasons = scorer.score(cols, now_s=T0)
        assert decisions[0] == expected, (amount, device, swap)
        if expected == fraud.DECLINE:
            assert reasons[0, 0] == REASON_NUMBERS["SIM_SWAP_RECENT"]


def test_a_settled_payment_makes_its_device_known_and_a_failed_one_does_not() -> None:
    names = fraud.FEATURE_NAMES
    scorer = default_scorer()
    settle_history(scorer)
    one = np.ones(1, dtype=np.uint8)

    def new_device_after(device: str, outcome: int) -> float:
        cols = columns(1, device_ids=[device])
        scorer.observe(cols, outcomes=np.array([outcome], dtype=np.uint8), now_s=T0)
        feats = scorer.replay(cols, at_s=np.array([T0 + 60]), outcomes=one, with_features=True)
        assert feats[3] is not None
        return float(feats[3][0, names.index("new_device")])

    assert new_device_after("tablet", 2) == 1.0  # Failed: still a stranger.
    assert new_device_after("laptop", 0) == 1.0  # Not attempted: nothing learned.
    assert new_device_after("watch", 1) == 0.0


def test_replay_is_deterministic_and_score_records_each_attempt() -> None:
    n = 200
    rng = np.random.default_rng(5)
    cols = columns(
        n,
        account_ids=[f"A{i % 7}" for i in range(n)],
        amounts_minor=rng.integers(100, 20_000, n).astype(np.int64),
        card_fingerprints=rng.integers(1, 5, n).astype(np.uint64),
    )
    at = T0 + np.arange(n, dtype=np.int64) * 41
    outcomes = rng.integers(0, 3, n).astype(np.uint8)
    a = default_scorer().replay(cols, at_s=at, outcomes=outcomes, with_features=True)
    second = default_scorer()
    halves = [
        second.replay({k: v[s] for k, v in cols.items()}, at_s=at[s], outcomes=outcomes[s])
        for s in (slice(0, 77), slice(77, n))
    ]
    assert (a[0] == np.concatenate([h[0] for h in halves])).all()
    assert (a[2] == np.concatenate([h[2] for h in halves])).all()
    assert a[3] is not None and a[3].shape == (n, FRAUD_FEATURE_COUNT)
    assert len(set(a[0].tolist())) > 1, "the traffic moves the scores"


def test_every_map_stays_at_its_bound_under_a_flood() -> None:
    scorer = default_scorer(keys_max=50)
    n = 5_000
    cols = columns(
        n,
        account_ids=[f"A{i}" for i in range(n)],
        msisdns=[f"+4477{i:08d}" for i in range(n)],
        device_ids=[f"d{i}" for i in range(n)],
        ips=[f"10.{i // 256 % 256}.{i % 256}.1" for i in range(n)],
        card_fingerprints=np.arange(1, n + 1, dtype=np.uint64),
    )
    scorer.score(cols, now_s=T0)
    assert scorer.tracked() == (50, 50, 50, 50, 50)


def test_bad_files_raise_fraud_config_error() -> None:
    model = fraud.default_model_json()
    assert issubclass(FraudConfigError, EngineError)
    with pytest.raises(FraudConfigError, match="format"):
        fraud.FraudScorer(model.replace('"format_version": 1', '"format_version": 9'))
    with pytest.raises(FraudConfigError, match="line 2"):
        fraud.FraudScorer(model, "REVIEW if plan == 1\nDECLINE if amount_minor > 1.5\n")
    with pytest.raises(FraudConfigError, match="line 1"):
        fraud.FraudScorer(model, "", "4100,GB\n")
    with pytest.raises(FraudConfigError, match="thresholds"):
        fraud.FraudScorer(model, review_threshold=900, decline_threshold=800)
    fraud.FraudScorer(model, "REVIEW if plan == 1\n", "410001,GB\n", review_threshold=100)


def test_bad_columns_raise_typed_errors() -> None:
    scorer = default_scorer()
    with pytest.raises(InvalidBatch, match="msisdns"):
        scorer.score(columns(3, msisdns=["+1"] * 2), now_s=T0)
    with pytest.raises(InvalidBatch, match="plans row 1"):
        scorer.score(columns(2, plans=np.array([2, 3], dtype=np.uint8)), now_s=T0)
    with pytest.raises(InvalidBatch, match="methods"):
        scorer.score(columns(1, methods=np.array([5], dtype=np.uint8)), now_s=T0)
    with pytest.raises(InvalidBatch, match="country"):
        scorer.score(columns(1, countries=["gb"]), now_s=T0)
    strided = np.zeros(4, dtype=np.int64)[::2]
    with pytest.raises(InvalidBatch, match="contiguous"):
        scorer.score(columns(2, amounts_minor=strided), now_s=T0)
    with pytest.raises(TypeError):
        scorer.score(columns(1, amounts_minor=np.array([1.5])), now_s=T0)
    with pytest.raises(InvalidBatch, match="outcomes"):
        scorer.observe(columns(1), outcomes=np.array([3], dtype=np.uint8), now_s=T0)
    missing = columns(1)
    del missing["device_ids"]
    with pytest.raises(KeyError, match="device_ids"):
        scorer.score(missing, now_s=T0)
    with pytest.raises(TypeError, match="ips"):
        scorer.score(columns(1, ips="81.2.69.1"), now_s=T0)
    with pytest.raises(TypeError, match="channels"):
        scorer.score(columns(2, channels=["app", 7]), now_s=T0)
    n = BATCH_MAX + 1
    with pytest.raises(BatchTooLarge):
        scorer.score(columns(n), now_s=T0)
    assert scorer.tracked()[0] == 0, "a refused batch changes nothing"


def test_text_columns_read_alike_from_lists_tuples_and_other_sequences() -> None:
    cols = columns(3, device_ids=["a", "bb", ""], ips=["81.2.69.1", "2001:db8::1", "junk"])
    as_tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in cols.items()}
    as_arrays = {
        k: np.array(v, dtype=object) if isinstance(v, list) else v for k, v in cols.items()
    }
    results = [default_scorer().score(c, now_s=T0) for c in (cols, as_tuples, as_arrays)]
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
