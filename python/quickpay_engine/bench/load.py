"""One load-generating worker: channels, the closed or open loop, and what it measured.

Closed loop: ``concurrency`` callers each send a request, wait for the answer, send the
next. Open loop: requests are due at a target rate (constant gaps or Poisson arrivals)
whatever the server does, and each latency is measured from the request's *intended*
send time, not from when the client got round to sending it. A server that stalls
therefore shows the stall in every request that was due during it (the correction for
coordinated omission); a closed loop would quietly send less instead.

A worker runs in one event loop; ``quickpay_engine.bench.runner`` runs several in
separate processes and merges their results.
"""

from __future__ import annotations

import asyncio
import csv
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import grpc

from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.bench.histogram import Latency
from quickpay_engine.bench.scenario import RequestSource

# Each call gets this long before the client gives up on it (DEADLINE_EXCEEDED).
CALL_TIMEOUT_S = 30.0
# Open loop: at most this many calls in flight per worker. At the bound the scheduler
# waits for a slot; the waiting still counts in the latency (it is measured from the
# intended send time), so the bound protects the client without hiding the queue.
INFLIGHT_MAX = 10_000
# Open loop: when behind schedule, yield to the event loop after this many sends in a
# row, so that answers keep being read while the backlog is sent.
BURST_MAX = 64
# How long the channels get to connect before the run is abandoned.
CONNECT_TIMEOUT_S = 10.0
# --rpc batch: payments per PayBatch call, and how long an open loop's call that is not
# full waits for more before it goes out (a closed loop builds each call whole).
BATCH_SIZE = 100
BATCH_LINGER_S = 0.002
# gRPC status names a PayStream reply carries in decline_reason when one request failed
# on its own (the servicer's convention); such a reply counts as an error by that code.
_GRPC_CODES = frozenset(code.name for code in grpc.StatusCode)


class ConnectFailed(RuntimeError):
    """The target did not accept a connection (or a TLS handshake) in time."""


@dataclass(frozen=True)
class LoadPlan:
    """What one worker does. ``rate_per_s`` set means open loop, else closed loop.

    The run stops after ``count`` measured requests or ``duration_s`` measured seconds
    (one of them is set); requests sent during the first ``warmup_s`` seconds are not
    measured.
    """

    target: str
    # "unary" (Pay), "stream" (PayStream, one stream per channel) or "batch" (PayBatch
    # calls of ``batch_size`` payments)
    rpc: str = "unary"
    batch_size: int = BATCH_SIZE
    concurrency: int = 64
    rate_per_s: float | None = None
    arrival: str = "constant"  # "constant" or "poisson"
    count: int | None = None
    duration_s: float | None = None
    warmup_s: float = 0.0
    channels: int = 4
    interval_s: float = 1.0
    timeout_s: float = CALL_TIMEOUT_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    tls: bool = False
    tls_ca: Path | None = None
    tls_server_name: str | None = None
    # A client certificate and its key (PEM files) for a server that asks for one.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # A bearer token sent with every call, for a server with an access file.
    token: str | None = None
    seed: int = 1
    # When set, every answer (warm-up included) is written here as one CSV row (see
    # ANSWER_COLUMNS), so a caller can check afterwards what was acknowledged.
    answers: Path | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.duration_s is None):
            raise ValueError("exactly one of count and duration_s must be set")
        if self.rpc not in ("unary", "stream", "batch"):
            raise ValueError(f"rpc must be unary, stream or batch, not {self.rpc!r}")
        if not 1 <= self.batch_size <= 1_000:
            raise ValueError("batch_size must be between 1 and 1000")
        if self.arrival not in ("constant", "poisson"):
            raise ValueError(f"arrival must be constant or poisson, not {self.arrival!r}")
        positive = [
            self.concurrency,
            self.channels,
            self.interval_s,
            self.timeout_s,
            self.connect_timeout_s,
        ]
        if self.count is not None:
            positive.append(self.count)
        if self.duration_s is not None:
            positive.append(self.duration_s)
        if self.rate_per_s is not None:
            positive.append(self.rate_per_s)
        if min(positive) <= 0 or self.warmup_s < 0:
            raise ValueError("counts, rates and durations must be positive (warm-up >= 0)")

    @property
    def open_loop(self) -> bool:
        """Requests are sent at a rate, not as answers come back."""
        return self.rate_per_s is not None


