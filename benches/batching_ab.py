"""Unary Pay and PayStream, two builds alternating: rate, latency, batch size, server CPU.

    .venv/bin/python benches/batching_ab.py --trees /tmp/base,. [--pairs 3] [--seconds 6]
        [--loads unary,stream,open:200,open:1000]

Each tree is one build (its python/ with its _engine extension), run with
PYTHONPATH=TREE/python against its own seeded data directory (20,000 subscribers) and
the bundled simulators at 0 ms. For each pair and each load, every tree runs once, one
after the other, so drift on a shared host hits both. Loads: ``unary`` (64 callers,
closed loop), ``stream`` (PayStream, 256 in flight), ``batch`` (PayBatch, calls of 500
from 1,000 callers), ``open:RATE`` (unary at a fixed rate). Per run it prints answers a second (declines and invalid requests included, by
the load's design), settled a second, the client's p50 and p99, the mean batch size the
server logged at its stop, and the server's CPU (all threads, /proc) per answer over the
whole load. What changed batching (the batcher's linger) is read against all of them:
a larger batch must not buy its rate with the latency of a load below capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from compare import Log, Server, gateways_file, seeded_trees, tree_env
from cpu_budget import cpu_s

LOADS = {
    "unary": ["--rpc", "unary", "--concurrency", "64"],
    "stream": ["--rpc", "stream", "--concurrency", "256"],
    "batch": ["--rpc", "batch", "--batch-size", "500", "--concurrency", "1000"],
}


def load_flags(name: str, seconds: float) -> list[str]:
    timed = ["--duration", str(seconds), "--warmup", "1"]
    if name.startswith("open:"):
        return ["--rpc", "unary", "--rate", name.split(":", 1)[1], *timed]
    return [*LOADS[name], *timed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", required=True, help="comma-separated worktrees")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--loads", default="unary,stream,open:200,open:1000")
    parser.add_argument("--work", type=Path, default=Path("var/batching-ab"))
    args = parser.parse_args()
    loads = args.loads.split(",")
    log = Log()
    data = seeded_trees(log, args.work, args.trees, 20_000)
    bin_ = Path(sys.executable).parent
    gateways = ["--gateways", str(gateways_file(args.work, 0))]
    for pair in range(1, args.pairs + 1):
        for name in loads:
            for tree in data:
                os.environ["PYTHONPATH"] = tree_env(tree)["PYTHONPATH"]
                serve_log = args.work / "serve.log"
                argv = [str(bin_ / "quickpay"), "serve", "--listen", "127.0.0.1:0",
                        *data[tree], *gateways]  # fmt: skip
                server = Server(log, argv, serve_log)
                out = args.work / "run.json"
                out.unlink(missing_ok=True)
                try:
                    before = cpu_s(server.proc.pid)
                    subprocess.run(
                        [str(bin_ / "quickpay"), "bench", *data[tree], "--target",
                         server.target, "--no-progress", *load_flags(name, args.seconds),
                         "--json", str(out)],
                        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    after = cpu_s(server.proc.pid)
                finally:
                    server.stop()
                report = json.loads(out.read_text())
                answered = report["sent"] + report["warmup"]
                sizes = re.findall(r"batches since start: .*\(mean ([\d.]+)", serve_log.read_text())
                latency = report["latency_ms"]
                print(
                    f"pair {pair} {name:>9} {Path(tree).name:>10}:"
                    f" {report['throughput_per_s']:7,.0f} answered/s,"
                    f" {report['settled_per_s']:7,.0f} settled/s,"
                    f" p50 {latency['p50']:6.1f} ms, p99 {latency['p99']:6.1f} ms,"
                    f" batches of {sizes[-1] if sizes else '?':>5},"
                    f" server {1e3 * (after - before) / answered:.3f} ms an answer",
                    flush=True,
                )


if __name__ == "__main__":
    main()
