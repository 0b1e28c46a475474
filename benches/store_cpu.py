"""CPU per payment of the store thread's two calls per batch, on a store with history.

    .venv/bin/python benches/store_cpu.py [--history 200000] [--batches 40]
    .venv/bin/python benches/store_cpu.py --trees /tmp/base,. --runs 4   # A/B, alternating

What the settlement pipeline asks of the SQLite store per batch of 500 on the PayBatch
path, and nothing else: ``journal_attempts`` (before the sale) and ``commit_batch``
(after it), on the store thread. The file holds 20,000 subscribers and ``--history``
payments settled first (journal and commit in batches of 500, as the pipeline does),
built once into a template under ``--work`` and copied for each run, so every run and
every build starts from the same bytes. Each measured batch settles 500 payments with a
gateway, a gateway reference and a fraud verdict, as the server's decisions have them;
the decisions are built before the clock starts, and the garbage collector is then set
as `quickpay serve` sets it (``server.tune_gc``).

The figure is CPU time, not wall time: ``time.process_time()`` around each call (every
thread of the process; the core writes on the calling thread with the GIL released),
divided by the batch's payments; the mean over the batches is printed (not the median:
a checkpoint falls in one batch of several, and a median would leave it out), with the
wall time beside it. The baseline in the same run is the raw fsync floor: a 4 KiB page
written and fsynced on the same disk, its CPU and wall time per call; a batch costs at
least two of them (the journal's commit and the batch's), so ``floor`` is two calls
divided by 500. The WAL's checkpoints run on the core's checkpoint thread
(engine/src/store/checkpoint.rs), as in the server; its CPU is counted too (every
thread's), in whichever call it overlaps.

``--trees A,B`` runs each measurement in a child process per tree, alternating, with
PYTHONPATH=TREE/python (each tree's own extension), and prints each run and the medians.
``--loop N`` runs the measured batches N times over (for ``perf record``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from _support import FINGERPRINT_KEY, subscribers

from quickpay_engine.api.convert import intent_of
from quickpay_engine.bench.scenario import Mix, RequestSource
from quickpay_engine.domain import FraudAssessment
from quickpay_engine.server import tune_gc
from quickpay_engine.settlement.payment_ids import PaymentIdSource
from quickpay_engine.store import Decision, SqliteStore

AUDIT_KEY = b"a" * 32
BATCH = 500
SUBSCRIBERS = 20_000
PAGE = b"\xa5" * 4096
FRAUD = FraudAssessment(120, "APPROVE", ("amount_vs_history", "new_device"))


def decisions(source: RequestSource, ids: PaymentIdSource, batch: int) -> list[Decision]:
    intents = [intent_of(r, FINGERPRINT_KEY) for r in source.take(batch)]
    return [
        Decision(p, i, gateway="sim-a", gateway_reference=f"ref_{p[4:20]}", fraud=FRAUD)
        for p, i in zip(ids(batch), intents, strict=True)
    ]


def settle(store: SqliteStore, batch: list[Decision]) -> None:
    store.journal_attempts([(d.payment_id, d.intent) for d in batch])
    outcomes, _ = store.commit_batch(batch)
    assert all(o.status.name == "SETTLED" for o in outcomes), outcomes[0]


def template(work: Path, history: int) -> Path:
    """The store file with ``history`` payments settled, built once per size and per
    schema (two trees with different schemas each get their own)."""
    schema = resources.files("quickpay_engine.store").joinpath("schema_sqlite.sql")
    digest = hashlib.sha256(schema.read_bytes()).hexdigest()[:12]
    path = work / f"template-{history}-{digest}.sqlite3"
    if path.exists():
        return path
    building = work / f"building-{os.getpid()}.sqlite3"
    store = SqliteStore(building, AUDIT_KEY)
    rows = subscribers(SUBSCRIBERS)
    store.import_subscribers(rows)
    source = RequestSource(rows, seed=3, mix=Mix(invalid=0, declined=0), run_id="history")
    ids = PaymentIdSource()
    for _ in range(history // BATCH):
        settle(store, decisions(source, ids, BATCH))
    store.close()
    import sqlite3

    db = sqlite3.connect(building, isolation_level=None)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    building.rename(path)
    return path


def fsync_floor(where: Path, rounds: int) -> tuple[float, float]:
    """CPU and wall seconds of one 4 KiB pwrite and fsync, medians over ``rounds``."""
    fd = os.open(where / "fsync.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    cpu, wall = [], []
    try:
        for _ in range(rounds):
            c, w = time.process_time(), time.perf_counter()
            os.pwrite(fd, PAGE, 0)
            os.fsync(fd)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
    finally:
        os.close(fd)
    return statistics.median(cpu), statistics.median(wall)


def measure(history: int, batches: int, loop: int, work: Path) -> dict[str, float]:
    source_file = template(work, history)
    with tempfile.TemporaryDirectory(prefix="store-cpu-", dir=work) as tmp:
        path = Path(tmp) / "store.sqlite3"
        shutil.copyfile(source_file, path)
        store = SqliteStore(path, AUDIT_KEY)
        rows = subscribers(SUBSCRIBERS)
        source = RequestSource(rows, seed=5, mix=Mix(invalid=0, declined=0), run_id="measure")
        ids = PaymentIdSource()
        settle(store, decisions(source, ids, BATCH))  # warm: the writer opened, caches
        floor_before = fsync_floor(Path(tmp), 50)
        journal_cpu, commit_cpu, wall = [], [], []
        planned = [decisions(source, ids, BATCH) for _ in range(batches * loop)]
        tune_gc()  # as `quickpay serve` sets the collector once it has started
        print("measuring", file=sys.stderr, flush=True)  # a profiler may attach now
        for batch in planned:
            attempts = [(d.payment_id, d.intent) for d in batch]
            c0, w0 = time.process_time(), time.perf_counter()
            store.journal_attempts(attempts)
            c1 = time.process_time()
            store.commit_batch(batch)
            c2, w2 = time.process_time(), time.perf_counter()
            journal_cpu.append((c1 - c0) / BATCH)
            commit_cpu.append((c2 - c1) / BATCH)
            wall.append((w2 - w0) / BATCH)
        floor_after = fsync_floor(Path(tmp), 50)
        store.close()
    floor_cpu = (floor_before[0] + floor_after[0]) / 2
    floor_wall = (floor_before[1] + floor_after[1]) / 2
    both = [j + c for j, c in zip(journal_cpu, commit_cpu, strict=True)]
    us = 1e6
    return {
        "cpu_us": statistics.fmean(both) * us,
        "journal_us": statistics.fmean(journal_cpu) * us,
        "commit_us": statistics.fmean(commit_cpu) * us,
        "wall_us": statistics.fmean(wall) * us,
        "floor_cpu_us": 2 * floor_cpu / BATCH * us,
        "floor_wall_us": 2 * floor_wall / BATCH * us,
        "load": os.getloadavg()[0],
    }


def row(label: str, f: dict[str, float]) -> str:
    return (
        f"| {label} | {f['cpu_us']:.1f} | {f['journal_us']:.1f} | {f['commit_us']:.1f} |"
        f" {f['wall_us']:.1f} | {f['floor_cpu_us']:.2f} / {f['floor_wall_us']:.1f} |"
        f" {f['load']:.2f} |"
    )


HEADER = (
    "| build | CPU µs per payment (journal + commit) | journal | commit | wall µs |"
    " fsync floor CPU / wall µs | load |\n|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--loop", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("var/store-cpu"))
    parser.add_argument("--trees", default="", help="comma-separated worktrees, alternated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON line (for --trees)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.trees:
        f = measure(args.history, args.batches, args.loop, args.work.resolve())
        if args.json:
            print(json.dumps(f))
            return
        print(f"history {args.history:,} payments, {args.batches} batches of {BATCH}")
        print(HEADER)
        print(row(".", f))
        return
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    # This tree's template is built before any run (each tree's schema has its own:
    # another tree builds its own in its first run, before its clock starts).
    template(args.work.resolve(), args.history)
    print(f"history {args.history:,} payments, {args.batches} batches of {BATCH}, nproc"
          f" {os.cpu_count()}")  # fmt: skip
    print(HEADER, flush=True)
    figures: dict[str, list[float]] = {t: [] for t in trees}
    for run in range(args.runs):
        order = trees if run % 2 == 0 else trees[::-1]
        for tree in order:
            env = dict(os.environ, PYTHONPATH=f"{tree}/python")
            argv = [sys.executable, __file__, "--json", "--history", str(args.history),
                    "--batches", str(args.batches), "--work", str(args.work.resolve())]  # fmt: skip
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
            f = json.loads(out.stdout.strip().splitlines()[-1])
            figures[tree].append(f["cpu_us"])
            print(row(f"{tree} (run {run + 1})", f), flush=True)
    for tree, values in figures.items():
        print(f"{tree}: median {statistics.median(values):.1f} µs CPU per payment over"
              f" {len(values)} runs: {', '.join(f'{v:.1f}' for v in values)}")  # fmt: skip


if __name__ == "__main__":
    main()
