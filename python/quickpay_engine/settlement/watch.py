"""WatchSettlements' watchers, woken from one shared poll of the outbox's head.

One task (the poller) reads the newest cursor, a single index lookup, every
``WATCH_POLL_S`` or soon after a commit here. When it moved, the poller reads the new
events once, for all, and hands each waiting watcher the ones it wants (its kinds, its
account); a watcher that wants none goes on waiting and costs nothing more. Only a
watcher behind the head (from an old cursor, or after a burst larger than one page)
reads pages of its own. Idle watchers cost no reads at all, however many there are,
and their number is bounded (``WATCH_STREAMS_MAX``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from quickpay_engine.domain import OutboxEvent
from quickpay_engine.errors import Overloaded
from quickpay_engine.store.executor import StoreThread

log = logging.getLogger(__name__)

# A watcher reads at most this many events at a time from the outbox.
WATCH_PAGE_MAX = 256
# The poller looks at the outbox's head this often even without a commit here (events
# another process wrote, a commit this process missed).
WATCH_POLL_S = 0.5
# Open WatchSettlements streams at most; one more is refused (RESOURCE_EXHAUSTED). Each
# costs an HTTP/2 stream, one coroutine and at most one page (WATCH_PAGE_MAX events)
# held while its consumer reads: 1,000 streams hold at most 256,000 events. An idle one
# costs no reads (the poll is shared).
WATCH_STREAMS_MAX = 1_000


class OutboxReader(Protocol):
    def outbox_head(self) -> int: ...

    def outbox_after(
        self, cursor: int, kinds: Sequence[str] = (), account_id: str = "", limit: int = 256
    ) -> list[OutboxEvent]: ...


@dataclass(eq=False, slots=True)
class _Waiter:
    """A watcher that has seen everything up to ``position`` and waits for more."""

    kinds: frozenset[str]
    account_id: str
    position: int
    # The new events it wants; None: read them yourself (a burst, or the hub closed).
    woken: asyncio.Future[list[OutboxEvent] | None]

    def wants(self, event: OutboxEvent) -> bool:
        return (
            event.cursor > self.position
            and (not self.kinds or event.kind in self.kinds)
            and (not self.account_id or event.account_id == self.account_id)
        )


class WatchHub:
    """The open watch streams and the one poll that wakes them."""

    def __init__(self, reader: OutboxReader, thread: StoreThread) -> None:
        self._reader = reader
        self._thread = thread
        # The newest cursor the poller has seen committed (0 before its first look).
        self.head = 0
        self.watchers = 0
        self.polls = 0  # head lookups since start (tests count them)
        self.shared_reads = 0  # pages the poller read for the waiting watchers
        self.page_reads = 0  # pages watchers read on their own (catching up)
        self._closed = False
        self._waiting: set[_Waiter] = set()
        # Set after a commit here, so the poller looks at once; cleared by the poller.
        self._committed = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    def committed(self) -> None:
        """A commit here may have written events: the poller looks now, not at its next
        tick. Many commits during one look cost one more look, not one each."""
        self._committed.set()

    def close(self) -> None:
        """Ends every watch cleanly (the server drains) and the poller."""
        self._closed = True
        self._deliver(None, self.head)
        if self._poller is not None:
            self._poller.cancel()

    async def watch(
        self, from_cursor: int, kinds: Sequence[str] = (), account_id: str = ""
    ) -> AsyncIterator[OutboxEvent]:
        """Events after ``from_cursor``, in order, then new ones as they commit.

        Raises ``Overloaded`` at the first step when ``WATCH_STREAMS_MAX`` streams are
        open. A watcher behind the head reads its own pages; once caught up it waits,
        reading nothing, and the poller hands it the new events it wants from the one
        page it read for all. Memory stays bounded whatever the consumer's speed: at
        most one page is held per watcher.
        """
        if self.watchers >= WATCH_STREAMS_MAX:
            raise Overloaded(
                f"{WATCH_STREAMS_MAX} WatchSettlements streams are open, the most this"
                " server serves; retry later, or share one stream among consumers"
            )
        self.watchers += 1
        self._start_poller()
        wanted = frozenset(kinds)
        try:
            # Every event up to `position` has been looked at (the matching ones yielded).
            position = from_cursor
            while not self._closed:
                if self.head <= position:
                    waiter = _Waiter(
                        wanted, account_id, position, asyncio.get_running_loop().create_future()
                    )
                    self._waiting.add(waiter)
                    try:
                        events = await waiter.woken
                    finally:
                        self._waiting.discard(waiter)
                    position = waiter.position
                    for event in events or ():
                        yield event
                    continue
                seen = self.head  # every event up to it is visible to the read below
                self.page_reads += 1
                page = await self._thread.run(
                    self._reader.outbox_after, position, kinds, account_id, WATCH_PAGE_MAX
                )
                for event in page:
                    yield event
                    position = event.cursor
                if len(page) < WATCH_PAGE_MAX:
                    # The read looked at every event up to `seen`, the filtered-out ones
                    # too: they do not wake this watcher again.
                    position = max(position, seen)
        finally:
            self.watchers -= 1

    def _start_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="watch-poll")

    async def _poll(self) -> None:
        """While any watcher is open: the head, every WATCH_POLL_S or after a commit;
        when it moved, the new events, read once for every waiting watcher."""
        while self.watchers and not self._closed:
            self._committed.clear()  # before the read: a commit during it reads again
            try:
                await self._look()
            except Exception:
                # The watchers wait on; the next tick looks again (a database restart).
                log.warning("watch poll failed; again in %.1f s", WATCH_POLL_S, exc_info=True)
                await asyncio.sleep(WATCH_POLL_S)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._committed.wait(), WATCH_POLL_S)

    async def _look(self) -> None:
        self.polls += 1
        head = await self._thread.run(self._reader.outbox_head)
        if head <= self.head:
            return
        events = None
        if self._waiting:
            self.shared_reads += 1
            page = await self._thread.run(
                self._reader.outbox_after, self.head, (), "", WATCH_PAGE_MAX
            )
            if len(page) < WATCH_PAGE_MAX:  # everything after the old head
                events = page
                head = max(head, page[-1].cursor if page else 0)
        self.head = head
        self._deliver(events, head)

    def _deliver(self, events: list[OutboxEvent] | None, head: int) -> None:
        """Hands each waiting watcher the ``events`` (every one up to ``head``) it
        wants; one that wants none stays waiting, now at ``head``. None (more events
        than one page, or closing): every waiting watcher is woken to read for itself."""
        for waiter in list(self._waiting):
            if events is None:
                mine = None
            else:
                mine = [e for e in events if waiter.wants(e)]
                waiter.position = max(waiter.position, head)
                if not mine:
                    continue
            self._waiting.discard(waiter)
            if not waiter.woken.done():
                waiter.woken.set_result(mine)
