"""The outbox relay: publishes committed events to a broker, in cursor order, at least once.

An event is marked published only after the broker acknowledged it, so a crash between
the two publishes it again; the broker drops that duplicate by its event id (JetStream's
message id). Publishing is sequential in cursor order, which keeps every account's events
in order. A broker that is down only delays events: they wait in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from quickpay_engine.domain import OutboxEvent

log = logging.getLogger(__name__)

# The relay takes at most this many events from the outbox at a time.
RELAY_PAGE_MAX = 256
# With nothing to publish, the relay looks again after this long (or at once when woken).
RELAY_IDLE_S = 0.2
# After a broker failure the relay waits this long, doubling up to the maximum.
RELAY_BACKOFF_S = 0.1
RELAY_BACKOFF_MAX_S = 5.0


class Publisher(Protocol):
    """A broker that acknowledges each message and drops a repeated message id."""

    async def publish(self, subject: str, data: bytes, message_id: str) -> None: ...


def subject_of(event: OutboxEvent) -> str:
    """The broker subject: ``quickpay.settlement.<kind>``."""
    return f"quickpay.settlement.{event.kind}"


class OutboxRelay:
    """Moves events from the outbox to a publisher."""

    def __init__(
        self,
        unpublished: Callable[[int], Awaitable[Sequence[OutboxEvent]]],
        mark_published: Callable[[list[int]], Awaitable[None]],
        publisher: Publisher,
        encode: Callable[[OutboxEvent], bytes],
    ) -> None:
        self._unpublished = unpublished
        self._mark_published = mark_published
        self._publisher = publisher
        self._encode = encode
        self._wake = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        """Called after a commit: there may be new events."""
        self._wake.set()

    async def run_once(self, page_max: int = RELAY_PAGE_MAX) -> int:
        """Publishes one page of unpublished events; returns how many. Raises when the
        broker fails; what was acknowledged before the failure is marked published."""
        events = await self._unpublished(page_max)
        done: list[int] = []
        try:
            for event in events:
                await self._publisher.publish(
                    subject_of(event), self._encode(event), event.event_id
                )
                done.append(event.cursor)
        finally:
            if done:
                await self._mark_published(done)
                self.published += len(done)
        return len(done)

    async def run(self, stop: asyncio.Event) -> None:
        """Relays until ``stop`` is set, backing off while the broker fails."""
        backoff_s = RELAY_BACKOFF_S
        while not stop.is_set():
            try:
                sent = await self.run_once()
                backoff_s = RELAY_BACKOFF_S
            except Exception as err:  # the broker, not us: keep the events, try later
                log.warning("event relay: broker failed (%s); retrying in %.1f s", err, backoff_s)
                await _sleep_or_stop(stop, backoff_s)
                backoff_s = min(backoff_s * 2, RELAY_BACKOFF_MAX_S)
                continue
            if sent == 0:
                self._wake.clear()
                waiters = [
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                await asyncio.wait(
                    waiters, timeout=RELAY_IDLE_S, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in waiters:
                    waiter.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
