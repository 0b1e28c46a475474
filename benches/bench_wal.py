"""Durable appends through the ledger's write-ahead log, against the disk's own
write+fdatasync latency measured in the same run.

    .venv/bin/python benches/bench_wal.py [--dir DIR] [--seconds-per-size S]

For batch sizes 1, 64, 1,024 and 8,190 it commits batches of plain transfers through
`Ledger.create_transfers` (one crossing per batch, as the orchestrator calls it), from
one caller and then from four at once (their commits share fdatasyncs), and reports durable transfers per second and the p50/p99 latency of one commit (the call,
which returns only after the fdatasync covering it). The baseline appends a
record-sized block to a file in the same directory and fdatasyncs it, the least any
durable commit can cost. Prints a Markdown table for benches/RESULTS.md. Small by
default (about 2 s per size), so it doubles as a smoke test.

The same file is also a pytest-benchmark module (`test_wal_commit[...]` against
`test_wal_raw_fdatasync_same_disk`), so `make bench` picks it up with every other
`benches/bench_*.py`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _support import size

from quickpay_engine import _engine

EUR = 978
BATCH_SIZES = (1, 64, 1024, 8190)
# Bytes a single-transfer record takes in the log (header + borsh payload), so the
# baseline writes what a one-record commit writes.
RECORD_BYTES = 24 + 128
# Bytes one transfer adds to a record (borsh of the input, 96, and its result code, 2).
TRANSFER_BYTES = 98
# Commits per size, at most; the time budget usually ends a size first.
COMMITS_MAX = 20_000
# Concurrent callers in the group-commit runs (the orchestrator's micro-batches can
# overlap: one is applied while the previous one's fdatasync runs).
CALLERS = 4


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q))


def raw_fdatasync_us(directory: Path, count: int, size: int) -> list[float]:
    """Latency of write(size bytes) + fdatasync on an append-only file, in us."""
    path = directory / "baseline-concurrent.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\x5a" * size
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter_ns()
            os.write(fd, block)
            os.fdatasync(fd)
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        os.close(fd)
        path.unlink()
    return samples


def columns(n: int, first_id: int) -> tuple:
    ids = np.zeros((n, 2), np.uint64)
    ids[:, 1] = np.arange(first_id, first_id + n, dtype=np.uint64)
    one = lambda v: np.full((n, 2), (0, v), np.uint64)  # noqa: E731
    return (
        ids,
        one(1),
        one(2),
        np.ones(n, np.int64),
        np.full(n, EUR, np.uint16),
        np.zeros(n, np.uint16),
        np.zeros((n, 2), np.uint64),
        np.zeros(n, np.uint32),
        ids,
    )


def prepare(n: int, seconds: float, first_id: int) -> list[tuple]:
    """The column sets of the batches one caller commits, built before any clock starts
    (and before any caller thread runs, so no caller waits on the GIL for another's
    numpy work). Every batch has fresh ids: new work, not an idempotent replay."""
    commits = max(1, min(COMMITS_MAX, int(seconds * 2_000_000 / n)))
    template = columns(n, first_id)
    return [(template[0] + np.array([0, i * n], np.uint64), *template[1:]) for i in range(commits)]


def commit_all(
    ledger, batches: list[tuple], seconds: float, raw_fd: int | None = None
) -> tuple[list[float], int, float, list[float]]:
    """Commits `batches` for about `seconds`; returns (latencies us, transfers, busy s,
    raw latencies us). With `raw_fd`, each commit is preceded by a raw write of the
    same size + fdatasync on that file, so the two are sampled under the same load."""
    n = len(batches[0][0])
    block = b"\x5a" * (TRANSFER_BYTES * n + 40)
    latencies, raw = [], []
    transferred = 0
    busy = 0.0
    deadline = time.perf_counter() + seconds * (2 if raw_fd is not None else 1)
    for cols in batches:
        if raw_fd is not None:
            start = time.perf_counter_ns()
            os.write(raw_fd, block)
            os.fdatasync(raw_fd)
            raw.append((time.perf_counter_ns() - start) / 1000)
        start = time.perf_counter_ns()
        codes, _ = ledger.create_transfers(time.time_ns(), *cols)
        elapsed = time.perf_counter_ns() - start
        latencies.append(elapsed / 1000)
        busy += elapsed / 1e9
        assert not codes.any(), "every transfer must be applied"
        transferred += n
        if time.perf_counter() > deadline:
            break
    return latencies, transferred, busy, raw


def bench_concurrent(ledger, n: int, seconds: float, first_id: int, callers: int):
    """`callers` threads committing at once (their commits share fdatasyncs); returns
    (latencies us, transfers, wall s)."""
    per_caller_ids = 10 * COMMITS_MAX * n
    prepared = [prepare(n, seconds, first_id + k * per_caller_ids) for k in range(callers)]
    results: list = [None] * callers
    barrier = threading.Barrier(callers + 1)

    def run(k: int) -> None:
        barrier.wait()
        results[k] = commit_all(ledger, prepared[k], seconds)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies = [x for r in results for x in r[0]]
    return latencies, sum(r[1] for r in results), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where to put the log (default: a temp dir)")
    parser.add_argument("--seconds-per-size", type=float, default=2.0)
    args = parser.parse_args(argv)
    parent = args.dir or Path(tempfile.mkdtemp(prefix="bench-wal-"))
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(dir=parent))
    ledger = _engine.Ledger.open(str(directory / "wal"), transfers_max=1 << 26)
    codes, _ = ledger.create_accounts(
        time.time_ns(),
        np.array([[0, 1], [0, 2]], np.uint64),
        np.full(2, EUR, np.uint16),
        np.full(2, 4, np.uint16),
        np.zeros(2, np.uint16),
    )
    assert not codes.any()
    print(f"log directory: {directory}")
    print(
        "| batch | callers | durable transfers/s | commit p50 (us) | commit p99 (us) "
        "| raw write+fdatasync p50 (us) | p99 (us) | commit p50 / raw p50 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    first_id = 1
    runs = [(n, 1) for n in BATCH_SIZES] + [(n, CALLERS) for n in BATCH_SIZES if n >= 64]
    raw_path = directory / "baseline.bin"
    raw_fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for n, callers in runs:
        if callers == 1:
            batches = prepare(n, args.seconds_per_size, first_id)
            latencies, transferred, wall, raw = commit_all(
                ledger, batches, args.seconds_per_size, raw_fd
            )
        else:
            latencies, transferred, wall = bench_concurrent(
                ledger, n, args.seconds_per_size, first_id, callers
            )
            raw = raw_fdatasync_us(directory, 100, TRANSFER_BYTES * n + 40)
        first_id += 10 * COMMITS_MAX * n * callers
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        raw_p50, raw_p99 = percentile(raw, 50), percentile(raw, 99)
        rate = transferred / wall
        print(
            f"| {n} | {callers} | {rate:,.0f} | {p50:,.0f} | {p99:,.0f} "
            f"| {raw_p50:,.0f} | {raw_p99:,.0f} | {p50 / raw_p50:.2f} |"
        )
    os.close(raw_fd)
    raw_path.unlink()
    ledger.close()
    return 0


# -- pytest-benchmark form, for `make bench` (benches/compare.py) ---------------------

ROUNDS = size(50, 1)


@pytest.fixture
def wal_ledger(tmp_path: Path):
    ledger = _engine.Ledger.open(str(tmp_path / "wal"), transfers_max=1 << 24)
    codes, _ = ledger.create_accounts(
        time.time_ns(),
        np.array([[0, 1], [0, 2]], np.uint64),
        np.full(2, EUR, np.uint16),
        np.full(2, 4, np.uint16),
        np.zeros(2, np.uint16),
    )
    assert not codes.any()
    yield ledger
    ledger.close()


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_wal_commit(benchmark, wal_ledger, batch: int) -> None:
    """One durable commit of `batch` new transfers (returns after its fdatasync)."""
    rounds = itertools.count()

    def fresh() -> tuple[tuple, dict]:
        # New ids every round: an id already stored would be an idempotent replay.
        return (time.time_ns(), *columns(batch, 1 + next(rounds) * batch)), {}

    benchmark.extra_info["rows_per_call"] = batch
    benchmark.extra_info["baseline"] = "test_wal_raw_fdatasync_same_disk"
    codes, seq = benchmark.pedantic(wal_ledger.create_transfers, setup=fresh, rounds=ROUNDS)
    assert not codes.any() and seq > 1


def test_wal_raw_fdatasync_same_disk(benchmark, tmp_path: Path) -> None:
    """The floor of a one-record commit: append a record-sized block and fdatasync."""
    fd = os.open(tmp_path / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\x5a" * RECORD_BYTES

    def write_and_sync() -> int:
        n = os.write(fd, block)
        os.fdatasync(fd)
        return n

    try:
        benchmark.extra_info["rows_per_call"] = 1
        written = benchmark.pedantic(write_and_sync, rounds=ROUNDS * 2, warmup_rounds=1)
        assert written == RECORD_BYTES
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
