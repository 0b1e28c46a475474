"""The saga's use of the engine's durable ledger: accounts, holds and settlement states.

Every payment moves money from the gateway clearing account of its currency to the
subscriber's ledger account (what they owe, or their prepaid credit):

- reserve: a pending transfer (the hold) and the RESERVED state, durable before any
  gateway is called;
- capture: the CAPTURED state, logged as soon as the gateway took the money (the
  decision recovery rolls forward);
- settle: the hold posted and the SETTLED state, after the database commit;
- roll back: the hold voided and the ROLLED_BACK state;
- refund: a plain transfer back, from the subscriber's account to clearing;
- adjust: a plain transfer between the currency's adjustment account and the
  subscriber's, for a balance adjustment another system decided (AdjustBalance): into the
  subscriber's account when it is in their favour, out of it otherwise;
- anchor: after a database commit, the audit trail's head (its last row's seq and hash),
  one record per batch, so that `quickpay audit verify` finds a trail cut back behind it.

Ids are derived, never stored: a payment's pending transfer has the payment's own id,
its post and void transfers and every account id are hashes of a name. So a redo after
a crash addresses the same transfers, and the ledger's EXISTS code makes it a no-op.

The saga's steps (reserve, capture and void, settle and anchor, roll back) run whole on
the core's ledger threads (engine/src/python/saga.rs): each queues its commands for the
log and waits once for the fdatasync covering them, with no Python on the thread, and
its future is set from the event loop's own thread (``quickpay_engine.completions``).
Concurrent batches' steps share group commits. The rarer calls (refunds, adjustments,
snapshots) keep a small Python thread pool.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from quickpay_engine._engine import (
    Ledger,
    currency_numeric,
    ids_array,
    ids_list,
    ledger_result_codes,
)
from quickpay_engine.completions import completions
from quickpay_engine.domain import Plan, Purpose, SubscriberRow
from quickpay_engine.threads import name_os_thread

T = TypeVar("T")

log = logging.getLogger(__name__)

# Settlement states, as the ledger numbers them.
RESERVED, CAPTURED, SETTLED, ROLLED_BACK = 1, 2, 3, 4
# Account kinds, as the ledger numbers them.
KIND_RECEIVABLE, KIND_PREPAID, KIND_CLEARING = 1, 2, 3
# Result codes that mean "already done": a redo after a crash, harmless.
_CODES = {kind: dict(codes) for kind, codes in ledger_result_codes()}
TRANSFER_OK = {0, 19}  # OK, EXISTS
# Refunds, adjustments and snapshots that can wait on the log at once (the saga's
# steps have the core's threads); more queue for a thread.
LEDGER_THREADS = 2
# The ledger is snapshotted (and the log it covers removed) once this many records have
# been logged since the last snapshot: at a few records per batch, every hour or so
# under load, and the replay at start never reads more than this.
SNAPSHOT_RECORDS = 200_000


class LedgerRefused(Exception):
    """The ledger refused an operation the saga relies on (a bug or a capacity limit):
    the payment cannot go on and its batch fails."""


def payment_number(payment_id: str) -> int:
    """The ledger's 128-bit id of a payment: its 32 hex digits."""
    return int(payment_id.removeprefix("pay_"), 16)


def payment_name(number: int) -> str:
    """The inverse of ``payment_number``."""
    return f"pay_{number:032x}"


