"""Micro-batching: concurrent callers share one engine call and one database commit.

A single consumer task takes what is queued, up to ``batch_max`` items, waiting at most
``linger_ms`` after the first for more to arrive, and hands the batch to ``process``.
While one batch is processed the next accumulates, so under load batches fill up by
themselves and at low load a payment waits at most ``linger_ms``. Up to
``inflight_max`` batches are processed at once (the process function orders what must
be ordered), so a slow step such as a gateway round trip is overlapped, not queued.

Callers are admitted by count (``queue_max``) and by time: ``admit`` refuses work that
would wait in the queue longer than the ``Admission`` bound, measured from the rate at
which busy batches are taken (settlement/admission.py). Work the engine hands back to
itself (a payment deferred behind another of its account) is not admitted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from quickpay_engine.errors import NotOwner, Overloaded, ShuttingDown
from quickpay_engine.settlement.admission import QUEUE_WAIT_MAX_MS, Admission

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

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


class MicroBatcher(Generic[T, R]):
    """Gathers submissions into batches for ``process``.

    Bounds: at most ``queue_max`` submissions wait; one more is refused with
    ``Overloaded`` before any work is done (back-pressure the caller sees at once).
    Callers ask ``admit`` first, which also refuses by expected wait (``admission``;
    None: by count only).
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
    ) -> None:
        """With ``complete``, ``process`` is the first of two stages: it runs one batch
        at a time, in order, and the next batch gathers while it runs (so under load
        batches grow instead of queueing small); ``complete`` then finishes the batch
        while later batches go through the first stage, at most ``inflight_max`` at once.
        Without it, ``process`` does the whole batch, ``inflight_max`` batches at once."""
        assert batch_max >= 1 and queue_max >= batch_max and linger_ms >= 0
        assert inflight_max >= 1
        # At most this many batches are being processed at once; the next one is
        # gathered meanwhile and waits for a slot.
        self._slots = asyncio.Semaphore(inflight_max)
        self._running: set[asyncio.Task[None]] = set()
        self._process = process
        self._complete = complete
        self._batch_max = batch_max
        self._linger_s = linger_ms / 1_000
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue(queue_max)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.admission = admission or Admission(wait_max_s=0)
        # Since start, and since the last ``take_window``.
        self.total = BatchStats()
        self._window = BatchStats()

    def start(self) -> None:
        """Starts the consumer task on the running loop."""
        assert self._task is None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    def admit(self, count: int = 1, deadline_s: float | None = None) -> None:
        """Raises ``Overloaded`` unless ``count`` more items may be queued now: there is
        room for all of them, and the wait they can expect is within the admission bound
        and before ``deadline_s`` (monotonic seconds; None: no deadline). A call's
        payments are admitted or refused together, before any of them is queued."""
        waiting = self._queue.qsize()
        if waiting + count > self._queue.maxsize:
            raise Overloaded(
                f"settlement queue is full ({waiting} payments waiting, {count} more asked,"
                f" at most {self._queue.maxsize})"
            )
        self.admission.check(waiting, deadline_s)

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Queues one item; its result arrives in the returned future.

        Nothing cancels that future when a caller stops waiting: a caller waits through
        ``asyncio.wait`` or ``asyncio.shield``, so a cancelled RPC does not pull its item
        out of a batch already under way and nothing is half done. Refuses with
        ``Overloaded`` (the queue is full) or ``ShuttingDown`` before any work.
        """
        if self._closing:
            raise ShuttingDown("the engine is shutting down")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded(
                f"settlement queue is full ({self._queue.maxsize} payments waiting)"
            ) from None
        return future

    async def submit(self, item: T) -> R:
        """Queues one item and waits for its result (see ``submit_nowait``)."""
        return await asyncio.shield(self.submit_nowait(item))

    def take_window(self) -> BatchStats:
        """The batches since the last call (or start), and a new window begun."""
        window, self._window = self._window, BatchStats()
        return window

    @property
    def queue_max(self) -> int:
        """The queue's bound: one submission past it is refused (``Overloaded``)."""
        return self._queue.maxsize

    def waiting(self) -> int:
        """Submissions queued and not yet in a batch."""
        return self._queue.qsize()

    async def close(self) -> None:
        """Refuses new items, lets everything queued finish, then stops the consumer."""
        self._closing = True
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self.admission.clock
        while True:
            # Payments already waiting: the time since the last take was all work.
            backlogged = not self._queue.empty()
            batch = [await self._queue.get()]
            taken_s = clock()
            deadline = loop.time() + self._linger_s
            while len(batch) < self._batch_max:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                    except TimeoutError:
                        break
                else:
                    batch.append(self._queue.get_nowait())
            self.admission.taken(len(batch), taken_s, backlogged)
            await self._slots.acquire()
            self.total.add(len(batch))
            self._window.add(len(batch))
            items = [item for item, _ in batch]
            if self._complete is None:
                work = self._process(items)
            else:
                try:
                    prepared = await self._process(items)
                except Exception as err:
                    self._fail(batch, err)
                    self._free(batch)
                    continue
                work = self._complete(prepared)
            task = loop.create_task(self._settle_and_free(batch, work))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _free(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._slots.release()
        for _ in batch:
            self._queue.task_done()

    async def _settle_and_free(
        self,
        batch: list[tuple[T, asyncio.Future[R]]],
        work: Awaitable[Sequence[R | BaseException]],
    ) -> None:
        try:
            try:
                results = await work
                assert len(results) == len(batch), "process must return one result per item"
            except Exception as err:
                self._fail(batch, err)
            else:
                self._deliver(batch, results)
        finally:
            self._free(batch)

    def _fail(self, batch: list[tuple[T, asyncio.Future[R]]], err: Exception) -> None:
        # A failure of the whole batch (the database went away) fails each caller with
        # that error; the items are not retried behind their backs. A fenced engine
        # refuses every batch until it owns its databases again: one line each, which
        # the ownership watcher's log explains.
        if isinstance(err, NotOwner):
            log.warning("settlement batch of %d refused: %s", len(batch), err)
        else:
            log.error("settlement batch of %d failed", len(batch), exc_info=err)
        self._deliver(batch, [err] * len(batch))

    def _deliver(
        self, batch: list[tuple[T, asyncio.Future[R]]], results: Sequence[R | BaseException]
    ) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, asyncio.Future):
                # The item was handed on (resubmitted later): its caller gets that answer.
                result.add_done_callback(functools.partial(_copy_outcome, future))
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _copy_outcome(into: asyncio.Future[R], source: asyncio.Future[R]) -> None:
    if into.done():
        return
    if source.cancelled():
        into.cancel()
    elif (err := source.exception()) is not None:
        into.set_exception(err)
    else:
        into.set_result(source.result())
