"""Subscriber changes consumed from NATS JetStream (`serve --subscriber-events SUBJECT`),
against the NATS server at 127.0.0.1:4222 (skipped when none answers there): JSON and
protobuf messages applied live, acknowledged after commit, duplicates and older
versions changing nothing, the durable consumer resuming after a restart, and a bad
message dropped with the rest of its batch applied."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest

from conftest import settings_for, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.events.subscriber_feed import names_for
from quickpay_engine.server import RunningServer, create_server
from test_subscribers_live import change

NATS_URL = "nats://127.0.0.1:4222"
TIMEOUT_S = 30


def _nats_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _nats_up(), reason="no NATS server at 127.0.0.1:4222")


@pytest.fixture
async def subject() -> AsyncIterator[str]:
    """A subject of this test's own; its stream is deleted afterwards."""
    name = f"quickpay.test.subscribers.{uuid.uuid4().hex[:12]}"
    yield name
    nc = await nats.connect(NATS_URL)
    with contextlib.suppress(Exception):  # never made: nothing to clean
        await nc.jetstream().delete_stream(names_for(name)[0])
    await nc.close()


async def _serve(data_dir: Path, subject: str) -> RunningServer:
    settings = dataclasses.replace(
        settings_for(data_dir), nats_url=NATS_URL, subscriber_events=subject
    )
    running = await create_server(settings)
    assert running.feed is not None
    await asyncio.wait_for(running.feed.feed.ready.wait(), TIMEOUT_S)
    return running


async def _publish(subject: str, *payloads: bytes) -> None:
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        for data in payloads:
            await js.publish(subject, data, timeout=10)
    finally:
        await nc.close()


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, f"not within {TIMEOUT_S} s: {what}"
        await asyncio.sleep(0.05)


async def _consumer(subject: str):  # type: ignore[no-untyped-def]
    stream, durable = names_for(subject)
    nc = await nats.connect(NATS_URL)
    try:
        return await nc.jetstream().consumer_info(stream, durable)
    finally:
        await nc.close()


def as_json(message: pb.SubscriberChange) -> bytes:
    from google.protobuf import json_format

    return json_format.MessageToJson(message, preserving_proto_field_name=True).encode()


async def test_changes_from_jetstream_apply_live_once_each(data_dir: Path, subject: str) -> None:
    running = await _serve(data_dir, subject)
    new = {"account_id": "acc-feed-1", "msisdn": "+254711000300"}
    try:
        activation = change("acc-feed-1", 5, msisdn=new["msisdn"], opening_minor=200)
        swapped_s = int(time.time()) - 30
        swap = change("acc-feed-1", 6, pb.SIM_SWAP, msisdn=new["msisdn"], swapped_s=swapped_s)
        await _publish(subject, as_json(activation), swap.SerializeToString())
        versions = lambda: running.store.subscriber_versions(["acc-feed-1"])  # noqa: E731
        await _until(lambda: versions() == {"acc-feed-1": 6}, "both changes applied")
        line = running.store.subscriber("acc-feed-1")
        assert line is not None and line.sim_swapped_at_s == swapped_s
        assert line.balance_minor == 200

        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            paid = await pb_grpc.SettlementStub(channel).Pay(
                topup("feed-pay-1", **new), timeout=TIMEOUT_S
            )
        assert paid.status == pb.SETTLED and "SIM_SWAP_RECENT" in paid.fraud.reasons

        # A redelivery and an older change: acknowledged, nothing changes.
        audit = running.store._db.execute("SELECT count(*) FROM audit_log").fetchone()
        older = change("acc-feed-1", 4, pb.STATUS_CHANGE, msisdn=new["msisdn"], status="CLOSED")
        await _publish(subject, swap.SerializeToString(), older.SerializeToString())
        feed = running.feed
        assert feed is not None
        await _until(lambda: feed.feed.stale == 2, "the duplicate and the older change seen")
        line = running.store.subscriber("acc-feed-1")
        assert line is not None and line.status.name == "ACTIVE"
        assert running.store._db.execute("SELECT count(*) FROM audit_log").fetchone() == audit
        info = await _consumer(subject)
        assert (info.num_pending, info.num_ack_pending) == (0, 0), "all acknowledged"
    finally:
        await running.stop(grace_s=1)

    # The durable consumer resumes where it was: nothing is applied twice, a new change is.
    later = change("acc-feed-1", 7, pb.STATUS_CHANGE, msisdn=new["msisdn"], status="BARRED")
    await _publish(subject, later.SerializeToString())
    running = await _serve(data_dir, subject)
    try:
        await _until(
            lambda: running.store.subscriber_versions(["acc-feed-1"]) == {"acc-feed-1": 7},
            "the change sent while the server was down",
        )
        feed = running.feed
        assert feed is not None and (feed.feed.applied, feed.feed.stale) == (1, 0)
        assert running.store.verify() == []
    finally:
        await running.stop(grace_s=1)


async def test_a_bad_message_is_dropped_and_the_rest_of_its_batch_applies(
    data_dir: Path, subject: str
) -> None:
    running = await _serve(data_dir, subject)
    try:
        good = change("acc-feed-2", 1, msisdn="+254711000301")
        bad_currency = change("acc-post", 1, pb.STATUS_CHANGE, msisdn="+306900000002")  # KES
        await _publish(
            subject,
            b'{"account_id": "acc-feed-x", "version": "1"',  # not JSON
            json.dumps({"account_id": "acc-feed-y", "kind": "SIM_SWAP"}).encode(),
            bad_currency.SerializeToString(),
            good.SerializeToString(),
        )
        await _until(lambda: running.store.subscriber("acc-feed-2") is not None, "the good change")
        info = await _consumer(subject)
        assert (info.num_pending, info.num_ack_pending) == (0, 0), "the bad ones terminated"
        post = running.store.subscriber("acc-post")
        assert post is not None and post.currency == "EUR"
        assert running.store.subscriber_versions(["acc-post"]) == {}
    finally:
        await running.stop(grace_s=1)
