"""CPU per sale of the gateway stage: ``GatewayRouter.sale_many`` in batches (500 by
default, PayBatch's size) against one ``quickpay gateway-sim`` process with no faults
and no latency. Two figures per sale: this process's CPU (every thread: the event loop,
the sender threads, the core's HTTP runtime) and the event loop thread's alone (what the
gRPC server and the rest of the saga compete for). CPU time, not wall time, so a busy
machine moves the figures less than it moves a rate.

    .venv/bin/python benches/router_cpu.py [--batches 20] [--size 500]

Run it from two trees (PYTHONPATH=OTHER/python) to compare builds.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from quickpay_engine.domain import MethodKind
from quickpay_engine.gateways.config import GatewayConfig, GatewaysConfig
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.gateways.sim.faults import FaultModel
from quickpay_engine.gateways.supervisor import start_simulator, stop_simulator
from quickpay_engine.gateways.types import Card, GatewayOutcome, SaleRequest

CARD = Card("4242424242424242", 12, 2031)


async def measure(batches: int, size: int) -> tuple[float, float, float]:
    """(process CPU us per sale, loop thread CPU us per sale, sales per second)."""
    with tempfile.TemporaryDirectory() as tmp:
        sim = await start_simulator("acq-a", FaultModel(seed=1), Path(tmp))
        gateway = GatewayConfig(
            name="acq-a", url=sim.url, methods=frozenset({MethodKind.CARD}),
            currencies=frozenset({"EUR"}), timeout_ms=30_000, pool_max=32,
        )  # fmt: skip
        try:
            async with GatewayRouter(GatewaysConfig((gateway,))) as router:

                async def batch(tag: str) -> None:
                    sales = [SaleRequest(f"{tag}-{k}", 100, "EUR", CARD) for k in range(size)]
                    results = await router.sale_many(sales, router.deadline(60))
                    final = {GatewayOutcome.CAPTURED, GatewayOutcome.DECLINED}
                    assert all(r.outcome in final for r in results)

                for n in range(2):  # warm-up: connections opened, code paths hot
                    await batch(f"warm{n}")
                process, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
                for n in range(batches):
                    await batch(f"b{n}")
                process = time.process_time() - process
                thread = time.thread_time() - thread
                wall = time.perf_counter() - wall
        finally:
            await stop_simulator(sim)
    sales = batches * size
    return 1e6 * process / sales, 1e6 * thread / sales, sales / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--size", type=int, default=500)
    args = parser.parse_args()
    process, thread, rate = asyncio.run(measure(args.batches, args.size))
    print(
        f"{args.batches} x {args.size} sales: process CPU {process:.1f} us/sale,"
        f" event loop thread CPU {thread:.1f} us/sale, {rate:,.0f} sales/s"
    )


if __name__ == "__main__":
    main()
