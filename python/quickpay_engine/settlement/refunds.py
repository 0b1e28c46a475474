"""Refunds: full or partial, idempotent on their key, through the gateway that captured
the payment, never more than was captured.

A refund is journalled (PENDING) before the gateway is asked, so a crash between the
two is finished by recovery with the same refund id, which the gateway is idempotent on.

A refund key is bound to its payment and payload (amount, currency) the way a Pay key
is: reused for anything else it is refused (FAILED_PRECONDITION) and nothing moves.
Calls with one key run one at a time, so the second finds the first's row and is
answered from it or refused; refunds of one payment run one at a time, so two
concurrent partial refunds cannot together pass the captured amount.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from quickpay_engine.domain import PaymentRecord, PaymentStatus, Purpose
from quickpay_engine.errors import (
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    OutcomePending,
    echo,
)
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.gateways.types import GatewayResult
from quickpay_engine.settlement.ledger_book import LedgerBook
from quickpay_engine.settlement.recovery import RefundFinisher
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.executor import StoreThread
from quickpay_engine.store.sqlite import REFUND_KEY_CONFLICT, RefundRow, SettledState

# A refund's gateway call gets this long when the caller set no deadline.
REFUND_DEADLINE_S = 10.0
REFUND_EXCEEDS_CAPTURED = "REFUND_EXCEEDS_CAPTURED"
NOT_REFUNDABLE = "NOT_REFUNDABLE"
CREDIT_ALREADY_USED = "CREDIT_ALREADY_USED"
_REFUNDABLE = (PaymentStatus.SETTLED, PaymentStatus.PARTIALLY_REFUNDED)


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """What the Refund RPC answers."""

    refund_id: str
    payment_id: str
    idempotency_key: str
    status: PaymentStatus  # the payment's, after the refund
    refunded_total_minor: int
    currency: str
    gateway_reference: str = ""
    replayed: bool = False
    decline_reason: str = ""
    decline_detail: str = ""


@dataclass(slots=True)
class _Held:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class KeyedLocks:
    """One ``asyncio.Lock`` per name, kept while any caller holds or waits for it and
    removed after the last one: a lock dropped while a caller still waits on it would
    let the next caller take a fresh lock and run beside that waiter."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        held = self._held.get(name)
        if held is None:
            held = self._held[name] = _Held()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if held.users == 0:
                del self._held[name]


class Refunds:
    """The Refund RPC's logic."""

    def __init__(
        self,
        store: SqliteStore,
        thread: StoreThread,
        book: LedgerBook,
        router: GatewayRouter,
        on_states: Callable[[list[SettledState]], None],
    ) -> None:
        self._store = store
        self._thread = thread
        self._router = router
        self._finisher = RefundFinisher(store, thread, book, router)
        self._on_states = on_states
        # Taken in this order, key then payment: one lock per refund key and one per
        # payment being refunded right now.
        self._key_locks = KeyedLocks()
        self._locks = KeyedLocks()

    async def refund(
        self,
        idempotency_key: str,
        payment_id: str,
        amount_minor: int | None,
        currency: str,
        reason: str,
        deadline: float | None = None,
    ) -> RefundOutcome:
        """Refunds ``amount_minor`` (None: what is left) of a settled payment."""
        if not 1 <= len(idempotency_key) <= 255 or not idempotency_key.isprintable():
            raise InvalidArgument("idempotency_key", "must be 1 to 255 printable characters")
        if not payment_id:
            raise InvalidArgument("payment_id", "is required")
        if amount_minor is not None and amount_minor <= 0:
            raise InvalidArgument("amount.amount_minor", "must be positive")
        async with self._key_locks.hold(idempotency_key), self._locks.hold(payment_id):
            return await self._refund(
                idempotency_key, payment_id, amount_minor, currency, reason, deadline
            )

    async def _refund(
        self,
        key: str,
        payment_id: str,
        amount_minor: int | None,
        currency: str,
        reason: str,
        deadline: float | None,
    ) -> RefundOutcome:
        record = await self._thread.run(self._store.get_payment, payment_id=payment_id)
        if record is None:
            raise NotFound(f"no payment with payment_id {echo(payment_id)}")
        intent = record.intent
        if currency and currency != intent.currency:
            raise InvalidArgument(
                "amount.currency", f"the payment is in {intent.currency}, not {currency}"
            )
        existing = await self._thread.run(self._store.refund_by_key, key)
        if existing is not None:
            if existing.payment_id != payment_id or amount_minor not in (
                None, existing.amount_minor,
            ):  # fmt: skip
                raise IdempotencyConflict(REFUND_KEY_CONFLICT)
            if existing.status != "PENDING":
                return await self._answer(existing, replayed=True)
            refund = existing
        else:
            remaining = intent.amount_minor - record.refunded_minor
            amount = remaining if amount_minor is None else amount_minor
            refund = RefundRow(
                "rf_" + uuid.uuid4().hex, key, payment_id, max(amount, 1), intent.currency,
                reason, created_at_us=time.time_ns() // 1_000,
            )  # fmt: skip
            refusal = await self._refusal(record.outcome.status, amount, remaining, record)
            # The store refuses a key that holds another payment's refund (or another
            # amount's) rather than hand that row back.
            refund = await self._thread.run(self._store.begin_refund, refund)
            if refusal is not None:
                await self._thread.run(
                    self._store.decline_refund, refund.refund_id, *refusal, time.time_ns() // 1000
                )
                return await self._answer(refund)
        loop = asyncio.get_running_loop()
        result = await self._finisher.send(refund, deadline or loop.time() + REFUND_DEADLINE_S)
        if result is None:
            stored = await self._thread.run(self._store.refund_by_key, key)
            if stored is None or stored.status == "PENDING":
                raise OutcomePending(
                    f"the gateway has not answered refund {refund.refund_id}; the engine"
                    " finishes it by itself: retry with the same key to learn the result"
                )
        elif not isinstance(result, GatewayResult):
            self._on_states([result])
        return await self._answer(refund)

    async def _refusal(
        self, status: PaymentStatus, amount: int, remaining: int, record: PaymentRecord
    ) -> tuple[str, str] | None:
        """Why the refund is refused before any gateway is asked, or None."""
        if status not in _REFUNDABLE:
            return NOT_REFUNDABLE, f"the payment is {status.name}, not settled"
        if amount > remaining or remaining <= 0:
            return REFUND_EXCEEDS_CAPTURED, f"{remaining} minor units are left to refund"
        if record.intent.purpose is Purpose.PREPAID_TOPUP:
            # Credit already spent on calls cannot be handed back as money.
            sub = await self._thread.run(self._store.subscriber, record.intent.account_id)
            if sub is not None and sub.balance_minor < amount:
                return CREDIT_ALREADY_USED, f"only {sub.balance_minor} minor units of credit left"
        return None

    async def _answer(self, refund: RefundRow, replayed: bool = False) -> RefundOutcome:
        stored = await self._thread.run(self._store.refund_by_key, refund.idempotency_key)
        record = await self._thread.run(self._store.get_payment, payment_id=refund.payment_id)
        assert stored is not None and record is not None
        return RefundOutcome(
            refund_id=stored.refund_id,
            payment_id=stored.payment_id,
            idempotency_key=stored.idempotency_key,
            status=record.outcome.status,
            refunded_total_minor=record.refunded_minor,
            currency=stored.currency,
            gateway_reference=stored.gateway_reference,
            replayed=replayed,
            decline_reason=stored.decline_reason,
            decline_detail=stored.decline_detail,
        )
