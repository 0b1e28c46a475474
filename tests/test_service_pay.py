"""SettlementService.pay around the batcher, without a store or gateways: the in-flight
table and the waits of a unary payment (its caller's one done callback on the
settlement both takes the key out of the table and wakes the caller)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from conftest import bill
from quickpay_engine.api.convert import intent_of
from quickpay_engine.domain import Outcome, PaymentIntent, PaymentStatus
from quickpay_engine.errors import OutcomePending
from quickpay_engine.settlement.batcher import MicroBatcher
from quickpay_engine.settlement.service import SettlementService


class Stages:
    """A batcher's two stages whose second ends only when the test says so."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.batches: list[list[str]] = []

    async def prepare(self, intents: Sequence[PaymentIntent]) -> Sequence[PaymentIntent]:
        self.batches.append([i.idempotency_key for i in intents])
        return intents

    async def complete(self, intents: Sequence[PaymentIntent]) -> list[Outcome]:
        await self.release.wait()
        return [
            Outcome(f"pay_{i.idempotency_key}", i.idempotency_key, PaymentStatus.SETTLED)
            for i in intents
        ]


def _service(stages: Stages) -> SettlementService:
    """Only what ``pay`` uses: the batcher and the in-flight table."""
    service = object.__new__(SettlementService)
    service._inflight = {}
    service._batcher = MicroBatcher(
        stages.prepare, complete=stages.complete, linger_ms=0, inflight_max=4
    )
    service._batcher.start()
    return service


def _intent(key: str, deadline: float | None = None) -> PaymentIntent:
    return intent_of(bill(key), b"k" * 32, deadline)


async def _settle(service: SettlementService) -> None:
    await service._batcher.close()


async def test_a_payment_and_its_retry_share_one_settlement_and_the_key_is_freed() -> None:
    stages = Stages()
    service = _service(stages)
    first = asyncio.ensure_future(service.pay(_intent("pay-unit-1")))
    await asyncio.sleep(0.01)
    retry = asyncio.ensure_future(service.pay(_intent("pay-unit-1")))
    await asyncio.sleep(0.01)
    assert "pay-unit-1" in service._inflight
    stages.release.set()
    one, two = await first, await retry
    assert one.payment_id == two.payment_id == "pay_pay-unit-1"
    assert not one.replayed and two.replayed
    assert stages.batches == [["pay-unit-1"]], "settled once"
    assert service._inflight == {}
    await _settle(service)


async def test_a_caller_that_goes_leaves_its_payment_settling_and_joinable() -> None:
    """Cancelled while it waits, the caller stops; its payment goes on, a retry joins
    it, and the key leaves the table only when the settlement ends."""
    stages = Stages()
    service = _service(stages)
    for deadline in (None, asyncio.get_running_loop().time() + 30):
        key = f"pay-unit-gone-{deadline is None}"
        caller = asyncio.ensure_future(service.pay(_intent(key, deadline)))
        await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert key in service._inflight
        retry = asyncio.ensure_future(service.pay(_intent(key, deadline)))
        await asyncio.sleep(0.01)
        assert not retry.done()
        stages.release.set()
        assert (await retry).replayed
        assert service._inflight == {}
        assert len(stages.batches) == 1, "settled once"
        stages.release.clear()
        stages.batches.clear()
    await _settle(service)


async def test_a_deadline_first_is_outcome_pending_and_the_key_stays_until_the_end() -> None:
    stages = Stages()
    service = _service(stages)
    loop = asyncio.get_running_loop()
    with pytest.raises(OutcomePending, match="pay-unit-late"):
        await service.pay(_intent("pay-unit-late", loop.time() + 0.1))
    assert "pay-unit-late" in service._inflight, "the payment goes on"
    stages.release.set()
    retry = await service.pay(_intent("pay-unit-late", loop.time() + 5))
    assert retry.replayed and retry.status is PaymentStatus.SETTLED
    assert service._inflight == {}
    await _settle(service)


async def test_a_settlement_that_fails_ends_its_caller_with_that_failure() -> None:
    stages = Stages()
    service = _service(stages)

    async def failing(intents: Sequence[PaymentIntent]) -> list[Outcome | BaseException]:
        return [ValueError(f"no {i.idempotency_key}") for i in intents]

    service._batcher._complete = failing
    with pytest.raises(ValueError, match="no pay-unit-fail"):
        await service.pay(_intent("pay-unit-fail", asyncio.get_running_loop().time() + 5))
    assert service._inflight == {}
    await _settle(service)
