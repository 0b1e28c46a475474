"""The transport's bound on calls the server has not taken yet (issue #19, item 6).

grpc.aio takes arrived calls one at a time per RPC method, as its event loop gets to
it; with the loop saturated, calls wait in grpc-core where admission (which starts in
the handler) cannot see them. `--pending-calls-max` and `--pending-call-wait-max-s` are
grpc-core's own bounds on that wait (server.py, ``transport_options``). Here the event
loop is held on purpose, by the test itself (the server runs in-process on the test's
loop), exactly as a saturated loop would hold it: no verdict depends on this machine's
speed. The calls past the bound come back from grpc-core while the loop is still held,
so no Python ran for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import settings_for, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.config import Settings
from quickpay_engine.server import RunningServer, create_server, transport_options

# The bound under test: calls of one method grpc-core holds untaken (its hard limit,
# the soft one a call below: under it no call is refused, at it every new one).
PENDING_MAX = 4
# Calls sent while the loop is held: many more than the bound.
FLOOD = 24
# grpc.aio keeps one request for a call of each method posted in grpc-core, so one call
# more than the bound may be taken without waiting in the pending queue.
TAKEN_AT_ONCE = 1
# Streams held open at once: more than the bound of their own method.
STREAMS = PENDING_MAX + 2
# A generous bound on waits that end as soon as the awaited thing happens (liveness,
# not timing: a slow machine only makes them end later).
SETTLE_S = 60.0


def _settings(data_dir: Path, **changes: int) -> Settings:
    return dataclasses.replace(settings_for(data_dir), **changes)


@dataclasses.dataclass
class Hold:
    """The handshake between a client thread and the server's event loop: the client
    asks for the loop to be held (``ready``), learns that it is (``held``), and lets it
    go (``release``)."""

    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    held: threading.Event = dataclasses.field(default_factory=threading.Event)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)

    def hold(self) -> None:
        """From the client: returns once the server's loop is held."""
        self.ready.set()
        if not self.held.wait(SETTLE_S):
            raise AssertionError("the event loop was never held")


async def _with_loop_held(
    port: int, client: Callable[[pb_grpc.SettlementStub, Hold], None]
) -> None:
    """Runs ``client`` on a thread of its own with a blocking stub. When it calls
    ``hold.hold()`` this coroutine blocks the event loop it runs on, which is the
    server's (in-process), until the client sets ``hold.release``: as a saturated loop
    would, the server takes no call meanwhile. Re-raises what the client raised."""
    hold, failures = Hold(), []

    def run() -> None:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                client(pb_grpc.SettlementStub(channel), hold)
        except BaseException as err:  # reported below, not lost in the thread
            failures.append(err)
        finally:
            hold.ready.set()
            hold.release.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    await asyncio.to_thread(hold.ready.wait)  # the client sets it, at the latest when done
    hold.held.set()
    # No await from here until released: the loop runs nothing else.
    if not hold.release.wait(2 * SETTLE_S):
        failures.append(AssertionError("the client never released the event loop"))
    await asyncio.to_thread(thread.join)
    if failures:
        raise failures[0]


def _outcome(future: grpc.Future) -> str:
    """A call's answer: the payment's status, or the gRPC code it ended with."""
    try:
        return pb.PaymentStatus.Name(future.result().status)
    except grpc.RpcError as err:
        return err.code().name


