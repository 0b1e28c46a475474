"""GatewayRouter against real simulator processes: routing, failover, breakers, and the
rule that an unknown outcome is looked up before anything else, so a payment is never
captured twice."""

from __future__ import annotations

import asyncio
import csv
import io
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway_procs import recent_business_days
from quickpay_engine.domain import MethodKind
from quickpay_engine.gateways import client as gateway_client
from quickpay_engine.gateways.breaker import BreakerState, CircuitBreaker
from quickpay_engine.gateways.config import BreakerSettings, GatewaysConfig
from quickpay_engine.gateways.router import SALE_BATCH_MAX, GatewayRouter
from quickpay_engine.gateways.sim.faults import FaultModel
from quickpay_engine.gateways.supervisor import (
    SimulatorProcess,
    start_simulator,
    stop_simulator,
)
from quickpay_engine.gateways.types import (
    DEADLINE_EXCEEDED,
    GATEWAY_UNAVAILABLE,
    NO_GATEWAY_ROUTE,
    REFUND_EXCEEDS_CAPTURED,
    UNRESOLVED,
    BankAccount,
    Card,
    GatewayOutcome,
    SaleRequest,
    Wallet,
)
from test_gateway_sim import gateway_config, set_faults

VISA = Card("4242424242424242", 12, 2031)
GO = GatewayOutcome


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sims(tmp_path: Path) -> AsyncIterator[dict[str, SimulatorProcess]]:
    """Two card acquirers, started in parallel."""
    children = await asyncio.gather(
        start_simulator("acq-a", FaultModel(seed=1), tmp_path),
        start_simulator("acq-b", FaultModel(seed=2), tmp_path),
    )
    try:
        yield {c.name: c for c in children}
    finally:
        await asyncio.gather(*(stop_simulator(c) for c in children))


def config_for(sims: dict[str, SimulatorProcess], **overrides: object) -> GatewaysConfig:
    return GatewaysConfig(tuple(gateway_config(n, c.url, **overrides) for n, c in sims.items()))


@pytest.fixture
async def router(sims: dict[str, SimulatorProcess]) -> AsyncIterator[GatewayRouter]:
    async with GatewayRouter(config_for(sims)) as r:
        yield r


async def report(router: GatewayRouter, gateway: str) -> list[dict[str, str]]:
    """The rows of ``gateway``'s settlement reports of the recent business days (a sale
    captured before midnight is on the day before's)."""
    rows: list[dict[str, str]] = []
    for day in recent_business_days():
        text, _ = await router.client(gateway).settlement_report(day, 5)
        rows += csv.DictReader(io.StringIO(text))
    return rows


async def test_sale_is_captured_at_the_first_gateway(router: GatewayRouter) -> None:
    result = await router.sale("pay_1", 3_000, "EUR", VISA, router.deadline(5))
    assert (result.outcome, result.gateway, result.captured_minor) == (GO.CAPTURED, "acq-a", 3_000)
    assert result.gateway_reference.startswith("ACQA-")
    assert result.attempts == ("acq-a:captured",)
    looked = await router.status("pay_1", router.deadline(5))
    assert (looked.outcome, looked.gateway, looked.gateway_reference) == (
        GO.CAPTURED, "acq-a", result.gateway_reference,
    )  # fmt: skip
    assert (await router.status("pay_never", router.deadline(5))).outcome is GO.NOT_FOUND


async def test_decline_is_final_and_not_failed_over(router: GatewayRouter) -> None:
    declined = await router.sale(
        "pay_d", 3_000, "EUR", Card("4000000000009995", 12, 2031), router.deadline(5)
    )
    assert (declined.outcome, declined.reason, declined.gateway) == (
        GO.DECLINED, "INSUFFICIENT_FUNDS", "acq-a",
    )  # fmt: skip
    assert (await router.status("pay_d", router.deadline(5), "acq-b")).outcome is GO.NOT_FOUND


