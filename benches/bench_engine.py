"""The engine's entry points through their Python bindings: validate (one row and a
batch) and upsert_subscribers. One crossing of the boundary per call, so the single
form's cost per row against the batch's is the case for micro-batching."""

from __future__ import annotations

import numpy as np
import pytest
from _support import intents, size, subscribers

from quickpay_engine._engine import Engine
from quickpay_engine.settlement.validation import validate_batch, wall_clock_s
from quickpay_engine.subscribers import load_rows

SUBSCRIBERS = size(100_000, 200)
BATCH = size(512, 16)


@pytest.fixture(scope="module")
def rows():
    return subscribers(SUBSCRIBERS)


@pytest.fixture(scope="module")
def engine(rows):
    engine = Engine()
    load_rows(engine, rows)
    return engine


@pytest.mark.parametrize("batch", [1, BATCH], ids=["single", "batch"])
def test_engine_validate(benchmark, engine, rows, batch) -> None:
    batch_intents = intents(rows, batch, f"validate-{batch}")
    benchmark.extra_info["rows_per_call"] = batch
    if batch == 1:
        benchmark.extra_info["baseline"] = "test_engine_validate[batch]"
    now_s = wall_clock_s()
    codes = benchmark(validate_batch, engine, batch_intents, now_s)
    assert len(codes) == batch
    assert np.count_nonzero(codes) == 0, "good payments pass"


def test_engine_upsert_subscribers(benchmark, rows) -> None:
    engine = Engine()
    benchmark.extra_info["rows_per_call"] = len(rows)
    benchmark(load_rows, engine, rows)
    assert engine.subscriber_count() == len(rows)
