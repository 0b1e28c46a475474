"""The gateway simulator's own CPU per sale, read from /proc while a client drives it.

    .venv/bin/python benches/sim_cpu.py [--sales 20000] [--concurrency 64] [--rounds 3]

One `quickpay gateway-sim` process (no faults, no latency, no declines) on loopback,
started as the supervisor starts the bundled ones. The engine's own gateway client
(GatewayClient on the HttpPool, keep-alive, ``--concurrency`` callers over as many
connections) sends ``--sales`` sales per round, each a fresh reference, so each is
booked: one SQLite transaction with the payment and its capture entry. The simulator's
utime + stime (/proc/PID/stat, every thread) over the round, divided by the sales, is
its CPU per sale; the client runs in this process, so its CPU is not counted.

Issue 15 sets the budget at 0.05 ms of simulator CPU per sale, so that a load benchmark
of the engine on this machine measures the engine and not its gateways.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from quickpay_engine.domain import MethodKind
from quickpay_engine.gateways.client import GatewayClient
from quickpay_engine.gateways.config import GatewayConfig
from quickpay_engine.gateways.sim.faults import FaultModel
from quickpay_engine.gateways.supervisor import start_simulator, stop_simulator

CARD = {"kind": "card", "pan": "4242424242424242", "expiry_month": 12, "expiry_year": 2031}
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def threads_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) * TICK_S
    return out


async def drive(client: GatewayClient, sales: int, concurrency: int, tag: str) -> None:
    jobs = iter(range(sales))

    async def caller() -> None:
        for i in jobs:
            paid = await client.sale(f"{tag}-{i}", 100, "EUR", CARD, 60.0)
            assert paid["state"] == "CAPTURED" and not paid["replayed"]

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sales", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = GatewayConfig(
        "bench", "", frozenset({MethodKind.CARD}), frozenset({"EUR"}),
        timeout_ms=60_000, pool_max=args.concurrency,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        child = await start_simulator("bench", FaultModel(), Path(tmp))
        client = GatewayClient(dataclasses.replace(config, url=child.url))
        await client.start()
        try:
            await drive(client, 500, args.concurrency, "warm")
            results = []
            for r in range(args.rounds):
                pid = child.process.pid
                threads_before = threads_cpu_s(pid)
                cpu_before, wall_before = cpu_s(pid), time.perf_counter()
                await drive(client, args.sales, args.concurrency, f"round{r}")
                wall = time.perf_counter() - wall_before
                ms = (cpu_s(pid) - cpu_before) / args.sales * 1e3
                results.append(ms)
                by_thread = {
                    name: (s - threads_before.get(name, 0.0)) / args.sales * 1e3
                    for name, s in threads_cpu_s(pid).items()
                }
                busy = ", ".join(f"{n} {ms:.4f}" for n, ms in sorted(by_thread.items()) if ms)
                print(
                    f"round {r}: {args.sales / wall:,.0f} sales/s,"
                    f" simulator CPU {ms:.4f} ms/sale ({busy})",
                    flush=True,
                )
        finally:
            await client.close()
            await stop_simulator(child)
    results.sort()
    print(f"median simulator CPU per sale: {results[len(results) // 2]:.4f} ms")


if __name__ == "__main__":
    asyncio.run(main())