async def test_routing_by_method_and_currency(router: GatewayRouter) -> None:
    assert router.candidates(MethodKind.CARD, "EUR") == ["acq-a", "acq-b"]
    assert router.candidates(MethodKind.CARD, "USD") == []
    assert router.candidates(MethodKind.BANK_ACCOUNT, "EUR") == []
    no_route = await router.sale_many(
        [
            SaleRequest("pay_usd", 100, "USD", VISA),
            SaleRequest("pay_iban", 100, "EUR", BankAccount("GR1601101250000000012300695")),
            SaleRequest("pay_wallet", 100, "KES", Wallet("mpesa", "254700000003")),
        ],
        router.deadline(5),
    )
    assert [(r.outcome, r.reason) for r in no_route] == [
        (GO.FAILED, NO_GATEWAY_ROUTE),
        (GO.FAILED, NO_GATEWAY_ROUTE),
        (GO.CAPTURED, ""),
    ]


async def test_many_concurrent_sales_each_captured_once(router: GatewayRouter) -> None:
    requests = [SaleRequest(f"pay_{n}", 100 + n, "KES", VISA) for n in range(300)]
    results = await router.sale_many(requests, router.deadline(60))
    assert [r.payment_id for r in results] == [q.payment_id for q in requests]
    assert {r.outcome for r in results} == {GO.CAPTURED}
    assert [r.captured_minor for r in results] == [q.amount_minor for q in requests]
    # Each captured exactly once, where the result says (a loaded machine may spill
    # some over to acq-b when acq-a's pool stays full past its timeout).
    booked = [
        (row["merchant_reference"], gateway)
        for gateway in ("acq-a", "acq-b")
        for row in await report(router, gateway)
    ]
    assert sorted(booked) == sorted((r.payment_id, r.gateway) for r in results)
    with pytest.raises(ValueError, match="at most"):
        await router.sale_many([requests[0]] * (SALE_BATCH_MAX + 1), router.deadline(5))


async def test_sales_queue_for_the_pool_and_spill_over_unsent(
    sims: dict[str, SimulatorProcess],
) -> None:
    # Every sale takes 50 ms at acq-a; with two connections, 20 sales queue for 0.5 s,
    # within the 3 s gateway timeout: all are captured there, none looked up.
    await set_faults(sims["acq-a"].url, latency_ms_median=50, latency_ms_p99=50)
    requests = [SaleRequest(f"pay_{n}", 100, "EUR", VISA) for n in range(20)]
    config = config_for(sims, pool_max=2, timeout_ms=3_000, lookup_timeout_ms=100)
    async with GatewayRouter(config) as router:
        results = await router.sale_many(requests, router.deadline(10))
    assert {(r.outcome, r.gateway, r.attempts) for r in results} == {
        (GO.CAPTURED, "acq-a", ("acq-a:captured",))
    }
    # One connection and a 0.1 s timeout cannot serve 20 sales of 50 ms: those that
    # queued past the timeout were never sent, so they spill over to acq-b with no
    # lookup (a pool queue timeout is not an unknown outcome).
    config = GatewaysConfig(
        (
            gateway_config("acq-a", sims["acq-a"].url, pool_max=1, timeout_ms=100),
            gateway_config("acq-b", sims["acq-b"].url, pool_max=32, timeout_ms=3_000),
        )
    )
    async with GatewayRouter(config) as router:
        spilled = await router.sale_many(
            [SaleRequest(f"pay_s{n}", 100, "EUR", VISA) for n in range(20)], router.deadline(10)
        )
    assert {r.outcome for r in spilled} == {GO.CAPTURED}
    assert {r.attempts for r in spilled if r.gateway == "acq-b"} == {
        ("acq-a:busy", "acq-b:captured")
    }
    assert 0 < sum(r.gateway == "acq-a" for r in spilled) < 20


