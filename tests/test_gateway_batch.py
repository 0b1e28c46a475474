"""The router's batch path (one core call per gateway per batch) against real simulator
processes with transport faults: the same outcomes, attempt for attempt, as the
per-payment path, and never a capture twice; and the core's sale call read for
answers the simulator never gives (a fraction, a 4xx, a 5xx, not JSON)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway_procs import recent_business_days
from quickpay_engine._engine import HttpPool, HttpSetupError, InvalidBatch, Sales
from quickpay_engine.completions import completions
from quickpay_engine.gateways.breaker import BreakerState, CircuitBreaker
from quickpay_engine.gateways.client import (
    NOT_SENT,
    PAID,
    REFUSED,
    SALE_PATH,
    UNKNOWN,
    GatewayClient,
    GatewayUnreachable,
)
from quickpay_engine.gateways.config import BreakerSettings, GatewaysConfig
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.gateways.sim.faults import FaultModel
from quickpay_engine.gateways.supervisor import SimulatorProcess, start_simulator, stop_simulator
from quickpay_engine.gateways.types import (
    BankAccount,
    Card,
    CarrierBalance,
    GatewayOutcome,
    GatewayResult,
    SaleRequest,
    Wallet,
    sales_of_requests,
)
from test_gateway_sim import gateway_config, set_faults

VISA = Card("4242424242424242", 12, 2031)
GO = GatewayOutcome
N = 12


@pytest.fixture
async def sims(tmp_path: Path) -> AsyncIterator[dict[str, SimulatorProcess]]:
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


async def booked(router: GatewayRouter, gateway: str) -> list[dict[str, str]]:
    """The gateway's settlement report rows of the recent business days (what it
    captured, voided, ...; a sale booked before midnight is on the day before's)."""
    rows: list[dict[str, str]] = []
    for day in recent_business_days():
        text, _ = await router.client(gateway).settlement_report(day, 5)
        rows += csv.DictReader(io.StringIO(text))
    return rows


def requests(prefix: str, n: int = N) -> list[SaleRequest]:
    return [SaleRequest(f"{prefix}{k}", 100 + k, "EUR", VISA) for k in range(n)]


async def per_payment(
    router: GatewayRouter, sales: list[SaleRequest], deadline: float
) -> list[GatewayResult]:
    """The per-payment path (one coroutine and one single sale per payment), as the
    router ran every sale before the batch path."""
    return list(
        await asyncio.gather(
            *(
                router._sale_from(r, router.candidates(r.instrument.kind, r.currency), deadline, [])
                for r in sales
            )
        )
    )


def shape(results: list[GatewayResult]) -> list[tuple[GatewayOutcome, str, tuple[str, ...]]]:
    return sorted((r.outcome, r.gateway, r.attempts) for r in results)


async def both_paths(
    sims: dict[str, SimulatorProcess], retries: int = 0, timeout_s: float = 6
) -> tuple[list[GatewayResult], list[GatewayResult]]:
    """The same fault met by a batch and by single sales, each with a fresh router (so
    the breakers start alike), on references of their own."""
    async with GatewayRouter(config_for(sims), same_gateway_retries=retries) as router:
        batch = await router.sale_many(requests("pay_b"), router.deadline(timeout_s))
    async with GatewayRouter(config_for(sims), same_gateway_retries=retries) as router:
        single = await per_payment(router, requests("pay_s"), router.deadline(timeout_s))
    return batch, single


async def captured_once(sims: dict[str, SimulatorProcess], results: list[GatewayResult]) -> None:
    """Every gateway's books: each payment captured at most once, anywhere, and exactly
    where its result says it was."""
    async with GatewayRouter(config_for(sims)) as router:
        rows = [
            (row["merchant_reference"], name)
            for name in sims
            for row in await booked(router, name)
            if row["status"] == "SETTLED"
        ]
    assert len(rows) == len({ref for ref, _ in rows}), f"captured twice: {sorted(rows)}"
    said = {(r.payment_id, r.gateway) for r in results if r.outcome is GO.CAPTURED}
    assert {row for row in rows if row[0] in {r.payment_id for r in results}} == said