@dataclass
class Tally:
    """What a worker (or several, merged) measured after the warm-up."""

    sent: int = 0  # measured requests, each answered, failed or timed out
    warmup: int = 0  # requests sent during the warm-up, not in the figures
    kinds: Counter[str] = field(default_factory=Counter)  # what was sent, by scenario kind
    statuses: Counter[str] = field(default_factory=Counter)  # answers by PaymentStatus
    declines: Counter[str] = field(default_factory=Counter)  # DECLINED/FAILED by reason
    errors: Counter[str] = field(default_factory=Counter)  # errors by gRPC status code
    replayed: int = 0
    fraud_decisions: Counter[str] = field(default_factory=Counter)
    latency: Latency = field(default_factory=Latency)  # from the intended send time
    service: Latency = field(default_factory=Latency)  # from the actual send time
    # Of the calls answered without a gRPC error (the ones the server admitted), from
    # the intended send time: under overload the refusals are quick and would hide
    # what the admitted calls waited.
    answered: Latency = field(default_factory=Latency)
    elapsed_s: float = 0.0  # from the end of the warm-up to the last measured answer

    def merge(self, other: Tally) -> None:
        """Adds another worker's tally; workers start together, so elapsed is the max."""
        self.sent += other.sent
        self.warmup += other.warmup
        for mine, theirs in (
            (self.kinds, other.kinds),
            (self.statuses, other.statuses),
            (self.declines, other.declines),
            (self.errors, other.errors),
            (self.fraud_decisions, other.fraud_decisions),
        ):
            mine.update(theirs)
        self.replayed += other.replayed
        self.latency.add(other.latency)
        self.service.add(other.service)
        self.answered.add(other.answered)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)


@dataclass(frozen=True)
class Interval:
    """One tick of the timeline: what finished during it, warm-up included."""

    index: int  # the tick's number from the start of the load
    span_s: float  # the tick's length: the interval, or less for the last one
    completed: int
    measured: int  # of which sent after the warm-up
    errors: int
    latency: bytes  # encoded Latency of the calls that finished in this tick


@dataclass(frozen=True)
class Answer:
    """What one call came back with."""

    status: str = ""  # PaymentStatus name; empty for an error
    reason: str = ""  # decline_reason of a DECLINED or FAILED answer
    error: str = ""  # gRPC status code name; empty for an answer
    replayed: bool = False
    fraud_decision: str = ""
    payment_id: str = ""  # empty for an error
    # What the server (or the client's transport) said with the error: the status
    # details of a failed call, the decline_detail of a per-payment failure. Kept in the
    # answers file so that an unexpected code explains itself afterwards.
    detail: str = ""


# The columns of the --answers file: one row per answer, in the order they came.
ANSWER_COLUMNS = (
    "idempotency_key", "kind", "status", "reason", "error", "payment_id", "replayed", "detail",
)  # fmt: skip
# An error's detail is cut to this many characters in the answers file.
DETAIL_MAX = 300


# What grpc.aio makes of a stream write that fails because the stream is already gone
# (its connection broke, as when the server dies): it overwrites the call's status with
# INTERNAL and these details (grpc/grpc#36066), and the stream's reader then sees that
# status too, for every reply still owed. The server never said it.
GRPC_WRITE_FAILED = "Internal error from Core"


def error_answer(err: grpc.aio.AioRpcError) -> Answer:
    """The answer of a call that ended with a gRPC error: its code and what it said."""
    return Answer(error=err.code().name, detail=(err.details() or "")[:DETAIL_MAX])


