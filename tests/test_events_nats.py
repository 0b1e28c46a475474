"""Events out to a real NATS JetStream server: each delivered once, in order, across relay
and broker restarts. Each test runs its own nats-server on a free loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import pytest
from nats.js.api import ConsumerConfig

from conftest import settings_for, topup
from quickpay_engine.api.convert import event_msg
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.events.jetstream import STREAM, JetStreamPublisher
from quickpay_engine.events.relay import OutboxRelay
from quickpay_engine.server import create_server

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
pytestmark = pytest.mark.skipif(
    not Path(NATS_SERVER).exists(), reason="nats-server is not installed on this machine"
)


class NatsServer:
    """A private nats-server with JetStream, restartable on the same port and store."""

    def __init__(self, store_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.store_dir = store_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                NATS_SERVER,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


async def consume_all(
    url: str, expect: int, timeout_s: float = 10
) -> list[tuple[str, str, pb.SettlementEvent]]:
    """Every message in the stream, acked, as (subject, message id, event)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            "quickpay.settlement.>",
            durable="test",
            stream=STREAM,
            config=ConsumerConfig(ack_wait=30),
        )
        got: list[tuple[str, str, pb.SettlementEvent]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < expect and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in msgs:
                got.append(
                    (
                        msg.subject,
                        msg.headers["Nats-Msg-Id"],
                        pb.SettlementEvent.FromString(msg.data),
                    )
                )
                await msg.ack()
        # Anything more would be a duplicate.
        try:
            extra = await sub.fetch(100, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            extra = []
        assert not extra, [m.headers for m in extra]
        return got
    finally:
        await nc.close()


def outbox_ids(server) -> list[str]:
    return [e.event_id for e in server.store.outbox_after(0, limit=10_000)]


async def test_server_publishes_every_event_once_in_order(
    data_dir: Path, broker: NatsServer
) -> None:
    running = await create_server(dataclasses.replace(settings_for(data_dir), nats_url=broker.url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            for n in range(20):
                await stub.Pay(topup(f"n{n}", amount=pb.Money(amount_minor=100, currency="KES")))
        expected = outbox_ids(running)
        got = await consume_all(broker.url, len(expected))
    finally:
        await running.stop(grace_s=1)
    assert [message_id for _, message_id, _ in got] == expected
    assert [event.event_id for _, _, event in got] == expected
    assert {subject for subject, _, _ in got} == {
        "quickpay.settlement.settlement",
        "quickpay.settlement.service_state",
    }
    cursors = [event.cursor for _, _, event in got]
    assert cursors == sorted(cursors)


async def test_adjustments_and_subscriber_changes_are_published_with_the_payments(
    data_dir: Path, broker: NatsServer
) -> None:
    """Every outbox event reaches NATS once, in cursor order, whatever wrote it: a
    payment, a balance adjustment (one restoring a barred line: its service_state event
    too) and a live subscriber change, each on quickpay.settlement.<kind>."""
    running = await create_server(dataclasses.replace(settings_for(data_dir), nats_url=broker.url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            await stub.Pay(topup("nats-pay", account_id="acc-pre", msisdn="+254700000004"))
            adjusted = await stub.AdjustBalance(
                pb.AdjustBalanceRequest(
                    idempotency_key="nats-adj",
                    account_id="acc-pre-barred",
                    amount=pb.Money(amount_minor=700, currency="KES"),
                    reason="goodwill",
                    source_system="crm",
                )
            )
            assert adjusted.status == pb.APPLIED
            opened = pb.SubscriberChange(
                account_id="acc-nats-1", version=3, kind=pb.ACTIVATION, msisdn="+254711000901",
                plan="PREPAID", status="ACTIVE", currency="KES", country="KE",
                opening_balance_minor=1_500,
            )  # fmt: skip
            opened.created_at.seconds = 1_700_000_000
            summary = await stub.UpsertSubscribers(iter([opened]))
            assert summary.applied == 1
        expected = outbox_ids(running)
        got = await consume_all(broker.url, len(expected))
    finally:
        await running.stop(grace_s=1)
    assert [message_id for _, message_id, _ in got] == expected
    by_kind = {event.kind: (subject, event) for subject, _, event in got}
    assert {"adjustment", "service_state", "subscriber_change"} <= set(by_kind)
    for kind, (subject, _) in by_kind.items():
        assert subject == f"quickpay.settlement.{kind}"
    adj = by_kind["adjustment"][1].adjusted
    assert adj.adjustment_id == adjusted.adjustment_id
    assert adj.amount == pb.Money(amount_minor=700, currency="KES")
    assert (adj.balance_after.amount_minor, adj.service_state_after) == (700, "ACTIVE")
    sub = by_kind["subscriber_change"][1].subscriber_changed
    assert sub.change == opened and sub.opened


class Flaky:
    """A publisher that fails after ``fail_after`` messages, as a broker that dies would."""

    def __init__(self, inner: JetStreamPublisher, fail_after: int) -> None:
        self.inner, self.left = inner, fail_after

    async def publish(self, subject: str, data: bytes, message_id: str) -> None:
        if self.left == 0:
            raise ConnectionError("broker went away")
        self.left -= 1
        await self.inner.publish(subject, data, message_id)


async def test_relay_crash_and_broker_restart_lose_nothing_and_duplicate_nothing(
    server, stub, broker: NatsServer
) -> None:
    for n in range(12):
        await stub.Pay(topup(f"c{n}", amount=pb.Money(amount_minor=100, currency="KES")))
    expected = outbox_ids(server)
    service = server.service
    encode = lambda e: event_msg(e).SerializeToString()  # noqa: E731
    publisher = JetStreamPublisher(broker.url)

    # 1. A relay crashes after publishing 5 but before marking them: they stay unpublished.
    async def no_mark(cursors: list[int]) -> None:
        raise SystemExit("crash before the mark")

    crashing = OutboxRelay(service.outbox_unpublished, no_mark, publisher, encode)
    with pytest.raises(SystemExit):
        await crashing.run_once(page_max=5)
    assert len(await service.outbox_unpublished(100)) == len(expected)

    # 2. A new relay republishes them (the broker drops the duplicates) and fails mid-way
    #    when the broker goes away; what was acknowledged is marked.
    relay = OutboxRelay(
        service.outbox_unpublished, service.mark_published, Flaky(publisher, 8), encode
    )
    with pytest.raises(ConnectionError):
        await relay.run_once()
    assert relay.published == 8
    broker.stop()

    # 3. More payments while the broker is down: the engine does not care.
    for n in range(3):
        await stub.Pay(topup(f"d{n}", amount=pb.Money(amount_minor=100, currency="KES")))
    expected = outbox_ids(server)
    down = OutboxRelay(
        service.outbox_unpublished, service.mark_published, JetStreamPublisher(broker.url), encode
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises for a dead broker
        await asyncio.wait_for(down.run_once(), 10)

    # 4. The broker comes back on its store; a relay run until the outbox is empty.
    broker.start()
    revived = JetStreamPublisher(broker.url)
    back = OutboxRelay(service.outbox_unpublished, service.mark_published, revived, encode)
    stop = asyncio.Event()
    task = asyncio.ensure_future(back.run(stop))
    for _ in range(100):
        if not await service.outbox_unpublished(1):
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task
    await revived.close()
    got = await consume_all(broker.url, len(expected))
    assert [message_id for _, message_id, _ in got] == expected
