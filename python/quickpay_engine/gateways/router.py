"""GatewayRouter: the interface the settlement saga calls.

Routing: a payment goes to the first configured gateway that takes its method and
currency and whose circuit breaker lets the call through; the next one is the
failover.

Safety: a payment is never captured twice. A request whose fate is unknown (timeout,
dropped connection, 5xx) is resolved by a status lookup by merchant reference before
anything else happens to it. Found: that is the outcome. Not found: the same gateway
may be asked again (the acquirer is idempotent on the reference, so a retry cannot
capture twice); before leaving the gateway for another, the reference is voided there
(a technical cancel, which also stops a sale still in flight from landing later).
When the lookup or the void cannot be done before the deadline, the outcome is
UNKNOWN and names the gateway: the saga must then call ``resolve`` before it settles
the payment either way.

Deadlines are absolute times on the router's clock (``time.monotonic`` by default, the
event loop's clock); each request gets what is left of it, capped by the gateway's
own timeout.

Batches: ``sale_many`` sends all the payments routed to the same gateway in one core
call (``GatewayClient.sales``: bodies built, answers read in Rust), consults the
gateway's breaker for each payment before and records the batch's verdicts after, and
moves the payments that were not taken there (never sent, or VOIDED by an earlier
cancel) to their next gateway as another batch. Only a payment whose fate at a gateway
is unknown leaves the batch: it is looked up (and retried or voided) on its own, with
the same rules as ever. Each gateway runs at most ``pool_max`` sales at a time, across
batches and single sales (the slots are the core pool's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from quickpay_engine._engine import Sales
from quickpay_engine.domain import MethodKind
from quickpay_engine.gateways.breaker import BreakerState, CircuitBreaker
from quickpay_engine.gateways.client import (
    NOT_SENT,
    PAID,
    REFUSED,
    GatewayAmbiguous,
    GatewayBusy,
    GatewayClient,
    GatewayRefused,
    GatewayUnreachable,
)
from quickpay_engine.gateways.config import GatewayConfig, GatewaysConfig
from quickpay_engine.gateways.types import (
    DEADLINE_EXCEEDED,
    GATEWAY_UNAVAILABLE,
    INVALID_REQUEST,
    NO_GATEWAY_ROUTE,
    UNRESOLVED,
    GatewayOutcome,
    GatewayResult,
    Instrument,
    SaleOutcomes,
    SaleRequest,
    sale_request,
    sales_of_requests,
)

log = logging.getLogger(__name__)

# One sale_many call takes at most this many payments (the settlement batcher sends at
# most 512); above it the call is refused with ValueError before any request is sent.
SALE_BATCH_MAX = 4_096
# Below this much time left, no new request is started: it could not finish anyway.
BUDGET_MIN_S = 0.005
# Pause between attempts to resolve an unknown outcome (lookup or void), so a gateway
# that is restarting is not hammered; the deadline bounds the number of attempts.
RESOLVE_PAUSE_S = 0.05
STATES = {
    "CAPTURED": GatewayOutcome.CAPTURED,
    "DECLINED": GatewayOutcome.DECLINED,
    "AUTHORIZED": GatewayOutcome.AUTHORIZED,
    "VOIDED": GatewayOutcome.VOIDED,
    "REFUNDED": GatewayOutcome.REFUNDED,
    "PARTIALLY_REFUNDED": GatewayOutcome.PARTIALLY_REFUNDED,
}
T = TypeVar("T")


class _Unresolved(Exception):
    """The deadline passed before a lookup or void could be answered."""


class GatewayRouter:
    """Routes, fails over and resolves unknown outcomes across the configured gateways.

    Use as ``async with GatewayRouter(config) as router:`` (or ``start``/``close``).
    Many calls may run at once; each gateway's pool bounds its open connections.
    """

    def __init__(
        self,
        config: GatewaysConfig,
        clock: Callable[[], float] = time.monotonic,
        same_gateway_retries: int = 1,
    ) -> None:
        self.config = config
        self._clock = clock
        self._retries = same_gateway_retries
        self._gateways: dict[str, GatewayConfig] = {g.name: g for g in config.gateways}
        self._clients = {g.name: GatewayClient(g) for g in config.gateways}
        self._breakers = {g.name: CircuitBreaker(g.breaker, clock) for g in config.gateways}
        # Failover order per (method, currency), computed once.
        self._routes: dict[tuple[MethodKind, str], list[str]] = {}

    async def start(self) -> None:
        """Opens every gateway's connection pool."""
        for client in self._clients.values():
            await client.start()

    async def close(self) -> None:
        """Closes every pool."""
        for client in self._clients.values():
            await client.close()

    async def __aenter__(self) -> GatewayRouter:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def deadline(self, timeout_s: float) -> float:
        """The absolute deadline ``timeout_s`` from now on the router's clock."""
        return self._clock() + timeout_s

    def candidates(self, method: MethodKind, currency: str) -> list[str]:
        """The gateways that take this method and currency, in failover order."""
        return [g.name for g in self.config.gateways if g.takes(method, currency)]

    def breaker_state(self, gateway: str) -> BreakerState:
        """The gateway's circuit breaker state now."""
        return self._breakers[gateway].state

    def client(self, gateway: str) -> GatewayClient:
        """The gateway's HTTP adapter (for authorize/capture and reports)."""
        return self._clients[gateway]

    async def sale(
        self, payment_id: str, amount_minor: int, currency: str, instrument: Instrument,
        deadline: float,
    ) -> GatewayResult:  # fmt: skip
        """Authorizes and captures one payment; see ``sale_many``."""
        request = SaleRequest(payment_id, amount_minor, currency, instrument)
        (result,) = await self.sale_many([request], deadline)
        return result

    async def sale_many(
        self, requests: Sequence[SaleRequest], deadline: float | Sequence[float]
    ) -> list[GatewayResult]:
        """Authorizes and captures each payment, by batches; one result per request.

        ``deadline`` is one for all, or one per request. CAPTURED and DECLINED are
        final. FAILED means proven not captured anywhere (reason NO_GATEWAY_ROUTE,
        GATEWAY_UNAVAILABLE or DEADLINE_EXCEEDED). UNKNOWN (reason UNRESOLVED) means
        the named gateway may hold a capture: call ``resolve`` before settling the
        payment either way. The one-object-per-sale form of ``sale_columns``.
        """
        n = len(requests)
        if n > SALE_BATCH_MAX:
            raise ValueError(f"sale_many takes at most {SALE_BATCH_MAX} payments")
        if isinstance(deadline, int | float):
            deadlines = [float(deadline)] * n
        else:
            deadlines = list(deadline)
            if len(deadlines) != n:
                raise ValueError(f"sale_many: {len(deadlines)} deadlines for {n} payments")
        out = await self.sale_columns(sales_of_requests(requests, deadlines))
        return [out.result(i, r.payment_id) for i, r in enumerate(requests)]

    async def sale_columns(self, sales: Sales) -> SaleOutcomes:
        """``sale_many`` of a batch given as the core's ``Sales``, answered as columns:
        no object is built per payment but for the rare one that leaves the batch (its
        fate at a gateway unknown, or refused there)."""
        n = len(sales)
        if n > SALE_BATCH_MAX:
            raise ValueError(f"sale_many takes at most {SALE_BATCH_MAX} payments")
        run = _Run(sales)
        first: dict[str, list[int]] = {}
        # Grouped by method and currency in the core: the routes are looked up once a
        # group.
        for group, (kind, currency, idx) in enumerate(sales.routes()):
            names = self._route(MethodKind(kind), currency)
            run.routes.append(names)
            run.group[idx] = group
            if names:
                first.setdefault(names[0], []).extend(idx)
            else:
                for i in idx:
                    run.fail(i, NO_GATEWAY_ROUTE)
        await self._batches(run, first)
        return run.out

    def _route(self, method: MethodKind, currency: str) -> list[str]:
        names = self._routes.get((method, currency))
        if names is None:
            names = self._routes[method, currency] = self.candidates(method, currency)
        return names

    async def _batches(self, run: _Run, groups: dict[str, list[int]]) -> None:
        await asyncio.gather(*(self._batch_at(run, name, idx) for name, idx in groups.items()))

    def _onward(self, run: _Run, moved: list[int]) -> dict[str, list[int]]:
        """The next gateway of each payment not taken where it was sent, by gateway;
        those with none left have FAILED (GATEWAY_UNAVAILABLE)."""
        groups: dict[str, list[int]] = {}
        for i in moved:
            run.at[i] += 1
            names = run.names(i)
            if run.at[i] < len(names):
                groups.setdefault(names[run.at[i]], []).append(i)
            else:
                run.fail(i, GATEWAY_UNAVAILABLE)
        return groups

    async def _batch_at(self, run: _Run, name: str, idx: list[int]) -> None:
        """One gateway's share of a batch: those its breaker lets through in one core
        call; the others (and those not taken there) on to their next gateway."""
        gw, breaker = self._gateways[name], self._breakers[name]
        now = self._clock()
        sales = run.sales
        send, late = sales.due(idx, now, BUDGET_MIN_S)
        for i in late:
            run.fail(i, DEADLINE_EXCEEDED)
        # As many as the breaker lets through, in order (as ``allow`` for each).
        allowed = breaker.allow_many(len(send))
        send, moved = send[:allowed], send[allowed:]
        for i in moved:
            run.attempts(i).append(f"{name}:breaker_open")
        if not send:
            await self._batches(run, self._onward(run, moved))
            return
        timeout_s = gw.timeout_ms / 1000
        # Each sale ends early enough to leave min(keep_s, half its budget) for
        # resolving an unknown outcome (``_sale_end_s``, applied by the core).
        keep_s = 2 * gw.lookup_timeout_ms / 1000
        onward = asyncio.ensure_future(self._batches(run, self._onward(run, moved)))
        try:
            answers = await self._clients[name].sales(
                sales, send, [timeout_s] * len(send), now, keep_s
            )
        except asyncio.CancelledError:
            for _ in send:
                breaker.release()
            onward.cancel()
            raise
        failures = successes = 0
        moved = []
        unknown: list[int] = []
        tags = {state: f"{name}:{outcome.name.lower()}" for state, outcome in STATES.items()}
        # Every column bound once: the loop below runs once a sale.
        states, references = answers.states, answers.gateway_references
        reasons, captured, refunded = (
            answers.decline_reasons,
            answers.captured_minor,
            answers.refunded_minor,
        )
        currencies, said = answers.currencies, answers.outcomes
        out = run.out
        out_outcomes, out_gateways, out_references, out_reasons = (
            out.outcomes,
            out.gateways,
            out.references,
            out.reasons,
        )
        out_captured, out_refunded, out_currencies, out_attempts = (
            out.captured_minor,
            out.refunded_minor,
            out.currencies,
            out.attempts,
        )
        tried = run.tried_before
        for j, i in enumerate(send):
            outcome = said[j]
            if outcome == PAID:
                successes += 1
                state = states[j]
                if state == "VOIDED":
                    # Cancelled here before (by a void before failover): never captured
                    # here, and never will be.
                    run.attempts(i).append(tags[state])
                    moved.append(i)
                    continue
                out_outcomes[i] = STATES[state]
                out_gateways[i] = name
                out_references[i] = references[j]
                out_reasons[i] = reasons[j]
                out_captured[i] = captured[j]
                out_refunded[i] = refunded[j]
                out_currencies[i] = currencies[j]
                before = tried(i)
                out_attempts[i] = (tags[state],) if before is None else (*before, tags[state])
            elif outcome == NOT_SENT:
                error = answers.errors[j]
                if error in ("busy", "late"):
                    breaker.release()  # never sent: no verdict on the gateway
                    if error == "busy":
                        run.attempts(i).append(f"{name}:busy")
                else:
                    failures += 1
                    run.attempts(i).append(f"{name}:unreachable")
                moved.append(i)
            elif outcome == REFUSED:
                successes += 1
                code = answers.errors[j]
                run.attempts(i).append(f"{name}:refused:{code}")
                log.error(
                    "gateway %s refused sale %s: %s %s: %s", name, sales.payment_id(i),
                    answers.statuses[j], code, answers.messages[j],
                )  # fmt: skip
                run.fail(i, INVALID_REQUEST, name)
            else:
                failures += 1
                run.attempts(i).append(f"{name}:ambiguous")
                log.warning(
                    "sale %s at %s: %s: %s; looking it up", sales.payment_id(i), name, name,
                    answers.errors[j],
                )  # fmt: skip
                unknown.append(i)
        # The batch's verdicts: every failure counts (so a gateway down for the whole
        # batch opens its breaker as it would one sale at a time), and any answer means
        # the gateway is up, which closes it.
        for _ in range(failures):
            breaker.record_failure()
        if successes:
            breaker.record_success()
        await asyncio.gather(
            onward,
            self._batches(run, self._onward(run, moved)),
            *(self._after_unknown(run, name, i) for i in unknown),
        )

    async def _after_unknown(self, run: _Run, name: str, i: int) -> None:
        """A payment whose sale at ``name`` may have landed: resolved there on its own,
        then (proven not captured there) on to its next gateways one at a time."""
        request, deadline = sale_request(run.sales, i), run.sales.deadline(i)
        attempts = run.attempts(i)
        result = await self._sale_at(name, request, deadline, attempts, unknown=True)
        if result is None:
            result = await self._sale_from(
                request, run.names(i)[run.at[i] + 1 :], deadline, attempts
            )
        run.out.set(i, result)

    async def resolve(self, payment_id: str, gateway: str, deadline: float) -> GatewayResult:
        """Settles an UNKNOWN sale's fate at ``gateway``: looks it up, and if the gateway
        never saw it, voids the reference there so a late request cannot land.

        Returns CAPTURED, DECLINED, AUTHORIZED, REFUNDED, PARTIALLY_REFUNDED, VOIDED
        (proven not captured: safe to settle nowhere) or UNKNOWN (call again later).
        """
        try:
            payment = await self._resolve(gateway, payment_id, deadline)
        except _Unresolved:
            return GatewayResult(payment_id, GatewayOutcome.UNKNOWN, gateway, reason=UNRESOLVED)
        except GatewayRefused as err:
            return GatewayResult(payment_id, GatewayOutcome.UNKNOWN, gateway, reason=err.code)
        return _result(payment_id, gateway, payment)

    async def status(
        self, payment_id: str, deadline: float, gateway: str | None = None
    ) -> GatewayResult:
        """The payment's state at ``gateway`` (or at every gateway, when None).

        NOT_FOUND when no gateway asked has seen the reference; UNKNOWN when one could
        not answer before the deadline. Looks only: changes nothing.
        """
        names = [gateway] if gateway else list(self._gateways)
        found = await asyncio.gather(*(self._status_at(n, payment_id, deadline) for n in names))
        # Prefer money-moving states: a reference voided at one gateway after failover
        # and captured at another is captured.
        order = {GatewayOutcome.VOIDED: 1, GatewayOutcome.NOT_FOUND: 3, GatewayOutcome.UNKNOWN: 2}
        return min(found, key=lambda r: order.get(r.outcome, 0))

    async def void(self, payment_id: str, gateway: str, deadline: float) -> GatewayResult:
        """Cancels an authorization or a same-day capture at ``gateway``.

        VOIDED (or DECLINED, already nothing to cancel) on success; FAILED with
        NOT_VOIDABLE when it must be refunded instead; UNKNOWN past the deadline
        (voids are idempotent: call again).
        """
        client = self._clients[gateway]
        try:
            payment = await self._until(
                deadline, self._gateways[gateway].lookup_timeout_ms,
                lambda t: client.void(payment_id, t),
            )  # fmt: skip
        except _Unresolved:
            return GatewayResult(payment_id, GatewayOutcome.UNKNOWN, gateway, reason=UNRESOLVED)
        except GatewayRefused as err:
            return GatewayResult(payment_id, GatewayOutcome.FAILED, gateway, reason=err.code)
        return _result(payment_id, gateway, payment)

    async def refund(
        self, payment_id: str, gateway: str, refund_id: str, amount_minor: int, currency: str,
        deadline: float,
    ) -> GatewayResult:  # fmt: skip
        """Refunds ``amount_minor`` of a capture at ``gateway``; idempotent on refund_id.

        REFUNDED or PARTIALLY_REFUNDED (``refunded_minor`` is the total refunded so far,
        ``gateway_reference`` the refund's own); FAILED with REFUND_EXCEEDS_CAPTURED,
        NOT_REFUNDABLE or CURRENCY_MISMATCH when refused; UNKNOWN past the deadline
        (call again with the same refund_id).
        """
        client = self._clients[gateway]
        try:
            reply = await self._until(
                deadline, self._gateways[gateway].timeout_ms,
                lambda t: client.refund(payment_id, refund_id, amount_minor, currency, t),
            )  # fmt: skip
        except _Unresolved:
            return GatewayResult(payment_id, GatewayOutcome.UNKNOWN, gateway, reason=UNRESOLVED)
        except GatewayRefused as err:
            return GatewayResult(payment_id, GatewayOutcome.FAILED, gateway, reason=err.code)
        result = _result(payment_id, gateway, reply["payment"])
        return GatewayResult(
            payment_id, result.outcome, gateway, reply["gateway_reference"], "",
            result.captured_minor, result.refunded_minor, result.currency,
        )  # fmt: skip

    async def _sale_from(
        self, request: SaleRequest, names: Sequence[str], deadline: float, attempts: list[str]
    ) -> GatewayResult:
        """One payment through ``names`` in failover order (after a batch's attempt)."""
        for name in names:
            if deadline - self._clock() < BUDGET_MIN_S:
                return _failed(request, DEADLINE_EXCEEDED, attempts)
            result = await self._sale_at(name, request, deadline, attempts)
            if result is not None:
                return result
        return _failed(request, GATEWAY_UNAVAILABLE, attempts)

    async def _sale_at(
        self, name: str, request: SaleRequest, deadline: float, attempts: list[str],
        *, unknown: bool = False,
    ) -> GatewayResult | None:  # fmt: skip
        """The outcome at one gateway, or None when proven not captured there.

        ``unknown``: a sale of this payment was sent there already (by a batch) and its
        fate is unknown, its breaker verdict recorded: it is looked up first."""
        gw, client, breaker = self._gateways[name], self._clients[name], self._breakers[name]
        ref = request.payment_id
        sent = unknown
        tries = 1 + self._retries
        if unknown:
            tries -= 1
            try:
                found = await self._lookup(name, ref, deadline)
            except (_Unresolved, GatewayRefused):
                return _unknown(request, name, attempts)
            if found is not None:
                return self._final(request, name, found, attempts)
            attempts.append(f"{name}:not_found")
        for _ in range(tries):
            budget = deadline - self._clock()
            if budget < BUDGET_MIN_S:
                break
            if not breaker.allow():
                attempts.append(f"{name}:breaker_open")
                break
            # The sale waits for one of the gateway's sale slots first (in the core's
            # pool): time spent waiting there is not the gateway's slowness, and a sale
            # that never got a slot was never sent, so the next gateway may take it
            # without any lookup.
            try:
                payment = await client.queue_sale(
                    ref, request.amount_minor, request.currency, request.instrument.wire(),
                    gw.timeout_ms / 1000, end_s=self._sale_end_s(gw, budget),
                )  # fmt: skip
            except asyncio.CancelledError:
                breaker.release()
                raise
            except GatewayBusy as err:
                breaker.release()
                if err.reason == "busy":
                    attempts.append(f"{name}:busy")
                break
            except GatewayUnreachable:
                breaker.record_failure()
                attempts.append(f"{name}:unreachable")
                break
            except GatewayRefused as err:
                breaker.record_success()
                attempts.append(f"{name}:refused:{err.code}")
                log.error("gateway %s refused sale %s: %s", name, ref, err)
                return _failed(request, INVALID_REQUEST, attempts, name)
            except GatewayAmbiguous as err:
                breaker.record_failure()
                sent = True
                attempts.append(f"{name}:ambiguous")
                log.warning("sale %s at %s: %s; looking it up", ref, name, err)
                try:
                    found = await self._lookup(name, ref, deadline)
                except (_Unresolved, GatewayRefused):
                    return _unknown(request, name, attempts)
                if found is None:
                    attempts.append(f"{name}:not_found")
                    continue
                payment = found
            else:
                breaker.record_success()
            return self._final(request, name, payment, attempts)
        if not sent:
            return None
        # Leaving a gateway that may still hold the request: cancel the reference there
        # first, so that it cannot be captured behind our back.
        try:
            payment = await self._resolve(name, ref, deadline)
        except (_Unresolved, GatewayRefused):
            return _unknown(request, name, attempts)
        return self._final(request, name, payment, attempts)

    @staticmethod
    def _sale_end_s(gw: GatewayConfig, budget: float) -> float:
        """How long from now a sale may still run, given ``budget`` to its deadline:
        time is kept back to resolve an unknown outcome (a lookup and a void) should
        this sale time out. The sale itself is also capped by the gateway's timeout."""
        return budget - min(2 * gw.lookup_timeout_ms / 1000, budget / 2)

    def _final(
        self, request: SaleRequest, name: str, payment: dict[str, Any], attempts: list[str]
    ) -> GatewayResult | None:
        result = _result(request.payment_id, name, payment)
        attempts.append(f"{name}:{result.outcome.name.lower()}")
        if result.outcome is GatewayOutcome.VOIDED:
            return None  # cancelled here (by us, before failover): never captured here
        return GatewayResult(
            result.payment_id, result.outcome, name, result.gateway_reference, result.reason,
            result.captured_minor, result.refunded_minor, result.currency, tuple(attempts),
        )  # fmt: skip

    async def _status_at(self, name: str, payment_id: str, deadline: float) -> GatewayResult:
        try:
            payment = await self._lookup(name, payment_id, deadline)
        except _Unresolved:
            return GatewayResult(payment_id, GatewayOutcome.UNKNOWN, name, reason=UNRESOLVED)
        except GatewayRefused as err:
            return GatewayResult(payment_id, GatewayOutcome.UNKNOWN, name, reason=err.code)
        if payment is None:
            return GatewayResult(payment_id, GatewayOutcome.NOT_FOUND, name)
        return _result(payment_id, name, payment)

    async def _lookup(self, name: str, ref: str, deadline: float) -> dict[str, Any] | None:
        client = self._clients[name]
        return await self._until(
            deadline, self._gateways[name].lookup_timeout_ms, lambda t: client.lookup(ref, t)
        )

    async def _resolve(self, name: str, ref: str, deadline: float) -> dict[str, Any]:
        """Looks the reference up; if the gateway never saw it, voids it there."""
        payment = await self._lookup(name, ref, deadline)
        if payment is not None:
            return payment
        client = self._clients[name]
        return await self._until(
            deadline, self._gateways[name].lookup_timeout_ms, lambda t: client.void(ref, t)
        )

    async def _until(
        self, deadline: float, timeout_ms: int, call: Callable[[float], Awaitable[T]]
    ) -> T:
        """Repeats an idempotent call until it is answered or the deadline passes."""
        while True:
            budget = deadline - self._clock()
            if budget < BUDGET_MIN_S:
                raise _Unresolved
            try:
                return await call(min(timeout_ms / 1000, budget))
            except (GatewayUnreachable, GatewayAmbiguous):
                pause = min(RESOLVE_PAUSE_S, max(0.0, deadline - self._clock()))
                await asyncio.sleep(pause)


