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

Each tree has its own data directory (seeded the same), so one build's rows never sit in
the other's indexes; each is seeded by its own tree's build (`quickpay seed` and
`subscribers import` with PYTHONPATH=TREE/python, as its server runs), so a tree whose
schema is older than this one's is not handed a file it would refuse. ``--history N`` first settles N payments through each tree's server
(the same load, not measured), since a store's indexes in production are large. Besides
CPU, each run reads the server's /proc/PID/io before and after: ``write_bytes`` (what it
sent to the storage layer: the SQLite WAL and its checkpoints, the ledger's log) and
``wchar`` (what it passed to write calls), both per payment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from compare import Log, Server, gateways_file, seeded_trees, tree_env
from cpu_budget import LOADS, cpu_s


def io(pid: int) -> dict[str, int]:
    """The counters of /proc/PID/io (bytes and calls, all threads)."""
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", required=True, help="comma-separated worktrees")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--history", type=int, default=0, help="payments settled first")
    parser.add_argument("--work", type=Path, default=Path("var/paybatch-ab"))
    args = parser.parse_args()
    log = Log()
    data = seeded_trees(log, args.work, args.trees, 20_000)
    trees = list(data)
    bin_ = Path(sys.executable).parent
    gateways = ["--gateways", str(gateways_file(args.work, 0))]

    def serve(tree: str) -> Server:
        os.environ["PYTHONPATH"] = tree_env(tree)["PYTHONPATH"]
        argv = [str(bin_ / "quickpay"), "serve", "--listen", "127.0.0.1:0", *data[tree],
                *gateways]  # fmt: skip
        return Server(log, argv, args.work / "serve.log")

    def load(tree: str, server: Server, flags: list[str]) -> dict:
        out = args.work / "run.json"
        out.unlink(missing_ok=True)
        subprocess.run(
            [str(bin_ / "quickpay"), "bench", *data[tree], "--target", server.target,
             "--no-progress", *LOADS["batch"], *flags, "--json", str(out)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return json.loads(out.read_text())

    if args.history:
        for tree in trees:
            server = serve(tree)
            try:
                load(tree, server, ["--count", str(args.history)])
            finally:
                server.stop()
            print(f"{tree}: {args.history:,} payments settled first", flush=True)
    found: dict[str, list[float]] = {t: [] for t in trees}
    written: dict[str, list[float]] = {t: [] for t in trees}
    for _ in range(args.runs):
        for tree in trees:
            server = serve(tree)
            try:
                before, load0 = cpu_s(server.proc.pid), os.getloadavg()[0]
                io0 = io(server.proc.pid)
                report = load(tree, server, ["--duration", str(args.seconds), "--warmup", "1"])
                after, load1 = cpu_s(server.proc.pid), os.getloadavg()[0]
                io1 = io(server.proc.pid)
            finally:
                server.stop()
            paid = report["sent"] + report["warmup"]
            ms = 1e3 * (after - before) / paid
            found[tree].append(ms)
            per = {k: (io1[k] - io0[k]) / paid for k in ("write_bytes", "wchar", "syscw")}
            written[tree].append(per["write_bytes"])
            print(
                f"{tree}: {paid} payments, {report['throughput_per_s']:,.0f}/s, server"
                f" {ms:.3f} ms a payment, write_bytes {per['write_bytes']:,.0f} B, wchar"
                f" {per['wchar']:,.0f} B, write calls {per['syscw']:.2f} a payment,"
                f" load average {load0:.1f} to {load1:.1f}",
                flush=True,
            )
    for tree, values in found.items():
        runs = ", ".join(f"{v:.3f}" for v in values)
        median_bytes = statistics.median(written[tree])
        print(
            f"{tree}: median {statistics.median(values):.3f} ms ({runs}),"
            f" write_bytes {median_bytes:,.0f} B a payment"
        )


if __name__ == "__main__":
    main()
