"""Micro-batching: concurrent callers share one engine call and one database commit.

A single consumer task takes what is queued, up to ``batch_max`` items, waiting at most
``linger_ms`` after the first for more to arrive, and hands the batch to ``process``.
While one batch is processed the next accumulates, so under load batches fill up by
themselves. It lingers only while payments arrive fast enough that one more is expected
within the linger: at low load a payment would wait the whole linger for no company, so
its batch starts at once. Under load it waits the linger once more for each batch being
processed ahead of it, and BUSY_LINGER_TIMES as long while the event loop's thread is
on a CPU half the time or more: then each batch's own steps on the loop are what limits
the rate, and fewer, larger batches answer more payments a second. Up to
``inflight_max`` batches are processed at once (the process function orders what must
be ordered), so a slow step such as a gateway round trip is overlapped, not queued; the
next batch is taken when a slot frees, with everything that arrived meanwhile, and a
group (a PayBatch call) goes whole into one batch.

Callers are admitted by count (``queue_max``) and by time: ``admit`` refuses work that
would wait in the queue longer than the ``Admission`` bound, measured from the rate at
which busy batches are taken (settlement/admission.py). Work the engine hands back to
itself (a payment deferred behind another of its account) is not admitted again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from quickpay_engine.errors import NotOwner, Overloaded, ShuttingDown
from quickpay_engine.settlement.admission import QUEUE_WAIT_MAX_MS, Admission

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# The batcher lingers only when at least this many more items are expected to arrive
# within the linger the batch would wait (its smoothed arrival rate times ``linger_ms``
# for itself and for each batch ahead of it). Below it, waiting adds the whole linger
# to a payment's latency and most likely gathers nothing. Counted within one
# ``linger_ms`` whatever was ahead, a closed loop of callers whose payments were all
# held by the batches in flight arrived at under one a millisecond, stopped lingering,
# and stayed in batches of what one batch's answers freed (benches/RESULTS.md).
LINGER_WORTH_ITEMS = 1.0
# While the event loop's thread spent at least this share of the time since the last
# take on a CPU (smoothed as the arrival rate is), it is the scarce part, and a batch
# lingers BUSY_LINGER_TIMES as long. Each batch costs the loop about 1.25 ms of its
# own steps (stage hand-overs, futures, the core calls that hold the GIL) against about
# 0.26 ms a payment, so there four small batches answer fewer payments than one four
# times their size. A loop that is the bound on a machine whose cores it shares with
# other busy threads runs 0.6 to 0.7 of the time (the rest it waits in the run queue);
# below one payment expected per linger (1,000 a second at the default linger) no batch
# lingers at all, busy or not.
BUSY_LOOP_SHARE = 0.5
BUSY_LINGER_TIMES = 4
# The smoothed arrival rate (and the loop's busy share) forgets with this time constant:
# the latest cycle's rate (items arrived since the previous take, over the time since
# then) moves it by 1 - exp(-elapsed / this), so a quiet spell of a second or more is
# what counts after it.
_RATE_TAU_S = 0.1

# Processes one batch; returns one result per item, in order: a value, an exception for
# that item alone, or a future that will hold its result (the item was handed on).
Process = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]
# A two-stage batch: the first stage returns what the second needs, and the second
# returns the results (see MicroBatcher).
Prepare = Callable[[Sequence[T]], Awaitable[Any]]
Complete = Callable[[Any], Awaitable[Sequence["R | BaseException"]]]


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """How payments are gathered into batches (see MicroBatcher); `quickpay serve` sets them
    from its flags."""

    batch_max: int = 512
    linger_ms: float = 1.0
    queue_max: int = 20_000
    # Batches past stage 1 (at the gateways or committing) at once: what hides gateway
    # latency. At the bound the next batch waits before it starts.
    inflight_max: int = 8
    # A payment expected to wait longer than this in the queue is refused at once
    # (RESOURCE_EXHAUSTED); 0: refused by count only (settlement/admission.py).
    queue_wait_max_ms: float = QUEUE_WAIT_MAX_MS


@dataclasses.dataclass
class BatchStats:
    """How big the batches were: what an SRE looks at to see the batching flags work."""

    batches: int = 0
    items: int = 0
    largest: int = 0

    def add(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)

    def describe(self) -> str:
        mean = self.items / self.batches if self.batches else 0.0
        return (
            f"{self.items} payments in {self.batches} batches"
            f" (mean {mean:.1f}, largest {self.largest})"
        )


@dataclasses.dataclass(eq=False, slots=True)
class _Entry(Generic[T]):
    """What one submission queued: one item, or a group of them (a PayBatch call's
    payments) with one future for all of them. A group goes whole into one batch, which
    starts with it when the batch being gathered has no room for it; only a group larger
    than a whole batch is taken in parts, in order, across consecutive batches."""

    items: Sequence[T]
    future: asyncio.Future[Any]
    # Group only: each item's result as its part ends (None until then).
    results: list[Any] | None = None
    taken: int = 0  # items already in a batch
    open_parts: int = 0  # parts in a batch whose results are not in yet


# A part of an entry in a batch: the entry, and the range of its items.
_Part = tuple[_Entry[T], int, int]


class GroupTicket(Generic[R]):
    """A group's future (done once every item has its result) and the results as they
    come in: a caller whose deadline comes first reads what has ended so far."""

    __slots__ = ("future", "results")

    def __init__(self, future: asyncio.Future[list[Any]], results: list[Any]) -> None:
        self.future = future
        # Each item's result: a value, the exception that ended it alone, a future that
        # will hold it (the item was handed on), or None while its part is under way.
        self.results = results


class MicroBatcher(Generic[T, R]):
    """Gathers submissions into batches for ``process``.

    Bounds: at most ``queue_max`` items wait; one more is refused with ``Overloaded``
    before any work is done (back-pressure the caller sees at once). Callers ask
    ``admit`` first, which also refuses by expected wait (``admission``; None: by count
    only). A group (``submit_group``) queues as one entry with one future: its items
    cost the consumer no queue operation or future each.
    """

    def __init__(
        self,
        process: Process[T, R] | Prepare[T],
        *,
        batch_max: int = 512,
        linger_ms: float = 1.0,
        queue_max: int = 20_000,
        inflight_max: int = 1,
        complete: Complete[R] | None = None,
        admission: Admission | None = None,
        busy_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        """With ``complete``, ``process`` is the first of two stages: it runs one batch
        at a time, in order, and the next batch gathers while it runs (so under load
        batches grow instead of queueing small); ``complete`` then finishes the batch
        while later batches go through the first stage, at most ``inflight_max`` at once.
        Without it, ``process`` does the whole batch, ``inflight_max`` batches at once."""
        assert batch_max >= 1 and queue_max >= batch_max and linger_ms >= 0
        assert inflight_max >= 1
        # At most this many batches are being processed at once; the next one is
        # taken once a slot frees, with what arrived meanwhile.
        self._slots = asyncio.Semaphore(inflight_max)
        self._out = 0  # slots held: batches being processed, and the one gathering
        self._running: set[asyncio.Task[None]] = set()
        self._process = process
        self._complete = complete
        self._batch_max = batch_max
        self._linger_s = linger_ms / 1_000
        self._queue_max = queue_max
        self._entries: collections.deque[_Entry[T]] = collections.deque()
        self._waiting = 0  # items queued and not yet in a batch
        self._arrived = 0  # items queued since the consumer's last take
        self._last_take_s: float | None = None  # loop time of that take
        self.arrival_per_s = 0.0  # items queued per second, smoothed over takes
        # The CPU seconds of the thread the consumer runs on (the event loop's): its
        # share of the wall clock between takes says whether the loop is the bound.
        self._busy_clock = busy_clock
        self._last_busy_s: float | None = None
        self.loop_busy = 0.0  # that share, smoothed over takes
        self._unfinished = 0  # items queued or in a batch not yet ended
        self._idle: asyncio.Event | None = None  # set by the last item's end, for close
        self._wakeup: asyncio.Future[None] | None = None  # the consumer waits for items
        self._task: asyncio.Task[None] | None = None
        # The loop ``start`` ran on: every entry's future is made on it without asking
        # asyncio.get_running_loop() (a getpid() each) once per submission.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.admission = admission or Admission(wait_max_s=0)
        # Since start, and since the last ``take_window``.
        self.total = BatchStats()
        self._window = BatchStats()

    def start(self) -> None:
        """Starts the consumer task on the running loop."""
        assert self._task is None
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="micro-batcher")

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the batcher runs on (the running one before ``start``)."""
        return self._loop or asyncio.get_running_loop()

    def admit(self, count: int = 1, deadline_s: float | None = None) -> None:
        """Raises ``Overloaded`` unless ``count`` more items may be queued now: there is
        room for all of them, and the wait they can expect is within the admission bound
        and before ``deadline_s`` (monotonic seconds; None: no deadline). A call's
        payments are admitted or refused together, before any of them is queued."""
        waiting = self._waiting
        if waiting + count > self._queue_max:
            raise Overloaded(
                f"settlement queue is full ({waiting} payments waiting, {count} more asked,"
                f" at most {self._queue_max})"
            )
        self.admission.check(waiting, deadline_s)

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Queues one item; its result arrives in the returned future.

        Nothing cancels that future when a caller stops waiting: a caller waits through
        ``asyncio.wait`` or ``asyncio.shield``, so a cancelled RPC does not pull its item
        out of a batch already under way and nothing is half done. Refuses with
        ``Overloaded`` (the queue is full) or ``ShuttingDown`` before any work.
        """
        future: asyncio.Future[R] = self._queue_entry((item,), None).future
        return future

    def submit_group(self, items: Sequence[T]) -> GroupTicket[R]:
        """Queues ``items`` as one entry: they go into batches in order, together as far
        as a batch has room, and the ticket's future is done once each has its result
        (never an exception: a failure of a whole batch is each item's result). Refuses
        all of them, as ``submit_nowait`` refuses one, before any is queued."""
        assert items, "an empty group has nothing to wait for"
        results: list[Any] = [None] * len(items)
        return GroupTicket(self._queue_entry(items, results).future, results)

    def _queue_entry(self, items: Sequence[T], results: list[Any] | None) -> _Entry[T]:
        if self._closing:
            raise ShuttingDown("the engine is shutting down")
        if self._waiting + len(items) > self._queue_max:
            raise Overloaded(f"settlement queue is full ({self._waiting} payments waiting)")
        entry = _Entry(items, (self._loop or asyncio.get_running_loop()).create_future(), results)
        self._entries.append(entry)
        self._waiting += len(items)
        self._arrived += len(items)
        self._unfinished += len(items)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        return entry

    async def submit(self, item: T) -> R:
        """Queues one item and waits for its result (see ``submit_nowait``)."""
        return await asyncio.shield(self.submit_nowait(item))

    def take_window(self) -> BatchStats:
        """The batches since the last call (or start), and a new window begun."""
        window, self._window = self._window, BatchStats()
        return window

    @property
    def queue_max(self) -> int:
        """The queue's bound: one item past it is refused (``Overloaded``)."""
        return self._queue_max

    def waiting(self) -> int:
        """Items queued and not yet in a batch."""
        return self._waiting

    async def close(self) -> None:
        """Refuses new items, lets everything queued finish, then stops the consumer."""
        self._closing = True
        if self._unfinished:
            self._idle = asyncio.Event()
            await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _more(self, timeout_s: float | None) -> bool:
        """Waits until an item is queued (True) or ``timeout_s`` has passed (False)."""
        if self._entries:
            return True
        if timeout_s is not None and timeout_s <= 0:
            return False
        loop = asyncio.get_running_loop()
        self._wakeup = wakeup = loop.create_future()
        timer = None if timeout_s is None else loop.call_later(timeout_s, _done, wakeup)
        try:
            await wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()
        return bool(self._entries)

    def _linger(self, now: float) -> float:
        """How long the batch about to be taken waits for more: ``linger_ms`` once for
        itself and once more for each batch still being processed ahead of it, or nothing
        at all unless at least ``LINGER_WORTH_ITEMS`` more are expected within that. The
        batches ahead share the CPU and the store's writer with it, so under load a
        faster stage would otherwise only make the batches smaller, each paying its
        per-batch cost (the store's commit and fsync, the loop's bookkeeping) for fewer
        payments; at low load no batch is ahead and nothing changes. While the loop's
        thread is on a CPU ``BUSY_LOOP_SHARE`` of the time or more, all of that
        ``BUSY_LINGER_TIMES`` over: the loop is the bound, and what it spends per batch
        is what a larger batch saves."""
        last, self._last_take_s = self._last_take_s, now
        arrived, self._arrived = self._arrived, 0
        busy_s = self._busy_clock()
        busy_last, self._last_busy_s = self._last_busy_s, busy_s
        if last is not None and now > last:
            weight = -math.expm1(-(now - last) / _RATE_TAU_S)
            self.arrival_per_s += weight * (arrived / (now - last) - self.arrival_per_s)
            if busy_last is not None:
                share = (busy_s - busy_last) / (now - last)
                self.loop_busy += weight * (share - self.loop_busy)
        linger = self._linger_s * self._out
        if self.arrival_per_s * linger < LINGER_WORTH_ITEMS:
            return 0.0
        return linger * BUSY_LINGER_TIMES if self.loop_busy >= BUSY_LOOP_SHARE else linger

    def _take(self, room: int, in_batch: int) -> list[_Part[T]]:
        """Parts of the entries at the head of the queue, at most ``room`` items, for a
        batch holding ``in_batch`` already. A group that does not fit whole in the room
        left is left for the next batch, unless the batch is still empty (a group larger
        than a batch is taken in parts): split, its call would wait for two batches,
        both part-sized."""
        parts: list[_Part[T]] = []
        entries = self._entries
        while room and entries:
            entry = entries[0]
            start = entry.taken
            if len(entry.items) - start > room and (parts or in_batch):
                break
            end = min(len(entry.items), start + room)
            parts.append((entry, start, end))
            self._waiting -= end - start  # in a batch now, even while it lingers
            entry.taken = end
            entry.open_parts += 1
            room -= end - start
            if end == len(entry.items):
                entries.popleft()
        return parts

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self.admission.clock
        while True:
            # A batch is taken only once it can start: while every slot is busy the
            # payments arriving wait in the queue and go together into the batch taken
            # when a slot frees. Taken first, a batch would wait for the slot at
            # whatever size it had, and under load the batches would shrink as the
            # stages get faster, each paying its per-batch cost for fewer payments.
            await self._slots.acquire()
            self._out += 1
            # Items already waiting: the time since the last take was all work.
            backlogged = bool(self._entries)
            await self._more(None)
            taken_s = clock()
            now = loop.time()
            deadline = now + self._linger(now)
            parts = self._take(self._batch_max, 0)
            count = sum(end - start for _, start, end in parts)
            while count < self._batch_max and await self._more(deadline - loop.time()):
                more = self._take(self._batch_max - count, count)
                if not more:
                    break  # the next group starts the next batch
                parts += more
                count += sum(end - start for _, start, end in more)
            self.admission.taken(count, taken_s, backlogged)
            self.total.add(count)
            self._window.add(count)
            items: list[T] = []
            for entry, start, end in parts:
                items.extend(entry.items[start:end])
            if self._complete is None:
                work = self._process(items)
            else:
                try:
                    prepared = await self._process(items)
                except Exception as err:
                    self._fail(parts, count, err)
                    self._free(count)
                    continue
                work = self._complete(prepared)
            task = loop.create_task(self._settle_and_free(parts, count, work))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _free(self, count: int) -> None:
        self._out -= 1
        self._slots.release()
        self._unfinished -= count
        if not self._unfinished and self._idle is not None:
            self._idle.set()

    async def _settle_and_free(
        self, parts: list[_Part[T]], count: int, work: Awaitable[Sequence[R | BaseException]]
    ) -> None:
        try:
            try:
                results = await work
                assert len(results) == count, "process must return one result per item"
            except Exception as err:
                self._fail(parts, count, err)
            else:
                self._deliver(parts, results)
        finally:
            self._free(count)

    def _fail(self, parts: list[_Part[T]], count: int, err: Exception) -> None:
        # A failure of the whole batch (the database went away) fails each caller with
        # that error; the items are not retried behind their backs. A fenced engine
        # refuses every batch until it owns its databases again: one line each, which
        # the ownership watcher's log explains.
        if isinstance(err, NotOwner):
            log.warning("settlement batch of %d refused: %s", count, err)
        else:
            log.error("settlement batch of %d failed", count, exc_info=err)
        self._deliver(parts, [err] * count)

    def _deliver(self, parts: list[_Part[T]], results: Sequence[R | BaseException]) -> None:
        at = 0
        for entry, start, end in parts:
            entry.open_parts -= 1
            future = entry.future
            if entry.results is not None:
                # A group: its results in place; its future once the last part is in.
                entry.results[start:end] = results[at : at + end - start]
                at += end - start
                ended = not entry.open_parts and entry.taken == len(entry.items)
                if ended and not future.done():
                    future.set_result(entry.results)
                continue
            result = results[at]
            at += 1
            if not future.done():
                resolve(future, result)


def resolve(future: asyncio.Future[R], result: object) -> None:
    """Completes ``future`` with an item's result: its value, the exception that ended
    it, or, for an item handed on (resubmitted later), that settlement's answer."""
    if isinstance(result, asyncio.Future):
        result.add_done_callback(functools.partial(copy_outcome, future))
    elif isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def copy_outcome(into: asyncio.Future[R], source: asyncio.Future[R]) -> None:
    """Completes ``into`` as ``source`` ended (a result handed on to another future)."""
    if into.done():
        return
    if source.cancelled():
        into.cancel()
    elif (err := source.exception()) is not None:
        into.set_exception(err)
    else:
        into.set_result(source.result())
