"""The core's gateway HTTP client, CPU per sale: `GatewayRouter.sale_columns` in batches
of 500 (PayBatch's size, the way the pipeline sends them) against one `quickpay
gateway-sim` process at 0 ms (no faults, no latency), this process's CPU split by thread:
the `quickpay-http` runtime threads (the HTTP client, the bodies, the answers' parsing)
and the others (the event loop: the router, and the `sale_many_into` call's columns in
and out). CPU time from /proc/self/task, not wall time,
so a busy machine moves the figures less than it moves a rate.

    .venv/bin/python benches/http_cpu.py [--batches 40] [--size 500]
    .venv/bin/python benches/http_cpu.py --trees /tmp/base,. --pairs 5

With ``--trees``, each tree (its python/ with its own _engine extension) is run in a
child process (PYTHONPATH=TREE/python), the trees alternating, ``--pairs`` times; each
run is printed with the load average, then the median per tree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def threads_cpu_s() -> dict[str, float]:
    """This process's CPU seconds by kind of thread ("http": the core's `quickpay-http`
    runtime; "other": the event loop and the sender threads, which Python 3.11 does not
    name), from each thread's /proc schedstat (nanoseconds on a CPU)."""
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        kind = "http" if name.startswith("quickpay-http") else "other"
        out[kind] = out.get(kind, 0.0) + ns / 1e9
    return out


async def measure(batches: int, size: int) -> dict[str, float]:
    """CPU microseconds per sale: the process and each kind of thread; sales/s."""
    from quickpay_engine._engine import Sales
    from quickpay_engine.domain import MethodKind
    from quickpay_engine.gateways.config import GatewayConfig, GatewaysConfig
    from quickpay_engine.gateways.router import GatewayRouter
    from quickpay_engine.gateways.sim.faults import FaultModel
    from quickpay_engine.gateways.supervisor import start_simulator, stop_simulator
    from quickpay_engine.gateways.types import GatewayOutcome

    with tempfile.TemporaryDirectory() as tmp:
        sim = await start_simulator("acq-a", FaultModel(seed=1), Path(tmp))
        gateway = GatewayConfig(
            name="acq-a", url=sim.url, methods=frozenset({MethodKind.CARD}),
            currencies=frozenset({"EUR"}), timeout_ms=30_000, pool_max=64,
        )  # fmt: skip
        try:
            async with GatewayRouter(GatewaysConfig((gateway,))) as router:
                final = {GatewayOutcome.CAPTURED, GatewayOutcome.DECLINED}

                async def batch(tag: str) -> None:
                    deadline = router.deadline(60)
                    sales = Sales(
                        [f"{tag}-{k}" for k in range(size)], [100] * size, ["EUR"] * size,
                        [MethodKind.CARD] * size, ["4242424242424242"] * size, [12] * size,
                        [2031] * size, [""] * size, [""] * size, [""] * size,
                        [deadline] * size,
                    )  # fmt: skip
                    out = await router.sale_columns(sales)
                    assert all(o in final for o in out.outcomes)

                for n in range(3):  # warm-up: connections opened, code paths hot
                    await batch(f"warm{n}")
                threads = threads_cpu_s()
                process, wall = time.process_time(), time.perf_counter()
                for n in range(batches):
                    await batch(f"b{n}")
                process = time.process_time() - process
                wall = time.perf_counter() - wall
                after = threads_cpu_s()
        finally:
            await stop_simulator(sim)
    sales = batches * size
    figures = {k: 1e6 * (after.get(k, 0.0) - threads.get(k, 0.0)) / sales for k in after}
    figures["process"] = 1e6 * process / sales
    figures["rate"] = sales / wall
    return figures


def alternate(trees: list[str], pairs: int, batches: int, size: int) -> None:
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for p in range(pairs):
        for tree in trees if p % 2 == 0 else trees[::-1]:
            env = dict(os.environ, PYTHONPATH=f"{tree}/python")
            argv = [sys.executable, __file__, "--batches", str(batches), "--size", str(size),
                    "--json"]  # fmt: skip
            load = os.getloadavg()[0]
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
            figures = json.loads(out.stdout.splitlines()[-1])
            runs[tree].append(figures)
            print(f"pair {p} {tree}: {line(figures)} (load {load:.1f})", flush=True)
    for tree, figures in runs.items():
        med = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
        print(f"median {tree}: {line(med)}")


def line(f: dict[str, float]) -> str:
    return (
        f"quickpay-http {f.get('http', 0):.1f} us/sale, other threads {f.get('other', 0):.1f},"
        f" process {f['process']:.1f}, {f['rate']:,.0f} sales/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--trees", help="comma-separated trees to alternate")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON line (for --trees)")
    args = parser.parse_args()
    if args.trees:
        trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
        alternate(trees, args.pairs, args.batches, args.size)
        return
    figures = asyncio.run(measure(args.batches, args.size))
    print(json.dumps(figures) if args.json else line(figures))


if __name__ == "__main__":
    main()