def derived_id(*parts: str) -> int:
    """A stable nonzero 128-bit id for a name (an account, a post or a void)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big") or 1


def account_kind(purpose: int) -> int:
    """The ledger account kind of the line a payment of this purpose is for: a bill is
    paid on a postpaid line (receivable), a top-up on a prepaid one (validation checks
    the plan fits the purpose)."""
    return KIND_RECEIVABLE if purpose == Purpose.BILL_PAYMENT else KIND_PREPAID


# ``account_kind`` of each purpose by number, and of any later number (the last): the
# form the core's ``Requests.holds`` reads it in.
KINDS_BY_PURPOSE = [account_kind(p) for p in range(max(Purpose) + 2)]


def subscriber_account(account_id: str) -> int:
    """The ledger account of a subscriber."""
    return derived_id("subscriber", account_id)


@functools.cache  # one per currency: a few ids, hashed once
def clearing_account(currency: str) -> int:
    """The gateway clearing account of a currency."""
    return derived_id("clearing", currency)


@functools.cache
def adjustment_account(currency: str) -> int:
    """The account balance adjustments of a currency move money to and from (the other
    systems' side)."""
    return derived_id("adjustments", currency)


def adjustment_transfer(adjustment_id: str) -> int:
    """The ledger id of an adjustment's transfer: a redo addresses the same one."""
    return derived_id("adjustment", adjustment_id)


@dataclass(frozen=True, slots=True)
class Movement:
    """One payment's money movement: ``amount_minor`` into the subscriber's account."""

    payment_id: str
    account_id: str
    amount_minor: int
    currency: str
    # The kind the subscriber's account is opened with by its first hold: a bill
    # payment is a postpaid line's (receivable), a top-up a prepaid line's.
    kind: int = 2  # KIND_PREPAID


class LedgerBook:
    """Batches of holds, posts, voids and states on one open ``Ledger``."""

    def __init__(self, ledger: Ledger, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.ledger = ledger
        self._clock_ns = clock_ns
        self._pool = ThreadPoolExecutor(
            LEDGER_THREADS, thread_name_prefix="ledger-calls", initializer=name_os_thread
        )
        # The last record the newest snapshot holds.
        self._snapshot_seq = int(ledger.recovery()["snapshot_seq"])

    async def snapshot_if_due(self, every_records: int = SNAPSHOT_RECORDS) -> int | None:
        """Snapshots the ledger once ``every_records`` records have been logged since the
        last snapshot, which also removes the log segments it covers: the log on disk,
        and the replay at the next start, stay bounded. Returns the snapshot's last
        record, or None when none was due. Appends go on while it is written."""
        if self.ledger.last_seq() - self._snapshot_seq < every_records:
            return None
        seq = await self._run(self.ledger.snapshot)
        log.info("ledger snapshot at record %d (previous at %d)", seq, self._snapshot_seq)
        self._snapshot_seq = seq
        return seq

    def close(self) -> None:
        """Waits for calls in flight, then closes the ledger."""
        self._pool.shutdown(wait=True)
        self.ledger.close()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _step(self, step: Callable[..., None], *args: object) -> None:
        """Runs one of the ledger's saga steps on its core threads; returns once what it
        logged is durable. Raises LedgerRefused with the step's refusal."""
        queue, future = completions()
        step(queue, future, self._clock_ns(), *args)
        refusal = await future
        if refusal is not None:
            raise LedgerRefused(refusal)

    # -- accounts --------------------------------------------------------------------

    def open_accounts(
        self,
        account_ids: Sequence[str],
        kinds: Sequence[int] | npt.NDArray[np.uint16],
        currencies: Sequence[str],
    ) -> None:
        """Opens the ledger accounts of these subscribers (``kinds``: KIND_RECEIVABLE or
        KIND_PREPAID per subscriber) and the clearing accounts of their currencies, the
        ones the ledger does not hold yet. A subscriber's account is opened by its first
        hold (``reserve``), not at start: the ledger holds an account per subscriber who
        has paid, never one per line of the base. One the ledger holds already is left
        as it is (a plan change does not retype it: the kind is a label)."""
        # The reserve step's own code (engine/src/python/saga.rs), run on this thread.
        refusal = self.ledger.open_accounts(
            self._clock_ns(), list(account_ids), [int(k) for k in kinds], list(currencies)
        )
        if refusal is not None:
            raise LedgerRefused(refusal)

    # -- the saga's steps ------------------------------------------------------------

    async def reserve(self, moves: Sequence[Movement]) -> None:
        """Holds each payment's amount and logs RESERVED; returns once durable. The
        subscribers' accounts (and their currency's clearing and adjustment accounts)
        are opened by their first hold where the ledger does not hold them yet."""
        await self.reserve_columns(
            [m.payment_id for m in moves],
            [m.account_id for m in moves],
            [m.kind for m in moves],
            [m.amount_minor for m in moves],
            [m.currency for m in moves],
        )

    async def reserve_columns(
        self,
        payment_ids: list[str],
        account_ids: list[str],
        kinds: list[int],
        amounts_minor: list[int],
        currencies: list[str],
    ) -> None:
        """``reserve`` of movements given as columns, one row per payment."""
        if payment_ids:
            await self._step(
                self.ledger.saga_reserve, payment_ids, account_ids, kinds, amounts_minor, currencies
            )

    async def capture(self, payment_ids: Sequence[str]) -> None:
        """Logs CAPTURED (the gateway took the money); returns once durable."""
        await self.capture_and_roll_back(payment_ids, ())

    async def capture_and_roll_back(self, captured: Sequence[str], voided: Sequence[str]) -> None:
        """``capture`` of ``captured`` and ``roll_back`` of ``voided`` in one step, which
        waits for one fdatasync: a batch's gateway answers, logged together."""
        if captured or voided:
            await self._step(self.ledger.saga_capture_and_void, list(captured), list(voided))

    async def settle(self, payment_ids: Sequence[str]) -> None:
        """Posts each payment's hold and logs SETTLED."""
        if payment_ids:
            await self._step(self.ledger.saga_finish, list(payment_ids), True)

    async def settle_and_anchor(
        self, payment_ids: Sequence[str], head: tuple[int, str] | None
    ) -> None:
        """``settle`` and ``anchor`` in one step (a settled batch's last): both are done
        even when the first is refused, and the first refusal is raised."""
        if payment_ids or head is not None:
            await self._step(self.ledger.saga_finish, list(payment_ids), True, head)

    async def roll_back(self, payment_ids: Sequence[str]) -> None:
        """Voids each payment's hold (where there is one) and logs ROLLED_BACK."""
        if payment_ids:
            await self._step(self.ledger.saga_finish, list(payment_ids), False)

    async def refund(self, refund_id: str, move: Movement) -> None:
        """Moves a refunded amount back from the subscriber's account to clearing."""
        await self._run(self._refund, refund_id, move)

    def _refund(self, refund_id: str, move: Movement) -> None:
        # Only a paid account is refunded, so its account is open: this is a read then.
        self.open_accounts([move.account_id], [move.kind], [move.currency])
        codes, _ = self.ledger.create_transfers(
            self._clock_ns(),
            ids_array([derived_id("refund", refund_id)]),
            ids_array([subscriber_account(move.account_id)]),
            ids_array([clearing_account(move.currency)]),
            np.array([move.amount_minor], np.int64),
            np.array([_numeric(move.currency)], np.uint16),
            np.zeros(1, np.uint16),
            ids_array([0]),
            np.zeros(1, np.uint32),
            ids_array([payment_number(move.payment_id)]),
        )
        _check("transfer", codes, TRANSFER_OK)

    async def adjust(self, adjustment_id: str, account: SubscriberRow, amount_minor: int) -> None:
        """Moves a balance adjustment (signed, in the subscriber's favour) between the
        currency's adjustment account and the subscriber's; returns once durable. A redo
        (same id) changes nothing."""
        await self._run(self._adjust, adjustment_id, account, amount_minor)

    def _adjust(self, adjustment_id: str, account: SubscriberRow, amount_minor: int) -> None:
        currency = account.currency
        mine, theirs = subscriber_account(account.account_id), adjustment_account(currency)
        debit, credit = (theirs, mine) if amount_minor > 0 else (mine, theirs)
        number = _numeric(currency)
        kind = KIND_RECEIVABLE if account.plan is Plan.POSTPAID else KIND_PREPAID
        # Opened here when missing: a subscriber's account is opened by its first
        # movement, and one the ledger holds keeps the kind it was opened with.
        self.open_accounts([account.account_id], [kind], [currency])
        transfer = adjustment_transfer(adjustment_id)
        codes, _ = self.ledger.create_transfers(
            self._clock_ns(),
            ids_array([transfer]),
            ids_array([debit]),
            ids_array([credit]),
            np.array([abs(amount_minor)], np.int64),
            np.array([number], np.uint16),
            np.zeros(1, np.uint16),
            ids_array([0]),
            np.zeros(1, np.uint32),
            ids_array([0]),  # of no payment: a plain transfer, kept for good
        )
        _check("transfer", codes, TRANSFER_OK)

    async def anchor(self, head: tuple[int, str] | None) -> None:
        """Anchors the audit trail's head (seq, hex hash) as of a commit; returns once
        durable. A head already passed changes nothing."""
        if head is not None:
            await self._step(self.ledger.saga_finish, [], True, head)

    # -- recovery ----------------------------------------------------------------------

    def unfinished(self) -> dict[str, int]:
        """Payments RESERVED or CAPTURED and not yet finished, with their state."""
        ids, states = self.ledger.unfinished_payments()
        return {
            payment_name(n): int(s) for n, s in zip(ids_list(ids), states.tolist(), strict=True)
        }

    def states(self, payment_ids: Sequence[str]) -> list[int]:
        """Each payment's recorded state (0 when the ledger does not know it)."""
        if not payment_ids:
            return []
        found = self.ledger.payment_states(ids_array([payment_number(p) for p in payment_ids]))
        return [int(s) for s in found.tolist()]


@functools.cache  # a refusal raises, and is not kept
def _numeric(currency: str) -> int:
    number = currency_numeric(currency)
    if number is None:
        raise LedgerRefused(f"{currency!r} is not an ISO 4217 currency")
    return number


def _check(kind: str, codes: np.ndarray, ok: set[int]) -> None:
    bad = [int(c) for c in codes.tolist() if int(c) not in ok]
    if bad:
        names = sorted({_CODES[kind].get(c, str(c)) for c in bad})
        raise LedgerRefused(f"ledger refused {len(bad)} {kind} events: {', '.join(names)}")
