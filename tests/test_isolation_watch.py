"""WatchSettlements cannot starve the payments (issue #20, item 6): open streams are
bounded (RESOURCE_EXHAUSTED past the bound) and woken from one shared poll, so idle
watchers cost O(1) reads per interval, not one each. The checks count polls and reads;
Pay's rate is compared in alternating windows with a generous bound (tests/rates.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

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
    """An outbox in memory; the first ``fail`` reads raise (a database restarting)."""

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
        if self.fail:
            self.fail -= 1
            raise OSError("database restarting")
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
    await until(lambda: hub.waiting == 3, "three watchers waiting")
    outbox.add("settlement", "a")
    outbox.add("settlement", "a")
    hub.committed()
    assert (await asyncio.wait_for(nexts[0], 5)).event_id == "e1"
    assert (await anext(everything)).event_id == "e2"
    third = asyncio.ensure_future(anext(everything))
    await until(lambda: hub.waiting == 3, "all three waiting again")
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


# -- The hub's index: an event is looked at only by its account's watchers ----------------


async def _collect(stream: AsyncIterator[OutboxEvent], n: int) -> list[str]:
    """The ids of ``stream``'s next ``n`` events."""
    return [(await anext(stream)).event_id for _ in range(n)]


def _hub(monkeypatch: pytest.MonkeyPatch) -> tuple[_Outbox, StoreThread, watch.WatchHub]:
    monkeypatch.setattr(watch, "WATCH_POLL_S", 0.01)
    outbox, thread = _Outbox(), StoreThread("test-reader")
    return outbox, thread, watch.WatchHub(outbox, thread)


async def _commit(hub: watch.WatchHub, outbox: _Outbox, *events: tuple[str, str]) -> None:
    """Adds ``events`` (kind, account) as one commit and waits for the poller to see it."""
    for kind, account in events:
        outbox.add(kind, account)
    hub.committed()
    await until(lambda: hub.head == len(outbox.events), "the poller's look")


async def test_a_stream_of_one_account_never_sees_anothers_events_nor_is_touched_by_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outbox, thread, hub = _hub(monkeypatch)
    looked = [0]
    wants = watch._Waiter.wants

    def counting(self, event):  # type: ignore[no-untyped-def]
        looked[0] += 1
        return wants(self, event)

    monkeypatch.setattr(watch._Waiter, "wants", counting)
    of_a = [hub.watch(0, account_id="a") for _ in range(50)]
    firsts = [asyncio.ensure_future(anext(w)) for w in of_a]
    await until(lambda: hub.waiting == 50, "fifty watchers waiting")
    for n in range(5):
        await _commit(hub, outbox, *[("settlement", "b")] * n, ("decline", "c"))
    assert looked[0] == 0, "b's and c's events were looked at by a's watchers"
    assert not any(f.done() for f in firsts)
    await _commit(hub, outbox, ("settlement", "b"), ("settlement", "a"))
    a_event = outbox.events[-1].event_id
    assert [(await asyncio.wait_for(f, 5)).event_id for f in firsts] == [a_event] * 50
    assert looked[0] == 50, "each of a's watchers looked at a's one event, once"
    assert hub.page_reads == 0
    hub.close()
    for w in of_a:
        await w.aclose()
    thread.close()


