"""What one 4 MiB Reconcile run costs the server's Python (issue #20, item 6): the run as
the server does it (report decoded, `reconciliation.run` on a store connection of its
own, the reply encoded as grpc sends it), in-process, timed and profiled.

    .venv/bin/python benches/reconcile_gil.py [--runs 3] [--profile]
    PYTHONPATH=OTHER/python .venv/bin/python benches/reconcile_gil.py   # another tree

The same report as benches/isolation.py (54,466 captures billing never saw). Prints,
per run, the wall time and the thread's CPU time; with ``--profile``, cProfile's top
functions of the last run by their own time (time inside a call into the engine is the
engine's, with the GIL released where the binding says so). The GIL time itself is
best read with py-spy, which samples only the thread holding it:

    py-spy record --gil --rate 250 --format raw -o gil.txt -- \\
        .venv/bin/python benches/reconcile_gil.py --runs 3

and counting the samples under ``run_once`` (benches/RESULTS.md, isolation section).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from isolation import DAY, report_csv

from quickpay_engine.api import convert
from quickpay_engine.settlement import reconciliation
from quickpay_engine.store import SqliteStore


def run_once(store: SqliteStore, report: bytes) -> int:
    """One Reconcile as the server runs it; the reply's size in bytes."""
    lines = io.StringIO(report.decode("utf-8"), newline="")
    outcome = reconciliation.run(store, "acq-a", lines, None, 900, date.fromisoformat(DAY))
    reply = convert.reconcile_report(outcome)
    if not isinstance(reply, bytes):  # the Python message: grpc serializes it
        reply = reply.SerializeToString()
    return len(reply)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    report = report_csv()
    print(f"quickpay_engine from {Path(convert.__file__).parents[1]}")
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "quickpay.sqlite3")
        for run in range(args.runs):
            profile = cProfile.Profile() if args.profile and run == args.runs - 1 else None
            wall, cpu = time.perf_counter(), time.thread_time()
            if profile:
                profile.enable()
            size = run_once(store, report)
            if profile:
                profile.disable()
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            print(
                f"run {run}: {len(report):,} bytes in, {size:,} out, wall {wall:.3f} s, cpu {cpu:.3f} s"
            )
            if profile:
                stats = pstats.Stats(profile)
                stats.sort_stats("tottime").print_stats(12)
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
