"""py-spy profile of `quickpay serve` under PayBatch, and the share of its samples in the
gateway stage (issue 15: the sales of a batch).

    .venv/bin/pip install py-spy          # not a dependency
    .venv/bin/python benches/profile_paybatch.py --work var/prof [--out prof.txt]

Starts the server on SQLite with the bundled simulators at 0 ms and 200,000 lines (as
cpu_budget.py seeds), fraud scoring observing (as make bench's engine runs,
benches/compare.py's helpers), loads it with `quickpay bench --rpc batch
--batch-size 500 --concurrency 2000` for 20 s, records 12 s of it with `py-spy record
--threads --format raw --nonblocking`, and prints the samples per thread and those of
the gateway stage: stacks holding the router, the gateway client or the pipeline's
sale step, and the gateway sender threads. ``--frames`` adds the share of the samples
whose stack holds each of the given markers (py-spy's frame text, e.g. ``"_score ("``
or ``settlement/fraud_gate.py``). Run it from another tree with PYTHONPATH=TREE/python
to profile another build.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from _support import pyspy_stacks, record_pyspy
from compare import Log, Server, engine_argv, gateways_file, seeded_data

SUBSCRIBERS = 200_000

STAGE = ("gateways/router.py", "gateways/client.py", "_sales (", "_sale (")


def record(work: Path, out: Path, gil: bool = False) -> None:
    work.mkdir(parents=True, exist_ok=True)
    log = Log()
    bin_ = Path(sys.executable).parent
    # 200,000 lines, as cpu_budget.py seeds, so that the load (a shuffled deck of them)
    # does not pay a line again within seconds; fraud scoring observing, as make bench's
    # engine runs (compare.engine_argv): every payment takes the whole saga.
    common = seeded_data(log, work, SUBSCRIBERS)
    argv = engine_argv(str(bin_ / "quickpay"), common, ["--gateways", str(gateways_file(work, 0))])
    server = Server(log, argv, work / "prof-serve.log")
    try:
        client = subprocess.Popen(
            [str(bin_ / "quickpay"), "bench", *common, "--target", server.target,
             "--no-progress", "--rpc", "batch", "--batch-size", "500", "--concurrency",
             "2000", "--duration", "20", "--warmup", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(4)
        record_pyspy(server.proc.pid, out, 12, rate=100, gil=gil)
        client.wait(timeout=120)
    finally:
        server.stop()


def summarize(out: Path, frames: Sequence[str] = ()) -> str:
    threads: collections.Counter[str] = collections.Counter()
    marked: collections.Counter[str] = collections.Counter()
    total = stage = senders = 0
    for stack in pyspy_stacks(out):
        n = stack.count
        total += n
        thread = stack.thread
        thread = "gateway-NAME_N" if thread.startswith("gateway-") else thread.rstrip("0123456789")
        threads[thread] += n
        senders += n if thread == "gateway-NAME_N" else 0
        if any(mark in stack.text for mark in STAGE):
            stage += n
        for mark in frames:
            if mark in stack.text:
                marked[mark] += n
    by_thread = ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in threads.most_common(8))
    by_frame = "".join(f"\n{m!r}: {marked[m]} ({100 * marked[m] / total:.1f} %)" for m in frames)
    return (
        f"samples {total}; gateway stage on the event loop {stage} ({100 * stage / total:.1f} %);"
        f" gateway sender threads {senders} ({100 * senders / total:.1f} %)\nby thread: {by_thread}"
        + by_frame
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("var/prof"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)"
    )
    parser.add_argument(
        "--frames", default="", help="comma-separated stack markers to count (see above)"
    )
    parser.add_argument(
        "--summarize-only", action="store_true", help="summarize --out, recorded before"
    )
    args = parser.parse_args()
    out = args.out or args.work / "paybatch.pyspy.txt"
    if not args.summarize_only:
        record(args.work, out, args.gil)
    print(summarize(out, [f for f in args.frames.split(",") if f]))


if __name__ == "__main__":
    main()
