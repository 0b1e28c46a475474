"""PayBatch server CPU per payment, two builds alternating, counted over whole runs.

    .venv/bin/python benches/paybatch_cpu_ab.py --trees /tmp/base,. [--runs 3] [--seconds 10]

Each tree is one build (its python/ with its _engine extension); the server runs with
PYTHONPATH=TREE/python. For each run, the server's CPU (all threads, /proc) is read just
before the load starts and just after it ends, and divided by every payment the load
sent (warm-up included), so it does not depend on how a rate measured over the run
matches a CPU window inside it (cpu_budget.py's approach, which a host loaded by other
work makes noisy). Load: `quickpay bench --rpc batch --batch-size 500 --concurrency
1000` (cpu_budget.py's), SQLite, the bundled simulators at 0 ms. Prints each run, with
the load average, and the median per tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from compare import Log, Server, gateways_file, seeded_data
from cpu_budget import LOADS, cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", required=True, help="comma-separated worktrees")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--work", type=Path, default=Path("var/paybatch-ab"))
    args = parser.parse_args()
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    log = Log()
    bin_ = Path(sys.executable).parent
    common = seeded_data(log, args.work, 20_000)
    gateways = ["--gateways", str(gateways_file(args.work, 0))]
    found: dict[str, list[float]] = {t: [] for t in trees}
    for _ in range(args.runs):
        for tree in trees:
            os.environ["PYTHONPATH"] = f"{tree}/python"
            argv = [str(bin_ / "quickpay"), "serve", "--listen", "127.0.0.1:0", *common,
                    *gateways]  # fmt: skip
            server = Server(log, argv, args.work / "serve.log")
            out = args.work / "run.json"
            out.unlink(missing_ok=True)
            try:
                before, load0 = cpu_s(server.proc.pid), os.getloadavg()[0]
                subprocess.run(
                    [str(bin_ / "quickpay"), "bench", *common, "--target", server.target,
                     "--no-progress", *LOADS["batch"], "--duration", str(args.seconds),
                     "--warmup", "1", "--json", str(out)],
                    check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                after, load1 = cpu_s(server.proc.pid), os.getloadavg()[0]
            finally:
                server.stop()
            report = json.loads(out.read_text())
            paid = report["sent"] + report["warmup"]
            ms = 1e3 * (after - before) / paid
            found[tree].append(ms)
            print(
                f"{tree}: {paid} payments, {report['throughput_per_s']:,.0f}/s, server"
                f" {ms:.3f} ms a payment, load average {load0:.1f} to {load1:.1f}",
                flush=True,
            )
    for tree, values in found.items():
        runs = ", ".join(f"{v:.3f}" for v in values)
        print(f"{tree}: median {statistics.median(values):.3f} ms ({runs})")


if __name__ == "__main__":
    main()
