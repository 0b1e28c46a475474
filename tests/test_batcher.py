"""The micro-batcher: batches fill under load, the queue is bounded, shutdown drains."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from quickpay_engine.errors import Overloaded, ShuttingDown
from quickpay_engine.settlement.batcher import BUSY_LINGER_TIMES, MicroBatcher


class Recorder:
    """A process function that records batch sizes; waits on a gate when given one."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_concurrent_submissions_share_batches_and_get_their_own_results() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, batch_max=16, linger_ms=5)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(40)), return_exceptions=True)
    await batcher.close()
    assert [r for r in results if not isinstance(r, BaseException)] == [
        i * 10 for i in range(0, 40, 2)
    ]
    assert [str(r) for r in results if isinstance(r, BaseException)] == [
        f"odd {i}" for i in range(1, 40, 2)
    ]
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(40))
    assert max(len(b) for b in recorder.batches) == 16
    assert len(recorder.batches) <= 4
    # What the server logs of batch sizes counts the same batches.
    window = batcher.take_window()
    assert (window.batches, window.items, window.largest) == (len(recorder.batches), 40, 16)
    assert batcher.take_window().batches == 0, "a new window begins empty"
    assert batcher.total == window
    assert window.describe() == f"40 payments in {window.batches} batches" + (
        f" (mean {40 / window.batches:.1f}, largest 16)"
    )


async def test_it_lingers_only_while_more_payments_are_expected_within_the_linger() -> None:
    # A linger of a minute: a batch that waited it would fail the wait_for below.
    recorder = Recorder()
    batcher = MicroBatcher(recorder, batch_max=2, linger_ms=60_000)
    batcher.start()
    # Low load: one payment and nothing else arriving. It goes at once, alone.
    assert await asyncio.wait_for(batcher.submit(2), 30) == 20
    assert recorder.batches == [[2]]
    # A burst: payments now arrive faster than one per linger.
    burst = await asyncio.gather(*(batcher.submit(2 * i) for i in range(10)))
    assert burst == [20 * i for i in range(10)]
    assert batcher.arrival_per_s * 60 >= 1
    # So the next lone payment waits for company, and gets it.
    first = asyncio.ensure_future(batcher.submit(100))
    await asyncio.sleep(0.05)
    assert recorder.batches[-1] != [100] and not first.done(), "lingering for a second payment"
    assert await asyncio.wait_for(batcher.submit(102), 30) == 1020
    assert await first == 1000
    assert recorder.batches[-1] == [100, 102]
    await batcher.close()


async def test_the_linger_grows_with_the_batches_being_processed_ahead() -> None:
    """Under load a batch waits the linger once for itself and once for each batch still
    being processed ahead of it (they share the CPU and the writer with it); with none
    ahead it waits the linger alone, and at low load nothing at all."""
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher(recorder, batch_max=8, linger_ms=2, inflight_max=4)
    batcher.start()
    now = asyncio.get_running_loop().time()
    batcher._out = 1  # the batch being gathered holds its slot
    batcher.arrival_per_s = 100.0  # one per 10 ms: no company expected within 2 ms
    assert batcher._linger(now) == 0.0
    batcher.arrival_per_s = 10_000.0  # twenty expected within the linger
    assert batcher._linger(now) == pytest.approx(0.002)
    batcher._out = 3  # two batches ahead
    assert batcher._linger(now) == pytest.approx(0.006)
    # Fewer arriving, with batches ahead: what counts is whether company is expected
    # within the linger this batch would wait (here 2 ms for itself and each of the 7
    # ahead, 16 ms: 1.6 expected at 100 a second), not within one linger_ms. Counted
    # within 2 ms (0.2 expected), a closed loop of callers all held by the 8 batches in
    # flight stopped lingering, and each new batch held only the callers the batch
    # before it had just answered (benches/RESULTS.md).
    batcher.arrival_per_s = 100.0
    batcher._out = 8
    assert batcher._linger(now) == pytest.approx(0.016)
    batcher._out = 4  # 0.8 expected within 8 ms: not worth it
    assert batcher._linger(now) == 0.0
    batcher._out = 0
    gate.set()
    await batcher.close()


