"""NATS JetStream as the event broker (when QUICKPAY_NATS_URL is set), and the one way
the engine connects to it (``connect``: the outbox relay's publisher here, the
--subscriber-events consumer in subscriber_feed.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

# The stream that holds every settlement event.
STREAM = "QUICKPAY_SETTLEMENTS"
SUBJECTS = ["quickpay.settlement.>"]
# JetStream drops a repeated message id seen within this window; it must outlast the
# longest time an event can wait between being published and being marked published
# (a relay crash and restart), so it is generous.
DUPLICATE_WINDOW_S = 24 * 3600
T = TypeVar("T")

# One publish waits this long for the broker's acknowledgement.
PUBLISH_TIMEOUT_S = 5.0


async def connect(
    url: str, prepare: Callable[[JetStreamContext], Awaitable[T]]
) -> tuple[nats.NATS, T]:
    """A connection that reconnects by itself for as long as it is open, and what
    ``prepare`` (finding or making streams, binding consumers) made of its JetStream
    context. Should ``prepare`` fail, the connection is closed: a failed connect leaves
    nothing reconnecting forever."""
    nc = await nats.connect(
        url,
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )
    try:
        return nc, await prepare(nc.jetstream())
    except BaseException:
        await nc.close()
        raise


class JetStreamPublisher:
    """Publishes with the event id as the message id and waits for each acknowledgement."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._nc: nats.NATS | None = None
        self._js: JetStreamContext | None = None

    async def connect(self) -> None:
        """Connects and creates the stream when it is missing."""
        self._nc, self._js = await connect(self._url, self._ensure_stream)

    async def _ensure_stream(self, js: JetStreamContext) -> JetStreamContext:
        config = StreamConfig(name=STREAM, subjects=SUBJECTS, duplicate_window=DUPLICATE_WINDOW_S)
        # A stream that exists with another configuration (made by an operator) is used
        # as it is.
        with contextlib.suppress(BadRequestError):
            await js.add_stream(config)
        return js

    async def publish(self, subject: str, data: bytes, message_id: str) -> None:
        """Publishes once the broker is reachable; raises while it is not."""
        if self._js is None:
            await self.connect()
        assert self._js is not None
        await self._js.publish(
            subject, data, timeout=PUBLISH_TIMEOUT_S, headers={"Nats-Msg-Id": message_id}
        )

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
