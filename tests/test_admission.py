"""Admission by time (settlement/admission.py): the verdicts, on an injected clock.

Every verdict here follows from the times the test sets, never from how fast this
machine runs: the clock is a value the test moves, and the batcher's takes happen
when the test lets a batch go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from quickpay_engine.errors import Overloaded
from quickpay_engine.settlement.admission import RETRY_AFTER_MIN_S, Admission
from quickpay_engine.settlement.batcher import MicroBatcher


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self, now_s: float = 1_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def busy(admission: Admission, batches: int, items: int, interval_s: float, t0: float = 0.0):
    """``batches`` takes of ``items`` each, ``interval_s`` apart, the queue never empty."""
    for k in range(batches):
        admission.taken(items, t0 + k * interval_s, backlogged=k > 0)


def test_nothing_is_refused_by_time_before_a_busy_batch_was_measured() -> None:
    admission = Admission(wait_max_s=0.25, clock=Clock())
    assert admission.rate_per_s is None
    admission.check(ahead=1_000_000)
    # Takes that found the queue empty measure the callers, not the engine.
    for k in range(5):
        admission.taken(1, k * 10.0, backlogged=False)
    assert admission.rate_per_s is None
    admission.check(ahead=1_000_000)


def test_the_rate_is_busy_batches_over_the_time_between_their_takes() -> None:
    admission = Admission(wait_max_s=0.25, clock=Clock())
    busy(admission, batches=3, items=100, interval_s=0.5)
    assert admission.rate_per_s == pytest.approx(200.0)
    assert admission.expected_wait_s(50) == pytest.approx(0.25)
    assert admission.expected_wait_s(0) == 0.0


def test_within_the_bound_is_admitted_and_past_it_refused_with_a_hint() -> None:
    admission = Admission(wait_max_s=0.25, clock=Clock())
    busy(admission, batches=2, items=100, interval_s=0.5)  # 200 payments/s
    admission.check(ahead=50)  # 250 ms: at the bound, admitted
    with pytest.raises(Overloaded) as refused:
        admission.check(ahead=51)
    assert refused.value.retry_after_s == pytest.approx(RETRY_AFTER_MIN_S)
    with pytest.raises(Overloaded) as refused:
        admission.check(ahead=250)  # 1.25 s of work: 1 s past the bound
    assert refused.value.retry_after_s == pytest.approx(1.0)
    message = str(refused.value)
    assert "250 payments are queued" in message and "1250 ms" in message
    assert "retry in 1000 ms with the same idempotency_key" in message


def test_a_deadline_shorter_than_the_wait_is_refused_under_the_bound() -> None:
    clock = Clock(now_s=50.0)
    admission = Admission(wait_max_s=0.25, clock=clock)
    busy(admission, batches=2, items=100, interval_s=0.5)  # 200 payments/s
    admission.check(ahead=20, deadline_s=50.2)  # 100 ms of wait, 200 ms left
    with pytest.raises(Overloaded, match="100 ms left of the deadline") as refused:
        admission.check(ahead=40, deadline_s=50.1)  # 200 ms of wait, 100 ms left
    assert refused.value.retry_after_s == pytest.approx(0.1)
    # A deadline already past refuses anything that would wait at all.
    with pytest.raises(Overloaded, match="0 ms left"):
        admission.check(ahead=1, deadline_s=49.0)
    admission.check(ahead=0, deadline_s=49.0)
    # A deadline further than the bound: the bound decides.
    with pytest.raises(Overloaded, match="bound of 250 ms"):
        admission.check(ahead=60, deadline_s=60.0)


def test_the_estimate_follows_a_slower_engine_within_a_few_batches() -> None:
    admission = Admission(wait_max_s=0.25, clock=Clock(), smoothing=0.2)
    busy(admission, batches=10, items=100, interval_s=0.1)  # 1,000/s
    assert admission.rate_per_s == pytest.approx(1_000.0)
    admission.check(ahead=200)
    # The gateways slow down tenfold: every busy take now comes a second apart.
    busy(admission, batches=20, items=100, interval_s=1.0, t0=0.9 + 0.1)
    assert admission.rate_per_s == pytest.approx(100.0, rel=0.05)
    with pytest.raises(Overloaded):
        admission.check(ahead=200)
    # One odd batch moves the estimate by a fraction only.
    before = admission.rate_per_s
    admission.taken(100, 20.0 + 0.001, backlogged=True)
    assert admission.rate_per_s < before * 1.5


def test_a_bound_of_zero_refuses_nothing_by_time() -> None:
    admission = Admission(wait_max_s=0, clock=Clock())
    busy(admission, batches=3, items=1, interval_s=10.0)
    admission.check(ahead=10_000, deadline_s=0.0)


class Gate:
    """A process function whose batches wait until the test releases them."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self._arrived = asyncio.Condition()

    async def __call__(self, items: Sequence[int]) -> list[int]:
        async with self._arrived:
            self.batches.append(list(items))
            self._arrived.notify_all()
        await self.release.wait()
        return [i * 10 for i in items]

    async def reached(self, count: int) -> None:
        """Returns once ``count`` batches have begun."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.batches) >= count)


async def test_the_batcher_measures_busy_takes_and_admits_a_call_whole() -> None:
    """Through the batcher: a take that found payments waiting is a sample at the time
    the test set; ``admit`` refuses a call's payments together, by count or by time,
    before any is queued; what it admits settles."""
    clock = Clock(now_s=0.0)
    gate = Gate()
    admission = Admission(wait_max_s=0.25, clock=clock)
    batcher = MicroBatcher(
        gate, batch_max=4, linger_ms=0, queue_max=100, inflight_max=1, admission=admission
    )
    batcher.start()
    futures = [batcher.submit_nowait(i) for i in range(12)]
    # The first two takes come at 0.0 (the second then waits for the one slot): no
    # time has passed between them, so no sample yet.
    await gate.reached(1)
    assert admission.rate_per_s is None
    clock.now_s = 1.0
    gate.release.set()  # the third take, at 1.0, found 4 waiting: 4 payments in 1 s
    await gate.reached(3)
    assert admission.rate_per_s == pytest.approx(4.0)
    await asyncio.gather(*futures)
    gate.release.clear()
    # The consumer idles on an empty queue: a take now is no sample.
    clock.now_s = 5.0
    held = [batcher.submit_nowait(i) for i in range(4)]
    await gate.reached(4)
    assert admission.rate_per_s == pytest.approx(4.0)
    # 4 payments/s: the bound of 250 ms is one payment queued ahead.
    queued = []
    for item in (100, 101):
        batcher.admit(1)
        queued.append(batcher.submit_nowait(item))
    with pytest.raises(Overloaded, match="2 payments are queued") as refused:
        batcher.admit(1)
    assert refused.value.retry_after_s == pytest.approx(0.25)
    assert batcher.waiting() == 2, "nothing of a refused call is queued"
    # By count: a call that would overfill the queue is refused whole.
    with pytest.raises(Overloaded, match="queue is full"):
        batcher.admit(99)
    assert batcher.waiting() == 2
    gate.release.set()
    assert await asyncio.gather(*held, *queued) == [0, 10, 20, 30, 1_000, 1_010]
    await batcher.close()


def test_the_wait_bound_is_a_serve_flag_with_its_variable(monkeypatch, tmp_path, capsys) -> None:
    from quickpay_engine.cli import build_parser, main
    from quickpay_engine.config import settings_from

    def bound_ms(*flags: str) -> float:
        return settings_from(build_parser().parse_args(["serve", *flags])).queue_wait_max_ms

    monkeypatch.delenv("QUICKPAY_QUEUE_WAIT_MAX_MS")  # the suite's own setting (conftest)
    assert bound_ms() == 250
    assert bound_ms("--queue-wait-max-ms", "80") == 80
    assert bound_ms("--queue-wait-max-ms", "0") == 0
    monkeypatch.setenv("QUICKPAY_QUEUE_WAIT_MAX_MS", "1500")
    assert bound_ms() == 1_500
    assert bound_ms("--queue-wait-max-ms", "40") == 40, "the flag wins over the variable"
    for bad in ("-1", "60001", "soon", "nan"):
        argv = ["serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"]
        assert main([*argv, "--queue-wait-max-ms", bad]) == 2
        assert f"--queue-wait-max-ms '{bad}': expected milliseconds" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is opened before the flag is checked"