async def test_a_busy_event_loop_lingers_longer_and_an_idle_one_does_not() -> None:
    """The loop's share of CPU between takes is read from its thread's CPU clock (here a
    fake one the test moves): a loop on a CPU most of the time is the bound, and its
    batches wait BUSY_LINGER_TIMES the linger; the share is smoothed over takes, so
    one busy spell does not switch it, nor does a loop that goes quiet stay switched."""
    cpu_s = 0.0
    batcher = MicroBatcher(Recorder(), batch_max=8, linger_ms=2, busy_clock=lambda: cpu_s)
    batcher._out = 2  # one batch ahead of the one being gathered
    batcher.arrival_per_s = 10_000.0  # twenty expected within the linger

    def take(at: float, busy: float) -> float:
        """A take at loop time ``at``, the loop's thread on a CPU ``busy`` of the time
        since the one before (10 ms earlier); the linger it gets."""
        nonlocal cpu_s
        cpu_s += busy * 0.010
        batcher._arrived = 100  # keeps the arrival rate at 10,000 a second
        return batcher._linger(at)

    assert take(0.0, 0.0) == pytest.approx(0.004), "no share measured yet: the usual linger"
    # Busy 90 % of each 10 ms: the smoothed share crosses BUSY_LOOP_SHARE after a few.
    lingers = [take(0.01 * i, 0.9) for i in range(1, 30)]
    assert lingers[0] == pytest.approx(0.004), "one busy spell does not switch it"
    busy_linger = 0.004 * BUSY_LINGER_TIMES
    assert lingers[-1] == pytest.approx(busy_linger)
    assert batcher.loop_busy == pytest.approx(0.9, abs=0.05)
    # The loop goes quiet (10 % busy): the share decays and the linger is the usual one.
    quiet = [take(0.3 + 0.01 * i, 0.1) for i in range(1, 30)]
    assert quiet[0] == pytest.approx(busy_linger)
    assert quiet[-1] == pytest.approx(0.004)
    # Busy but with few payments arriving (one expected per 10 ms): no linger at all.
    batcher.loop_busy = 0.9
    batcher.arrival_per_s = 100.0
    batcher._arrived = 0
    assert batcher._linger(0.61) == 0.0


async def test_full_queue_is_refused_before_any_work() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher(recorder, batch_max=2, linger_ms=0, queue_max=4)
    batcher.start()
    first = [asyncio.ensure_future(batcher.submit(i * 2)) for i in range(2)]
    await asyncio.sleep(0.01)  # the consumer holds the first batch at the gate
    queued = [asyncio.ensure_future(batcher.submit(i * 2)) for i in range(2, 6)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue is full"):
        await batcher.submit(100)
    assert [100] not in recorder.batches
    gate.set()
    assert await asyncio.gather(*first, *queued) == [i * 20 for i in range(6)]
    await batcher.close()


async def test_close_finishes_what_is_queued_then_refuses() -> None:
    gate = asyncio.Event()
    batcher = MicroBatcher(Recorder(gate), batch_max=1, linger_ms=0)
    batcher.start()
    pending = [asyncio.ensure_future(batcher.submit(i * 2)) for i in range(3)]
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.01)
    with pytest.raises(ShuttingDown):
        await batcher.submit(8)
    assert not closing.done()
    gate.set()
    await closing
    assert [p.result() for p in pending] == [0, 20, 40]


async def test_a_cancelled_caller_does_not_pull_its_item_out_of_a_batch() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher(recorder, batch_max=4, linger_ms=0)
    batcher.start()
    caller = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    caller.cancel()
    gate.set()
    await batcher.close()
    assert recorder.batches == [[2]]


