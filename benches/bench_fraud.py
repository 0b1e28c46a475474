"""Fraud scoring cost: a batch of 10,000 payments, and a single call.

Scoring includes the state update (each payment is recorded as an attempt). The
scorer is warmed first with simulated traffic (3,000 lines over 21 days), so the maps
hold real history. The baseline, measured in the same run, is `Engine.validate` on
the same 10,000 rows: one engine call crossing the boundary with similar columns.

Run: .venv/bin/python -m pytest benches/bench_fraud.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest

from quickpay_engine import fraud
from quickpay_engine._engine import Engine
from quickpay_engine.domain import Method, MethodKind, PaymentIntent, Purpose
from quickpay_engine.fraud.simulate import COLUMNS, SIM_BIN_TABLE, STRING_COLUMNS, simulate
from quickpay_engine.settlement.validation import build_validation_columns

BATCH = 10_000


@pytest.fixture(scope="module")
def traffic() -> dict[str, np.ndarray]:
    return simulate(seed=1, subscribers=3_000, days=21)


@pytest.fixture(scope="module")
def scorer(traffic: dict[str, np.ndarray]) -> fraud.FraudScorer:
    s = fraud.FraudScorer(fraud.default_model_json(), fraud.default_rules(), SIM_BIN_TABLE)
    fraud.replay(s, traffic)
    return s


def batch_columns(traffic: dict[str, np.ndarray], rows: slice) -> dict[str, object]:
    return {
        c: traffic[c][rows].tolist()
        if c in STRING_COLUMNS
        else np.ascontiguousarray(traffic[c][rows])
        for c in COLUMNS
    }


def test_score_batch_10k(benchmark, scorer, traffic) -> None:
    cols = batch_columns(traffic, slice(0, BATCH))
    now_s = int(traffic["at_s"][-1])
    scores, _, _ = benchmark(lambda: scorer.score(cols, now_s=now_s))
    assert len(scores) == BATCH
    if not benchmark.disabled:  # a smoke run (--benchmark-disable) measures nothing
        benchmark.extra_info["per_payment_ns"] = benchmark.stats.stats.median / BATCH * 1e9


def test_score_single(benchmark, scorer, traffic) -> None:
    cols = batch_columns(traffic, slice(0, 1))
    now_s = int(traffic["at_s"][-1])
    benchmark(lambda: scorer.score(cols, now_s=now_s))


def test_baseline_validate_batch_10k(benchmark, traffic) -> None:
    n = BATCH
    intents = [
        PaymentIntent(
            idempotency_key=f"k{i}",
            fingerprint="",
            account_id=str(traffic["account_ids"][i]),
            msisdn=str(traffic["msisdns"][i]),
            amount_minor=int(traffic["amounts_minor"][i]),
            currency="GBP",
            purpose=Purpose(int(traffic["purposes"][i])),
            method=Method(MethodKind(int(traffic["methods"][i])), ""),
            channel="app",
            device_id=str(traffic["device_ids"][i]),
            ip=str(traffic["ips"][i]),
        )
        for i in range(n)
    ]
    engine = Engine()
    columns = build_validation_columns(intents)
    now_s = int(traffic["at_s"][n - 1])
    codes = benchmark(lambda: engine.validate(**columns, now_s=now_s))
    assert len(codes) == n
