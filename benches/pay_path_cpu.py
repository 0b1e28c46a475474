"""CPU per unary payment of the event loop's own Python around a settlement, in process:
``SettlementService.pay`` (admission, the in-flight table, the caller's wait with its
deadline timer) through the real ``MicroBatcher`` (queueing, lingering, delivery), with
stages that do nothing. No gRPC, store, ledger or gateway: what is left is the per-call
and per-batch machinery of api → service → batcher that thread_cpu.py's "quickpay"
figure holds among much more, counted here without the noise of a loaded server.

    .venv/bin/python benches/pay_path_cpu.py [--payments 200000] [--callers 16] [--runs 3]

Each caller pays one payment after another (a deadline 30 s ahead, as `quickpay bench`
sets one), so the batches hold about ``--callers`` payments. Run it with
PYTHONPATH=TREE/python to measure another tree.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Sequence

import uvloop

from quickpay_engine.domain import (
    NO_DETAIL,
    Method,
    MethodKind,
    Outcome,
    PaymentIntent,
    PaymentStatus,
    Purpose,
)
from quickpay_engine.settlement.admission import Admission
from quickpay_engine.settlement.batcher import MicroBatcher
from quickpay_engine.settlement.service import SettlementService


async def _prepare(intents: Sequence[PaymentIntent]) -> Sequence[PaymentIntent]:
    return intents


async def _complete(intents: Sequence[PaymentIntent]) -> list[Outcome]:
    await asyncio.sleep(0)  # one loop turn, as a stage that awaits anything takes
    return [Outcome("pay_0", i.idempotency_key, PaymentStatus.SETTLED) for i in intents]


async def run(payments: int, callers: int) -> tuple[float, float, float]:
    """(µs of CPU per payment, payments per second, mean batch size)."""
    service = object.__new__(SettlementService)  # only what pay uses
    service._inflight = {}
    service._batcher = MicroBatcher(
        _prepare, complete=_complete, inflight_max=8, admission=Admission()
    )
    service._batcher.start()
    keys = itertools.count()
    method = Method(MethodKind.CARRIER_BALANCE, "carrier balance")

    async def caller() -> None:
        for _ in range(payments // callers):
            intent = PaymentIntent(
                str(next(keys)), "f", "acc", "+4915112345678", 100, "EUR",
                Purpose.UNSPECIFIED, method, "app", "dev", "10.0.0.1",
                NO_DETAIL, time.monotonic() + 30,
            )  # fmt: skip
            await service.pay(intent)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await service._batcher.close()
    done = callers * (payments // callers)
    total = service._batcher.total
    return 1e6 * cpu / done, done / wall, total.items / total.batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.runs):
        us, rate, batch = uvloop.run(run(args.payments, args.callers))
        print(f"{us:6.2f} µs CPU per payment, {rate:,.0f}/s, mean batch {batch:.1f}")


if __name__ == "__main__":
    main()
