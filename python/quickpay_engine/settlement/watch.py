"""WatchSettlements' watchers, woken from one shared poll of the outbox's head.

One task (the poller) looks at the outbox every ``WATCH_POLL_S`` or soon after a commit
here, one job on the reader thread a look: while watchers wait, it reads the page of
events after the newest cursor it has seen (an index seek; empty when nothing is new),
once, for all, and hands each waiting watcher the ones it wants (its kinds, its
account). The waiting watchers are indexed by their account: an event is looked at only
by its account's watchers and those of every account, so a watcher that none of a
commit's events concerns is not touched at all (not even to move its position). Only a
watcher behind the head (from an old cursor, or after a burst larger than one page)
reads pages of its own. Idle watchers read nothing of their own, however many there are,
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
    """A watcher that has seen everything up to ``position`` and waits for more.

    While it waits it has also seen everything up to the hub's head: the hub looks at
    every new event for it (through its index), so ``position`` is not moved on each
    commit that brings it nothing, only when it is woken."""

    kinds: frozenset[str]
    account_id: str
    position: int
    # The new events it wants; None: read them yourself (a burst, or the hub closed).
    woken: asyncio.Future[list[OutboxEvent] | None]

    def wants(self, event: OutboxEvent) -> bool:
        """Whether it wants ``event``, one of its account's (the index found it)."""
        return event.cursor > self.position and (not self.kinds or event.kind in self.kinds)


