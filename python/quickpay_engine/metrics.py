"""Prometheus metrics of one engine process, on a registry of its own.

``Metrics`` holds the families; the settlement path feeds them once per batch (never
once per payment), the gRPC layer once per call, and what is already counted elsewhere
(the write-ahead log in the Rust core, the ledger's tables, the breakers, the batcher's
queue) is read when Prometheus scrapes. ``serve_metrics`` (server.py) exposes the
registry, with the liveness and readiness probes, on ``--metrics-listen``.

This module imports nothing of the engine's: the parts it reads at scrape time are
handed to it as callables, so every layer may import it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Latency buckets (seconds) of RPCs, saga stages and gateway rounds: from a
# sub-millisecond replay to a 10 s gateway deadline.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Payments per batch: powers of two up to the largest batch (--batch-max 4096).
BATCH_BUCKETS = tuple(float(1 << k) for k in range(13))
# The saga's stages, in order, as the stage label names them.
STAGES = ("replay_lookup", "validate_score", "reserve", "gateways", "capture_commit", "post")
# A ledger table is reported (a gauge, and a warning in the log) from this share of its
# bound: the operator raises the bound (ledger capacity settings) before payments are
# refused with RESOURCE_EXHAUSTED.
CAPACITY_WARN_RATIO = 0.8


class Metrics:
    """Every metric the engine exports, registered on ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_requests = Counter(
            "quickpay_rpc_requests", "gRPC calls finished, by method", ["rpc"], registry=r
        )
        self.rpc_errors = Counter(
            "quickpay_rpc_errors",
            "gRPC calls that ended with a status other than OK, by method and code",
            ["rpc", "code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "quickpay_rpc_duration_seconds",
            "gRPC call latency, from the handler's start to its end, by method",
            ["rpc"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.settlements = Counter(
            "quickpay_settlements",
            "Payments that reached an outcome, by status and decline reason (empty for"
            " SETTLED); counted once per batch",
            ["status", "reason"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "quickpay_saga_stage_duration_seconds",
            "How long one batch spent in each saga stage",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_payments = Histogram(
            "quickpay_batch_payments",
            "Payments per settlement batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.gateway_sales = Counter(
            "quickpay_gateway_sales",
            "Sales sent to a gateway, by the outcome the saga took from it",
            ["gateway", "outcome"],
            registry=r,
        )
        self.gateway_unknown = Counter(
            "quickpay_gateway_unknown_outcomes",
            "Sales whose outcome the gateway did not say in time (left to recovery)",
            ["gateway"],
            registry=r,
        )
        self.gateway_seconds = Histogram(
            "quickpay_gateway_batch_duration_seconds",
            "How long a batch waited on its sales at a gateway (its slowest sale there)",
            ["gateway"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.recovery_actions = Counter(
            "quickpay_recovery_actions",
            "What recovery did to payments and refunds an earlier run left unfinished"
            " (at start and in the periodic sweep), by action",
            ["action"],
            registry=r,
        )
        self.outbox_lag = Gauge(
            "quickpay_outbox_lag_seconds",
            "Age of the oldest outbox event not yet published to the broker (0: none, or"
            " no broker configured)",
            registry=r,
        )
        self.discrepancies_open = Gauge(
            "quickpay_reconciliation_open_discrepancies",
            "Reconciliation discrepancies not yet RESOLVED",
            registry=r,
        )
        self.ready = Gauge(
            "quickpay_ready",
            "1 while the engine takes payments (recovered, subscribers loaded, not draining)",
            registry=r,
        )
        self.start_time = Gauge(
            "quickpay_start_time_seconds", "When this process started (Unix time)", registry=r
        )
        self.start_time.set(time.time())
        self._stage_children = {s: self.stage_seconds.labels(s) for s in STAGES}
        # Each method's label children, looked up once (a labels() call costs more than
        # the increment).
        self._rpc_children: dict[str, tuple[Any, Any]] = {}

    # -- fed by the settlement path, once per batch ---------------------------------------

    def stage(self, stage: str, seconds: float) -> None:
        """One batch's time in one saga stage."""
        self._stage_children[stage].observe(seconds)

    def batch(self, payments: int) -> None:
        """One batch formed."""
        self.batch_payments.observe(payments)

    def outcomes(self, counts: collections.Counter[tuple[str, str]]) -> None:
        """A batch's outcomes, counted beforehand: {(status, reason): n}."""
        for (status, reason), n in counts.items():
            self.settlements.labels(status, reason).inc(n)

    def gateway_round(self, results: Sequence[Any], seconds: float) -> None:
        """A batch's sales (each with ``gateway`` and ``outcome``), counted by gateway
        and outcome, and the batch's wait (its slowest sale) per gateway it used. A sale
        no gateway took is counted under gateway "none"."""
        counts = collections.Counter((r.gateway or "none", r.outcome.name) for r in results)
        for (gateway, outcome), n in counts.items():
            self.gateway_sales.labels(gateway, outcome).inc(n)
            if outcome == "UNKNOWN":
                self.gateway_unknown.labels(gateway).inc(n)
        for gateway in {gateway for gateway, _ in counts}:
            self.gateway_seconds.labels(gateway).observe(seconds)

    def gateway_round_columns(
        self, gateways: Sequence[str], outcomes: Sequence[Any], seconds: float
    ) -> None:
        """``gateway_round`` of a batch's sales given as columns (each sale's gateway
        and outcome)."""
        counts = collections.Counter(zip(gateways, outcomes, strict=True))
        for (gateway, outcome), n in counts.items():
            name = gateway or "none"
            self.gateway_sales.labels(name, outcome.name).inc(n)
            if outcome.name == "UNKNOWN":
                self.gateway_unknown.labels(name).inc(n)
        for gateway in {gateway or "none" for gateway, _ in counts}:
            self.gateway_seconds.labels(gateway).observe(seconds)

    def recovered(self, actions: Iterable[str]) -> None:
        """Recovery's actions, by name."""
        for action, n in collections.Counter(actions).items():
            self.recovery_actions.labels(action).inc(n)

    # -- fed by the gRPC layer, once per call ---------------------------------------------

    def rpc(self, rpc: str, code: str, seconds: float) -> None:
        """One finished call (``code`` the status name, "OK" for success)."""
        children = self._rpc_children.get(rpc)
        if children is None:
            children = self._rpc_children[rpc] = (
                self.rpc_requests.labels(rpc),
                self.rpc_seconds.labels(rpc),
            )
        children[0].inc()
        children[1].observe(seconds)
        if code != "OK":
            self.rpc_errors.labels(rpc, code).inc()

    # -- read at scrape time ---------------------------------------------------------------

    def watch_ledger(self, usage: Callable[[], Sequence[tuple[str, int, int]]],
                     wal_stats: Callable[[], dict[str, Any]],
                     flush_buckets_ns: Sequence[int]) -> None:  # fmt: skip
        """Reports the ledger's tables against their bounds and the log's group commits,
        as the Rust core counts them, at each scrape."""
        self.registry.register(_LedgerCollector(usage, wal_stats, flush_buckets_ns))

    def watch_queue(self, waiting: Callable[[], int], queue_max: int) -> None:
        """Reports the settlement queue's depth at each scrape."""
        depth = Gauge(
            "quickpay_queue_waiting_payments",
            "Payments queued for the next settlement batch",
            registry=self.registry,
        )
        depth.set_function(lambda: float(waiting()))
        bound = Gauge(
            "quickpay_queue_waiting_payments_max",
            "The settlement queue's bound; past it Pay answers RESOURCE_EXHAUSTED",
            registry=self.registry,
        )
        bound.set(queue_max)

    def watch_loop(self) -> None:
        """Reports the CPU seconds of the calling thread (the event loop's) at each
        scrape. Their rate is the share of a core the loop uses: it runs grpc.aio's work
        for every call besides the engine's steps per batch, so near 1 it is what bounds
        unary Pay and PayStream; from 0.5 the batcher lingers longer for larger batches
        (settlement/batcher.py). Not reported where the platform has no per-thread CPU
        clock."""
        if hasattr(time, "pthread_getcpuclockid"):
            clock = time.pthread_getcpuclockid(threading.get_ident())
            self.registry.register(_ThreadCpuCollector(clock))

    def watch_sqlite(
        self, checkpoints: Callable[[], tuple[int, int]], wal_bytes: Callable[[], int]
    ) -> None:
        """Reports the SQLite store's checkpoints and its write-ahead log's size at each
        scrape (SQLite stores only)."""
        self.registry.register(_SqliteCollector(checkpoints, wal_bytes))

    def watch_breakers(self, states: Callable[[], dict[str, int]]) -> None:
        """Reports each gateway's circuit breaker (0 closed, 1 open, 2 half open), and
        starts each gateway's unknown-outcome count at 0 (a rate needs the zero)."""
        self.registry.register(_BreakerCollector(states))
        for gateway in states():
            self.gateway_unknown.labels(gateway)


class _LedgerCollector(Collector):
    def __init__(
        self,
        usage: Callable[[], Sequence[tuple[str, int, int]]],
        wal_stats: Callable[[], dict[str, Any]],
        flush_buckets_ns: Sequence[int],
    ) -> None:
        self._usage = usage
        self._wal_stats = wal_stats
        self._bounds_s = [b / 1e9 for b in flush_buckets_ns]

    def collect(self) -> Iterator[Metric]:
        try:
            usage = self._usage()
            wal = self._wal_stats()
        except Exception:  # the ledger closed under a scrape at shutdown: report nothing
            return
        held = GaugeMetricFamily(
            "quickpay_ledger_entries", "Entries in each bounded ledger table", labels=["table"]
        )
        bound = GaugeMetricFamily(
            "quickpay_ledger_entries_max",
            "Each ledger table's bound; a batch that would cross it is refused"
            " (RESOURCE_EXHAUSTED)",
            labels=["table"],
        )
        used = GaugeMetricFamily(
            "quickpay_ledger_capacity_used_ratio",
            "Entries over bound, per ledger table (warned at 0.8)",
            labels=["table"],
        )
        for table, n, max_n in usage:
            held.add_metric([table], n)
            bound.add_metric([table], max_n)
            used.add_metric([table], n / max_n if max_n else 0.0)
        yield from (held, bound, used)
        cumulative, buckets = 0, []
        for upper, n in zip([*self._bounds_s, float("inf")], wal["flush_buckets"], strict=True):
            cumulative += n
            buckets.append(("+Inf" if upper == float("inf") else repr(upper), cumulative))
        fsync = HistogramMetricFamily(
            "quickpay_wal_fsync_duration_seconds",
            "Write-ahead log group commits (one write and fdatasync each): latency",
        )
        fsync.add_metric([], buckets, sum_value=wal["flush_ns"] / 1e9)
        yield fsync
        yield CounterMetricFamily(
            "quickpay_wal_records", "Records written to the write-ahead log", wal["records"]
        )
        yield CounterMetricFamily(
            "quickpay_wal_written_bytes", "Bytes written to the write-ahead log", wal["bytes"]
        )


class _ThreadCpuCollector(Collector):
    def __init__(self, clock: int) -> None:
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            seconds = time.clock_gettime(self._clock)
        except OSError:  # the thread has ended: the server is stopping
            return
        yield CounterMetricFamily(
            "quickpay_event_loop_cpu_seconds",
            "CPU seconds of the event loop's thread (gRPC calls, batching, the saga's"
            " steps); its rate is the share of a core the loop uses",
            value=seconds,
        )


class _SqliteCollector(Collector):
    def __init__(
        self, checkpoints: Callable[[], tuple[int, int]], wal_bytes: Callable[[], int]
    ) -> None:
        self._checkpoints = checkpoints
        self._wal_bytes = wal_bytes

    def collect(self) -> Iterator[Metric]:
        runs, failures = self._checkpoints()
        yield CounterMetricFamily(
            "quickpay_sqlite_checkpoints",
            "WAL checkpoints the checkpoint thread ran (copying the WAL into the file)",
            runs,
        )
        yield CounterMetricFamily(
            "quickpay_sqlite_checkpoint_failures",
            "WAL checkpoints that failed (a full disk, an I/O error); the writer's own"
            " commit then copies the WAL once it holds 4,000 pages",
            failures,
        )
        yield GaugeMetricFamily(
            "quickpay_sqlite_wal_bytes",
            "Size of the SQLite store's write-ahead log file (about 16 MiB at most)",
            self._wal_bytes(),
        )


class _BreakerCollector(Collector):
    def __init__(self, states: Callable[[], dict[str, int]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "quickpay_gateway_breaker_state",
            "Each gateway's circuit breaker: 0 closed, 1 open, 2 half open",
            labels=["gateway"],
        )
        for gateway, state in self._states().items():
            family.add_metric([gateway], state)
        yield family


class CapacityWarning:
    """Logs one warning when a ledger table first reaches ``CAPACITY_WARN_RATIO`` of its
    bound, and again if it falls back below and reaches it once more."""

    def __init__(self, warn: Callable[[str, int, int], None]) -> None:
        self._warn = warn
        self._over: set[str] = set()

    def check(self, usage: Sequence[tuple[str, int, int]]) -> None:
        """Looks at the tables once (the service's sweep calls it every few seconds)."""
        for table, n, max_n in usage:
            if max_n and n >= CAPACITY_WARN_RATIO * max_n:
                if table not in self._over:
                    self._over.add(table)
                    self._warn(table, n, max_n)
            else:
                self._over.discard(table)
