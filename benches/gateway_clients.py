"""Which HTTP transport the gateway adapters use, measured: a bare aiohttp pool (the
baseline), the adapter (GatewayClient on the engine's HttpPool), GatewayRouter on top of
it, and httpx's pool when it is installed (it is not a dependency).

Every client calls the same simulator process (no faults, no latency) with the same
number of concurrent callers over a keep-alive pool of the same size. Two figures each:
sales per second, and the event loop thread's CPU time per sale (what the gRPC server
and the store thread compete for in the engine); ratios are against bare aiohttp in the
same run, rounds interleaved so that machine noise hits every client.

    .venv/bin/python benches/gateway_clients.py --requests 3000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import tempfile
import time
from pathlib import Path

import aiohttp

from quickpay_engine.domain import MethodKind
from quickpay_engine.gateways.client import GatewayClient
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


async def run_adapter(url: str, n: int, concurrency: int, tag: str) -> float:
    client = GatewayClient(gateway_config(url, concurrency))
    await client.start()
    try:
        jobs = iter(range(n))

        async def caller() -> None:
            for i in jobs:
                r = await client.sale(f"{tag}-{i}", 100, "EUR", CARD, 60.0)
                assert r["state"] == "CAPTURED"

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)
    finally:
        await client.close()


def gateway_config(url: str, concurrency: int) -> GatewayConfig:
    return GatewayConfig(
        "bench", url, frozenset({MethodKind.CARD}), frozenset({"EUR"}),
        timeout_ms=60_000, pool_max=concurrency,
    )  # fmt: skip


async def run_httpx(url: str, n: int, concurrency: int, tag: str) -> float:
    import httpx

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
    gateway = gateway_config(url, concurrency)
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
            runs = {"aiohttp": run_aiohttp, "adapter": run_adapter, "router": run_router}
            if importlib.util.find_spec("httpx") is not None:
                runs["httpx"] = run_httpx
            best = dict.fromkeys(runs, 0.0)
            cpu = dict.fromkeys(runs, float("inf"))
            for r in range(args.rounds):
                line = []
                for name, run in runs.items():
                    before = time.thread_time()
                    rate = await run(child.url, args.requests, args.concurrency, f"{name}{r}")
                    us = (time.thread_time() - before) / args.requests * 1e6
                    best[name] = max(best[name], rate)
                    cpu[name] = min(cpu[name], us)
                    line.append(f"{name} {rate:.0f}/s {us:.0f} us/sale")
                print(f"round {r}: " + ", ".join(line))
        finally:
            await stop_simulator(child)
    base, base_cpu = best["aiohttp"], cpu["aiohttp"]
    print(
        "best: "
        + ", ".join(
            f"{k} {v:.0f}/s ({v / base:.2f}x), {cpu[k]:.0f} us/sale ({cpu[k] / base_cpu:.2f}x)"
            for k, v in best.items()
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
