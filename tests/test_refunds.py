"""Refunds under concurrency: a refund key is bound to its payment and payload, one
payment's refunds run one at a time, and every account's ledger balance agrees with
its billing history afterwards (issue #20, item 1)."""

from __future__ import annotations

import asyncio

from quickpay_engine.settlement.refunds import Refunds


async def test_a_payment_refund_lock_is_kept_while_a_caller_waits_for_it() -> None:
    """The lock of a payment outlives its holder while another caller waits: a third
    caller arriving then queues behind the waiter instead of running beside it."""
    refunds = Refunds(None, None, None, None, lambda _: None)  # type: ignore[arg-type]
    inside: list[str] = []
    most = 0
    gates = {k: asyncio.Event() for k in ("k1", "k2", "k3")}

    async def body(key: str, payment_id: str, *_: object) -> None:
        nonlocal most
        inside.append(key)
        most = max(most, len(inside))
        await gates[key].wait()
        inside.remove(key)

    refunds._refund = body  # type: ignore[method-assign]

    async def until(condition) -> None:
        for _ in range(1_000):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError("condition not reached")

    first = asyncio.create_task(refunds.refund("k1", "pay_1", None, "", ""))
    await until(lambda: inside == ["k1"])
    second = asyncio.create_task(refunds.refund("k2", "pay_1", None, "", ""))
    for _ in range(10):
        await asyncio.sleep(0)  # the second caller is now waiting for the lock
    gates["k1"].set()
    await first  # the first caller's lock released, the second not yet running
    third = asyncio.create_task(refunds.refund("k3", "pay_1", None, "", ""))
    await until(lambda: inside != [])
    for _ in range(10):
        await asyncio.sleep(0)
    assert most == 1 and len(inside) == 1, inside
    gates["k2"].set()
    gates["k3"].set()
    await asyncio.gather(second, third)
    assert most == 1
    assert not refunds._locks, "no lock left behind once every caller is done"