async def test_lost_response_is_looked_up_not_retried(
    router: GatewayRouter, sims: dict[str, SimulatorProcess], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await set_faults(sims["acq-a"].url, lost_response_rate=1.0, hang_ms=5_000)
    result = await router.sale("pay_lost", 3_000, "EUR", VISA, router.deadline(3))
    assert (result.outcome, result.gateway, result.captured_minor) == (GO.CAPTURED, "acq-a", 3_000)
    assert result.attempts == ("acq-a:ambiguous", "acq-a:captured")
    # Captured once, at one gateway: the failover never saw it.
    assert [r["merchant_reference"] for r in await report(router, "acq-a")] == ["pay_lost"]
    assert await report(router, "acq-b") == []
    # The saga's retry of the same payment is answered from the books.
    await set_faults(sims["acq-a"].url)
    again = await router.sale("pay_lost", 3_000, "EUR", VISA, router.deadline(3))
    assert (again.outcome, again.gateway_reference) == (GO.CAPTURED, result.gateway_reference)
    assert len(await report(router, "acq-a")) == 1
    # The adapters logged the trouble, and no card number with it (invariant 7).
    assert "pay_lost at acq-a" in caplog.text
    assert VISA.pan not in caplog.text


@pytest.mark.parametrize("retries", [0, 1])
async def test_timeout_then_late_processing_never_captures_twice(
    sims: dict[str, SimulatorProcess], retries: int
) -> None:
    # acq-a holds every sale for 1.5 s and then processes it: past the 1 s timeout.
    await set_faults(sims["acq-a"].url, timeout_rate=1.0, hang_ms=1_500)
    async with GatewayRouter(config_for(sims), same_gateway_retries=retries) as router:
        result = await router.sale("pay_slow", 3_000, "EUR", VISA, router.deadline(8))
        if retries == 0:
            # Looked up (not there yet), cancelled at acq-a, then failed over.
            assert (result.outcome, result.gateway) == (GO.CAPTURED, "acq-b")
            assert result.attempts == (
                "acq-a:ambiguous", "acq-a:not_found", "acq-a:voided", "acq-b:captured",
            )  # fmt: skip
        else:
            # Looked up, retried at acq-a (safe: idempotent on the reference); the
            # retry times out too, and the next lookup finds the first request booked.
            assert (result.outcome, result.gateway) == (GO.CAPTURED, "acq-a")
            assert result.attempts == (
                "acq-a:ambiguous", "acq-a:not_found", "acq-a:ambiguous", "acq-a:captured",
            )  # fmt: skip
        await asyncio.sleep(2.0)  # every held request has woken up and tried to book
        rows = await report(router, "acq-a") + await report(router, "acq-b")
        assert [(r["merchant_reference"], r["status"]) for r in rows] == [("pay_slow", "SETTLED")]
        anywhere = await router.status("pay_slow", router.deadline(5))
        assert (anywhere.outcome, anywhere.gateway) == (GO.CAPTURED, result.gateway)
        if retries == 0:
            at_a = await router.status("pay_slow", router.deadline(5), "acq-a")
            assert (at_a.outcome, at_a.captured_minor) == (GO.VOIDED, 0)


async def test_failover_when_a_gateway_process_is_killed(
    sims: dict[str, SimulatorProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway whose process is gone cannot be connected to: the sale fails over.
    A connection kept from an earlier sale is another case: sent on it before the
    client has seen the peer close it, the sale may have arrived (ambiguous, rightly,
    and left to a lookup). Which of the two a sale meets would depend on how soon the
    client's connection task runs after the kill, so here kept connections expire at
    once and each sale after a kill connects anew."""
    monkeypatch.setattr(gateway_client, "KEEPALIVE_S", 0.001)
    async with GatewayRouter(config_for(sims)) as router:
        before = await router.sale("pay_0", 100, "EUR", VISA, router.deadline(5))
        assert before.gateway == "acq-a"
        sims["acq-a"].process.send_signal(signal.SIGKILL)
        await sims["acq-a"].process.wait()
        await asyncio.sleep(0.05)  # past the keep-alive: no connection is reused
        after = await router.sale("pay_1", 100, "EUR", VISA, router.deadline(5))
        assert (after.outcome, after.gateway) == (GO.CAPTURED, "acq-b")
        assert after.attempts == ("acq-a:unreachable", "acq-b:captured")
        sims["acq-b"].process.send_signal(signal.SIGKILL)
        await sims["acq-b"].process.wait()
        await asyncio.sleep(0.05)
        down = await router.sale("pay_2", 100, "EUR", VISA, router.deadline(5))
        assert (down.outcome, down.reason) == (GO.FAILED, GATEWAY_UNAVAILABLE)
        assert down.attempts == ("acq-a:unreachable", "acq-b:unreachable")


async def test_breaker_opens_after_failures_and_closes_after_the_half_open_probe(
    sims: dict[str, SimulatorProcess], tmp_path: Path
) -> None:
    clock = FakeClock()
    breaker = BreakerSettings(failure_threshold=2, open_ms=10_000, half_open_max_calls=1)
    config = config_for(sims, breaker=breaker)
    async with GatewayRouter(config, clock=clock) as router:
        a = sims["acq-a"]
        a.process.send_signal(signal.SIGKILL)
        await a.process.wait()
        for n in range(2):
            r = await router.sale(f"pay_{n}", 100, "EUR", VISA, clock() + 5)
            assert r.attempts == ("acq-a:unreachable", "acq-b:captured")
        assert router.breaker_state("acq-a") is BreakerState.OPEN
        # Open: acq-a is skipped without a connection attempt.
        r = await router.sale("pay_2", 100, "EUR", VISA, clock() + 5)
        assert r.attempts == ("acq-a:breaker_open", "acq-b:captured")

        # Still down when the open period ends: the probe fails and it opens again.
        clock.now += 10.0
        assert router.breaker_state("acq-a") is BreakerState.HALF_OPEN
        r = await router.sale("pay_3", 100, "EUR", VISA, clock() + 5)
        assert r.attempts == ("acq-a:unreachable", "acq-b:captured")
        assert router.breaker_state("acq-a") is BreakerState.OPEN

        # Back up (same port): the next probe succeeds and the breaker closes.
        sims["acq-a"] = await start_simulator("acq-a", FaultModel(seed=1), tmp_path, a.port)
        clock.now += 9.0
        assert router.breaker_state("acq-a") is BreakerState.OPEN  # not yet 10 s
        r = await router.sale("pay_4", 100, "EUR", VISA, clock() + 5)
        assert r.attempts == ("acq-a:breaker_open", "acq-b:captured")
        clock.now += 1.0
        r = await router.sale("pay_5", 100, "EUR", VISA, clock() + 5)
        assert (r.gateway, r.attempts) == ("acq-a", ("acq-a:captured",))
        assert router.breaker_state("acq-a") is BreakerState.CLOSED


def test_breaker_states_with_a_fake_clock() -> None:
    clock = FakeClock()
    b = CircuitBreaker(
        BreakerSettings(failure_threshold=3, open_ms=500, half_open_max_calls=2), clock
    )
    b.record_failure()
    b.record_failure()
    b.record_success()  # a success in between resets the count
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    clock.now += 0.499
    assert not b.allow()
    clock.now += 0.001
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow() and b.allow() and not b.allow()  # two probes, not three
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 0.5
    assert b.allow() and b.allow() and not b.allow()
    b.release()  # a cancelled probe frees its slot instead of wedging the breaker
    assert b.allow() and not b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.allow() and b.allow() and b.allow()


def test_allow_many_is_allow_for_each_in_turn() -> None:
    clock = FakeClock()
    b = CircuitBreaker(
        BreakerSettings(failure_threshold=1, open_ms=500, half_open_max_calls=3), clock
    )
    assert b.allow_many(7) == 7  # closed: all
    b.record_failure()
    assert b.allow_many(7) == 0  # open: none
    clock.now += 0.5
    assert b.allow_many(2) == 2 and b.allow_many(5) == 1 and b.allow_many(1) == 0
    assert not b.allow()  # the probes are taken as three allow() calls took them
    b.release()
    assert b.allow_many(0) == 0 and b.allow_many(4) == 1


async def test_unknown_outcome_when_the_gateway_dies_after_capture_then_resolve(
    sims: dict[str, SimulatorProcess], tmp_path: Path
) -> None:
    a = sims["acq-a"]
    async with GatewayRouter(config_for(sims)) as router:
        await set_faults(a.url, lost_response_rate=1.0, hang_ms=10_000)
        sale = asyncio.ensure_future(router.sale("pay_u", 3_000, "EUR", VISA, router.deadline(2)))
        # Kill acq-a once the sale is booked, while its response is being withheld.
        await booked(router, "acq-a", "pay_u")
        a.process.send_signal(signal.SIGKILL)
        await a.process.wait()
        result = await sale
        # Neither captured-for-sure nor safe to fail over: the router says so.
        assert (result.outcome, result.gateway, result.reason) == (GO.UNKNOWN, "acq-a", UNRESOLVED)
        assert (await router.status("pay_u", router.deadline(1), "acq-b")).outcome is GO.NOT_FOUND

        sims["acq-a"] = await start_simulator("acq-a", FaultModel(), tmp_path, a.port)
        resolved = await router.resolve("pay_u", "acq-a", router.deadline(5))
        assert (resolved.outcome, resolved.captured_minor) == (GO.CAPTURED, 3_000)
        # Resolving a reference the gateway never saw cancels it there for good.
        never = await router.resolve("pay_nope", "acq-a", router.deadline(5))
        assert never.outcome is GO.VOIDED
        late = await router.sale("pay_nope", 100, "EUR", VISA, router.deadline(5))
        assert (late.outcome, late.gateway) == (GO.CAPTURED, "acq-b")


async def booked(router: GatewayRouter, gateway: str, payment_id: str) -> None:
    """Returns once the gateway's books hold the payment (polls its status lookup)."""
    for _ in range(250):
        if await router.client(gateway).lookup(payment_id, 1) is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{payment_id} never booked at {gateway}")


async def test_deadline_already_passed_sends_nothing(router: GatewayRouter) -> None:
    result = await router.sale("pay_late", 100, "EUR", VISA, router.deadline(-1))
    assert (result.outcome, result.reason) == (GO.FAILED, DEADLINE_EXCEEDED)
    assert (await router.status("pay_late", router.deadline(5))).outcome is GO.NOT_FOUND


async def test_void_and_refund_through_the_router(router: GatewayRouter) -> None:
    paid = await router.sale("pay_v", 3_000, "EUR", VISA, router.deadline(5))
    voided = await router.void("pay_v", paid.gateway, router.deadline(5))
    assert voided.outcome is GO.VOIDED
    rows = await report(router, "acq-a")
    assert [(r["merchant_reference"], r["status"]) for r in rows] == [("pay_v", "VOIDED")]

    paid = await router.sale("pay_r", 3_000, "EUR", VISA, router.deadline(5))
    too_much = await router.refund("pay_r", paid.gateway, "rf-1", 3_001, "EUR", router.deadline(5))
    assert (too_much.outcome, too_much.reason) == (GO.FAILED, REFUND_EXCEEDS_CAPTURED)
    part = await router.refund("pay_r", paid.gateway, "rf-1", 1_000, "EUR", router.deadline(5))
    assert (part.outcome, part.refunded_minor, part.captured_minor) == (
        GO.PARTIALLY_REFUNDED, 1_000, 3_000,
    )  # fmt: skip
    assert part.gateway_reference != paid.gateway_reference
    same = await router.refund("pay_r", paid.gateway, "rf-1", 1_000, "EUR", router.deadline(5))
    assert (same.refunded_minor, same.gateway_reference) == (1_000, part.gateway_reference)
    rest = await router.refund("pay_r", paid.gateway, "rf-2", 2_000, "EUR", router.deadline(5))
    assert (rest.outcome, rest.refunded_minor) == (GO.REFUNDED, 3_000)
    after = await router.void("pay_r", paid.gateway, router.deadline(5))
    assert (after.outcome, after.reason) == (GO.FAILED, "NOT_VOIDABLE")
    assert [r["type"] for r in await report(router, "acq-a")] == [
        "CAPTURE",
        "CAPTURE",
        "REFUND",
        "REFUND",
    ]


def test_card_repr_masks_the_number() -> None:
    text = f"{VISA!r} {SaleRequest('pay', 1, 'EUR', VISA)!r}"
    assert "4242424242424242" not in text
    assert "****4242" in text