async def test_a_failing_batch_fails_each_caller_with_the_error() -> None:
    async def broken(items: Sequence[int]) -> list[int]:
        raise RuntimeError("database went away")

    batcher = MicroBatcher(broken, batch_max=8, linger_ms=1)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    await batcher.close()
    assert [str(r) for r in results] == ["database went away"] * 3


async def test_a_group_is_split_across_batches_in_order_and_answered_once() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher(recorder, batch_max=4, linger_ms=0, queue_max=12)
    batcher.start()
    single = asyncio.ensure_future(batcher.submit(100))
    await asyncio.sleep(0.01)  # the first batch ([100]) holds at the gate
    ticket = batcher.submit_group(list(range(10)))
    after = asyncio.ensure_future(batcher.submit(200))
    await asyncio.sleep(0.01)
    # The next batch is taken only once a slot frees: meanwhile all eleven wait.
    assert batcher.waiting() == 11
    # The group counts item by item against the bound, and is refused whole past it.
    with pytest.raises(Overloaded):
        batcher.submit_group(list(range(6)))
    assert batcher.waiting() == 11
    gate.set()
    results = await ticket.future
    assert results is ticket.results
    assert [r if not isinstance(r, BaseException) else str(r) for r in results] == [
        i * 10 if i % 2 == 0 else f"odd {i}" for i in range(10)
    ]
    assert await single == 1000 and await after == 2000
    await batcher.close()
    # In order, no batch past batch_max, the group's tail sharing a batch with what
    # came after it.
    assert recorder.batches == [[100], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 200]]
    assert batcher.total.items == 12


async def test_payments_arriving_while_every_slot_is_busy_go_into_one_batch() -> None:
    """With every slot busy, the next batch is taken when one frees, with all that came
    meanwhile (up to batch_max): under load the batches grow, where a batch taken at the
    first arrival would have waited for the slot holding that one payment alone."""
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher(recorder, batch_max=5, linger_ms=0, inflight_max=2)
    batcher.start()
    held = []
    for i in (100, 102):
        held.append(asyncio.ensure_future(batcher.submit(i)))
        await asyncio.sleep(0.01)
    # Two batches hold at the gate, each taken as soon as its payment came.
    assert recorder.batches == [[100], [102]]
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]
    await asyncio.sleep(0.01)
    assert batcher.waiting() == 6
    gate.set()
    await asyncio.gather(*held, *later, return_exceptions=True)
    await batcher.close()
    assert recorder.batches == [[100], [102], [0, 1, 2, 3, 4], [5]]


async def test_a_group_that_does_not_fit_whole_starts_the_next_batch() -> None:
    """Two PayBatch calls of 3 with room for 4 in a batch: each goes whole into a batch
    of its own, so each call waits for one batch; a single payment after them still
    fills the second batch's room."""
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher(recorder, batch_max=4, linger_ms=50, inflight_max=1)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(100))
    await asyncio.sleep(0.01)  # [100] holds at the gate; everything below waits for it
    tickets = [batcher.submit_group([0, 1, 2]), batcher.submit_group([10, 11, 12])]
    single = asyncio.ensure_future(batcher.submit(20))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, single, *(t.future for t in tickets), return_exceptions=True)
    await batcher.close()
    assert recorder.batches == [[100], [0, 1, 2], [10, 11, 12, 20]]


async def test_a_failing_batch_fails_each_item_of_a_group_and_close_waits_for_it() -> None:
    gate = asyncio.Event()

    async def broken(items: Sequence[int]) -> list[int]:
        await gate.wait()
        raise RuntimeError("database went away")

    batcher = MicroBatcher(broken, batch_max=2, linger_ms=0)
    batcher.start()
    ticket = batcher.submit_group([1, 2, 3])
    await asyncio.sleep(0.01)
    assert ticket.results[:2] == [None, None], "a part under way has no results yet"
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    gate.set()
    await closing
    assert ticket.future.done()
    assert [str(r) for r in ticket.results] == ["database went away"] * 3
