"""Runs a load in one process or several, merges what they measured, shows progress.

With ``processes > 1`` each worker is a separate process (multiprocessing, spawn), with
its own event loop and its own channels, so that one Python client's CPU is not what
limits the figures. Workers connect, meet at a barrier, start together, stream their
ticks to the parent over a queue and send their tally at the end; HDR histograms merge
exactly, so the percentiles of the whole are right, not averages of percentiles.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import uvloop
from tqdm import tqdm

from quickpay_engine.bench.histogram import Latency
from quickpay_engine.bench.load import Interval, LoadPlan, Tally, Worker
from quickpay_engine.bench.scenario import Mix, RequestSource
from quickpay_engine.domain import SubscriberRow

# Workers get this long to connect and reach the start barrier.
START_TIMEOUT_S = 60.0
# The parent checks that its workers are alive this often while waiting for messages.
POLL_S = 0.5


@dataclass
class Tick:
    """The timeline's point for one tick, all workers together."""

    span_s: float = 0.0
    completed: int = 0
    errors: int = 0
    latency: Latency = field(default_factory=Latency)


class Timeline:
    """Ticks from every worker, merged by tick number; feeds the live progress line."""

    def __init__(self, interval_s: float, progress: Callable[[str, int], None] | None) -> None:
        self.interval_s = interval_s
        self.ticks: dict[int, Tick] = {}
        self._so_far = Latency()
        self._completed = 0
        self._errors = 0
        self._progress = progress

    def add(self, interval: Interval) -> None:
        """Merges one worker's tick and refreshes the progress line."""
        tick = self.ticks.setdefault(interval.index, Tick())
        latency = Latency.decode(interval.latency)
        tick.span_s = max(tick.span_s, interval.span_s)
        tick.completed += interval.completed
        tick.errors += interval.errors
        tick.latency.add(latency)
        self._so_far.add(latency)
        self._completed += interval.completed
        self._errors += interval.errors
        if self._progress is not None:
            rate = tick.completed / tick.span_s
            p99_ms = self._so_far.percentile_ms(99)
            self._progress(
                f"rate {rate:,.0f}/s errors {self._errors} p99 {p99_ms:.1f} ms",
                interval.measured,
            )

    def points(self) -> list[dict[str, float]]:
        """One row per tick: time, throughput, errors and latency percentiles."""
        rows = []
        for index in sorted(self.ticks):
            tick = self.ticks[index]
            rows.append(
                {
                    "t_s": index * self.interval_s + tick.span_s,
                    "rate_per_s": tick.completed / tick.span_s,
                    "errors_per_s": tick.errors / tick.span_s,
                    "p50_ms": tick.latency.percentile_ms(50),
                    "p99_ms": tick.latency.percentile_ms(99),
                    "max_ms": tick.latency.max_ms(),
                }
            )
        return rows


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal integers that add up to it."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def worker_plans(plan: LoadPlan, processes: int) -> list[LoadPlan]:
    """The share of ``plan`` each of ``processes`` workers runs."""
    if processes < 1 or plan.concurrency < processes:
        raise ValueError("--processes must be at least 1 and at most --concurrency")
    counts = split(plan.count, processes) if plan.count is not None else [None] * processes
    if plan.count is not None and plan.count < processes:
        raise ValueError("--count must be at least --processes")
    plans = []
    for i, (concurrency, count) in enumerate(
        zip(split(plan.concurrency, processes), counts, strict=True)
    ):
        plans.append(
            dataclasses.replace(
                plan,
                concurrency=concurrency,
                count=count,
                rate_per_s=None if plan.rate_per_s is None else plan.rate_per_s / processes,
                seed=plan.seed * 1_000 + i,
                # One answers file per worker process: FILE.0, FILE.1, ...
                answers=plan.answers
                if plan.answers is None or processes == 1
                else plan.answers.with_name(f"{plan.answers.name}.{i}"),
            )
        )
    return plans


def _worker_main(
    plan: LoadPlan,
    subscribers: Sequence[SubscriberRow],
    mix: Mix,
    run_id: str,
    out: mp.Queue,
    barrier: threading.Barrier,
) -> None:
    # The body of a worker process: every outcome, even a crash, ends as a message.
    try:
        source = RequestSource(subscribers, plan.seed, mix, run_id)
        worker = Worker(plan, source, lambda interval: out.put(("tick", interval)))
        tally = uvloop.run(worker.run(ready=lambda: barrier.wait(START_TIMEOUT_S)))
        out.put(("done", tally))
    except BaseException as err:
        barrier.abort()
        out.put(("error", f"{type(err).__name__}: {err}"))


class WorkerFailed(RuntimeError):
    """A worker process failed or died; the run has no trustworthy figures."""


def run_load(
    plan: LoadPlan,
    subscribers: Sequence[SubscriberRow],
    mix: Mix,
    run_id: str,
    processes: int = 1,
    progress: bool = True,
) -> tuple[Tally, Timeline]:
    """Runs the load, in ``processes`` worker processes when more than one."""
    plans = worker_plans(plan, processes)
    total = plan.count if plan.count is not None else None
    bar = tqdm(total=total, unit="pay", disable=not progress, smoothing=0.1, leave=True)

    def show(text: str, completed: int) -> None:
        bar.set_postfix_str(text, refresh=False)
        bar.update(completed)

    timeline = Timeline(plan.interval_s, show if progress else None)
    try:
        if processes == 1:
            source = RequestSource(subscribers, plans[0].seed, mix, run_id)
            tally = uvloop.run(Worker(plans[0], source, timeline.add).run())
        else:
            tally = _run_processes(plans, subscribers, mix, run_id, timeline)
    finally:
        bar.close()
    return tally, timeline


def _run_processes(
    plans: list[LoadPlan],
    subscribers: Sequence[SubscriberRow],
    mix: Mix,
    run_id: str,
    timeline: Timeline,
) -> Tally:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    barrier = ctx.Barrier(len(plans))
    workers = [
        ctx.Process(
            target=_worker_main,
            args=(p, subscribers, mix, f"{run_id}-w{i}", out, barrier),
            name=f"quickpay-bench-{i}",
        )
        for i, p in enumerate(plans)
    ]
    for w in workers:
        w.start()
    merged = Tally()
    finished = 0
    # Bound on the wait: the run's own length plus start-up and the call timeout.
    longest = max((p.duration_s or 0) + p.warmup_s + p.timeout_s + START_TIMEOUT_S for p in plans)
    deadline = time.monotonic() + (longest if plans[0].duration_s else math.inf)
    try:
        while finished < len(workers):
            try:
                kind, body = out.get(timeout=POLL_S)
            except queue_mod.Empty:
                dead = [w for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    raise WorkerFailed(f"{dead[0].name} exited with {dead[0].exitcode}") from None
                if time.monotonic() > deadline:
                    raise WorkerFailed("workers did not finish in time") from None
                continue
            if kind == "tick":
                timeline.add(body)
            elif kind == "done":
                merged.merge(body)
                finished += 1
            else:
                raise WorkerFailed(body)
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
                w.join()
    return merged
