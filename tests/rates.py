"""Pay's rate beside a load, measured in alternating windows of one test, so that both
rates see the same machine (tests/test_isolation_*.py); and waiting for a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from conftest import topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    """Returns once ``condition()`` holds; fails naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():
        assert loop.time() < end, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.01)


# Pay's rate beside the load, as a share of its rate alone. The issue asks for 0.8,
# which benches/isolation.py measures (benches/RESULTS.md). Here the server, its load and
# the Pay callers share one process and event loop on two shared cores, where a run
# measured 0.67 to 0.88; the bound catches the collapse the issue saw (0.01 and 0.14,
# and 0.00 here before the fix) without failing on that noise.
RATE_KEPT_MIN = 0.4


async def pays_in(stub, seconds: float, tag: str, workers: int = 8) -> int:
    """How many Pay calls ``workers`` callers finish in ``seconds``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    done = [0]

    async def caller(w: int) -> None:
        k = 0
        while loop.time() < end:
            amount = pb.Money(amount_minor=100, currency="KES")
            await stub.Pay(topup(f"{tag}-{w}-{k}", amount=amount))
            k += 1
            done[0] += 1

    await asyncio.gather(*(caller(w) for w in range(workers)))
    return done[0]


async def rates(
    stub, start_load: Callable[[], Awaitable[Callable[[], Awaitable[None]]]], rounds: int = 5
) -> tuple[int, int]:
    """Pay calls finished alone and beside the load, in alternating windows of equal
    length, so both see the same machine."""
    alone = beside = 0
    window_s = 1.0
    for r in range(rounds):
        alone += await pays_in(stub, window_s, f"alone{r}")
        stop = await start_load()
        try:
            beside += await pays_in(stub, window_s, f"beside{r}")
        finally:
            await stop()
    return alone, beside
