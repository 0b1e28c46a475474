"""The settlement pipeline (the saga): one batch of payment intents in, one outcome each out.

Per batch, in two stages:

1. in arrival order, one batch at a time: replays looked up, validation (one engine
   call), fraud scoring, the payments journalled in the store and their holds reserved
   in the ledger (RESERVED), both durable before any gateway is called;
2. concurrently with later batches (so gateway latency is hidden, not added): a sale
   per payment at its gateway; then, side by side, CAPTURED logged for those captured,
   the holds of the others voided, and one database transaction for the whole batch;
   the reply; then the holds posted (SETTLED) and the engine's tables brought up to date.

Writes that are independent for recovery go out together, so a batch waits for one
disk flush where it would otherwise wait for several in a row.

A payment whose gateway answer cannot be learned before its deadline stays RESERVED
and journalled; ``Recovery`` finishes it, and its caller is told to retry with the same
key (``OutcomePending``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import numpy.typing as npt

from quickpay_engine._engine import Engine, EngineError, Requests, Sales, reject_codes
from quickpay_engine.domain import (
    MethodKind,
    Outcome,
    PaymentIntent,
    PaymentStatus,
)
from quickpay_engine.errors import (
    IdempotencyConflict,
    InvalidArgument,
    OutcomePending,
    StoreUnavailable,
    echo,
)
from quickpay_engine.gateways.router import SALE_BATCH_MAX, GatewayRouter
from quickpay_engine.gateways.types import (
    GatewayOutcome,
    GatewayResult,
    SaleOutcomes,
)
from quickpay_engine.logs import payment_fields
from quickpay_engine.metrics import Metrics
from quickpay_engine.settlement.batcher import copy_outcome
from quickpay_engine.settlement.fraud_gate import (
    DECLINE_DETAILS,
    DECLINE_REASONS,
    HELD,
    FraudGate,
    Scored,
)
from quickpay_engine.settlement.ledger_book import KINDS_BY_PURPOSE, LedgerBook
from quickpay_engine.settlement.payment_ids import new_payment_ids
from quickpay_engine.settlement.recovery import give_back
from quickpay_engine.settlement.validation import record_settled, wall_clock_s
from quickpay_engine.store import UNREACHABLE, Decision, SqliteStore
from quickpay_engine.store.executor import StoreThread
from quickpay_engine.store.rows import journal_columns_of
from quickpay_engine.store.sqlite import IDEMPOTENCY_CONFLICT, StateRow, state_columns

if TYPE_CHECKING:
    from quickpay_engine._engine import FraudBatch

log = logging.getLogger(__name__)

# The engine's reject codes by number: (name, field, text). Field empty: a decline.
REJECTS: dict[int, tuple[str, str, str]] = {
    number: (name, field, text) for number, name, field, text in reject_codes()
}
# A payment whose caller set no gRPC deadline gets this long at the gateways.
GATEWAY_DEADLINE_S = 10.0
# An unknown gateway outcome is looked up (and, if never seen, voided) for this long
# after the sale's own deadline before the payment is left to recovery.
RESOLVE_S = 5.0
# The reason of a payment whose batch the database could not commit (given back).
BILLING_UNAVAILABLE = "BILLING_UNAVAILABLE"


def load_engine(engine: Engine, store: SqliteStore) -> int:
    """Loads the billing system's subscribers from the store into the engine's table:
    straight from the file in the core on SQLite, in column chunks on PostgreSQL; no
    Python object per subscriber either way. Returns how many were read."""
    return store.load_subscribers_into(engine)


@dataclasses.dataclass
class _Batch:
    """What stage 1 hands stage 2."""

    results: list[Outcome | BaseException | None]
    decisions: list[Decision]  # validation and fraud declines, and the reserved payments
    positions: list[int]  # each decision's place in the batch
    reserved: list[int]  # indexes into decisions of the payments sent to a gateway
    scored: list[int]  # indexes into decisions of the payments fraud scoring saw
    held: list[Decision]  # carrier-balance payments holding credit in the engine
    now_s: int
    # Payments committed whose holds are being posted after the reply (see _complete).
    posting: set[str] = dataclasses.field(default_factory=set)
    # The accounts this batch keeps busy (one payment each) until it ends.
    accounts: list[str] = dataclasses.field(default_factory=list)
    # The core's copy of the payments at ``scored``, as scored (for observe).
    fraud_batch: FraudBatch | None = None
    # The requests of the payments validated, as the core read them once; each
    # stage's columns are cut from them. ``rows[k]``: decision k's row.
    requests: Requests | None = None
    rows: list[int] = dataclasses.field(default_factory=list)


# A batch of at most this many payments looks its keys up on the event loop, through a
# connection of its own (SQLite: one indexed read each; 64 new keys take about 36 µs,
# 64 keys already stored about 0.75 ms, most of it building their records, which the
# reader thread would do holding the GIL too); a larger one on the reader thread. The
# hand-over to a thread and back costs the loop more than such a lookup: with 8 here,
# the batches of 20 to 40 that 64 unary callers or a PayStream make went to the thread,
# and answered 5 to 16 % fewer payments a second (benches/RESULTS.md). The loop waits
# for the disk here only when the key index is not in the page cache.
INLINE_LOOKUP_MAX = 64


class Pipeline:
    """Validates, reserves, captures and commits batches of payments."""

    def __init__(
        self,
        engine: Engine,
        store: SqliteStore,
        thread: StoreThread,
        book: LedgerBook,
        router: GatewayRouter,
        reader: tuple[SqliteStore, StoreThread] | None = None,
        inline_reader: SqliteStore | None = None,
        payment_ids: Callable[[int], list[str]] = new_payment_ids,
        on_commit: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        fraud: FraudGate | None = None,
        fence: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._store = store
        self._thread = thread
        # Replay lookups read through their own connection and thread, so they do not
        # queue behind the commits of batches at stage 2.
        self._reader = reader or (store, thread)
        # A connection of the event loop's own for a small batch's lookup (SQLite only):
        # a few indexed reads cost less than the two hand-overs to a thread and back.
        self._inline_reader = inline_reader
        self._book = book
        self._router = router
        self._payment_ids = payment_ids
        self._on_commit = on_commit
        self._clock = clock
        self._fraud = fraud
        # Raises (NotOwner) while the engine cannot prove it owns its databases: checked
        # once per batch, before anything of it is journalled, held or sent.
        self._fence = fence
        # Stage 1 runs one batch at a time, in arrival order (asyncio.Lock is FIFO), so
        # validation and fraud state see payments in the order they came.
        self._order = asyncio.Lock()
        # Payments between stage 1 and their end, which recovery's sweep must leave be.
        self.in_flight: set[str] = set()
        self._posting: set[asyncio.Future[None]] = set()
        # Accounts with a payment between validation and the end of its batch, and the
        # events that wake payments deferred until an account is free. A payment for a
        # busy account is validated in a later batch, against the balance and limits
        # its predecessor left, so two in flight can never both spend the same credit.
        self._busy: collections.Counter[str] = collections.Counter()
        self._freed: dict[str, asyncio.Event] = {}
        # The payments deferred behind a busy account, in arrival order, each with the
        # future its caller holds: handed back to the batcher when the account is free.
        self._deferred: dict[str, list[tuple[PaymentIntent, asyncio.Future[Outcome]]]] = {}
        # How a deferred payment re-enters the queue (the service sets the batcher's
        # submit_nowait); None: no deferral, payments of one account are validated
        # together.
        self.resubmit: Callable[[PaymentIntent], asyncio.Future[Outcome]] | None = None
        # Where each batch's stage times and gateway answers are counted (None: nowhere).
        self.metrics: Metrics | None = None

    def _lap(self, stage: str, since: float) -> float:
        """Counts the batch's time in ``stage`` since ``since``; returns now."""
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.stage(stage, now - since)
        return now

    async def prepare(self, intents: Sequence[PaymentIntent]) -> _Batch:
        """Stage 1 (see the module docstring); batches go through it one at a time."""
        self._fence()
        async with self._order:
            self._fence()  # again: the batch may have waited for the one before it
            try:
                return await self._prepare(intents)
            except UNREACHABLE as err:
                # Before any gateway: nothing left the process, so the caller may simply
                # retry (never INTERNAL, which says nothing of whether to).
                log.error("batch of %d refused, the store is out of reach: %s", len(intents), err)
                raise StoreUnavailable(
                    f"the store is out of reach ({type(err).__name__}); nothing was charged:"
                    " retry with the same idempotency_key"
                ) from err

    async def complete(self, batch: _Batch) -> list[Outcome | BaseException]:
        """Stage 2: gateways, commit, post; many batches may be here at once."""
        try:
            await self._complete(batch)
        finally:
            self._free(batch.accounts)
            self.in_flight.difference_update(
                p for k in batch.reserved
                if (p := batch.decisions[k].payment_id) not in batch.posting
            )  # fmt: skip
            if batch.held:
                self._release_holds(batch.held)
        assert all(r is not None for r in batch.results)
        return batch.results  # type: ignore[return-value]

    # -- stage 1 ------------------------------------------------------------------------

    async def _prepare(self, intents: Sequence[PaymentIntent]) -> _Batch:
        results: list[Outcome | BaseException | None] = [None] * len(intents)
        reader, reading = self._reader
        lap = time.perf_counter()
        keys = [i.idempotency_key for i in intents]
        if self._inline_reader is not None and len(keys) <= INLINE_LOOKUP_MAX:
            stored = self._inline_reader.find_by_keys(keys)
        else:
            # Ahead of the reader's other calls (GetPayment, the watch polls): this
            # stage runs one batch at a time.
            stored = await reading.run_first(reader.find_by_keys, keys)
        self._lap("replay_lookup", lap)
        fresh: list[int] = []
        accounts: list[str] = []
        taken: set[str] = set()  # the accounts of ``fresh``: a set, for the check below
        busy = self._busy
        for index, intent in enumerate(intents):
            record = stored.get(intent.idempotency_key) if stored else None
            account = intent.account_id
            if record is not None:
                results[index] = replay(record.outcome, record.intent, intent)
            elif self.resubmit is not None and (account in taken or account in busy):
                # The account has a payment not yet committed: validating this one now
                # would check its balance and limits as they were before that one.
                results[index] = self._defer(intent)  # type: ignore[assignment]
            else:
                fresh.append(index)
                accounts.append(account)
                taken.add(account)
        # Held from here (no await since the check above) until the batch has ended.
        self._busy.update(accounts)
        try:
            return await self._validate_and_reserve(intents, results, fresh, accounts)
        except BaseException:
            # The whole batch fails: nothing of it goes on later (cancelled before the
            # accounts are freed, which would hand the deferred ones back).
            for r in results:
                if isinstance(r, asyncio.Future):
                    r.cancel()
            self._free(accounts)
            raise

    async def _validate_and_reserve(
        self,
        intents: Sequence[PaymentIntent],
        results: list[Outcome | BaseException | None],
        fresh: list[int],
        accounts: list[str],
    ) -> _Batch:
        decisions: list[Decision] = []
        positions: list[int] = []
        now_s = wall_clock_s(self._clock)
        batch = _Batch(results, decisions, positions, [], [], [], now_s, accounts=accounts)
        if not fresh:
            return batch
        lap = time.perf_counter()
        requests = batch.requests = Requests([intents[i] for i in fresh])
        rows = batch.rows
        columns = requests.validation_columns()
        codes = self._engine.validate(**columns, now_s=now_s)
        ids = self._payment_ids(len(fresh))
        scored = self._score(columns, codes, now_s)
        if scored is not None:
            # The payments validation passed (code 0) were scored in the core, in
            # order: each gets its Decision once, with its assessment and the decline
            # its verdict leads to.
            assessments, verdicts = iter(scored.assessments), iter(scored.verdicts)
            batch.fraud_batch = scored.batch
        for row, (index, code, payment_id) in enumerate(
            zip(fresh, codes.tolist(), ids, strict=True)
        ):
            if code == 0 and scored is not None:
                v = next(verdicts)
                batch.scored.append(len(decisions))
                # Positional (no gateway, no reference yet; then fraud and review):
                # the keywords cost 0.18 us a payment more.
                decisions.append(
                    Decision(
                        payment_id, intents[index], DECLINE_REASONS[v], DECLINE_DETAILS[v],
                        "", "", next(assessments), v == HELD,
                    )
                )  # fmt: skip
                positions.append(index)
                rows.append(row)
                continue
            decision = self._decide(payment_id, intents[index], code)
            if isinstance(decision, BaseException):
                results[index] = decision
            else:
                decisions.append(decision)
                positions.append(index)
                rows.append(row)
        lap = self._lap("validate_score", lap)
        approved = [k for k, d in enumerate(batch.decisions) if not d.decline_reason]
        if not approved:
            return batch
        # The journal (the request, for recovery) and the hold are written side by side,
        # and a payment goes to a gateway only once both are durable. A hold whose
        # journal entry is missing after a crash was therefore never sent anywhere, and
        # recovery simply voids it.
        wanted = [batch.decisions[k] for k in approved]
        ids = [d.payment_id for d in wanted]
        picked = [rows[k] for k in approved]
        self.in_flight.update(ids)
        taken, held = await asyncio.gather(
            self._journal(wanted, ids, requests, picked),
            self._book.reserve_columns(ids, *requests.holds(picked, KINDS_BY_PURPOSE)),
            return_exceptions=True,
        )
        self._lap("reserve", lap)
        if isinstance(taken, BaseException) or isinstance(held, BaseException):
            await self._undo_half_reserved(wanted, taken, held)
        refused: list[Decision] = []
        for k, ok in zip(approved, taken, strict=True):
            if ok:
                batch.reserved.append(k)
            else:
                refused.append(batch.decisions[k])
                batch.results[positions[k]] = OutcomePending(
                    f"an earlier attempt with idempotency_key"
                    f" {batch.decisions[k].intent.idempotency_key!r} is being finished"
                )
        if refused:
            # Held, but its key is another attempt's: the hold goes, nothing else moved.
            await self._book.roll_back([d.payment_id for d in refused])
            self.in_flight.difference_update(d.payment_id for d in refused)
        reserved = [batch.decisions[k] for k in batch.reserved]
        batch.held = [d for d in reserved if d.intent.method.kind is MethodKind.CARRIER_BALANCE]
        if batch.held:
            self._engine.reserve_holds(
                [d.intent.account_id for d in batch.held],
                np.fromiter((d.intent.amount_minor for d in batch.held), np.int64),
            )
        return batch

    def _journal(
        self, wanted: list[Decision], ids: list[str], requests: Requests, rows: list[int]
    ) -> Awaitable[list[bool]]:
        """Journals a batch's payments (``wanted``, whose requests are ``rows`` of
        ``requests``) before they go to a gateway. SQLite's journal is written on the
        core's writer thread, from the columns the core cuts; another store's goes ahead
        of the calls waiting for the store thread (earlier batches' commits): this stage
        runs one batch at a time, and waits for it."""
        if isinstance(self._store, SqliteStore):
            columns = journal_columns_of(ids, requests.intent_columns(rows))
            return self._store.journal_columns_on_core(columns)
        attempts = [(d.payment_id, d.intent) for d in wanted]
        return self._thread.run_first(self._store.journal_attempts, attempts)

    def _commit(
        self, batch: _Batch, to_commit: list[int], decisions: list[Decision]
    ) -> Awaitable[tuple[list[Outcome], Sequence[StateRow]]]:
        """Commits ``decisions``, the batch's decisions ``to_commit``: SQLite's on the
        core's writer thread, with the requests' columns the core cuts; another store's
        on the store thread."""
        if isinstance(self._store, SqliteStore):
            rows = [batch.rows[k] for k in to_commit]
            requests = None if batch.requests is None else batch.requests.intent_columns(rows)
            return self._store.commit_on_core(decisions, self._thread.run, requests)
        return self._thread.run(self._store.commit_batch, decisions)

    async def _undo_half_reserved(
        self, wanted: list[Decision], taken: object, held: object
    ) -> NoReturn:
        """The journal or the hold of a batch failed (the store or the ledger out of
        reach): nothing was sent anywhere, so what the other one wrote is taken back now
        and the payments leave the in-flight set (where recovery would not look at them),
        then the batch fails with the first error."""
        ids = [d.payment_id for d in wanted]
        try:
            if not isinstance(held, BaseException):
                await self._book.roll_back(ids)
            if not isinstance(taken, BaseException):
                await self._thread.run(self._store.forget_attempts, ids)
        except Exception:
            log.exception("could not take back a half-reserved batch; the sweep finishes it")
        finally:
            self.in_flight.difference_update(ids)
        raise taken if isinstance(taken, BaseException) else held  # type: ignore[misc]

    def _defer(self, intent: PaymentIntent) -> asyncio.Future[Outcome]:
        """Settles ``intent`` in a later batch, once its account has no payment in flight:
        it waits in the account's list (no task of its own) until ``_free``."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._deferred.setdefault(intent.account_id, []).append((intent, future))
        return future

    def _hand_back(self, account: str) -> None:
        """The account is free: its deferred payments go back to the batcher, in the
        order they came. The first is validated in the next batch; the others find the
        account taken there and wait again, behind it."""
        assert self.resubmit is not None
        for intent, future in self._deferred.pop(account, ()):
            if future.done():  # its batch failed, or its caller is gone
                continue
            try:
                sent = self.resubmit(intent)
            except Exception as err:  # refused (the queue full, shutting down)
                future.set_exception(err)
                continue
            sent.add_done_callback(functools.partial(copy_outcome, future))

    async def hold_accounts(self, accounts: Sequence[str]) -> None:
        """Waits until none of ``accounts`` has a payment between validation and the end
        of its batch, then keeps them busy (payments that come for them meanwhile are
        deferred, as behind a payment) until ``release_accounts``: a subscriber change
        or a balance adjustment applies after the payments in flight and before the
        next ones, which are then validated against what it left."""
        while busy := [a for a in accounts if self._busy[a]]:
            await self._freed.setdefault(busy[0], asyncio.Event()).wait()
        # No await since the check: taken at once, as _prepare takes its accounts.
        self._busy.update(accounts)

    def release_accounts(self, accounts: Sequence[str]) -> None:
        """Ends ``hold_accounts``; wakes the payments deferred meanwhile."""
        self._free(list(accounts))

    @contextlib.asynccontextmanager
    async def account_held(self, account_id: str) -> AsyncIterator[None]:
        """``hold_accounts`` of one account for the time of a ``with`` block."""
        await self.hold_accounts([account_id])
        try:
            yield
        finally:
            self.release_accounts([account_id])

    def _free(self, accounts: list[str]) -> None:
        """Ends a batch's hold on its accounts; wakes payments deferred for them."""
        # Not the Counter's subtract, missing-key lookup and del: those are Python
        # methods, three calls a payment. An account is in ``_busy`` only while its
        # count is above 0 (``_prepare`` tests membership), so dict reads and pop do.
        busy = self._busy
        for account in accounts:
            left = busy[account] - 1
            if left > 0:
                busy[account] = left
                continue
            busy.pop(account, None)
            if (freed := self._freed.pop(account, None)) is not None:
                freed.set()
            if account in self._deferred:
                self._hand_back(account)

    def _release_holds(self, held: list[Decision]) -> None:
        self._engine.release_holds(
            [d.intent.account_id for d in held],
            np.fromiter((d.intent.amount_minor for d in held), np.int64),
        )

    def _score(
        self, columns: dict[str, np.ndarray], codes: npt.NDArray[np.uint16], now_s: int
    ) -> Scored | None:
        """Fraud-scores the payments validation passed (code 0), from the validation
        columns, in the core; None without fraud scoring."""
        if self._fraud is None:
            return None
        return self._fraud.score_validated(columns, np.flatnonzero(codes == 0), now_s)

    def _decide(
        self, payment_id: str, intent: PaymentIntent, code: int
    ) -> Decision | InvalidArgument:
        if code == 0:
            return Decision(payment_id, intent)
        name, field, text = REJECTS[code]
        if field:
            return InvalidArgument(field, text)
        return Decision(payment_id, intent, decline_reason=name, decline_detail=text)

    # -- stage 2 ------------------------------------------------------------------------

    async def _complete(self, batch: _Batch) -> None:
        decisions = batch.decisions
        lap = time.perf_counter()
        gateway = await self._sales(self._sales_of(batch))
        if self.metrics is not None and len(gateway):
            self.metrics.gateway_round_columns(
                gateway.gateways, gateway.outcomes, time.perf_counter() - lap
            )
        lap = self._lap("gateways", lap)
        captured: list[int] = []
        voided: list[int] = []
        pending: set[int] = set()
        answered, gateways, references = gateway.outcomes, gateway.gateways, gateway.references
        was_captured = GatewayOutcome.CAPTURED
        for j, k in enumerate(batch.reserved):
            d = decisions[k]
            said = answered[j]
            if said is was_captured:
                # The decision is the batch's own: completed in place, not built again.
                d.gateway, d.gateway_reference = gateways[j], references[j]
                captured.append(k)
            elif said is GatewayOutcome.UNKNOWN:
                pending.add(k)
                log.warning(
                    "payment %s: gateway %s has not said whether it captured it; left"
                    " RESERVED for recovery", d.payment_id, gateways[j],
                    extra=payment_fields(d.payment_id, d.intent.idempotency_key),
                )  # fmt: skip
                batch.results[batch.positions[k]] = OutcomePending(
                    f"gateway {gateways[j]} has not said whether payment {d.payment_id}"
                    " was captured; the engine settles or voids it once it knows: retry"
                    " with the same idempotency_key for the outcome"
                )
            else:
                reason = gateway.reasons[j]
                d.decline_reason = reason or said.name
                d.decline_detail = _gateway_detail(said, gateways[j], reason)
                d.gateway = gateways[j]
                d.failed = said is not GatewayOutcome.DECLINED
                voided.append(k)
        reserved = set(batch.reserved)
        # Declines, and what the gateways answered; not what is still unknown, nor what
        # never went out because an earlier attempt holds the key.
        to_commit = [
            k for k, d in enumerate(decisions)
            if k not in pending and (d.decline_reason or k in reserved)
        ]  # fmt: skip
        committing = [decisions[k] for k in to_commit]
        # The ledger's CAPTURED (and the voids of declined holds) and the database commit
        # are written side by side: recovery finishes either order after a crash (a
        # committed payment is posted whatever the ledger says; a captured one is
        # committed), and the reply waits for both.
        ledger_error, committed = await asyncio.gather(
            self._book.capture_and_roll_back(
                [decisions[k].payment_id for k in captured],
                [decisions[k].payment_id for k in voided],
            ),
            self._commit(batch, to_commit, committing),
            return_exceptions=True,
        )
        self._lap("capture_commit", lap)
        if isinstance(ledger_error, BaseException):
            # After the gateways: the money may have moved and the commit may have
            # landed, so "not done" (RESOURCE_EXHAUSTED, INTERNAL) would be false. The
            # journal keeps every payment; recovery finishes them.
            log.error("ledger refused a batch after its gateways: %s", ledger_error)
            raise OutcomePending(
                f"the ledger could not record the batch ({type(ledger_error).__name__});"
                " the engine finishes it: retry with the same idempotency_key for the"
                " outcome"
            ) from ledger_error
        if isinstance(committed, BaseException):
            await self._billing_down(batch, to_commit, set(captured), committed)
            return
        outcomes, states = committed
        if not to_commit:
            return
        # The trail's head as of this commit (or a later one): anchored in the ledger's
        # log with the posts, once per batch.
        audit_head = self._store.audit_head
        self._on_commit()
        settled: list[Decision] = []
        unwound: list[tuple[Decision, Outcome]] = []
        positions, results, settled_status = batch.positions, batch.results, PaymentStatus.SETTLED
        for k, outcome in zip(to_commit, outcomes, strict=True):
            d = decisions[k]
            if outcome.decline_reason == IDEMPOTENCY_CONFLICT:
                results[positions[k]] = IdempotencyConflict(outcome.decline_detail)
            else:
                results[positions[k]] = outcome
            if k in reserved and d.gateway_reference:
                if outcome.status is settled_status and not outcome.replayed:
                    settled.append(d)
                else:
                    unwound.append((d, outcome))  # captured, but billing refused it
        if settled or audit_head is not None:
            # The commit is the answer: posting the holds (two log writes) and the audit
            # anchor happen after the reply, and should the process die first, recovery
            # posts the holds (and the next commit anchors a later head).
            batch.posting = {d.payment_id for d in settled}
            task = asyncio.ensure_future(self._post([d.payment_id for d in settled], audit_head))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)
        if unwound:
            await self._unwind(unwound)
        try:
            self._learn(batch, to_commit, committing, outcomes, states)
        except EngineError:
            # The batch is committed and its callers get their answers; only the
            # engine's copy of the accounts is behind. It is read again from the store.
            log.exception("engine tables not updated after a commit; reloading subscribers")
            await self._thread.run(load_engine, self._engine, self._store)

    async def _billing_down(
        self, batch: _Batch, to_commit: list[int], captured: set[int], err: BaseException
    ) -> None:
        """The batch's database transaction failed as a whole (the database, or one of
        the two-phase participants, is gone): nothing of it was written anywhere. What
        the gateways captured is given back, so the batch settles nowhere, and every
        caller is told. Nothing is recorded under their keys, so a retry with the same
        key is a new attempt."""
        log.error("settlement batch of %d not committed: %s", len(to_commit), err)
        detail = (
            f"billing could not record the payment ({type(err).__name__}); nothing was"
            " charged: retry with the same idempotency_key"
        )
        for k in to_commit:
            d = batch.decisions[k]
            index = batch.positions[k]
            if k in captured:
                why = f"{BILLING_UNAVAILABLE}: {err}"
                given = await give_back(
                    self._store, self._thread, self._book, self._router, d, why,
                    record_failed=False,
                )  # fmt: skip
                if not given:
                    batch.results[index] = OutcomePending(
                        f"payment {d.payment_id} was captured and billing is down; the engine"
                        " gives it back once the gateway answers"
                    )
                    continue
                reason, text, status = BILLING_UNAVAILABLE, detail, PaymentStatus.FAILED
            else:
                # A decline stands whether or not history could record it.
                status = PaymentStatus.FAILED if d.failed else PaymentStatus.DECLINED
                reason, text = d.decline_reason, d.decline_detail
            batch.results[index] = Outcome(
                d.payment_id, d.intent.idempotency_key, status, reason, text, fraud=d.fraud
            )

    def _learn(
        self,
        batch: _Batch,
        to_commit: list[int],
        committing: list[Decision],
        outcomes: list[Outcome],
        states: Sequence[StateRow],
    ) -> None:
        """Brings the engine's tables (balances, line states, limits, fraud velocity)
        up to what the batch committed."""
        if states:
            self._engine.set_states(*state_columns(states))
        record_settled(self._engine, committing, outcomes)
        if self._fraud is not None and batch.fraud_batch is not None and batch.scored:
            settled = self._settled(batch, to_commit, committing, outcomes)
            self._fraud.observe(batch.fraud_batch, settled, batch.now_s)

    @staticmethod
    def _settled(
        batch: _Batch, to_commit: list[int], committing: list[Decision], outcomes: list[Outcome]
    ) -> npt.NDArray[np.bool_]:
        """For each payment fraud scoring saw (``batch.scored``, in order): whether it
        settled under its own payment id (the commit's outcome for decision
        ``to_commit[i]`` is ``outcomes[i]``; one replayed from another payment does not
        count). The others failed, or were never committed (an unknown outcome)."""
        settled = np.zeros(len(batch.decisions), dtype=bool)
        settled[
            [
                k for k, d, o in zip(to_commit, committing, outcomes, strict=True)
                if o.status is PaymentStatus.SETTLED and o.payment_id == d.payment_id
            ]
        ] = True  # fmt: skip
        return settled[batch.scored]

    async def _post(self, payment_ids: list[str], audit_head: tuple[int, str] | None) -> None:
        lap = time.perf_counter()
        try:
            await self._book.settle_and_anchor(payment_ids, audit_head)
            self._lap("post", lap)
        except Exception:
            log.exception(
                "posting %d holds or anchoring the audit head failed; the recovery sweep"
                " retries the holds",
                len(payment_ids),
            )
        finally:
            self.in_flight.difference_update(payment_ids)

    async def drain(self) -> None:
        """Waits for the holds still being posted after their replies."""
        while self._posting:
            await asyncio.gather(*self._posting)

    def _sales_of(self, batch: _Batch) -> Sales:
        """The sales of the batch's reserved payments, from their requests as the core
        read them; a request without a deadline gets GATEWAY_DEADLINE_S from now."""
        decisions, reserved = batch.decisions, batch.reserved
        if not reserved:
            return sales_of([])
        assert batch.requests is not None  # a batch with payments read their requests
        no_deadline = asyncio.get_running_loop().time() + GATEWAY_DEADLINE_S
        return batch.requests.sales(
            [decisions[k].payment_id for k in reserved],
            [batch.rows[k] for k in reserved],
            no_deadline,
        )

    async def _sales(self, sales: Sales) -> SaleOutcomes:
        """The batch's sales in one router call (batched per gateway), as the core's
        ``Sales`` in and columns out (no request or result object per payment); then,
        for each unknown outcome (rare), a lookup at the gateway that may hold it, until
        RESOLVE_S past that sale's deadline."""
        n = len(sales)
        if not n:
            return SaleOutcomes(0)
        if n <= SALE_BATCH_MAX:
            out = await self._router.sale_columns(sales)
        else:
            out = SaleOutcomes(0)
            for start in range(0, n, SALE_BATCH_MAX):
                part = sales.slice(start, start + SALE_BATCH_MAX)
                _extend(out, await self._router.sale_columns(part))
        unknown = [
            j for j, (o, g) in enumerate(zip(out.outcomes, out.gateways, strict=True))
            if o is GatewayOutcome.UNKNOWN and g
        ]  # fmt: skip
        if unknown:
            resolved = await asyncio.gather(
                *(
                    self._resolve(sales.payment_id(j), out.result(j, sales.payment_id(j)),
                                  sales.deadline(j))
                    for j in unknown
                )
            )  # fmt: skip
            for j, result in zip(unknown, resolved, strict=True):
                out.set(j, result)
        return out

    async def _sale(self, d: Decision) -> GatewayResult:
        """One payment's sale (the batch path with one payment; for tests and tools)."""
        return (await self._sales(sales_of([d]))).result(0, d.payment_id)

    async def _resolve(
        self, payment_id: str, result: GatewayResult, deadline: float
    ) -> GatewayResult:
        """An unknown sale's fate at its gateway, looked up until RESOLVE_S past its
        deadline."""
        loop = asyncio.get_running_loop()
        result = await self._router.resolve(
            payment_id, result.gateway, max(deadline, loop.time()) + RESOLVE_S
        )
        if result.outcome is GatewayOutcome.VOIDED:
            # Proven not captured, and voided so that a late request cannot land.
            result = dataclasses.replace(
                result, outcome=GatewayOutcome.FAILED, reason="GATEWAY_TIMEOUT"
            )
        return result

    async def _unwind(self, unwound: list[tuple[Decision, Outcome]]) -> None:
        """Gives back what a gateway captured for payments billing refused."""
        for d, outcome in unwound:
            why = outcome.decline_reason or "replayed"
            await give_back(self._store, self._thread, self._book, self._router, d, why)


