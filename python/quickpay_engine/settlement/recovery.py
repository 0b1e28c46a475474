"""Finishing what a crash (or an unanswered gateway) left half done.

The sources of truth, in the order the saga writes them:

- the store's journal (``settlement_attempts``): the request, before anything else;
- the ledger's states: RESERVED before a gateway is called, CAPTURED once it took the
  money, SETTLED or ROLLED_BACK at the end;
- the gateways' books, by merchant reference (our payment id);
- the store's payment history: the commit that makes a payment settled (or declined).

For every payment journalled or left unfinished in the ledger, recovery reads all four
and takes the one step that completes it: a payment the database settled gets its hold
posted; one a gateway captured is committed and posted (or given back at the gateway
when billing can never take it); one no gateway captured is voided there (so a late
request cannot land) and rolled back. A payment whose gateway cannot be reached is left
as it is, for the next sweep. ``plan`` only looks (``quickpay recover --dry-run``).

Refunds left PENDING are sent again with the same refund id (the gateway is idempotent
on it) and recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from quickpay_engine.domain import PaymentIntent, PaymentRecord, PaymentStatus
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.gateways.types import GatewayOutcome, GatewayResult
from quickpay_engine.logs import payment_fields
from quickpay_engine.settlement.ledger_book import (
    CAPTURED,
    RESERVED,
    ROLLED_BACK,
    SETTLED,
    LedgerBook,
    Movement,
    account_kind,
)
from quickpay_engine.store import Decision, SqliteStore
from quickpay_engine.store.executor import StoreThread
from quickpay_engine.store.sqlite import RefundRow, SettledState

log = logging.getLogger(__name__)

# The decline reason of a payment captured and then given back because billing refused it.
BILLING_REFUSED = "BILLING_REFUSED"
# Each gateway lookup or void recovery makes gets this long.
LOOKUP_S = 5.0
# Payments finished at once (each needs a gateway round trip or two).
CONCURRENCY_MAX = 32
_SETTLED = (PaymentStatus.SETTLED, PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED)


@dataclass(frozen=True, slots=True)
class Action:
    """What recovery did (or, in a dry run, would do) for one payment or refund."""

    payment_id: str
    ledger_state: str
    action: str
    detail: str = ""


class Recovery:
    """Finishes unfinished payments and refunds; see the module docstring."""

    def __init__(
        self,
        store: SqliteStore,
        thread: StoreThread,
        book: LedgerBook,
        router: GatewayRouter,
        on_states: Callable[[list[SettledState]], None] = lambda _: None,
    ) -> None:
        self._store = store
        self._thread = thread
        self._book = book
        self._router = router
        self._on_states = on_states
        self._finisher = RefundFinisher(store, thread, book, router)

    async def run(self, exclude: Collection[str] = (), dry_run: bool = False) -> list[Action]:
        """Finishes (or, with ``dry_run``, only describes) every unfinished payment not
        in ``exclude``: the live set of payments the pipeline is working on, which it
        fills before it writes anything for a payment and empties once it is done."""
        journal = await self._thread.run(self._store.attempts)
        unfinished = self._book.unfinished()
        limit = asyncio.Semaphore(CONCURRENCY_MAX)

        async def one(payment_id: str) -> Action | None:
            async with limit:
                # Looked at only now, with no await between the two: a payment the
                # pipeline still holds is left to it, and one it has finished since the
                # reads above is seen in the state it finished in.
                if payment_id in exclude:
                    return None
                (state,) = self._book.states([payment_id])
                return await self._payment(payment_id, state, journal.get(payment_id), dry_run)

        ids = sorted(set(journal) | set(unfinished))
        actions = [a for a in await asyncio.gather(*(one(p) for p in ids)) if a is not None]
        refunds = await self._thread.run(self._store.pending_refunds)
        actions.extend([await self._refund(r, dry_run) for r in refunds])
        for a in actions:
            log.info(
                "recovery: %s (%s): %s %s", a.payment_id, a.ledger_state, a.action, a.detail,
                extra=payment_fields(a.payment_id),
            )  # fmt: skip
        return actions

    async def _payment(
        self, payment_id: str, state: int, intent: PaymentIntent | None, dry_run: bool
    ) -> Action:
        name = _STATE_NAMES.get(state, str(state))
        record: PaymentRecord | None = await self._thread.run(
            self._store.get_payment, payment_id=payment_id
        )
        if record is not None:
            return await self._after_commit(payment_id, state, name, record, dry_run)
        if intent is None and state == RESERVED:
            # Held, but the journal entry written beside the hold never landed: the
            # payment was never sent to a gateway (that waits for both), so the hold goes.
            if not dry_run:
                await self._book.roll_back([payment_id])
            return Action(payment_id, name, "rolled back", "never sent to a gateway")
        if state in (0, ROLLED_BACK, SETTLED) or intent is None:
            if state == CAPTURED:
                # Captured with no request journalled: the journal is written before any
                # gateway call, so this is not the saga's doing; report it, do not guess.
                return Action(payment_id, name, "left alone", "no journalled request")
            if not dry_run:
                await self._thread.run(self._store.forget_attempts, [payment_id])
            return Action(payment_id, name, "forgotten", "never sent to a gateway")
        found = await self._find(payment_id, intent, state, dry_run)
        if found is None:
            return Action(payment_id, name, "waiting", "a gateway did not answer")
        if found.outcome is not GatewayOutcome.CAPTURED:
            if not dry_run:
                await self._book.roll_back([payment_id])
                await self._thread.run(self._store.forget_attempts, [payment_id])
            return Action(payment_id, name, "rolled back", f"not captured ({found.outcome.name})")
        if dry_run:
            return Action(payment_id, name, "commit and settle", f"captured at {found.gateway}")
        if state == RESERVED:
            await self._book.capture([payment_id])
        decision = Decision(
            payment_id, intent, gateway=found.gateway, gateway_reference=found.gateway_reference
        )
        outcomes, states = await self._thread.run(self._store.commit_batch, [decision])
        await self._book.anchor(self._store.audit_head)
        if outcomes[0].status is PaymentStatus.SETTLED and not outcomes[0].replayed:
            await self._book.settle([payment_id])
            self._on_states(states)
            return Action(payment_id, name, "committed and settled", f"captured at {found.gateway}")
        return await self._give_back(payment_id, name, intent, found, outcomes[0].decline_reason)

    async def _after_commit(
        self, payment_id: str, state: int, name: str, record: PaymentRecord, dry_run: bool
    ) -> Action:
        """The database decided; the ledger follows it."""
        if record.outcome.status in _SETTLED:
            if state in (RESERVED, CAPTURED) and not dry_run:
                if state == RESERVED:
                    await self._book.capture([payment_id])
                await self._book.settle([payment_id])
            return Action(payment_id, name, "settled", "billing had committed it")
        if state in (RESERVED, CAPTURED) and not dry_run:
            await self._book.roll_back([payment_id])
        return Action(payment_id, name, "rolled back", "billing had declined it")

    async def _find(
        self, payment_id: str, intent: PaymentIntent, state: int, dry_run: bool
    ) -> GatewayResult | None:
        """Where the payment stands at the gateways: CAPTURED (with gateway and
        reference) or something else proven not captured; None when unknown."""
        deadline = self._router.deadline(LOOKUP_S)
        if state == CAPTURED or dry_run:
            result = await self._router.status(payment_id, deadline)
            if result.outcome is GatewayOutcome.UNKNOWN:
                return None
            return result
        # RESERVED: the sale may have reached any candidate. Resolving looks it up and,
        # where it was never seen, voids the reference, so it can no longer land.
        names = self._router.candidates(intent.method.kind, intent.currency)
        results = await asyncio.gather(
            *(self._router.resolve(payment_id, n, deadline) for n in names)
        )
        for r in results:
            if r.outcome is GatewayOutcome.CAPTURED:
                return r
        if any(r.outcome is GatewayOutcome.UNKNOWN for r in results):
            return None
        return results[0] if results else GatewayResult(payment_id, GatewayOutcome.NOT_FOUND)

    async def _give_back(
        self, payment_id: str, name: str, intent: PaymentIntent, found: GatewayResult, why: str
    ) -> Action:
        done = await give_back(
            self._store, self._thread, self._book, self._router,
            Decision(payment_id, intent, gateway=found.gateway), why,
        )  # fmt: skip
        if not done:
            return Action(payment_id, name, "waiting", "billing refused; give-back unanswered")
        return Action(payment_id, name, "given back", f"billing refused it ({why})")

    async def _refund(self, refund: RefundRow, dry_run: bool) -> Action:
        if dry_run:
            return Action(refund.payment_id, "refund", "send again", refund.refund_id)
        result = await self._finisher.send(refund, self._router.deadline(LOOKUP_S))
        if result is None:
            return Action(refund.payment_id, "refund", "waiting", refund.refund_id)
        if isinstance(result, GatewayResult):
            return Action(refund.payment_id, "refund", "declined", result.reason)
        self._on_states([result])
        return Action(refund.payment_id, "refund", "finished", refund.refund_id)


async def give_back(
    store: SqliteStore,
    thread: StoreThread,
    book: LedgerBook,
    router: GatewayRouter,
    d: Decision,
    why: str,
    record_failed: bool = True,
) -> bool:
    """A payment ``d.gateway`` captured but billing can never record (its account is
    gone, or its key was settled by another writer meanwhile): the capture is voided
    (or, past the same day, refunded) at the gateway, the hold rolled back, and the
    payment recorded as FAILED (unless ``record_failed`` is False: then nothing is
    recorded and its key stays free for a retry). False when the gateway did not
    answer: it stays unfinished, for the next sweep."""
    log.error("payment %s was captured at %s but billing refused it (%s): giving it back",
              d.payment_id, d.gateway, why)  # fmt: skip
    deadline = router.deadline(LOOKUP_S)
    result = await router.void(d.payment_id, d.gateway, deadline)
    if result.outcome is GatewayOutcome.FAILED:
        result = await router.refund(
            d.payment_id, d.gateway, "rf_" + d.payment_id.removeprefix("pay_"),
            d.intent.amount_minor, d.intent.currency, deadline,
        )  # fmt: skip
    if result.outcome is GatewayOutcome.UNKNOWN:
        return False
    await book.roll_back([d.payment_id])
    failed = dataclasses.replace(
        d, decline_reason=BILLING_REFUSED, decline_detail=why, gateway_reference="", failed=True
    )
    try:
        # Recorded as FAILED where the store can (a key another payment holds cannot be,
        # nor anything while the database is down: then the journal entry stays, and a
        # later sweep, finding the payment rolled back, forgets it).
        if record_failed:
            await thread.run(store.commit_batch, [failed])
        await thread.run(store.forget_attempts, [d.payment_id])
    except Exception as err:
        log.warning(
            "payment %s given back; billing could not record it (%s)", d.payment_id, err,
            extra=payment_fields(d.payment_id, d.intent.idempotency_key),
        )  # fmt: skip
    return True


class RefundFinisher:
    """Sends a journalled refund to its gateway and records the answer (the Refund RPC
    and recovery share it)."""

    def __init__(
        self, store: SqliteStore, thread: StoreThread, book: LedgerBook, router: GatewayRouter
    ) -> None:
        self._store = store
        self._thread = thread
        self._book = book
        self._router = router

    async def send(self, refund: RefundRow, deadline: float) -> SettledState | GatewayResult | None:
        """The account's state after a refund made; the gateway's refusal (recorded as
        DECLINED); None when the gateway did not answer (still PENDING) or the refund was
        recorded already. The gateway, account and currency are those of the refund's
        own payment, read here, never a caller's: a refund moves only its payment's
        money."""
        record = await self._thread.run(self._store.get_payment, payment_id=refund.payment_id)
        assert record is not None, "a refund row references its payment"
        confirmation = record.outcome.confirmation
        gateway = confirmation.gateway if confirmation else ""
        intent = record.intent
        assert refund.currency == intent.currency, "a refund is in its payment's currency"
        result = await self._router.refund(
            refund.payment_id, gateway, refund.refund_id, refund.amount_minor, refund.currency,
            deadline,
        )  # fmt: skip
        if result.outcome is GatewayOutcome.UNKNOWN:
            return None
        if result.outcome not in (GatewayOutcome.REFUNDED, GatewayOutcome.PARTIALLY_REFUNDED):
            await self._thread.run(
                self._store.decline_refund, refund.refund_id, result.reason or "REFUND_REFUSED",
                f"gateway {gateway} refused the refund", _now_us(),
            )  # fmt: skip
            return result
        # The ledger first: should the process die before the database records the
        # refund, recovery sends it again and the ledger's transfer (same id) is a no-op.
        move = Movement(refund.payment_id, intent.account_id, refund.amount_minor, intent.currency)
        await self._book.refund(refund.refund_id, move)
        _, _, state = await self._thread.run(
            self._store.finish_refund, refund.refund_id, result.gateway_reference
        )
        await self._book.anchor(self._store.audit_head)
        return state


def _now_us() -> int:
    return time.time_ns() // 1_000


def _movement(payment_id: str, intent: PaymentIntent) -> Movement:
    return Movement(
        payment_id,
        intent.account_id,
        intent.amount_minor,
        intent.currency,
        account_kind(intent.purpose),
    )


_STATE_NAMES = {0: "UNKNOWN", RESERVED: "RESERVED", CAPTURED: "CAPTURED", SETTLED: "SETTLED",
                ROLLED_BACK: "ROLLED_BACK"}  # fmt: skip