class _Frames:
    """A PayStream's requests, fed from the client thread."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, request: object) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[pb.PayRequest]:
        while (item := self._queue.get()) is not self._END:
            yield item


@pytest.fixture
async def bounded(data_dir: Path) -> AsyncIterator[RunningServer]:
    running = await create_server(_settings(data_dir, pending_calls_max=PENDING_MAX))
    try:
        yield running
    finally:
        await running.stop(grace_s=1)


def test_the_bounds_are_serve_flags_with_their_variables(monkeypatch, tmp_path, capsys) -> None:
    from quickpay_engine.cli import build_parser, main
    from quickpay_engine.config import settings_from

    def parsed(*flags: str) -> Settings:
        return settings_from(build_parser().parse_args(["serve", *flags]))

    assert (parsed().pending_calls_max, parsed().pending_call_wait_max_s) == (512, 5)
    assert parsed("--pending-calls-max", "16").pending_calls_max == 16
    monkeypatch.setenv("QUICKPAY_PENDING_CALLS_MAX", "1_000")
    monkeypatch.setenv("QUICKPAY_PENDING_CALL_WAIT_MAX_S", "7")
    assert parsed().pending_calls_max == 1_000
    assert parsed().pending_call_wait_max_s == 7
    assert parsed("--pending-call-wait-max-s", "2").pending_call_wait_max_s == 2, "flag wins"
    monkeypatch.delenv("QUICKPAY_PENDING_CALLS_MAX")
    monkeypatch.delenv("QUICKPAY_PENDING_CALL_WAIT_MAX_S")
    argv = ["serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"]
    for flag, bad, bound in (
        ("--pending-calls-max", "0", "1 to 100,000"),
        ("--pending-calls-max", "many", "1 to 100,000"),
        ("--pending-calls-max", "100001", "1 to 100,000"),
        ("--pending-call-wait-max-s", "0.5", "1 to 3,600"),
        ("--pending-call-wait-max-s", "-1", "1 to 3,600"),
    ):
        assert main([*argv, flag, bad]) == 2
        assert f"{flag} '{bad}': expected a whole number, {bound}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is opened before the flags are checked"
    # What grpc-core is given: the bound as its hard limit, one less as its soft one (no
    # random early refusals well below it: a burst of a few hundred calls is taken
    # whole; a soft limit equal to the hard one turns the refusals off).
    options = dict(transport_options(parsed("--pending-calls-max", "9")))
    assert options["grpc.server.max_pending_requests"] == 8
    assert options["grpc.server.max_pending_requests_hard_limit"] == 9
    assert options["grpc.server_max_unrequested_time_in_server"] == 5


async def test_calls_past_the_bound_are_refused_in_grpc_core_while_the_loop_is_held(
    bounded: RunningServer,
) -> None:
    running = bounded
    while_held: dict[str, str] = {}
    outcomes: dict[str, str] = {}
    streamed: list[list[str]] = []

    def client(stub: pb_grpc.SettlementStub, hold: Hold) -> None:
        assert stub.Pay(topup("warm"), timeout=SETTLE_S).status == pb.SETTLED
        # More streams open at once than the bound: a stream taken by the server no
        # longer counts, so none is refused. Each is opened once the one before has
        # answered (it was taken): opened all at once, those the loop had not taken yet
        # would count, and on a loaded machine the fifth could find four untaken.
        inputs: list[_Frames] = []
        streams: list[Any] = []
        for n in range(STREAMS):
            frames = _Frames()
            replies = stub.PayStream(iter(frames), timeout=SETTLE_S)
            frames.put(topup(f"stream-{n}-a"))
            streamed.append([pb.PaymentStatus.Name(next(replies).status)])
            inputs.append(frames)
            streams.append(replies)
        hold.hold()
        futures = {f"flood-{n}": stub.Pay.future(topup(f"flood-{n}"), timeout=SETTLE_S)
                   for n in range(FLOOD)}  # fmt: skip
        # The calls past the bound come back while the loop is still held: refused in
        # grpc-core, before any Python runs for them.
        must_refuse = FLOOD - PENDING_MAX - TAKEN_AT_ONCE
        deadline = time.monotonic() + SETTLE_S
        while sum(f.done() for f in futures.values()) < must_refuse:
            if time.monotonic() > deadline:
                raise AssertionError("grpc-core did not refuse the calls past its bound")
            time.sleep(0.01)
        while_held.update({key: _outcome(f) for key, f in futures.items() if f.done()})
        hold.release.set()
        outcomes.update({key: _outcome(f) for key, f in futures.items()})
        for n, (frames, replies) in enumerate(zip(inputs, streams, strict=True)):
            frames.put(topup(f"stream-{n}-b"))
            streamed[n].append(pb.PaymentStatus.Name(next(replies).status))
            frames.close()
            assert list(replies) == []

    await _with_loop_held(running.port, client)

    assert set(while_held.values()) == {"CANCELLED"}, while_held
    refused = sorted(k for k, v in outcomes.items() if v == "CANCELLED")
    settled = sorted(k for k, v in outcomes.items() if v == "SETTLED")
    assert len(refused) + len(settled) == FLOOD, outcomes
    assert len(refused) >= FLOOD - PENDING_MAX - TAKEN_AT_ONCE, outcomes
    assert streamed == [["SETTLED", "SETTLED"]] * STREAMS
    # Nothing of a refused call reached the engine: no payment, the key unused ...
    for key in refused:
        assert running.store.get_payment(idempotency_key=key) is None, key
    # ... and with the loop free the server answers again: the refused keys settle, for
    # the first time.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.SettlementStub(channel)
        for key in refused:
            reply = await stub.Pay(topup(key), timeout=SETTLE_S)
            assert (reply.status, reply.replayed) == (pb.SETTLED, False), key


async def test_a_call_left_untaken_past_the_wait_bound_is_cancelled(data_dir: Path) -> None:
    running = await create_server(
        _settings(data_dir, pending_calls_max=1_000, pending_call_wait_max_s=1)
    )
    keys = [f"late-{n}" for n in range(6)]
    outcomes: list[str] = []

    def client(stub: pb_grpc.SettlementStub, hold: Hold) -> None:
        assert stub.Pay(topup("warm"), timeout=SETTLE_S).status == pb.SETTLED
        hold.hold()
        futures = [stub.Pay.future(topup(key), timeout=SETTLE_S) for key in keys]
        # Three times the bound: each call has waited past it when the loop, let go,
        # next takes a call (that is when grpc-core looks at their age).
        time.sleep(3.0)
        hold.release.set()
        outcomes.extend(_outcome(f) for f in futures)

    try:
        await _with_loop_held(running.port, client)
        # The one call grpc.aio had a request posted for is taken and settles; the
        # others waited untaken past the bound and are cancelled, none of them written.
        assert sorted(outcomes) == ["CANCELLED"] * (len(keys) - 1) + ["SETTLED"], outcomes
        unwritten = [k for k in keys if running.store.get_payment(idempotency_key=k) is None]
        assert len(unwritten) == len(keys) - 1
    finally:
        await running.stop(grace_s=1)
