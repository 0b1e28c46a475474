"""Which HTTP client the gateway adapters use: aiohttp's pool against httpx's, measured;
and what GatewayRouter costs on top of the bare aiohttp client.

Every client calls the same simulator process (no faults, no latency) with the same
number of concurrent callers over a keep-alive pool of the same size; the figures are
sales per second, and the ratios are against bare aiohttp, measured in the same run,
rounds interleaved so that machine noise hits all three. httpx is not a dependency:
install it in a scratch venv to run this.

    .venv/bin/python benches/gateway_clients.py --requests 3000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from quickpay_engine.domain import MethodKind
from quickpay_engine.gateways.config import GatewayConfig, GatewaysConfig
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.gateways.sim.faults import FaultModel
from quickpay_engine.gateways.supervisor import start_simulator, stop_simulator
from quickpay_engine.gateways.types import Card, GatewayOutcome

CARD = {"kind": "card", "pan": "4242424242424242", "expiry_month": 12, "expiry_year": 2031}


def body(n: int, tag: str) -> dict[str, object]:
    return {"merchant_reference": f"{tag}-{n}", "amount_minor": 100, "currency": "EUR",
            "method": CARD}  # fmt: skip


async def run_aiohttp(url: str, n: int, concurrency: int, tag: str) -> float:
    jobs = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as session:

        async def caller() -> None:
            for i in jobs:
                async with session.post("/v1/payments/sale", json=body(i, tag)) as r:
                    assert r.status == 200
                    await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)


async def run_httpx(url: str, n: int, concurrency: int, tag: str) -> float:
    jobs = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:

        async def caller() -> None:
            for i in jobs:
                r = await client.post("/v1/payments/sale", json=body(i, tag))
                assert r.status_code == 200

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)


async def run_router(url: str, n: int, concurrency: int, tag: str) -> float:
    gateway = GatewayConfig(
        "bench", url, frozenset({MethodKind.CARD}), frozenset({"EUR"}),
        timeout_ms=60_000, pool_max=concurrency,
    )  # fmt: skip
    card = Card(str(CARD["pan"]), 12, 2031)
    async with GatewayRouter(GatewaysConfig((gateway,))) as router:
        jobs = iter(range(n))

        async def caller() -> None:
            for i in jobs:
                r = await router.sale(f"{tag}-{i}", 100, "EUR", card, router.deadline(120))
                assert r.outcome is GatewayOutcome.CAPTURED

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        child = await start_simulator("bench", FaultModel(), Path(tmp))
        try:
            runs = {"aiohttp": run_aiohttp, "httpx": run_httpx, "router": run_router}
            best = dict.fromkeys(runs, 0.0)
            for r in range(args.rounds):
                line = []
                for name, run in runs.items():
                    rate = await run(child.url, args.requests, args.concurrency, f"{name}{r}")
                    best[name] = max(best[name], rate)
                    line.append(f"{name} {rate:.0f}/s")
                print(f"round {r}: " + ", ".join(line))
        finally:
            await stop_simulator(child)
    base = best["aiohttp"]
    print("best: " + ", ".join(f"{k} {v:.0f}/s ({v / base:.2f}x aiohttp)" for k, v in best.items()))


if __name__ == "__main__":
    asyncio.run(main())
