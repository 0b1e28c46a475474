"""The settlement service the API calls: pay, look up, start and drain.

It owns the batcher and the in-flight table that makes concurrent retries of one
idempotency key share a single settlement.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import date
from typing import Any, TypeVar

from quickpay_engine._engine import Engine, FraudScorer
from quickpay_engine.domain import OutboxEvent, Outcome, PaymentIntent, PaymentRecord
from quickpay_engine.errors import (
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    OutcomePending,
    Overloaded,
    QuickpayError,
    ShuttingDown,
    echo,
)
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.metrics import Metrics
from quickpay_engine.reconcile.report import ColumnMapping, ReportError
from quickpay_engine.settlement import reconciliation
from quickpay_engine.settlement.adjustments import Adjustments
from quickpay_engine.settlement.admission import Admission
from quickpay_engine.settlement.batcher import (
    BatchSettings,
    GroupTicket,
    MicroBatcher,
    resolve,
)
from quickpay_engine.settlement.fraud_gate import FraudGate
from quickpay_engine.settlement.ledger_book import LedgerBook
from quickpay_engine.settlement.pipeline import Pipeline, load_engine
from quickpay_engine.settlement.reconciliation import ReconcileRun
from quickpay_engine.settlement.recovery import Action, Recovery
from quickpay_engine.settlement.refunds import Refunds
from quickpay_engine.settlement.watch import WatchHub
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.executor import StoreThread
from quickpay_engine.store.sqlite import SettledState, state_columns
from quickpay_engine.subscriber_changes import ChangeResult, SubscriberChanges
from quickpay_engine.subscribers import load_rows

log = logging.getLogger(__name__)

# Unfinished payments not in flight are looked at this often while serving.
SWEEP_S = 5.0
# A ledger snapshot that failed is tried again after this long, not at every sweep.
SNAPSHOT_RETRY_S = 300.0
# The batch sizes of the last this many seconds are logged (when there were batches).
BATCH_REPORT_S = 60.0
# A caller whose deadline comes before its payment's outcome is told OutcomePending this
# long before the deadline (at most half of what it has left), so the reply still
# reaches it.
REPLY_MARGIN_S = 0.05

R = TypeVar("R")

# Reconcile runs one at a time, on a thread and store connection of its own (never the
# payment writer's); at most this many more wait for it, and one past them is refused
# with RESOURCE_EXHAUSTED at once rather than queued: each holds its report (up to
# REPORT_BYTES_MAX) while it waits.
RECONCILE_WAITING_MAX = 3
# A report larger than this is refused (INVALID_ARGUMENT) before it is parsed; the gRPC
# transport refuses larger messages anyway (server.MESSAGE_BYTES_MAX).
REPORT_BYTES_MAX = 4 * 1024 * 1024


class SettlementService:
    """Settles payments through the engine and the store, in micro-batches."""

    def __init__(
        self,
        store: SqliteStore,
        book: LedgerBook,
        router: GatewayRouter,
        card_key: bytes,
        batching: BatchSettings | None = None,
        fraud_scorer: FraudScorer | None = None,
        fraud_enforce: bool = True,
        engine_config_json: str | None = None,
        fence: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        engine: Engine | None = None,
    ) -> None:
        """``book`` is the open ledger, ``router`` the started gateways; ``card_key``
        keys the card fingerprints fraud scoring tracks; ``fraud_scorer`` replaces the
        shipped model and rules (tests, a carrier's own model); ``fence`` raises while
        the engine may not settle (store/pg_owner.py), checked once per batch;
        ``metrics`` counts batches, stages and outcomes (once per batch); ``engine``: one
        built already (serve starts loading its subscribers before the gateways), else
        one is built from ``engine_config_json``."""
        batching = batching or BatchSettings()
        self._store = store
        self._thread = StoreThread()
        self.book = book
        self.router = router
        self.engine = engine if engine is not None else Engine(engine_config_json)
        # A second connection for the replay lookups, where the store offers one.
        self._reader = store.open_reader()
        self._reader_thread = StoreThread("store-reader")
        # SQLite: one more, read on the event loop itself for small batches' lookups (a
        # PostgreSQL read is a round trip, which the loop does not wait for).
        self._inline_reader = store.open_reader() if isinstance(store, SqliteStore) else None
        self._pipeline = Pipeline(
            self.engine,
            store,
            self._thread,
            book,
            router,
            (self._reader, self._reader_thread),
            inline_reader=self._inline_reader,
            on_commit=self._committed_batch,
            fraud=FraudGate(self.engine, card_key, fraud_scorer, fraud_enforce),
            fence=fence,
        )
        # Watchers are woken from one shared poll of the outbox's head (settlement/watch.py).
        self._watch = WatchHub(self._reader, self._reader_thread)
        # Reconciliation's own connection and thread: its reads, matching and
        # discrepancy writes never wait in, nor hold, the payment writer's queue.
        self._reconciler = store.open_reader()
        self._reconcile_thread = StoreThread("store-reconcile")
        self._reconciles = 0  # running or waiting
        self._commit_listeners: list[Callable[[], None]] = [self._watch.committed]
        self.metrics = metrics
        self._pipeline.metrics = metrics
        prepare, complete = self._pipeline.prepare, self._pipeline.complete
        if metrics is not None:
            prepare, complete = _counted(prepare, complete, metrics)
        self._batcher: MicroBatcher[PaymentIntent, Outcome] = MicroBatcher(
            prepare,
            complete=complete,
            batch_max=batching.batch_max,
            linger_ms=batching.linger_ms,
            queue_max=batching.queue_max,
            inflight_max=batching.inflight_max,
            admission=Admission(batching.queue_wait_max_ms / 1_000),
        )
        self._pipeline.resubmit = self._batcher.submit_nowait
        self.recovery = Recovery(store, self._thread, book, router, self._apply_states)
        self.refunds = Refunds(store, self._thread, book, router, self._apply_states)
        self.adjustments = Adjustments(
            store, self._thread, book, self._pipeline.account_held, self._apply_states
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        # One entry per idempotency key being settled right now: a concurrent retry
        # waits for the first attempt instead of racing it. Bounded by the batcher's
        # queue, since every entry is a queued or running payment.
        # Keys settling now: (fingerprint, the settlement's future or its group's
        # ticket, the payment's index in the group or -1).
        self._inflight: dict[
            str, tuple[str, asyncio.Future[Outcome] | GroupTicket[Outcome], int]
        ] = {}
        # Batches of subscriber changes apply one at a time, in the order they came.
        self._changing = asyncio.Lock()

    async def start(
        self, sweep_s: float | None = None, loading: Awaitable[int] | None = None
    ) -> list[Action]:
        """Loads the subscriber table into the engine (the only copy in memory: fraud
        scoring reads its profiles there), finishes what an earlier run left unfinished
        (recovery, before serving: what it settles is applied to the loaded table) and
        starts batching and the periodic sweep. A subscriber's ledger account is opened
        by its first hold. ``loading``: a load started already (serve runs it while the
        gateways start), awaited here. Returns recovery's actions."""
        if loading is None:
            loading = self._thread.run(load_engine, self.engine, self._store)
        count = await loading
        log.info("%d subscribers loaded into the engine", count)
        actions = await self.recovery.run()
        if self.metrics is not None:
            self.metrics.recovered(a.action for a in actions)
        # Adjustments journalled and not applied: finished before anything is served.
        adjusted = await self.adjustments.recover()
        actions += [Action(a, "PENDING", "adjustment applied") for a in adjusted]
        self._batcher.start()
        if self.metrics is not None:
            self.metrics.watch_queue(self._batcher.waiting, self._batcher.queue_max)
            self.metrics.watch_loop()  # here, on the loop's thread
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep(sweep_s or SWEEP_S), name="recovery-sweep")
        self._reporter = loop.create_task(self._report_batches(), name="batch-report")
        return actions

    async def _report_batches(self) -> None:
        """Logs how big the batches were, so the batching flags' effect can be seen."""
        every_s = BATCH_REPORT_S
        while True:
            await asyncio.sleep(every_s)
            window = self._batcher.take_window()
            if window.batches:
                log.info(
                    "batches in the last %.0f s: %s; %d waiting",
                    every_s, window.describe(), self._batcher.waiting(),
                )  # fmt: skip

    async def _sweep(self, every_s: float) -> None:
        """Finishes, now and then, payments left unfinished while serving (a gateway that
        did not answer, a database commit that failed)."""
        loop = asyncio.get_running_loop()
        snapshot_after = 0.0
        while True:
            await asyncio.sleep(every_s)
            try:
                if actions := await self.recovery.run(exclude=self._pipeline.in_flight):
                    if self.metrics is not None:
                        self.metrics.recovered(a.action for a in actions)
                    self._committed_batch()
            except Exception:
                log.exception("recovery sweep failed; trying again in %.0f s", every_s)
            # Apart from recovery, which fails while a database is down: the log grows
            # all the more then. A failed snapshot (a full copy) waits before another.
            if loop.time() >= snapshot_after:
                try:
                    await self.book.snapshot_if_due()
                except Exception:
                    log.exception(
                        "ledger snapshot failed; trying again in %.0f s", SNAPSHOT_RETRY_S
                    )
                    snapshot_after = loop.time() + SNAPSHOT_RETRY_S

    def _apply_states(self, states: list[SettledState]) -> None:
        """Brings the engine's subscriber table up to what recovery or a refund wrote."""
        states = [s for s in states if s is not None]
        # At start the table is loaded before recovery runs (an empty one has no line).
        if states and self.engine.subscriber_count():
            self.engine.set_states(*state_columns(states))
            self._committed_batch()

    async def close(self) -> None:
        """Finishes every queued payment, then releases the store thread."""
        self.end_watches()
        for task in (self._sweeper, self._reporter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._batcher.close()
        log.info("batches since start: %s", self._batcher.total.describe())
        await self._pipeline.drain()
        self._reader_thread.close()
        if self._reader is not self._store:
            self._reader.close()
        if self._inline_reader is not None:
            self._inline_reader.close()
        self._reconcile_thread.close()
        if self._reconciler is not self._store:
            self._reconciler.close()
        self._thread.close()

    def end_watches(self) -> None:
        """Ends every WatchSettlements stream cleanly (the server is draining); a client
        resumes from the last cursor it saw, on this server or another."""
        self._watch.close()

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """Calls ``listener`` after every committed batch (the event relay wakes on it)."""
        self._commit_listeners.append(listener)

    def _committed_batch(self) -> None:
        for listener in self._commit_listeners:
            listener()

    async def on_store_thread(self, fn: Callable[[], R]) -> R:
        """Runs ``fn`` on the store's one thread, between batches (the two-phase sweep)."""
        return await self._thread.run(fn)

    async def backlog(self) -> tuple[int | None, int]:
        """For the metrics: (created_at_us of the oldest event the broker has not
        acknowledged, or None; discrepancies not yet resolved), read on the reader's
        connection."""

        def read() -> tuple[int | None, int]:
            oldest = self._reader.outbox_unpublished(1)
            return (oldest[0].created_at_us if oldest else None), self._reader.open_discrepancies()

        return await self._reader_thread.run(read)

    async def outbox_unpublished(self, limit: int) -> list[OutboxEvent]:
        """For the event relay: the oldest events the broker has not acknowledged."""
        return await self._thread.run(self._store.outbox_unpublished, limit)

    async def mark_published(self, cursors: list[int]) -> None:
        """For the event relay: the broker acknowledged these events."""
        await self._thread.run(self._store.mark_published, cursors)

    def watch(
        self, from_cursor: int, kinds: Sequence[str] = (), account_id: str = ""
    ) -> AsyncIterator[OutboxEvent]:
        """Events after ``from_cursor``, in order, then new ones as they commit; raises
        ``Overloaded`` at the first step past ``watch.WATCH_STREAMS_MAX`` open streams
        (settlement/watch.py)."""
        return self._watch.watch(from_cursor, kinds, account_id)

    async def pay(self, intent: PaymentIntent) -> Outcome:
        """Settles one payment, or replays the outcome already stored for its key.

        The settlement goes on whatever the caller does: a caller that goes away (a
        cancelled RPC) does not cancel a payment already queued, and a retry joins it.
        Refuses with ``Overloaded`` before any work when the engine is past its queue's
        bounds (count, or the wait the payment could expect: settlement/admission.py).
        """
        # The waiter is woken by the settlement's one done callback (``_finished``), which
        # takes its key out of the in-flight table too: one callback per call, not two.
        waiter: asyncio.Future[None] = self._batcher.loop().create_future()
        future, joined = self._start(intent, waiter=waiter)
        if joined:
            outcome = await _by_deadline(future, intent)
            return dataclasses.replace(outcome, replayed=True)
        return await _by_deadline(future, intent, waiter)

    def pay_nowait(self, intent: PaymentIntent) -> tuple[asyncio.Future[Outcome], bool]:
        """``pay`` without the wait (PayStream, which answers each payment from a done
        callback instead of a task of its own): the settlement's future and whether it
        joined one already running (``outcome_of`` then marks it a replay). Refuses as
        ``pay`` does, before any work. Nothing cancels the future when its caller goes."""
        return self._start(intent)

    async def pay_many(self, intents: Sequence[PaymentIntent]) -> list[Outcome | BaseException]:
        """Settles each payment as ``pay`` does, all at once; each gets its outcome or
        the exception that ended it alone, in order. The payments of one call share its
        deadline, so the call waits once for all of them, not once for each. They are
        admitted together: past the queue's bounds the call is refused whole with
        ``Overloaded``, before any of them is queued. They queue as one group (one
        future for the call, not one per payment); a key already settling, here or in
        this same call, joins that settlement as ``pay`` does."""
        if not intents:
            return []
        deadline = min((i.deadline for i in intents if i.deadline is not None), default=None)
        self._batcher.admit(len(intents), deadline)
        results: list[Outcome | BaseException | None] = [None] * len(intents)
        fresh: list[PaymentIntent] = []
        fresh_at: list[int] = []  # each fresh payment's place in the call
        own: dict[str, int] = {}  # key -> its fresh payment's index, for repeats in the call
        joined: dict[int, asyncio.Future[Outcome] | int] = {}  # another's future, or own
        inflight = self._inflight
        for index, intent in enumerate(intents):
            key = intent.idempotency_key
            first = own.get(key)
            if first is None and key not in inflight:
                own[key] = len(fresh)
                fresh.append(intent)
                fresh_at.append(index)
                continue
            try:
                if first is None:
                    joined[index] = self._start(intent, admitted=True)[0]
                else:
                    _same_payload(key, fresh[first].fingerprint, intent)
                    joined[index] = first
            except QuickpayError as err:
                results[index] = err
        ticket: GroupTicket[Outcome] | None = None
        if fresh:
            try:
                ticket = self._batcher.submit_group(fresh)
            except QuickpayError as err:
                for index in fresh_at:
                    results[index] = err
            else:
                for j, intent in enumerate(fresh):
                    inflight[intent.idempotency_key] = (intent.fingerprint, ticket, j)
                ticket.future.add_done_callback(
                    functools.partial(self._group_finished, fresh, ticket)
                )
        await self._wait_all(ticket, joined, deadline)
        if ticket is not None:
            for index, r in zip(fresh_at, ticket.results, strict=True):
                # An outcome (nearly every one) is the answer as it is.
                results[index] = (
                    r if r.__class__ is Outcome else _result_of(r, intents[index], replayed=False)
                )
        for index, joins in joined.items():
            ended: object = joins
            if isinstance(joins, int):
                ended = ticket.results[joins] if ticket is not None else results[fresh_at[joins]]
            results[index] = _result_of(ended, intents[index], replayed=True)
        return results  # type: ignore[return-value]

    async def _wait_all(
        self,
        ticket: GroupTicket[Outcome] | None,
        joined: Mapping[int, asyncio.Future[Outcome] | int],
        deadline: float | None,
    ) -> None:
        """Waits for the group and the settlements joined, then for the group's payments
        handed on to later batches (deferred behind another of their account), until the
        call's deadline allows no more."""
        loop = asyncio.get_running_loop()
        wait_s = _wait_s(deadline)
        until = None if wait_s is None else loop.time() + wait_s
        waiting: set[asyncio.Future[Any]] = {
            f for f in joined.values() if isinstance(f, asyncio.Future)
        }
        if ticket is not None:
            waiting.add(ticket.future)
        if waiting:
            await asyncio.wait(waiting, timeout=wait_s)
        if ticket is None or not ticket.future.done():
            return
        handed = {r for r in ticket.results if isinstance(r, asyncio.Future) and not r.done()}
        if handed:
            await asyncio.wait(handed, timeout=None if until is None else until - loop.time())

    def _start(
        self,
        intent: PaymentIntent,
        admitted: bool = False,
        waiter: asyncio.Future[None] | None = None,
    ) -> tuple[asyncio.Future[Outcome], bool]:
        """The settlement of ``intent``: newly queued, or the one of its key already
        running (joined: the caller gets its outcome as a replay; it adds no work, so it
        is never refused for load). Refuses the key used for another payload still
        settling, an engine past its queue's bounds (unless the caller ``admitted`` it
        already) and a draining server. ``waiter``: completed when a newly queued
        settlement ends (not when one is joined)."""
        key = intent.idempotency_key
        running = self._inflight.get(key)
        if running is None:
            if not admitted:
                self._batcher.admit(1, intent.deadline)
            future = self._batcher.submit_nowait(intent)
            self._inflight[key] = (intent.fingerprint, future, -1)
            future.add_done_callback(functools.partial(self._finished, key, waiter))
            return future, False
        fingerprint, settling, index = running
        _same_payload(key, fingerprint, intent)
        if isinstance(settling, GroupTicket):
            return _member(settling, index), True
        return settling, True

    def _finished(
        self, key: str, waiter: asyncio.Future[None] | None, future: asyncio.Future[Outcome]
    ) -> None:
        running = self._inflight.get(key)
        if running is not None and running[1] is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # retrieved here, so a caller that left does not warn
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _group_finished(
        self,
        intents: list[PaymentIntent],
        ticket: GroupTicket[Outcome],
        future: asyncio.Future[Any],
    ) -> None:
        """A group's payments have their results: their keys leave the in-flight table
        (a key a later settlement took meanwhile stays). A payment handed on to a later
        batch (deferred behind another of its account) is still settling: its key stays,
        joinable, until that settlement ends, as a single payment's does."""
        results = None if future.cancelled() else future.result()
        inflight = self._inflight
        # ``_forget`` inline: a call and a getattr a payment less.
        for j, intent in enumerate(intents):
            r = None if results is None else results[j]
            key = intent.idempotency_key
            if isinstance(r, asyncio.Future) and not r.done():
                r.add_done_callback(functools.partial(self._member_finished, key, future))
                continue
            running = inflight.get(key)
            if running is not None and running[1] is ticket:
                del inflight[key]

    def _member_finished(
        self, key: str, group: asyncio.Future[Any], settled: asyncio.Future[Outcome]
    ) -> None:
        """A group's payment handed on to a later batch has ended."""
        self._forget(key, group)
        _retrieve(settled)  # retrieved even if its caller left

    def _forget(self, key: str, group: asyncio.Future[Any]) -> None:
        running = self._inflight.get(key)
        if running is not None and getattr(running[1], "future", None) is group:
            del self._inflight[key]

    async def apply_subscriber_changes(
        self, changes: SubscriberChanges, source: str = ""
    ) -> ChangeResult:
        """The one way a live subscriber change reaches the engine (UpsertSubscribers,
        the --subscriber-events feed), a batch at a time.

        Once no payment of the batch's accounts is in flight (and until the batch is
        done, their payments wait), the batch commits in the store, all or nothing, with
        its versions and an audit row per change (``store.apply_subscriber_changes``);
        then the engine's table (which is also fraud scoring's subscriber profiles)
        takes every changed line, without a restart.
        What the store committed is the truth: a crash after it leaves the rest to the
        next start, which reads the store. The work goes on if the caller goes away (a
        cancelled call), so a committed batch always reaches the engine. Raises
        ``InvalidArgument`` naming the change that the store refused (then nothing of
        the batch is applied)."""
        if not changes:
            return ChangeResult(0, 0, frozenset(), [])
        return await asyncio.shield(asyncio.ensure_future(self._apply_changes(changes, source)))

    async def _apply_changes(self, changes: SubscriberChanges, source: str) -> ChangeResult:
        accounts = sorted(set(changes.account_ids))
        async with self._changing:
            await self._pipeline.hold_accounts(accounts)
            try:
                result = await self._thread.run(
                    self._store.apply_subscriber_changes, changes, source
                )
                if result.rows:
                    # The engine's table is fraud scoring's profiles too; a new line's
                    # ledger account is opened by its first hold, as at start.
                    load_rows(self.engine, result.rows)
                    await self.book.anchor(self._store.audit_head)
                    self._committed_batch()  # their events: the relay and watchers wake
            finally:
                self._pipeline.release_accounts(accounts)
        return result

    async def reconcile(
        self,
        gateway: str,
        report_csv: bytes,
        mapping: ColumnMapping | None,
        tolerance_s: int,
        business_day: date | None,
    ) -> ReconcileRun:
        """Reconciles a gateway report against this store, on the reconciliation's own
        thread and connection, one run at a time (``RECONCILE_WAITING_MAX``)."""
        return await self.reconcile_into(
            _same, gateway, report_csv, mapping, tolerance_s, business_day
        )

    async def reconcile_into(
        self,
        answer: Callable[[ReconcileRun], R],
        gateway: str,
        report_csv: bytes,
        mapping: ColumnMapping | None,
        tolerance_s: int,
        business_day: date | None,
    ) -> R:
        """``reconcile``, then ``answer`` of its run, on the same thread: a reply of
        50,000 discrepancies takes 0.4 s to build, which would hold the event loop."""
        known = [g.name for g in self.router.config.gateways]
        if gateway not in known:
            raise InvalidArgument(
                "gateway", f"no gateway {echo(gateway)} here; the gateways are {known}"
            )
        if len(report_csv) > REPORT_BYTES_MAX:
            raise InvalidArgument(
                "report_csv",
                f"{len(report_csv)} bytes; a report may have at most {REPORT_BYTES_MAX}",
            )
        if self._reconciles >= 1 + RECONCILE_WAITING_MAX:
            raise Overloaded(
                f"{self._reconciles} reconciliations are running or waiting, the most"
                " this server takes; retry when one has finished"
            )
        self._reconciles += 1
        try:
            return await self._reconcile(
                answer, gateway, report_csv, mapping, tolerance_s, business_day
            )
        finally:
            self._reconciles -= 1

    async def _reconcile(
        self,
        answer: Callable[[ReconcileRun], R],
        gateway: str,
        report_csv: bytes,
        mapping: ColumnMapping | None,
        tolerance_s: int,
        business_day: date | None,
    ) -> R:
        try:
            text = report_csv.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ReportError(f"report_csv is not UTF-8 ({err.reason})") from None
        lines = io.StringIO(text, newline="")

        def run_and_answer() -> R:
            return answer(
                reconciliation.run(
                    self._reconciler, gateway, lines, mapping, tolerance_s, business_day
                )
            )

        return await self._reconcile_thread.run(run_and_answer)

    async def record_access(self, content: Mapping[str, object]) -> None:
        """Appends who asked for a refund or a reconciliation run to the audit trail (one
        row, its own transaction, on the store thread) and anchors the new head in the
        ledger's log, as a batch's commit does."""
        await self._thread.run(self._store.record_access, content)
        await self.book.anchor(self._store.audit_head)

    async def get_payment(
        self, *, payment_id: str = "", idempotency_key: str = ""
    ) -> PaymentRecord:
        """A stored payment by id or key; NotFound when there is none."""
        record = await self._reader_thread.run(
            self._reader.get_payment, payment_id=payment_id, idempotency_key=idempotency_key
        )
        if record is None:
            raise NotFound(
                f"no payment with {'payment_id' if payment_id else 'idempotency_key'}"
                f" {echo(payment_id or idempotency_key)}"
            )
        return record


async def _by_deadline(
    future: asyncio.Future[Outcome],
    intent: PaymentIntent,
    waiter: asyncio.Future[None] | None = None,
) -> Outcome:
    """The settlement's outcome, or, when the caller's deadline comes first, OutcomePending
    just before it: the payment goes on (nothing here cancels it) and a retry with the
    same key gets its outcome, where a reply after the deadline would reach nobody and
    the caller would see only DEADLINE_EXCEEDED, not knowing whether to retry.

    One waiter future and at most one timer per call, where ``asyncio.wait`` and
    ``asyncio.shield`` built sets, closures and an outer future each time: this is the
    wait of every unary Pay. ``waiter``: one that the settlement's end completes already
    (``SettlementService._start``); else one is made here, woken by a done callback of
    its own. A cancelled caller cancels only its waiter."""
    if not future.done():
        loop = future.get_loop()  # not asyncio.get_running_loop(): a getpid() per call
        wake = None
        if waiter is None:
            waiter = loop.create_future()
            wake = functools.partial(_wake, waiter)
            future.add_done_callback(wake)
        timer = None
        if intent.deadline is not None:
            timer = loop.call_later(_wait_s(intent.deadline, loop), _wake, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if wake is not None:
                future.remove_done_callback(wake)
        if not future.done():
            raise _pending(intent)
    # The settlement's own exception (a TimeoutError included) is its failure, as is
    # its cancellation (CancelledError): neither is taken for our deadline.
    return future.result()


def _wake(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


def outcome_of(future: asyncio.Future[Outcome], joined: bool) -> Outcome:
    """The outcome of a settlement started by ``pay_nowait``, once its future is done:
    marked a replay when it was joined; raises the exception that ended it, and
    ``ShuttingDown`` when it was cancelled (the engine stopped before it ended)."""
    if future.cancelled():
        raise ShuttingDown("the engine stopped before this payment ended")
    outcome = future.result()
    return dataclasses.replace(outcome, replayed=True) if joined else outcome


def _same_payload(key: str, fingerprint: str, intent: PaymentIntent) -> None:
    """Refuses ``intent`` when its key is settling for another payload."""
    if fingerprint != intent.fingerprint:
        raise IdempotencyConflict(
            f"idempotency_key {echo(key)} is being used for another payment, still settling"
        )


def _member(ticket: GroupTicket[Outcome], index: int) -> asyncio.Future[Outcome]:
    """A future of one payment of a group (for a caller that joins its key)."""
    member: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def ended(_: asyncio.Future[Any]) -> None:
        resolve(member, ticket.results[index])

    ticket.future.add_done_callback(ended)
    return member


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _result_of(r: object, intent: PaymentIntent, replayed: bool) -> Outcome | BaseException:
    """One payment's answer from what its settlement left: an outcome (marked replayed
    for a caller that joined another's settlement), the exception that ended it alone,
    or OutcomePending when it is still under way at the deadline."""
    if isinstance(r, asyncio.Future):
        if not r.done():
            return _pending(intent)
        if r.cancelled():
            return ShuttingDown("the engine stopped before this payment ended")
        if (err := r.exception()) is not None:
            return err
        r = r.result()
    if r is None:
        return _pending(intent)
    if isinstance(r, BaseException):
        return r
    assert isinstance(r, Outcome)
    return dataclasses.replace(r, replayed=True) if replayed else r


def _wait_s(deadline: float | None, loop: asyncio.AbstractEventLoop | None = None) -> float | None:
    """How long to wait for an outcome: until REPLY_MARGIN_S before the caller's
    deadline (at most half of what it has left), so the reply still reaches it.
    ``loop``: the running loop, where the caller has it at hand."""
    if deadline is None:
        return None
    left = deadline - (loop or asyncio.get_running_loop()).time()
    return max(0.0, left - min(REPLY_MARGIN_S, left / 2))


def _pending(intent: PaymentIntent) -> OutcomePending:
    return OutcomePending(
        f"payment with idempotency_key {echo(intent.idempotency_key)} is not finished at the"
        " call's deadline and goes on: retry with the same idempotency_key for its outcome"
    )


def _same(run: ReconcileRun) -> ReconcileRun:
    return run


def outcome_counts(results: Sequence[object]) -> collections.Counter[tuple[str, str]]:
    """A batch's results by (status, decline reason): a replay is REPLAYED, a payment
    that ended with an error ERROR and its error's name; one handed on to a later batch
    is counted there."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for r in results:
        if isinstance(r, Outcome):
            counts["REPLAYED" if r.replayed else r.status.name, r.decline_reason] += 1
        elif isinstance(r, BaseException):
            counts["ERROR", type(r).__name__] += 1
    return counts


def _counted(
    prepare: Callable[[Sequence[PaymentIntent]], Awaitable[Any]],
    complete: Callable[[Any], Awaitable[list[Outcome | BaseException]]],
    metrics: Metrics,
) -> tuple[
    Callable[[Sequence[PaymentIntent]], Awaitable[Any]],
    Callable[[Any], Awaitable[list[Outcome | BaseException]]],
]:
    """The pipeline's two stages with each batch's size and outcomes counted, once per
    batch."""

    async def counted_prepare(intents: Sequence[PaymentIntent]) -> Any:
        metrics.batch(len(intents))
        try:
            return await prepare(intents)
        except Exception as err:
            metrics.outcomes(collections.Counter({("ERROR", type(err).__name__): len(intents)}))
            raise

    async def counted_complete(batch: Any) -> list[Outcome | BaseException]:
        try:
            results = await complete(batch)
        except Exception as err:
            metrics.outcomes(collections.Counter({("ERROR", type(err).__name__): 1}))
            raise
        metrics.outcomes(outcome_counts(results))
        return results

    return counted_prepare, counted_complete
