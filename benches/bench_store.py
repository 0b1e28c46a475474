"""A store batch commit (SqliteStore.commit_batch, WAL journal, synchronous=FULL)
against its floor, a raw write and fsync of a page on the same disk in the same run.
A commit costs at least one fsync; the ratio says what the SQL around it adds."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from _support import FINGERPRINT_KEY, size, subscribers

from quickpay_engine.api.convert import intent_of
from quickpay_engine.bench.scenario import Mix, RequestSource
from quickpay_engine.settlement.pipeline import new_payment_id
from quickpay_engine.store import Decision, SqliteStore

SUBSCRIBERS = size(5_000, 100)
BATCH = size(512, 16)
ROUNDS = size(30, 1)
PAGE = b"\xa5" * 4096


@pytest.fixture
def store(tmp_path: Path):
    store = SqliteStore(tmp_path / "bench.sqlite3")
    rows = subscribers(SUBSCRIBERS)
    store.import_subscribers(rows)
    yield store, rows
    store.close()


@pytest.mark.parametrize("batch", [1, BATCH], ids=["single", "batch"])
def test_store_commit_batch(benchmark, store, batch) -> None:
    db, rows = store
    runs = itertools.count()
    source = RequestSource(rows, seed=batch, mix=Mix(invalid=0, declined=0), run_id="commit")

    def fresh() -> tuple[tuple[list[Decision]], dict]:
        # New keys every round: a key already stored would be a replay, not a commit.
        next(runs)
        decisions = [
            Decision(new_payment_id(), intent_of(r, FINGERPRINT_KEY)) for r in source.take(batch)
        ]
        return (decisions,), {}

    benchmark.extra_info["rows_per_call"] = batch
    benchmark.extra_info["baseline"] = "test_raw_fsync_same_disk"
    outcomes, _ = benchmark.pedantic(db.commit_batch, setup=fresh, rounds=ROUNDS)
    assert len(outcomes) == batch
    assert all(o.status.name == "SETTLED" for o in outcomes)


def test_raw_fsync_same_disk(benchmark, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "fsync.bin", os.O_WRONLY | os.O_CREAT, 0o600)

    def write_and_sync() -> int:
        n = os.pwrite(fd, PAGE, 0)
        os.fsync(fd)
        return n

    try:
        benchmark.extra_info["rows_per_call"] = 1
        assert benchmark.pedantic(write_and_sync, rounds=ROUNDS * 2, warmup_rounds=1) == len(PAGE)
    finally:
        os.close(fd)