def stream_error_answer(err: grpc.aio.AioRpcError) -> Answer:
    """The answer of a PayStream request whose stream ended with ``err``: a write that
    failed on a lost stream is UNAVAILABLE (the stream's connection is gone, the reply
    unknown: retry with the same key), not the INTERNAL grpc.aio makes of it."""
    if err.code() is grpc.StatusCode.INTERNAL and err.details() == GRPC_WRITE_FAILED:
        return Answer(
            error="UNAVAILABLE",
            detail="the stream was lost under a write (grpc.aio says INTERNAL"
            f" {GRPC_WRITE_FAILED!r}, grpc/grpc#36066)",
        )
    return error_answer(err)


def call_sizes(plan: LoadPlan) -> list[int]:
    """A closed PayBatch loop's calls in flight, by size: ``concurrency`` payments in
    calls of ``batch_size``, the last one with what is left."""
    full, rest = divmod(plan.concurrency, plan.batch_size)
    return [plan.batch_size] * full + ([rest] if rest else [])


def answer_of(reply: pb.PayResponse) -> Answer:
    """The answer a PayResponse carries; a PayStream per-request failure is an error."""
    status = pb.PaymentStatus.Name(reply.status)
    if status == "FAILED" and reply.decline_reason in _GRPC_CODES:
        return Answer(error=reply.decline_reason, detail=reply.decline_detail[:DETAIL_MAX])
    return Answer(
        status=status,
        reason=reply.decline_reason,
        replayed=reply.replayed,
        fraud_decision=reply.fraud.decision if reply.HasField("fraud") else "",
        payment_id=reply.payment_id,
    )


def open_channels(plan: LoadPlan) -> list[grpc.aio.Channel]:
    """``plan.channels`` separate connections (TLS when asked) to the target."""
    # A local subchannel pool per channel: without it gRPC shares one connection
    # between channels to the same target, and the connections would not be separate.
    options: list[tuple[str, object]] = [("grpc.use_local_subchannel_pool", 1)]
    if plan.tls_server_name:
        options.append(("grpc.ssl_target_name_override", plan.tls_server_name))
    # Only with a token: an interceptor costs every call a little.
    interceptors = _bearer(plan.token) if plan.token else None
    if not plan.tls:
        return [
            grpc.aio.insecure_channel(plan.target, options=options, interceptors=interceptors)
            for _ in range(plan.channels)
        ]
    roots = plan.tls_ca.read_bytes() if plan.tls_ca else None
    key = plan.tls_key.read_bytes() if plan.tls_key else None
    chain = plan.tls_cert.read_bytes() if plan.tls_cert else None
    credentials = grpc.ssl_channel_credentials(roots, key, chain)
    return [
        grpc.aio.secure_channel(
            plan.target, credentials, options=options, interceptors=interceptors
        )
        for _ in range(plan.channels)
    ]