class WatchHub:
    """The open watch streams and the one poll that wakes them."""

    def __init__(self, reader: OutboxReader, thread: StoreThread) -> None:
        self._reader = reader
        self._thread = thread
        # The newest cursor the poller has seen committed (0 before its first look).
        self.head = 0
        self.watchers = 0
        self.polls = 0  # looks at the outbox since start, one job each (tests count them)
        self.shared_reads = 0  # looks that found new events and handed them out
        self.page_reads = 0  # pages watchers read on their own (catching up)
        self._closed = False
        # The waiting watchers, by the account they watch: an event is looked at only
        # by its account's watchers and by those of every account (``_unfiltered``), so
        # a watcher costs nothing when a commit brings none of its account's events.
        self._by_account: dict[str, set[_Waiter]] = {}
        self._unfiltered: set[_Waiter] = set()
        self.waiting = 0  # watchers in the index (caught up, waiting for new events)
        # The pages being read for watchers behind the head, by (after, kinds, account),
        # each with the head it reads up to: watchers asking for the same one share it.
        self._reads: dict[
            tuple[int, frozenset[str], str], tuple[int, asyncio.Future[list[OutboxEvent]]]
        ] = {}
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
        self._wake_all(self.head)
        if self._poller is not None:
            self._poller.cancel()

    def indexed_accounts(self) -> int:
        """Accounts with a waiting watcher in the index (none once every stream ended)."""
        return len(self._by_account)

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
                    self._add(waiter)
                    try:
                        events = await waiter.woken
                    finally:
                        self._remove(waiter)  # woken: already out; cancelled: not yet
                    position = waiter.position
                    for event in events or ():
                        yield event
                    continue
                # Every event up to `seen` was visible to the read.
                seen, page = await self._page(position, kinds, wanted, account_id)
                for event in page:
                    yield event
                    position = event.cursor
                if len(page) < WATCH_PAGE_MAX:
                    # The read looked at every event up to `seen`, the filtered-out ones
                    # too: they do not wake this watcher again.
                    position = max(position, seen)
        finally:
            self.watchers -= 1

    async def _page(
        self, position: int, kinds: Sequence[str], wanted: frozenset[str], account_id: str
    ) -> tuple[int, list[OutboxEvent]]:
        """The page after ``position`` of ``kinds`` and ``account_id``, and the head up
        to which it looked. Watchers asking for the same page at once share one read:
        many streams opened together from one cursor (consumers starting from 0, all
        reconnecting after a restart) read the outbox once, not once each."""
        key = (position, wanted, account_id)
        shared = self._reads.get(key)
        if shared is None:
            self.page_reads += 1
            started = asyncio.ensure_future(
                self._thread.run(
                    self._reader.outbox_after, position, kinds, account_id, WATCH_PAGE_MAX
                )
            )
            shared = self._reads[key] = (self.head, started)
            started.add_done_callback(lambda done: self._read_done(key, done))
        seen, read = shared
        # One watcher's end (cancelled) does not cancel the read the others wait for.
        return seen, await asyncio.shield(read)

    def _read_done(self, key: tuple[int, frozenset[str], str], read: asyncio.Future) -> None:
        if self._reads.get(key, (0, None))[1] is read:
            del self._reads[key]
        if not read.cancelled():
            read.exception()  # retrieved: each waiting watcher has it raised to it

    def _add(self, waiter: _Waiter) -> None:
        if waiter.account_id:
            self._by_account.setdefault(waiter.account_id, set()).add(waiter)
        else:
            self._unfiltered.add(waiter)
        self.waiting += 1

    def _remove(self, waiter: _Waiter) -> None:
        """Takes ``waiter`` out of the index, if it is there; an account left with no
        waiter leaves the index too."""
        if waiter.account_id:
            of_account = self._by_account.get(waiter.account_id)
            if of_account is None or waiter not in of_account:
                return
            of_account.remove(waiter)
            if not of_account:
                del self._by_account[waiter.account_id]
        elif waiter in self._unfiltered:
            self._unfiltered.remove(waiter)
        else:
            return
        self.waiting -= 1

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
            if not self._committed.is_set():
                # One timer a tick, no task: asyncio.wait_for would start one per look.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_POLL_S):
                        await self._committed.wait()

    async def _look(self) -> None:
        """One job on the reader thread a look: with watchers waiting, the page after
        the head (empty when nothing is new: the same index seek as the head's lookup);
        with none, the head alone."""
        self.polls += 1
        seen = self.head
        if not self.waiting:
            head = await self._thread.run(self._reader.outbox_head)
            if not self.waiting:
                self.head = max(seen, head)
                return
            # A watcher began waiting during the lookup, having seen up to `seen` only:
            # the read below hands it what followed.
        page = await self._thread.run(self._reader.outbox_after, seen, (), "", WATCH_PAGE_MAX)
        if not page:
            return
        if len(page) == WATCH_PAGE_MAX:
            # More than a page since the last look: each waiting watcher reads its own
            # from where every one of them is (`seen`), up to the head.
            head = await self._thread.run(self._reader.outbox_head)
            self.head = max(head, page[-1].cursor)
            self._wake_all(seen)
            return
        self.shared_reads += 1
        self.head = page[-1].cursor  # everything after `seen` is in the page
        self._deliver(page, self.head)

    def _deliver(self, events: list[OutboxEvent], head: int) -> None:
        """Hands each waiting watcher the ``events`` (every one up to ``head``) it
        wants. Each event is looked at only by the watchers of its account and those of
        every account; a watcher none of them concerns is not touched, and has now seen
        everything up to ``head`` (the hub's) without a write of its own."""
        found: dict[_Waiter, list[OutboxEvent]] = {}
        by_account, unfiltered = self._by_account, self._unfiltered
        for event in events:
            for group in (by_account.get(event.account_id), unfiltered):
                for waiter in group or ():
                    if waiter.wants(event):
                        if (mine := found.get(waiter)) is None:
                            found[waiter] = [event]
                        else:
                            mine.append(event)
        for waiter, mine in found.items():
            self._remove(waiter)
            waiter.position = max(waiter.position, head)
            if not waiter.woken.done():
                waiter.woken.set_result(mine)

    def _wake_all(self, seen: int) -> None:
        """Wakes every waiting watcher to read for itself from ``seen`` (or its own
        position, if ahead): a burst larger than a page, or the hub closing."""
        waiters = [w for group in self._by_account.values() for w in group]
        waiters.extend(self._unfiltered)
        self._by_account.clear()
        self._unfiltered.clear()
        self.waiting = 0
        for waiter in waiters:
            waiter.position = max(waiter.position, seen)
            if not waiter.woken.done():
                waiter.woken.set_result(None)