async def test_a_clean_batch_is_one_call_per_gateway(
    sims: dict[str, SimulatorProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = GatewayClient.sales

    def counted(self: GatewayClient, sales, rows, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(rows))
        return original(self, sales, rows, *args, **kw)

    monkeypatch.setattr(GatewayClient, "sales", counted)
    async with GatewayRouter(config_for(sims)) as router:
        sales = [
            *requests("pay_c", 40),
            SaleRequest("pay_w", 500, "KES", Wallet("mpesa", "254700000003")),
            SaleRequest("pay_d", 700, "EUR", Card("4000000000009995", 12, 2031)),
        ]
        results = await router.sale_many(sales, router.deadline(5))
    assert calls == [42]  # every payment's first gateway is acq-a: one call
    assert [r.payment_id for r in results] == [s.payment_id for s in sales]
    assert [(r.outcome, r.gateway, r.attempts) for r in results[:40]] == [
        (GO.CAPTURED, "acq-a", ("acq-a:captured",))
    ] * 40
    assert [r.captured_minor for r in results[:41]] == [s.amount_minor for s in sales[:41]]
    assert (results[41].outcome, results[41].reason) == (GO.DECLINED, "INSUFFICIENT_FUNDS")
    assert results[0].gateway_reference.startswith("ACQA-") and results[0].currency == "EUR"
    await captured_once(sims, results)


async def test_a_half_open_breaker_lets_its_probes_through_and_moves_the_rest(
    sims: dict[str, SimulatorProcess],
) -> None:
    async with GatewayRouter(config_for(sims)) as router:
        # acq-a's breaker half-open with one probe slot: the batch's first payment goes
        # there, the others (breaker open for them) on to acq-b, as one at a time would.
        clock = time.monotonic
        router._breakers["acq-a"] = breaker = CircuitBreaker(
            BreakerSettings(failure_threshold=1, open_ms=1, half_open_max_calls=1), clock
        )
        breaker.record_failure()
        await asyncio.sleep(0.01)
        assert breaker.state is BreakerState.HALF_OPEN
        results = await router.sale_many(requests("pay_h", 3), router.deadline(5))
    assert [(r.outcome, r.gateway, r.attempts) for r in results] == [
        (GO.CAPTURED, "acq-a", ("acq-a:captured",)),
        (GO.CAPTURED, "acq-b", ("acq-a:breaker_open", "acq-b:captured")),
        (GO.CAPTURED, "acq-b", ("acq-a:breaker_open", "acq-b:captured")),
    ]
    assert router.breaker_state("acq-a") is BreakerState.CLOSED  # the probe answered
    await captured_once(sims, results)


async def test_server_errors_same_as_single_sales_and_never_twice(
    sims: dict[str, SimulatorProcess],
) -> None:
    # Every sale at acq-a is a 503 (nothing processed): looked up, not found, voided
    # there, captured at acq-b. The breaker (3 failures) opens on the batch's failures.
    await set_faults(sims["acq-a"].url, server_error_rate=1.0)
    batch, single = await both_paths(sims)
    expected = ("acq-a:ambiguous", "acq-a:not_found", "acq-a:voided", "acq-b:captured")
    assert shape(batch) == shape(single) == [(GO.CAPTURED, "acq-b", expected)] * N
    await captured_once(sims, batch + single)


async def test_timeouts_then_late_processing_same_as_single_sales(
    sims: dict[str, SimulatorProcess],
) -> None:
    # acq-a holds each sale 1.5 s, past the 1 s timeout, then books it unless it was
    # voided meanwhile: the batch path must void before failing over, as single sales do.
    await set_faults(sims["acq-a"].url, timeout_rate=1.0, hang_ms=1_500)
    batch, single = await both_paths(sims)
    expected = ("acq-a:ambiguous", "acq-a:not_found", "acq-a:voided", "acq-b:captured")
    assert shape(batch) == shape(single) == [(GO.CAPTURED, "acq-b", expected)] * N
    await asyncio.sleep(1.0)  # every held request has woken up and tried to book
    await captured_once(sims, batch + single)


async def test_lost_responses_are_looked_up_same_as_single_sales(
    sims: dict[str, SimulatorProcess],
) -> None:
    # Processed, answer withheld past the timeout: the lookup finds each captured.
    await set_faults(sims["acq-a"].url, lost_response_rate=1.0, hang_ms=3_000)
    batch, single = await both_paths(sims, retries=1)
    expected = ("acq-a:ambiguous", "acq-a:captured")
    assert shape(batch) == shape(single) == [(GO.CAPTURED, "acq-a", expected)] * N
    await captured_once(sims, batch + single)


async def test_refused_connections_fail_over_as_a_batch(
    sims: dict[str, SimulatorProcess],
) -> None:
    a = sims["acq-a"]
    a.process.send_signal(signal.SIGKILL)
    await a.process.wait()
    batch, single = await both_paths(sims)
    expected = ("acq-a:unreachable", "acq-b:captured")
    assert shape(batch) == shape(single) == [(GO.CAPTURED, "acq-b", expected)] * N
    async with GatewayRouter(config_for(sims)) as router:
        first = await router.sale_many(requests("pay_o"), router.deadline(5))
        # The batch's failures opened the breaker: the next batch skips acq-a.
        then = await router.sale_many(requests("pay_p"), router.deadline(5))
    assert {r.attempts for r in first} == {expected}
    assert {r.attempts for r in then} == {("acq-a:breaker_open", "acq-b:captured")}
    sims.pop("acq-a")
    await captured_once(sims, batch + single + first + then)
    sims["acq-a"] = a


async def test_mixed_faults_never_capture_twice(sims: dict[str, SimulatorProcess]) -> None:
    # Seeded dice at acq-a: 5xx, held-then-processed timeouts and lost answers mixed
    # with clean captures, in one batch; every fate is settled and booked once.
    await set_faults(
        sims["acq-a"].url, seed=7, server_error_rate=0.2, timeout_rate=0.15,
        lost_response_rate=0.15, hang_ms=1_200,
    )  # fmt: skip
    async with GatewayRouter(config_for(sims, pool_max=8)) as router:
        results = await router.sale_many(requests("pay_m", 60), router.deadline(8))
    assert {r.outcome for r in results} <= {GO.CAPTURED, GO.UNKNOWN}
    assert sum(r.outcome is GO.CAPTURED for r in results) >= 50
    await asyncio.sleep(1.3)  # the held requests have all woken up
    await captured_once(sims, [r for r in results if r.outcome is GO.CAPTURED])


async def test_pool_max_bounds_sales_in_flight_across_batches(
    sims: dict[str, SimulatorProcess],
) -> None:
    # 50 ms per sale and 2 slots: two batches of 10 at once take about 0.5 s (20 sales,
    # two at a time), not 0.05 s, and all are captured at acq-a (within its 3 s timeout).
    await set_faults(sims["acq-a"].url, latency_ms_median=50, latency_ms_p99=50)
    config = config_for(sims, pool_max=2, timeout_ms=3_000, lookup_timeout_ms=100)
    async with GatewayRouter(config) as router:
        start = time.monotonic()
        one, two = await asyncio.gather(
            router.sale_many(requests("pay_x", 10), router.deadline(10)),
            router.sale_many(requests("pay_y", 10), router.deadline(10)),
        )
        took = time.monotonic() - start
    assert {(r.outcome, r.gateway) for r in one + two} == {(GO.CAPTURED, "acq-a")}
    assert took >= 0.45  # a lower bound holds on any machine: 10 rounds of 50 ms


async def test_per_payment_deadlines_and_routes_in_one_call(
    sims: dict[str, SimulatorProcess],
) -> None:
    async with GatewayRouter(config_for(sims)) as router:
        sales = [
            SaleRequest("pay_ok", 100, "EUR", VISA),
            SaleRequest("pay_late", 100, "EUR", VISA),
            SaleRequest("pay_usd", 100, "USD", VISA),
            SaleRequest("pay_iban", 100, "EUR", BankAccount("GR1601101250000000012300695")),
        ]
        deadlines = [
            router.deadline(5),
            router.deadline(-1),
            router.deadline(5),
            router.deadline(5),
        ]
        results = await router.sale_many(sales, deadlines)
        with pytest.raises(ValueError, match="deadlines"):
            await router.sale_many(sales, deadlines[:2])
    assert [(r.outcome, r.reason) for r in results] == [
        (GO.CAPTURED, ""),
        (GO.FAILED, "DEADLINE_EXCEEDED"),
        (GO.FAILED, "NO_GATEWAY_ROUTE"),
        (GO.FAILED, "NO_GATEWAY_ROUTE"),
    ]


# -- the core's sale call against canned answers -------------------------------------------


async def canned_server(answers: dict[str, tuple[int, bytes]]) -> asyncio.Server:
    """An HTTP/1.1 server that answers each sale by its merchant reference and records
    the bodies it was sent."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = json.loads(await reader.readexactly(length))
                received.append(body)
                status, text = answers[body["merchant_reference"]]
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (status, len(text), text)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    received: list[dict] = []
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    server.received = received  # type: ignore[attr-defined]
    return server


async def test_queued_single_sales_go_out_together_and_a_row_the_core_refuses_is_named() -> None:
    client = GatewayClient(gateway_config("acq-x", "http://127.0.0.1:9"))  # discard: refused
    await client.start()
    try:
        # One turn's single sales leave in one core call; each caller hears its own row.
        card = VISA.wire()
        refused = await asyncio.gather(
            *(client.queue_sale(f"q{k}", 100, "EUR", card, 1.0) for k in range(3)),
            return_exceptions=True,
        )
        assert [type(r) for r in refused] == [GatewayUnreachable] * 3
        assert all("connect" in str(r) for r in refused)
        # A row the core cannot take (a reference that is not text) fails the turn's
        # sales before any is sent, naming what was wrong, not "closed".
        bad = asyncio.gather(
            client.queue_sale(b"q-bytes", 100, "EUR", card, 1.0),  # type: ignore[arg-type]
            client.queue_sale("q-ok", 100, "EUR", card, 1.0),
            return_exceptions=True,
        )
        assert [str(r) for r in await bad] == ["acq-x: TypeError"] * 2
    finally:
        await client.close()


async def test_the_core_reads_each_answer_as_the_python_client_did() -> None:
    payment = (
        b'{"state":"CAPTURED","gateway_reference":"G-1","captured_minor":300,"currency":"EUR"}'
    )
    answers = {
        "ok": (200, payment),
        "fraction": (200, payment.replace(b"300", b"300.5")),
        "exponent": (200, payment.replace(b"300", b"3e2")),
        "html": (200, b"<html>"),
        "unavailable": (503, b'{"error":{"code":"DOWN","message":"later"}}'),
        "refused": (422, b'{"error":{"code":"INVALID_METHOD","message":"no such kind"}}'),
        "bare4xx": (404, b"nope"),
    }
    server = await canned_server(answers)
    port = server.sockets[0].getsockname()[1]
    pool = HttpPool(f"http://127.0.0.1:{port}", connections_max=4, keepalive_s=5, sales_max=2)
    methods = [
        VISA, Wallet("mpesa", "2547"), BankAccount("GR16011012"), CarrierBalance(), VISA, VISA,
        VISA,
    ]  # fmt: skip
    requests = [
        SaleRequest(ref, 300, "EUR", method) for ref, method in zip(answers, methods, strict=True)
    ]
    try:
        out = await sale_many(pool, sales_of_requests(requests, [2.0] * len(requests)))
    finally:
        server.close()
    outcomes, statuses, states, references, _, captured, _, currencies, errors, messages = out
    assert list(outcomes) == [PAID, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, REFUSED, REFUSED]
    assert (states[0], references[0], captured[0], currencies[0]) == ("CAPTURED", "G-1", 300, "EUR")
    assert errors[4] == "HTTP 503"
    assert (statuses[5], errors[5], messages[5]) == (422, "INVALID_METHOD", "no such kind")
    assert (statuses[6], errors[6], messages[6]) == (404, "HTTP_404", "no error body")
    # The bodies are the wire format Instrument.wire() describes.
    sent = {body["merchant_reference"]: body for body in server.received}  # type: ignore[attr-defined]
    for ref, method in zip(answers, methods, strict=True):
        assert sent[ref] == {
            "merchant_reference": ref, "amount_minor": 300, "currency": "EUR",
            "method": method.wire(),
        }  # fmt: skip


async def sale_many(
    pool: HttpPool, sales: Sales, rows: list[int] | None = None, timeout_s: float = 2.0,
    now: float = 0.0, keep_s: float = 0.0,
) -> tuple:  # fmt: skip
    """The core's sale call, awaited as the client awaits it (its completion queue): the
    given rows (all by default), each ending min(``keep_s``, half its budget) before its
    deadline (``now`` on their clock)."""
    rows = list(range(len(sales))) if rows is None else rows
    queue, future = completions()
    pool.sale_many_into(queue, future, SALE_PATH, sales, rows, [timeout_s] * len(rows), now, keep_s)
    return await future


async def test_the_core_sale_call_refuses_bad_rows_and_reports_no_connection() -> None:
    pool = HttpPool("http://127.0.0.1:9", connections_max=1, keepalive_s=1)
    sales = sales_of_requests([SaleRequest("r", 1, "EUR", VISA)], [1.0])
    with pytest.raises(HttpSetupError, match="row 1 out of range"):
        await sale_many(pool, sales, [1])
    with pytest.raises(HttpSetupError, match="timeouts_s"):
        await sale_many(pool, sales, timeout_s=-1.0)
    cheque = Sales(["r"], [1], ["EUR"], [0], [""], [0], [0], [""], [""], [""], [1.0])
    with pytest.raises(HttpSetupError, match="method kind 0"):
        await sale_many(pool, cheque)
    with pytest.raises(InvalidBatch, match="kinds"):
        Sales(["r"], [1], ["EUR"], [], [""], [0], [0], [""], [""], [""], [1.0])
    # A lone surrogate (a Python-built request) cannot be written into a body.
    odd = Sales(["r\ud800"], [1], ["EUR"], [1], [""], [0], [0], [""], [""], [""], [1.0])
    with pytest.raises(HttpSetupError, match="sale_many"):
        await sale_many(pool, odd)
    # Port 9 (discard) refuses the connection: never sent. A deadline already passed, or
    # one whose end leaves under 5 ms: late.
    assert list((await sale_many(pool, sales))[0]) == [NOT_SENT]
    assert (await sale_many(pool, sales))[8] == ["connect"]
    assert (await sale_many(pool, sales, now=1.0))[8] == ["late"]
    assert (await sale_many(pool, sales, now=0.996))[8] == ["late"]
    # What the router keeps to resolve an unknown outcome, at most half the budget: 20
    # ms left keeps 10 (sent), 8 ms keeps 4 (late).
    assert (await sale_many(pool, sales, now=0.98, keep_s=0.999))[8] == ["connect"]
    assert (await sale_many(pool, sales, now=0.992, keep_s=0.999))[8] == ["late"]
    assert (await sale_many(pool, sales, now=0.99, keep_s=0.0))[8] == ["connect"]
    # A deadline with no end is sent (at most its timeout), one not a number is late.
    endless = sales_of_requests([SaleRequest("r", 1, "EUR", VISA)], [float("inf")])
    assert (await sale_many(pool, endless))[8] == ["connect"]
    never = sales_of_requests([SaleRequest("r", 1, "EUR", VISA)], [float("nan")])
    assert (await sale_many(pool, never))[8] == ["late"]
    with pytest.raises(InvalidBatch, match="timeouts_s"):
        pool.sale_many_into(*completions(), SALE_PATH, sales, [0], [], 0.0, 0.0)
    # Many calls at once, each answered through the one queue, in any order.
    many = await asyncio.gather(*(sale_many(pool, sales) for _ in range(50)))
    assert {tuple(out[8]) for out in many} == {("connect",)}