def _bearer(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that send ``authorization: Bearer TOKEN`` with every call."""
    pair = ("authorization", f"Bearer {token}")

    def with_token(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), pair)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    class Unary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
            return await continuation(with_token(details), request)

    class Streams(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
            return await continuation(with_token(details), requests)

    return [Unary(), Streams()]


class UnarySender:
    """Sends each request as one Pay call, round-robin over the channels."""

    def __init__(self, channels: list[grpc.aio.Channel], timeout_s: float) -> None:
        self._stubs = [pb_grpc.SettlementStub(c) for c in channels]
        self._timeout_s = timeout_s
        self._next = 0

    async def call(self, request: pb.PayRequest) -> Answer:
        """One Pay call; an RPC error is an answer with its code."""
        stub = self._stubs[self._next % len(self._stubs)]
        self._next += 1
        try:
            reply = await stub.Pay(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            return error_answer(err)
        return answer_of(reply)

    async def close(self) -> None:
        """Nothing to finish: every call has returned."""


class _Stream:
    """One PayStream and the requests waiting for their reply on it."""

    def __init__(self, stub: pb_grpc.SettlementStub) -> None:
        self.call = stub.PayStream()
        # Waiting replies by idempotency key; a deque because a duplicate key may be in
        # flight twice. Bounded by the calls in flight (the concurrency or INFLIGHT_MAX).
        self.pending: dict[str, deque[asyncio.Future[Answer]]] = {}
        self.write_lock = asyncio.Lock()  # grpc.aio allows one write at a time
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        failed = Answer(error="UNKNOWN")
        try:
            async for reply in self.call:
                waiting = self.pending.get(reply.idempotency_key)
                if not waiting:
                    continue  # a reply to a request already timed out
                future = waiting.popleft()
                if not waiting:
                    del self.pending[reply.idempotency_key]
                if not future.done():
                    future.set_result(answer_of(reply))
            # The server ended the stream with replies still owed.
            failed = Answer(error="ABORTED", detail="the stream ended with replies owed")
        except grpc.aio.AioRpcError as err:
            failed = stream_error_answer(err)
        finally:
            # Whatever is still waiting will get no reply on this stream.
            for waiting in self.pending.values():
                for future in waiting:
                    if not future.done():
                        future.set_result(failed)
            self.pending.clear()


class StreamSender:
    """Sends requests on one PayStream per channel and matches replies by key.

    A stream that breaks fails its waiting requests with the stream's status code and is
    reopened for the next request.
    """

    def __init__(self, channels: list[grpc.aio.Channel], timeout_s: float) -> None:
        self._stubs = [pb_grpc.SettlementStub(c) for c in channels]
        self._streams: list[_Stream | None] = [None] * len(channels)
        self._timeout_s = timeout_s
        self._next = 0

    async def call(self, request: pb.PayRequest) -> Answer:
        """Writes the request on the next stream and waits for its reply."""
        i = self._next % len(self._stubs)
        self._next += 1
        stream = self._streams[i]
        if stream is None or stream.reader.done():
            stream = self._streams[i] = _Stream(self._stubs[i])
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        stream.pending.setdefault(request.idempotency_key, deque()).append(future)
        try:
            async with stream.write_lock:
                await stream.call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as err:
            answer = (
                stream_error_answer(err)
                if isinstance(err, grpc.aio.AioRpcError)
                else Answer(error="UNAVAILABLE", detail=f"the stream is closed: {err}")
            )
            if not future.done():
                future.set_result(answer)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout_s)
        except TimeoutError:
            future.cancel()
            return Answer(error="DEADLINE_EXCEEDED")

    async def close(self) -> None:
        """Half-closes every stream and waits for the server to finish it."""
        for stream in self._streams:
            if stream is None:
                continue
            if not stream.reader.done():
                await stream.call.done_writing()
            await stream.reader


class BatchSender:
    """PayBatch calls, round-robin over the channels. ``call`` gathers single payments
    into calls of ``batch_size`` (the open loop's payments, each due at its own time): a
    call goes out once full, or ``linger_s`` after its first payment with what it has.
    ``call_many`` sends a closed loop's whole call at once. Each payment's latency is
    its call's."""

    def __init__(
        self,
        channels: list[grpc.aio.Channel],
        timeout_s: float,
        batch_size: int,
        linger_s: float = BATCH_LINGER_S,
    ) -> None:
        self._stubs = [pb_grpc.SettlementStub(c) for c in channels]
        self._timeout_s = timeout_s
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._next = 0
        # Bounded by batch_size: a full batch is sent at once.
        self._waiting: list[tuple[pb.PayRequest, asyncio.Future[Answer]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._calls: set[asyncio.Task[None]] = set()

    async def call(self, request: pb.PayRequest) -> Answer:
        """Adds the request to the next PayBatch call and waits for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append((request, future))
        if len(self._waiting) >= self._batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._linger_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def call_many(self, requests: list[pb.PayRequest]) -> list[Answer]:
        """One PayBatch call of ``requests``; their answers, in order."""
        stub = self._stubs[self._next % len(self._stubs)]
        self._next += 1
        request = pb.PayBatchRequest(payments=requests)
        try:
            reply = await stub.PayBatch(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            return [error_answer(err)] * len(requests)
        return [answer_of(r) for r in reply.results]

    async def _send(self, batch: list[tuple[pb.PayRequest, asyncio.Future[Answer]]]) -> None:
        answers = await self.call_many([r for r, _ in batch])
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    async def close(self) -> None:
        """Sends what is gathered and waits for every call."""
        self._flush()
        while self._calls:
            await asyncio.gather(*list(self._calls))


class Sender(Protocol):
    """Sends one request and waits for its answer; ``close`` finishes what is open."""

    async def call(self, request: pb.PayRequest) -> Answer: ...

    async def close(self) -> None: ...


class Worker:
    """Runs one LoadPlan; ``emit`` gets one Interval per tick, from the event loop."""

    def __init__(
        self, plan: LoadPlan, source: RequestSource, emit: Callable[[Interval], None]
    ) -> None:
        self.plan = plan
        self.tally = Tally()
        self._source = source
        self._emit = emit
        self._tick = Latency()  # measured calls finished in the current tick
        self._tick_warm = Latency()  # warm-up calls finished in the current tick
        self._tick_completed = 0
        self._tick_measured = 0
        self._tick_errors = 0
        self._ticks = 0
        self._measured_issued = 0
        self._last_done = 0.0
        self._t_start = 0.0
        self._t_measure = 0.0
        self._answers: IO[str] | None = None
        self._answer_rows: Any = None  # a csv.writer over _answers

    async def run(self, ready: Callable[[], object] | None = None) -> Tally:
        """Connects, calls ``ready`` (a start barrier), runs the load, returns the tally."""
        channels = open_channels(self.plan)
        try:
            try:
                for channel in channels:
                    await asyncio.wait_for(channel.channel_ready(), self.plan.connect_timeout_s)
            except TimeoutError:
                raise ConnectFailed(
                    f"could not connect to {self.plan.target} within"
                    f" {self.plan.connect_timeout_s:g} s (is it up? TLS on both sides or neither?)"
                ) from None
            if ready is not None:
                await asyncio.get_running_loop().run_in_executor(None, ready)
            return await self.drive(self._sender(channels))
        finally:
            for channel in channels:
                await channel.close()

    def _sender(self, channels: list[grpc.aio.Channel]) -> Sender:
        plan = self.plan
        if plan.rpc == "stream":
            return StreamSender(channels, plan.timeout_s)
        if plan.rpc == "batch":
            return BatchSender(channels, plan.timeout_s, plan.batch_size)
        return UnarySender(channels, plan.timeout_s)

    async def drive(self, sender: Sender) -> Tally:
        """Runs the load through ``sender`` (anything with ``call`` and ``close``)."""
        self._t_start = time.perf_counter()
        self._t_measure = self._t_start + self.plan.warmup_s
        self._last_done = self._t_measure
        ticker = asyncio.create_task(self._ticker())
        if self.plan.answers is not None:
            self._answers = self.plan.answers.open("w", newline="")
            self._answer_rows = csv.writer(self._answers, lineterminator="\n")
            self._answer_rows.writerow(ANSWER_COLUMNS)
        try:
            if self.plan.open_loop:
                await self._open_loop(sender)
            elif isinstance(sender, BatchSender):
                await asyncio.gather(
                    *(self._batch_caller(sender, n) for n in call_sizes(self.plan))
                )
            else:
                await asyncio.gather(*(self._caller(sender) for _ in range(self.plan.concurrency)))
            await sender.close()
        finally:
            ticker.cancel()
            if self._answers is not None:
                self._answers.close()
        if self._tick_completed:  # the last, partial tick, unless it is empty
            self._flush_tick()
        self.tally.elapsed_s = max(self._last_done - self._t_measure, 1e-9)
        return self.tally

    def _next(self, t_send: float) -> tuple[str, pb.PayRequest, bool] | None:
        """The next request, whether it is measured, or None when the run is over."""
        measured = t_send >= self._t_measure
        if measured:
            plan = self.plan
            if plan.count is not None and self._measured_issued >= plan.count:
                return None
            if plan.duration_s is not None and t_send >= self._t_measure + plan.duration_s:
                return None
            self._measured_issued += 1
        kind, request = next(self._source)
        return kind, request, measured

    async def _caller(self, sender: Sender) -> None:
        while (item := self._next(time.perf_counter())) is not None:
            kind, request, measured = item
            started = time.perf_counter()
            answer = await sender.call(request)
            self._record(kind, answer, measured, started, started, request.idempotency_key)

    async def _batch_caller(self, sender: BatchSender, size: int) -> None:
        """A closed loop of PayBatch calls of ``size`` payments: each call is built whole
        and sent at once, and its answers recorded, then the next. The same load as
        ``size`` callers of one payment each gathered into calls, without a coroutine
        and a future per payment in the load generator, whose CPU is taken from the
        server it measures when both share a machine."""
        while True:
            t_send = time.perf_counter()
            items = []
            while len(items) < size and (item := self._next(t_send)) is not None:
                items.append(item)
            if not items:
                return
            started = time.perf_counter()
            answers = await sender.call_many([request for _, request, _ in items])
            for (kind, request, measured), answer in zip(items, answers, strict=True):
                self._record(kind, answer, measured, started, started, request.idempotency_key)

    async def _open_loop(self, sender: Sender) -> None:
        plan = self.plan
        assert plan.rate_per_s is not None
        gap_s = 1 / plan.rate_per_s
        rng = random.Random(plan.seed)
        slots = asyncio.Semaphore(INFLIGHT_MAX)
        tasks: set[asyncio.Task[None]] = set()

        async def one(kind: str, request: pb.PayRequest, measured: bool, due: float) -> None:
            try:
                started = time.perf_counter()
                answer = await sender.call(request)
                self._record(kind, answer, measured, due, started, request.idempotency_key)
            finally:
                slots.release()

        due = self._t_start
        burst = 0
        while True:
            now = time.perf_counter()
            if due > now:
                burst = 0
                await asyncio.sleep(due - now)
            elif (burst := burst + 1) >= BURST_MAX:
                burst = 0
                await asyncio.sleep(0)
            item = self._next(due)
            if item is None:
                break
            await slots.acquire()
            task = asyncio.create_task(one(*item, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += rng.expovariate(plan.rate_per_s) if plan.arrival == "poisson" else gap_s
        while tasks:
            await asyncio.gather(*list(tasks))

    def _record(
        self, kind: str, answer: Answer, measured: bool, due: float, started: float, key: str = ""
    ) -> None:
        done = time.perf_counter()
        if self._answer_rows is not None:
            a = answer
            self._answer_rows.writerow(
                (key, kind, a.status, a.reason, a.error, a.payment_id, int(a.replayed), a.detail)
            )
        self._tick_completed += 1
        if answer.error:
            self._tick_errors += 1
        if not measured:
            self.tally.warmup += 1
            self._tick_warm.record_s(done - due)
            return
        t = self.tally
        self._tick_measured += 1
        t.sent += 1
        t.kinds[kind] += 1
        if answer.error:
            t.errors[answer.error] += 1
        else:
            t.answered.record_s(done - due)
            t.statuses[answer.status] += 1
            if answer.reason:
                t.declines[answer.reason] += 1
            t.replayed += answer.replayed
            if answer.fraud_decision:
                t.fraud_decisions[answer.fraud_decision] += 1
        self._tick.record_s(done - due)
        if self.plan.open_loop:
            t.service.record_s(done - started)
        self._last_done = done

    async def _ticker(self) -> None:
        interval_s = self.plan.interval_s
        while True:
            next_tick = self._t_start + (self._ticks + 1) * interval_s
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
            self._flush_tick()

    def _flush_tick(self) -> None:
        # The tick's measured histogram goes into the run's total here, once a tick,
        # rather than recording every call twice (a record costs microseconds).
        self.tally.latency.add(self._tick)
        self._tick.add(self._tick_warm)
        tick_start = self._t_start + self._ticks * self.plan.interval_s
        span_s = min(self.plan.interval_s, time.perf_counter() - tick_start)
        self._emit(
            Interval(
                self._ticks,
                max(span_s, 1e-6),
                self._tick_completed,
                self._tick_measured,
                self._tick_errors,
                self._tick.encode(),
            )
        )
        self._ticks += 1
        self._tick.reset()
        self._tick_warm.reset()
        self._tick_completed = 0
        self._tick_measured = 0
        self._tick_errors = 0
