"""Balance adjustments from other systems (AdjustBalance): usage charging debiting a
prepaid balance, a goodwill credit, a correction.

An adjustment is, in this order:

1. checked (INVALID_ARGUMENT naming the field) and bound to its key: a key already used
   answers its stored result when the payload is the same (a replay, nothing moves
   again) and FAILED_PRECONDITION when it is not, as Pay does;
2. sequenced with the account's payments: it waits for the account's payments in flight
   and holds the account busy meanwhile (``Pipeline.account_held``), so a payment never
   validates against a balance an adjustment is about to move;
3. refused, as a stored DECLINED result (INSUFFICIENT_CREDIT, Pay's decline for a
   balance that does not cover it), when it would take a prepaid balance below zero
   and does not allow it;
4. journalled: its row is written PENDING, durable before anything moves;
5. moved in the engine's ledger (a plain transfer with an id derived from the
   adjustment's, so a redo is a no-op);
6. applied in billing in one transaction: AR legs, audit row, the balance moved by the
   adjustment's delta, the row APPLIED (store/adjustments.py);
7. handed to the engine's in-memory table, which the next payment's validation reads.

A crash anywhere after 4 leaves a PENDING row; recovery (at start, or a retry with the
same key) redoes 5 and 6, so every journalled adjustment ends applied exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from quickpay_engine.domain import Plan
from quickpay_engine.errors import IdempotencyConflict, InvalidArgument, StoreError, echo
from quickpay_engine.settlement.ledger_book import LedgerBook
from quickpay_engine.settlement.refunds import KeyedLocks
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.adjustments import (
    ADJUSTMENT_KEY_CONFLICT,
    APPLIED,
    DECLINED,
    INSUFFICIENT_CREDIT,
    PENDING,
    AdjustmentRow,
    balance_delta,
)
from quickpay_engine.store.executor import StoreThread
from quickpay_engine.store.sqlite import SettledState

log = logging.getLogger(__name__)

# Bounds of the request's text (INVALID_ARGUMENT past them).
KEY_MAX = 255
ACCOUNT_ID_MAX = 64
REASON_MAX = 1_024
SOURCE_MAX = 64
# The largest amount one adjustment may move, in minor units: far above any real one,
# and far from int64's edge, so no balance can overflow by adjustments.
AMOUNT_MAX = 10**15

# Fault injection for the crash tests: when QUICKPAY_FAULT_ADJUST names a point
# ("after_journal": the row PENDING, nothing moved; "after_transfer": the ledger moved,
# billing not), the process kills itself there with SIGKILL.
FAULT_ENV = "QUICKPAY_FAULT_ADJUST"


@dataclass(frozen=True, slots=True)
class AdjustmentOutcome:
    """What the AdjustBalance RPC answers."""

    adjustment_id: str
    idempotency_key: str
    applied: bool
    balance_after_minor: int
    currency: str
    decline_reason: str = ""
    decline_detail: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class AdjustmentRequest:
    """An AdjustBalance request whose bounds are checked."""

    idempotency_key: str
    account_id: str
    amount_minor: int
    currency: str
    reason: str
    source_system: str
    allow_negative: bool


def check_request(r: AdjustmentRequest) -> None:
    """INVALID_ARGUMENT naming the first field that is wrong on its face."""
    if not 1 <= len(r.idempotency_key) <= KEY_MAX or not r.idempotency_key.isprintable():
        raise InvalidArgument("idempotency_key", f"must be 1 to {KEY_MAX} printable characters")
    if not r.account_id:
        raise InvalidArgument("account_id", "is required")
    if len(r.account_id) > ACCOUNT_ID_MAX or "\x00" in r.account_id:
        raise InvalidArgument("account_id", f"at most {ACCOUNT_ID_MAX} characters, no NUL")
    if r.amount_minor == 0:
        raise InvalidArgument("amount.amount_minor", "must not be zero")
    if abs(r.amount_minor) > AMOUNT_MAX:
        raise InvalidArgument("amount.amount_minor", f"at most {AMOUNT_MAX} either way")
    if not r.currency:
        raise InvalidArgument("amount.currency", "is required")
    for field, value, longest in (
        ("reason", r.reason, REASON_MAX),
        ("source_system", r.source_system, SOURCE_MAX),
    ):
        if not value.strip():
            raise InvalidArgument(field, "is required")
        if len(value) > longest or "\x00" in value:
            raise InvalidArgument(field, f"at most {longest} characters, no NUL")


class Adjustments:
    """The AdjustBalance RPC's logic, and the recovery of adjustments left PENDING."""

    def __init__(
        self,
        store: SqliteStore,
        thread: StoreThread,
        book: LedgerBook,
        account_held: Callable[[str], contextlib.AbstractAsyncContextManager[None]],
        on_states: Callable[[list[SettledState]], None],
    ) -> None:
        """``account_held`` sequences the adjustment with the account's payments
        (``Pipeline.account_held``); ``on_states`` hands the account's new balance to
        the engine's table."""
        self._store = store
        self._thread = thread
        self._book = book
        self._account_held = account_held
        self._on_states = on_states
        self._key_locks = KeyedLocks()

    async def adjust(self, r: AdjustmentRequest) -> AdjustmentOutcome:
        """Applies ``r`` once (see the module docstring). The work goes on whatever the
        caller does: a caller that goes away (a cancelled RPC) leaves no adjustment half
        done in a running server, and a retry with the key gets its result."""
        check_request(r)
        task = asyncio.ensure_future(self._held(r))
        task.add_done_callback(_retrieved)
        return await asyncio.shield(task)

    async def _held(self, r: AdjustmentRequest) -> AdjustmentOutcome:
        async with self._key_locks.hold(r.idempotency_key), self._account_held(r.account_id):
            return await self._adjust(r)

    async def _adjust(self, r: AdjustmentRequest) -> AdjustmentOutcome:
        existing = await self._thread.run(self._store.adjustment_by_key, r.idempotency_key)
        if existing is not None:
            return await self._replay(existing, r)
        sub = await self._thread.run(self._store.subscriber, r.account_id)
        if sub is None:
            raise InvalidArgument("account_id", f"no account {echo(r.account_id)}")
        if r.currency != sub.currency:
            raise InvalidArgument(
                "amount.currency", f"the account is in {sub.currency}, not {echo(r.currency)}"
            )
        after = sub.balance_minor + balance_delta(sub.plan, r.amount_minor)
        row = AdjustmentRow(
            "adj_" + uuid.uuid4().hex, r.idempotency_key, r.account_id, r.amount_minor,
            r.currency, r.reason, r.source_system, r.allow_negative,
            created_at_us=time.time_ns() // 1_000,
        )  # fmt: skip
        if sub.plan is Plan.PREPAID and after < 0 and not r.allow_negative:
            row = _declined(row, sub.balance_minor)
        stored = await self._thread.run(self._store.begin_adjustment, row)
        if stored.adjustment_id != row.adjustment_id:
            # Another caller took the key meanwhile (another process on this store).
            return await self._replay(stored, r)
        if stored.status == DECLINED:
            return _outcome(stored)
        _fault("after_journal")
        return await self._finish(stored, replayed=False)

    async def _replay(self, stored: AdjustmentRow, r: AdjustmentRequest) -> AdjustmentOutcome:
        wanted = (
            r.account_id, r.amount_minor, r.currency, r.reason, r.source_system,
            r.allow_negative,
        )  # fmt: skip
        if stored.payload != wanted:
            raise IdempotencyConflict(ADJUSTMENT_KEY_CONFLICT)
        if stored.status == PENDING:
            # Journalled by a call that never finished (a crash, billing down): finished
            # now, once; the caller never had its answer.
            return await self._finish(stored, replayed=True)
        return _outcome(stored, replayed=True)

    async def _finish(self, row: AdjustmentRow, replayed: bool) -> AdjustmentOutcome:
        account = await self._thread.run(self._store.subscriber, row.account_id)
        if account is None:
            raise StoreError(f"adjustment {row.adjustment_id}: account {row.account_id} is gone")
        await self._book.adjust(row.adjustment_id, account, row.amount_minor)
        _fault("after_transfer")
        state = await self._thread.run(self._store.finish_adjustment, row.adjustment_id)
        if state is not None:
            self._on_states([state])
        await self._book.anchor(self._store.audit_head)
        done = await self._thread.run(self._store.adjustment_by_key, row.idempotency_key)
        assert done is not None and done.status == APPLIED
        return _outcome(done, replayed=replayed)

    async def recover(self) -> list[str]:
        """Finishes every adjustment left PENDING (before serving, or by `quickpay
        recover`); returns their ids."""
        pending = await self._thread.run(self._store.pending_adjustments)
        for row in pending:
            async with self._account_held(row.account_id):
                await self._finish(row, replayed=True)
            log.info("adjustment %s of %s finished by recovery", row.adjustment_id, row.account_id)
        return [row.adjustment_id for row in pending]


def _retrieved(task: asyncio.Future[AdjustmentOutcome]) -> None:
    # Read here, so a task whose caller left does not warn of an unretrieved error.
    if not task.cancelled():
        task.exception()


def _declined(row: AdjustmentRow, balance_minor: int) -> AdjustmentRow:
    return AdjustmentRow(
        row.adjustment_id, row.idempotency_key, row.account_id, row.amount_minor,
        row.currency, row.reason, row.source_system, row.allow_negative, DECLINED,
        0, balance_minor, INSUFFICIENT_CREDIT,
        f"the prepaid balance is {balance_minor} minor units; the adjustment of"
        f" {row.amount_minor} would take it below zero (allow_negative_balance is false)",
        row.created_at_us, row.created_at_us,
    )  # fmt: skip


def _outcome(row: AdjustmentRow, replayed: bool = False) -> AdjustmentOutcome:
    return AdjustmentOutcome(
        row.adjustment_id, row.idempotency_key, row.status == APPLIED, row.balance_after_minor,
        row.currency, row.decline_reason, row.decline_detail, replayed,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def no_sequencing(_account_id: str) -> AsyncIterator[None]:
    """``account_held`` where no payment can run (`quickpay recover`)."""
    yield


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
