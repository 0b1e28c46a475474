"""WatchSettlements cannot starve the payments (issue #20, item 6): open streams are
bounded (RESOURCE_EXHAUSTED past the bound) and woken from one shared poll, so idle
watchers cost O(1) reads per interval, not one each. The checks count polls and reads;
Pay's rate is compared in alternating windows with a generous bound (tests/rates.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest

from conftest import BOTH_BACKENDS, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.domain import OutboxEvent
from quickpay_engine.server import RunningServer
from quickpay_engine.settlement import watch
from quickpay_engine.store.executor import StoreThread
from rates import RATE_KEPT_MIN, rates, until


async def _open_idle_watchers(
    server: RunningServer, stub, n: int, account_id: str = ""
) -> tuple[list[grpc.aio.UnaryStreamCall], list[asyncio.Future[pb.SettlementEvent]]]:
    """``n`` streams from the outbox's head (of ``account_id``'s events only, if given),
    each waiting for its first event."""
    head = await server.service.on_store_thread(server.store.outbox_head)
    request = pb.WatchRequest(from_cursor=head, account_id=account_id)
    streams = [stub.WatchSettlements(request) for _ in range(n)]
    firsts = [asyncio.ensure_future(s.read()) for s in streams]
    hub = server.service._watch
    await until(lambda: hub.watchers == n, f"{n} watchers open")
    return streams, firsts


def _count_jobs(monkeypatch: pytest.MonkeyPatch, thread: object) -> list[int]:
    """Counts the jobs run on a StoreThread from now on (one element, incremented)."""
    jobs = [0]
    real = thread.run  # type: ignore[attr-defined]

    def run(fn, *args, **kwargs):
        jobs[0] += 1
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(thread, "run", run)
    return jobs


@BOTH_BACKENDS
async def test_idle_watchers_cost_one_poll_per_interval_not_one_each(
    server: RunningServer, stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 300
    streams, firsts = await _open_idle_watchers(server, stub, n)
    hub = server.service._watch
    jobs = _count_jobs(monkeypatch, server.service._reader_thread)
    polls, pages = hub.polls, hub.page_reads
    intervals = 4
    await asyncio.sleep(intervals * watch.WATCH_POLL_S)
    # O(1) per interval: the shared poll, one lookup per tick (one more at an edge),
    # where one poll per stream was n per tick.
    assert hub.polls - polls <= intervals + 2
    assert hub.page_reads == pages, "an idle watcher reads nothing"
    assert jobs[0] == hub.polls - polls, "the reader thread ran the polls alone"
    # A payment reaches every one of them from one read of the new events, not n.
    shared = hub.shared_reads
    paid = await stub.Pay(topup("w-wake", amount=pb.Money(amount_minor=100, currency="KES")))
    got = await asyncio.wait_for(asyncio.gather(*firsts), 10)
    assert {e.payment_id for e in got} == {paid.payment_id}
    assert hub.page_reads == pages
    assert 1 <= hub.shared_reads - shared <= 2
    for stream in streams:
        stream.cancel()


async def test_a_watch_stream_past_the_bound_is_resource_exhausted(
    server: RunningServer, stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "WATCH_STREAMS_MAX", 3)
    streams, _ = await _open_idle_watchers(server, stub, 3)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.WatchSettlements(pb.WatchRequest()):
            pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 WatchSettlements streams are open" in err.value.details()
    # A stream that ends frees its place.
    streams[0].cancel()
    hub = server.service._watch
    await until(lambda: hub.watchers == 2, "the stream's end")
    paid = await stub.Pay(topup("w-bound", amount=pb.Money(amount_minor=100, currency="KES")))
    again = stub.WatchSettlements(pb.WatchRequest(kinds=["settlement"]))
    first = await asyncio.wait_for(again.read(), 10)
    assert first.payment_id == paid.payment_id
    again.cancel()
    for stream in streams[1:]:
        stream.cancel()


async def test_pay_keeps_its_rate_beside_hundreds_of_idle_watchers(
    server: RunningServer, stub
) -> None:
    """Idle: each watches an account nobody pays, so every commit is news to all of them
    and none has anything to read. They cost the payments nothing: no read of their own
    (counted) and no rate (compared)."""
    n = 300
    hub = server.service._watch
    pages = hub.page_reads

    async def start_load() -> Callable[[], Awaitable[None]]:
        streams, _ = await _open_idle_watchers(server, stub, n, account_id="acc-closed")

        async def stop() -> None:
            for stream in streams:
                stream.cancel()
            await until(lambda: not server.service._watch.watchers, "the streams' end")

        return stop

    alone, beside = await rates(stub, start_load)
    assert hub.page_reads == pages, "a waiting watcher reads nothing of its own"
    assert beside >= RATE_KEPT_MIN * alone, (alone, beside)


# -- The hub alone, over a store of a few events ------------------------------------------


class _Outbox:
    """An outbox in memory; ``fail`` head lookups raise first (a database restarting)."""

    def __init__(self, fail: int = 0) -> None:
        self.events: list[OutboxEvent] = []
        self.fail = fail

    def add(self, kind: str, account_id: str) -> None:
        n = len(self.events) + 1
        self.events.append(OutboxEvent(n, f"e{n}", kind, f"p{n}", account_id, {}, 0))

    def outbox_head(self) -> int:
        if self.fail:
            self.fail -= 1
            raise OSError("database restarting")
        return self.events[-1].cursor if self.events else 0

    def outbox_after(self, cursor, kinds=(), account_id="", limit=256) -> list[OutboxEvent]:
        found = [
            e
            for e in self.events
            if e.cursor > cursor
            and (not kinds or e.kind in kinds)
            and (not account_id or e.account_id == account_id)
        ]
        return found[:limit]


async def test_waiting_watchers_get_what_they_want_from_the_one_shared_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "WATCH_POLL_S", 0.01)
    outbox, thread = _Outbox(), StoreThread("test-reader")
    hub = watch.WatchHub(outbox, thread)
    everything = hub.watch(0)
    refunds = hub.watch(0, kinds=["refund"])
    of_b = hub.watch(0, account_id="b")
    nexts = [asyncio.ensure_future(anext(w)) for w in (everything, refunds, of_b)]
    await until(lambda: len(hub._waiting) == 3, "three watchers waiting")
    outbox.add("settlement", "a")
    outbox.add("settlement", "a")
    hub.committed()
    assert (await asyncio.wait_for(nexts[0], 5)).event_id == "e1"
    assert (await anext(everything)).event_id == "e2"
    third = asyncio.ensure_future(anext(everything))
    await until(lambda: len(hub._waiting) == 3, "all three waiting again")
    assert not nexts[1].done() and not nexts[2].done(), "nothing they want yet"
    outbox.add("refund", "b")
    hub.committed()
    for waiting in (nexts[1], nexts[2], third):
        assert (await asyncio.wait_for(waiting, 5)).event_id == "e3"
    assert hub.page_reads == 0, "no watcher read a page of its own"
    assert hub.shared_reads == 2
    hub.close()
    for w in (everything, refunds, of_b):
        await w.aclose()
    thread.close()


async def test_a_failed_poll_is_tried_again_and_the_watchers_wait_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "WATCH_POLL_S", 0.01)
    outbox, thread = _Outbox(fail=3), StoreThread("test-reader")
    outbox.add("settlement", "a")
    hub = watch.WatchHub(outbox, thread)
    stream = hub.watch(0)
    assert (await asyncio.wait_for(anext(stream), 5)).event_id == "e1"
    assert outbox.fail == 0 and hub.polls >= 4
    hub.close()
    await stream.aclose()
    thread.close()