class _Run:
    """One sale_columns call's state: per payment, its gateways in failover order (its
    route group's), which of them it is at, what was tried (made on first use) and its
    outcome's columns."""

    __slots__ = ("_attempts", "at", "group", "out", "routes", "sales")

    def __init__(self, sales: Sales) -> None:
        n = len(sales)
        self.sales = sales
        self.routes: list[list[str]] = []  # by route group
        self.group = np.zeros(n, np.intp)  # each payment's route group
        self.at = [0] * n
        self.out = SaleOutcomes(n)
        self._attempts: dict[int, list[str]] = {}

    def names(self, i: int) -> list[str]:
        """Payment ``i``'s gateways, in failover order."""
        return self.routes[self.group[i]]

    @property
    def tried_before(self) -> Callable[[int], list[str] | None]:
        """What was tried for a payment so far (None: nothing), as a function of its
        index: bound once by a loop over many payments."""
        return self._attempts.get

    def attempts(self, i: int) -> list[str]:
        found = self._attempts.get(i)
        if found is None:
            found = self._attempts[i] = []
        return found

    def fail(self, i: int, reason: str, gateway: str = "") -> None:
        """Payment ``i`` FAILED for ``reason`` (proven not captured anywhere)."""
        out = self.out
        out.outcomes[i] = GatewayOutcome.FAILED
        out.gateways[i] = gateway
        out.reasons[i] = reason
        out.currencies[i] = self.sales.currency(i)
        found = self._attempts.get(i)
        if found:
            out.attempts[i] = tuple(found)


def _result(payment_id: str, gateway: str, payment: dict[str, Any]) -> GatewayResult:
    return GatewayResult(
        payment_id,
        STATES[payment["state"]],
        gateway,
        payment["gateway_reference"],
        payment.get("decline_reason", ""),
        payment.get("captured_minor", 0),
        payment.get("refunded_minor", 0),
        payment.get("currency", ""),
    )


def _failed(
    request: SaleRequest, reason: str, attempts: list[str], gateway: str = ""
) -> GatewayResult:
    return GatewayResult(
        request.payment_id, GatewayOutcome.FAILED, gateway, reason=reason,
        currency=request.currency, attempts=tuple(attempts),
    )  # fmt: skip


def _unknown(request: SaleRequest, gateway: str, attempts: list[str]) -> GatewayResult:
    attempts.append(f"{gateway}:unresolved")
    return GatewayResult(
        request.payment_id, GatewayOutcome.UNKNOWN, gateway, reason=UNRESOLVED,
        currency=request.currency, attempts=tuple(attempts),
    )  # fmt: skip
