"""Subscriber changes in from NATS JetStream (`serve --subscriber-events SUBJECT`).

A durable pull consumer reads the subject's messages in batches, each a
``quickpay.v1.SubscriberChange``: protobuf-encoded, or its JSON form (protobuf's JSON
mapping: ``{"account_id": "acc-1", "version": "7", "kind": "SIM_SWAP", ...}``; a message
whose first byte other than white space is ``{`` is JSON, which a protobuf encoding of
the message never starts with). A batch goes through the same entry point as the
UpsertSubscribers RPC (``SettlementService.apply_subscriber_changes``) and each message
is acknowledged only once its batch has committed. A crash before the acknowledgement
redelivers the message, and its version makes the redelivery change nothing; so does
any other duplicate or out-of-order delivery.

A message that is not a valid change (or that the store refuses: a change of currency)
is logged with the field at fault and terminated: it is never delivered again, and the
rest of its batch is applied without it. One that gives its line a number another line
keeps is delivered again a few times (``PORT_DELIVERIES``) before it is dropped: the
message that frees the number may come later. While the broker or
the store is down nothing is acknowledged, and the consumer tries again with back-off.

The stream: the one that already holds the subject (an operator's), else one made for
it, ``QUICKPAY_SUBSCRIBERS_<subject>``; the consumer is ``quickpay-subscribers-<subject>``
(the subject with every character but letters, digits, '_' and '-' as '_').
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError

from quickpay_engine.errors import InvalidArgument
from quickpay_engine.events import jetstream
from quickpay_engine.subscriber_changes import ChangeResult, NumberTaken, SubscriberChanges

log = logging.getLogger(__name__)

# Messages taken (and committed) at once at most.
FETCH_MAX = 500
# A fetch waits this long for a first message before looking again.
FETCH_WAIT_S = 1.0
# After a failure (the broker, the store) the consumer waits this long, doubling.
BACKOFF_S = 0.2
BACKOFF_MAX_S = 5.0
# A message not acknowledged within this long is delivered again (a batch waits for the
# payments in flight on its accounts, seconds at most).
ACK_WAIT_S = 60.0
# A change that takes a number another line keeps is delivered again after this long,
# up to this many deliveries in all, before it is dropped: the change that frees the
# number (the other side of a port) may be a later message.
PORT_RETRY_S = 1.0
PORT_DELIVERIES = 5

Apply = Callable[[SubscriberChanges, str], Awaitable[ChangeResult]]
# Appends one message's change to a batch, or raises InvalidArgument naming the label
# (api/convert.py's add_subscriber_message: protobuf or JSON).
Decode = Callable[[SubscriberChanges, bytes, str], None]


def names_for(subject: str) -> tuple[str, str]:
    """(stream, durable consumer) made for ``subject``."""
    token = re.sub(r"[^A-Za-z0-9_-]", "_", subject)
    return f"QUICKPAY_SUBSCRIBERS_{token}", f"quickpay-subscribers-{token}"


class SubscriberFeed:
    """The durable consumer of one subject, feeding ``apply``."""

    def __init__(self, url: str, subject: str, apply: Apply, decode: Decode) -> None:
        self._url = url
        self.subject = subject
        self._apply = apply
        self._decode = decode
        self._nc: nats.NATS | None = None
        self._sub: Any = None
        self.applied = 0
        self.stale = 0
        # Set once the stream and the consumer are there (messages published before the
        # stream exists are not kept: NATS drops what no stream holds).
        self.ready = asyncio.Event()

    async def connect(self) -> None:
        """Connects, finds (or makes) the subject's stream, and binds the consumer."""

        async def bind(js: JetStreamContext) -> tuple[Any, str]:
            stream, durable = names_for(self.subject)
            try:
                stream = await js.find_stream_name_by_subject(self.subject)
            except NotFoundError:
                await js.add_stream(StreamConfig(name=stream, subjects=[self.subject]))
            config = ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                ack_wait=ACK_WAIT_S,
            )  # fmt: skip
            sub = await js.pull_subscribe(
                self.subject, durable=durable, stream=stream, config=config
            )
            return sub, stream

        self._nc, (self._sub, stream) = await jetstream.connect(self._url, bind)
        self.ready.set()
        log.info(
            "applying subscriber changes from NATS subject %s (stream %s)", self.subject, stream
        )

    async def run_once(self) -> int:
        """Takes the messages waiting (at most ``FETCH_MAX``), applies them as one batch
        and acknowledges them; returns how many were taken. Raises on a broker or store
        failure, with nothing of the batch acknowledged."""
        if self._sub is None:
            await self.connect()
        try:
            messages = await self._sub.fetch(FETCH_MAX, timeout=FETCH_WAIT_S)
        except (TimeoutError, nats.errors.TimeoutError):
            return 0
        while True:
            batch = SubscriberChanges()
            taken: dict[str, Any] = {}
            for message in messages:
                label = f"message {message.metadata.sequence.stream}"
                try:
                    self._decode(batch, message.data, label)
                except InvalidArgument as err:
                    log.error("subscriber change %s dropped (terminated): %s", label, err)
                    await message.term()
                    continue
                taken[label] = message
            try:
                result = await self._apply(batch, f"nats:{self.subject}")
            except InvalidArgument as err:
                # The store refused one change: it goes, the others are applied without it.
                label = err.field.split(".", 1)[0]
                bad = taken.pop(label, None)
                if bad is None:
                    raise
                if isinstance(err, NumberTaken) and bad.metadata.num_delivered < PORT_DELIVERIES:
                    # A later message may free the number (a port between two lines).
                    log.warning("subscriber change %s delivered again later: %s", label, err)
                    await bad.nak(delay=PORT_RETRY_S)
                else:
                    log.error("subscriber change %s dropped (terminated): %s", label, err)
                    await bad.term()
                messages = list(taken.values())
                continue
            except BaseException:
                for message in taken.values():
                    with contextlib.suppress(Exception):
                        await message.nak()
                raise
            for message in taken.values():
                await message.ack()
            self.applied += result.applied
            self.stale += result.stale
            return len(messages)

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until ``stop`` is set, backing off while the broker or store fails."""
        backoff_s = BACKOFF_S
        while not stop.is_set():
            try:
                await self.run_once()
                backoff_s = BACKOFF_S
            except Exception as err:
                log.warning(
                    "subscriber feed %s failed (%s); retrying in %.1f s",
                    self.subject,
                    err,
                    backoff_s,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
            self._sub = None


class SubscriberFeedTask:
    """The feed running beside the server, and how to stop it."""

    def __init__(self, feed: SubscriberFeed) -> None:
        self.feed = feed
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            feed.run(self._stop), name="subscriber-feed"
        )

    async def stop(self) -> None:
        """Lets the batch being applied finish (it is acknowledged), then stops."""
        self._stop.set()
        await self._task
        await self.feed.close()