async def test_streams_of_every_account_receive_every_event_they_want(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outbox, thread, hub = _hub(monkeypatch)
    everything = [hub.watch(0) for _ in range(3)]
    refunds = hub.watch(0, kinds=["refund"])
    of_b = hub.watch(0, account_id="b")
    readers = [asyncio.ensure_future(_collect(w, 6)) for w in everything]
    refund_reader = asyncio.ensure_future(_collect(refunds, 2))
    b_reader = asyncio.ensure_future(_collect(of_b, 2))
    await until(lambda: hub.waiting == 5, "five watchers waiting")
    await _commit(hub, outbox, ("settlement", "a"), ("refund", "b"))
    await _commit(hub, outbox, ("decline", "c"))
    await _commit(hub, outbox, ("settlement", "d"), ("refund", "a"), ("settlement", "b"))
    ids = [e.event_id for e in outbox.events]
    for reader in readers:
        assert await asyncio.wait_for(reader, 5) == ids
    assert await asyncio.wait_for(refund_reader, 5) == ["e2", "e5"]
    assert await asyncio.wait_for(b_reader, 5) == ["e2", "e6"]
    hub.close()
    for w in (*everything, refunds, of_b):
        await w.aclose()
    thread.close()


async def test_many_streams_of_one_account_each_receive_each_event_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outbox, thread, hub = _hub(monkeypatch)
    n = 40
    of_a = [hub.watch(0, account_id="a") for _ in range(n)]
    readers = [asyncio.ensure_future(_collect(w, 6)) for w in of_a]
    await until(lambda: hub.waiting == n, f"{n} watchers waiting")
    for _ in range(3):
        await _commit(hub, outbox, ("settlement", "a"), ("settlement", "b"), ("refund", "a"))
    of_a_ids = [e.event_id for e in outbox.events if e.account_id == "a"]
    assert len(of_a_ids) == 6
    for reader in readers:
        assert await asyncio.wait_for(reader, 5) == of_a_ids
    # Nothing more: one more event of a's is the next each of them gets (no duplicate).
    nexts = [asyncio.ensure_future(anext(w)) for w in of_a]
    await until(lambda: hub.waiting == n, "all waiting again")
    await _commit(hub, outbox, ("decline", "a"))
    assert {(await asyncio.wait_for(x, 5)).event_id for x in nexts} == {"e10"}
    hub.close()
    for w in of_a:
        await w.aclose()
    thread.close()


async def test_streams_that_end_leave_the_index_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    outbox, thread, hub = _hub(monkeypatch)
    streams = [hub.watch(0, account_id=f"acc{k % 7}") for k in range(30)]
    streams += [hub.watch(0, kinds=["refund"]) for _ in range(5)]
    waiting = [asyncio.ensure_future(anext(w)) for w in streams]
    await until(lambda: hub.waiting == 35, "35 watchers waiting")
    assert hub.indexed_accounts() == 7
    # Some are woken by an event and end after it, some end while waiting (cancelled).
    await _commit(hub, outbox, ("settlement", "acc3"), ("refund", "zz"))
    await until(lambda: sum(x.done() for x in waiting) == 4 + 5, "acc3's and refunds' woken")
    assert hub.waiting == 35 - 9
    for x in waiting:
        x.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert hub.waiting == 0, "a stream cancelled while it waited is still in the index"
    for w in streams:
        await w.aclose()
    assert hub.watchers == 0
    assert hub.waiting == 0
    assert hub.indexed_accounts() == 0, "an account no stream waits on is left in the index"
    assert not hub._unfiltered and not hub._by_account
    hub.close()
    thread.close()


async def test_a_burst_past_a_page_reads_from_where_the_waiting_stream_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle stream's position is not moved per commit; after a burst it reads from
    the head every waiting stream had seen, and so gets each event once."""
    outbox, thread, hub = _hub(monkeypatch)
    monkeypatch.setattr(watch, "WATCH_PAGE_MAX", 2)
    of_a = hub.watch(0, account_id="a")
    first = asyncio.ensure_future(anext(of_a))
    await until(lambda: hub.waiting == 1, "the watcher waiting")
    await _commit(hub, outbox, ("settlement", "b"))
    await _commit(hub, outbox, ("settlement", "a"))
    assert (await asyncio.wait_for(first, 5)).event_id == "e2"
    second = asyncio.ensure_future(anext(of_a))
    await until(lambda: hub.waiting == 1, "waiting again")
    await _commit(hub, outbox, ("settlement", "b"))
    await _commit(hub, outbox, ("settlement", "a"), ("settlement", "b"), ("settlement", "a"))
    assert (await asyncio.wait_for(second, 5)).event_id == "e4"
    assert (await asyncio.wait_for(anext(of_a), 5)).event_id == "e6"
    assert hub.page_reads >= 1, "the burst was read by the watcher itself"
    third = asyncio.ensure_future(anext(of_a))
    await until(lambda: hub.waiting == 1, "caught up")
    await _commit(hub, outbox, ("settlement", "a"))
    assert (await asyncio.wait_for(third, 5)).event_id == "e7"
    hub.close()
    await of_a.aclose()
    thread.close()


async def test_a_stream_from_a_cursor_past_the_hubs_head_gets_only_what_follows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outbox, thread, hub = _hub(monkeypatch)
    for _ in range(3):
        outbox.add("settlement", "a")
    ahead = hub.watch(2, account_id="a")  # the hub has not looked yet: its head is 0
    assert (await asyncio.wait_for(anext(ahead), 5)).event_id == "e3"
    hub.close()
    await ahead.aclose()
    thread.close()


async def test_streams_opened_together_from_one_cursor_share_their_catch_up_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Consumers starting from 0 at once (or all reconnecting after a restart) read the
    outbox once, not once each; one of them ending does not end the read for the rest."""
    outbox, thread, hub = _hub(monkeypatch)
    everything = hub.watch(0)
    first = asyncio.ensure_future(anext(everything))
    await until(lambda: hub.waiting == 1, "a watcher waiting")
    await _commit(hub, outbox, ("settlement", "a"), ("settlement", "b"), ("refund", "a"))
    await asyncio.wait_for(first, 5)
    pages = hub.page_reads
    of_a = [hub.watch(0, account_id="a") for _ in range(30)]
    readers = [asyncio.ensure_future(_collect(w, 2)) for w in of_a]
    await asyncio.sleep(0)  # each has asked for its page
    readers[0].cancel()
    for reader in readers[1:]:
        assert await asyncio.wait_for(reader, 5) == ["e1", "e3"]
    assert hub.page_reads - pages == 1, "thirty streams from one cursor read it once"
    assert not hub._reads, "a finished read is forgotten"
    hub.close()
    await asyncio.gather(readers[0], return_exceptions=True)
    for w in (everything, *of_a):
        await w.aclose()
    thread.close()