def sales_of(sold: Sequence[Decision]) -> Sales:
    """The sales of ``sold``, read from their intents (``Pipeline._sales_of`` takes them
    from the core's read of the requests); a request without a deadline gets
    GATEWAY_DEADLINE_S from now."""
    now = asyncio.get_running_loop().time()
    intents = [d.intent for d in sold]
    details = [i.detail for i in intents]
    return Sales(
        [d.payment_id for d in sold],
        [i.amount_minor for i in intents],
        [i.currency for i in intents],
        [i.method.kind for i in intents],
        # Each kind's fields as decoded; the core reads only those of the kind.
        [x.card_pan for x in details],
        [x.card_expiry_month for x in details],
        [x.card_expiry_year for x in details],
        [x.wallet_provider for x in details],
        [x.wallet_id for x in details],
        [x.iban for x in details],
        [i.deadline or now + GATEWAY_DEADLINE_S for i in intents],
    )  # fmt: skip


def _gateway_detail(outcome: GatewayOutcome, gateway: str, reason: str) -> str:
    if outcome is GatewayOutcome.DECLINED:
        return f"declined by gateway {gateway}"
    return f"no gateway could take the payment ({reason or outcome.name})"


def _extend(out: SaleOutcomes, more: SaleOutcomes) -> None:
    """Appends ``more``'s rows to ``out``."""
    base = len(out)
    for name in ("outcomes", "gateways", "references", "reasons", "captured_minor",
                 "refunded_minor", "currencies"):  # fmt: skip
        getattr(out, name).extend(getattr(more, name))
    out.attempts.update({base + i: a for i, a in more.attempts.items()})


def replay(
    stored: Outcome, stored_intent: PaymentIntent, intent: PaymentIntent
) -> Outcome | IdempotencyConflict:
    """The stored outcome for a retried key, or a conflict when the payload differs or
    another caller sent it: a gateway never learns another's payment by replaying its key
    (a payment stored without a sender, before callers had identities, replays to any)."""
    if stored_intent.fingerprint != intent.fingerprint or (
        stored_intent.sender and stored_intent.sender != intent.sender
    ):
        # Names nothing of the payment the key belongs to.
        return IdempotencyConflict(
            f"idempotency_key {echo(intent.idempotency_key)} was used for another payment"
        )
    return dataclasses.replace(stored, replayed=True)
