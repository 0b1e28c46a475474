"""The Settlement gRPC service. Exceptions become status codes here and nowhere else."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from quickpay_engine._engine import encode_pay_batch_response, encode_pay_responses
from quickpay_engine.api import convert
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.domain import EVENT_KINDS, Outcome, PaymentStatus
from quickpay_engine.errors import (
    CapacityExceeded,
    EngineError,
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    NotOwner,
    OutcomePending,
    Overloaded,
    QuickpayError,
    RequestUndecodable,
    ShuttingDown,
    StoreUnavailable,
    WalCorruption,
    WalFailure,
    echo,
)
from quickpay_engine.metrics import Metrics
from quickpay_engine.reconcile.report import ReportError
from quickpay_engine.security.guard import Guard, current_caller
from quickpay_engine.settlement.service import SettlementService, outcome_of
from quickpay_engine.store import UNREACHABLE
from quickpay_engine.subscriber_changes import NumberTaken, SubscriberChanges

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# Payments one PayStream may have in flight; at the bound the stream stops reading
# requests until replies go out (back-pressure through HTTP/2 flow control).
STREAM_INFLIGHT_MAX = 1_024
# Subscriber changes committed in one transaction at most (UpsertSubscribers): a batch
# is what has arrived by the time the one before it committed (and UPSERT_LINGER_S
# after its last change), up to this many.
UPSERT_BATCH_MAX = 500
# A batch with room waits this long for one more change after the last one came.
UPSERT_LINGER_S = 0.002
# Changes read ahead of the commits; past it the stream stops being read (back-pressure).
UPSERT_READ_AHEAD = 2 * UPSERT_BATCH_MAX
# Payments one PayBatch call may carry; a larger call is refused whole (INVALID_ARGUMENT)
# before any of it is settled. One call's payments all wait in the settlement queue at
# once, so the bound is also what one caller can put there.
PAY_BATCH_MAX = 1_000
# The trailing metadata key of a refusal's retry hint, in milliseconds: gRPC's own
# server pushback (its retry design, A6), which a client's retry policy obeys.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"

_STATUS: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (RequestUndecodable, grpc.StatusCode.INVALID_ARGUMENT),
    (IdempotencyConflict, grpc.StatusCode.FAILED_PRECONDITION),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # The ledger holds one retention window's payments; full, it refuses the batch
    # before any gateway is called.
    (CapacityExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (ReportError, grpc.StatusCode.INVALID_ARGUMENT),
    (OutcomePending, grpc.StatusCode.UNAVAILABLE),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    # Fenced: the ownership lock of a database was lost and is being retaken.
    (NotOwner, grpc.StatusCode.UNAVAILABLE),
    # The write-ahead log could not write (the disk full or failing) and refuses every
    # record until a restart: nothing of the call was done, so a retry with the same key
    # is safe (a batch already captured answers OutcomePending instead). A corrupt log
    # is a bug, not a passing condition.
    (WalCorruption, grpc.StatusCode.INTERNAL),
    (WalFailure, grpc.StatusCode.UNAVAILABLE),
]


async def _abort(context: grpc.aio.ServicerContext, err: BaseException, rpc: str) -> None:
    """Ends the call with the status ``err`` maps to; an unexpected error is logged."""
    code, message = status_of(err)
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", rpc, exc_info=err)
    await context.abort(code, message, trailing_metadata=retry_hint(err))


def retry_hint(err: BaseException) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a refusal that knows when a retry would be admitted."""
    retry_after_s = getattr(err, "retry_after_s", None) if isinstance(err, Overloaded) else None
    if retry_after_s is None:
        return ()
    return ((RETRY_PUSHBACK_KEY, str(math.ceil(retry_after_s * 1_000))),)


def status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from our exceptions to gRPC status codes."""
    for kind, code in _STATUS:
        if isinstance(err, kind):
            return code, str(err)
    if isinstance(err, EngineError | QuickpayError):
        return grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}"
    if isinstance(err, UNREACHABLE):
        # A read or a refund's first step that met the database restarting: nothing was
        # done, and it passes.
        return grpc.StatusCode.UNAVAILABLE, "the database is out of reach for now: retry"
    return grpc.StatusCode.INTERNAL, "internal error"


async def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline on the event loop's clock (None: the caller set none); a call
    whose deadline has already passed ends DEADLINE_EXCEEDED before any work."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before any work")
    return None if remaining is None else time.monotonic() + remaining


def _failed_outcome(idempotency_key: str, err: BaseException) -> Outcome:
    """The outcome of one payment of a stream or a batch that failed on its own: FAILED,
    with its gRPC code's name as the reason, where a unary call would end with it."""
    code, message = status_of(err)
    if code is grpc.StatusCode.INTERNAL:
        log.error("a payment failed", exc_info=err)
    return Outcome("", idempotency_key, PaymentStatus.FAILED, code.name, message)


SERVICE_NAME = "quickpay.v1.Settlement"
# The payment RPCs take and answer bytes: the core decodes the requests, in one call per
# request or batch, so no Python protobuf message is built for them on the way in.
RAW_RPCS = {
    "Pay": grpc.unary_unary_rpc_method_handler,
    "PayStream": grpc.stream_stream_rpc_method_handler,
    "PayBatch": grpc.unary_unary_rpc_method_handler,
}
# The others are parsed in the handler by their generated class: (handler kind,
# request, response). They too are registered raw, so bytes that are not the request
# are INVALID_ARGUMENT naming the message; a deserializer's exception would reach the
# caller as UNKNOWN "Unexpected <class DecodeError>", with grpc's internal text. A
# response of None: the handler answers bytes already encoded (Reconcile's report,
# encoded by the core: 50,000 discrepancies would be as many Python messages).
TYPED_RPCS = {
    "GetPayment": (grpc.unary_unary_rpc_method_handler, pb.GetPaymentRequest, pb.Payment),
    "Refund": (grpc.unary_unary_rpc_method_handler, pb.RefundRequest, pb.RefundResponse),
    "WatchSettlements": (
        grpc.unary_stream_rpc_method_handler, pb.WatchRequest, pb.SettlementEvent
    ),
    "Reconcile": (grpc.unary_unary_rpc_method_handler, pb.ReconcileRequest, None),
    "AdjustBalance": (
        grpc.unary_unary_rpc_method_handler, pb.AdjustBalanceRequest, pb.AdjustBalanceResponse
    ),
    # A stream of changes in: each frame is parsed as it is read (convert.py), so a bad
    # one is named by its place in the stream.
    "UpsertSubscribers": (
        grpc.stream_unary_rpc_method_handler, pb.SubscriberChange, pb.UpsertSummary
    ),
}  # fmt: skip

Handler = Callable[[Any, grpc.aio.ServicerContext], Any]


def add_to_server(
    servicer: SettlementServicer,
    server: grpc.aio.Server,
    guard: Guard | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Registers ``servicer`` as quickpay.v1.Settlement on ``server``; every call first
    passes ``guard`` (identity, role, rate limit), before its request is even parsed;
    with ``metrics``, every call is counted once, by method and status, with its
    latency."""
    guard = guard or Guard(None)
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for name, make in RAW_RPCS.items():
        method = _guarded(guard, name, getattr(servicer, name), make)
        # PayStream counts itself (grpc takes a raw streaming handler only as an async
        # generator function, and a wrapping generator would cost a step per message).
        as_is = metrics is None or inspect.isasyncgenfunction(method)
        handlers[name] = make(method if as_is else _observed(method, name, metrics))
    for name, (make, request, response) in TYPED_RPCS.items():
        method = getattr(servicer, name)
        streams = make is grpc.unary_stream_rpc_method_handler
        if metrics is not None:
            method = _observed(method, name, metrics)
        bytes_max = convert.REQUEST_BYTES_MAX.get(name)
        if make is grpc.stream_unary_rpc_method_handler:
            parsed = method  # parses its frames itself, one by one
        else:
            parsed = (_parsed_stream if streams else _parsed)(method, request, bytes_max)
        handlers[name] = make(
            _guarded(guard, name, parsed, make),
            response_serializer=None if response is None else response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _guarded(guard: Guard, rpc: str, method: Handler, make: Any) -> Handler:
    """``method`` behind ``guard.admit``; with no access file the check is skipped."""
    if guard.access is None:  # no access file: nothing to check, nothing added per call
        return method
    if make in (grpc.unary_unary_rpc_method_handler, grpc.stream_unary_rpc_method_handler):
        # One answer: for a stream of requests, ``request`` is their iterator.
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await guard.admit(rpc, context)
            return await method(request, context)

        return unary

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await guard.admit(rpc, context)
        async for reply in method(request, context):
            yield reply

    return streaming


def _observed(method: Handler, rpc: str, metrics: Metrics) -> Handler:
    """``method`` with its calls counted as they end. A streaming method (called by
    ``_parsed_stream``) is handed back its own generator: the count is taken by the
    call's done callback, once per call, not once per message."""
    if inspect.isasyncgenfunction(method):

        def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            count_when_done(context, rpc, metrics)
            return method(request, context)

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        code = "OK"
        try:
            return await method(request, context)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException:
            # context.abort raises once it has set the code; anything else is UNKNOWN.
            code = (context.code() or grpc.StatusCode.UNKNOWN).name
            raise
        finally:
            metrics.rpc(rpc, code, time.perf_counter() - start)

    return unary


def count_when_done(context: grpc.aio.ServicerContext, rpc: str, metrics: Metrics) -> None:
    """Counts the call once it has ended, with the status it ended with."""
    start = time.perf_counter()

    def done(call: grpc.aio.ServicerContext) -> None:
        code = call.code()
        metrics.rpc(rpc, "OK" if code is None else code.name, time.perf_counter() - start)

    context.add_done_callback(done)


async def parse_request(
    request: type[M], data: bytes, context: grpc.aio.ServicerContext, bytes_max: int | None = None
) -> M:
    """``data`` parsed as ``request``; else the call ends INVALID_ARGUMENT naming it. Over
    ``bytes_max`` it is refused unparsed: some field is past its bound."""
    if bytes_max is not None and len(data) > bytes_max:
        name = request.DESCRIPTOR.name
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{convert.largest_field(request, data)}: over its bound (the request is"
            f" {len(data)} bytes, of the {bytes_max} a {name} can take)",
        )
    try:
        return request.FromString(data)
    except DecodeError:
        name = request.DESCRIPTOR.name
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request: not a {name}: its bytes do not parse as quickpay.v1.{name}",
        )
        raise  # abort raises; this line is for the type checker


def _parsed(method: Handler, request: type[Message], bytes_max: int | None) -> Handler:
    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await method(await parse_request(request, data, context, bytes_max), context)

    return handler


def _parsed_stream(method: Handler, request: type[Message], bytes_max: int | None) -> Handler:
    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        parsed = await parse_request(request, data, context, bytes_max)
        async for reply in method(parsed, context):
            yield reply

    return handler


class SettlementServicer(pb_grpc.SettlementServicer):
    """quickpay.v1.Settlement over a SettlementService."""

    def __init__(
        self, service: SettlementService, fingerprint_key: bytes, mappings_dir: Path
    ) -> None:
        self._service = service
        self._key = fingerprint_key
        self._mappings_dir = mappings_dir

    async def Pay(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Takes the request's bytes unparsed (the core decodes them) and answers bytes."""
        # _deadline inline: this is every unary call.
        remaining = context.time_remaining()
        if remaining is None:
            deadline = None
        elif remaining > 0:
            deadline = time.monotonic() + remaining
        else:
            deadline = await _deadline(context)  # ends the call DEADLINE_EXCEEDED
        sender = current_caller().name
        (intent,) = convert.intents_of_frames([request], self._key, deadline, sender=sender)
        try:
            if isinstance(intent, InvalidArgument):
                raise intent
            outcome = await self._service.pay(intent)
        except Exception as err:
            await _abort(context, err, "Pay")
        return encode_pay_responses([outcome])[0]

    async def PayStream(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Replies as payments finish, possibly out of order. A request that fails on its
        own (undecodable, malformed, key conflict) gets a FAILED reply with the gRPC
        code's name as ``decline_reason``; the stream goes on. A frame that is not a
        PayRequest gets one with no key and "request N: not a PayRequest: ..." (N counts
        from 0) naming what is wrong. However the stream ends, every payment started is
        answered first."""
        if (metrics := self._service.metrics) is not None:
            count_when_done(context, "PayStream", metrics)
        replies: asyncio.Queue[bytes | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_INFLIGHT_MAX)
        sender = current_caller().name
        service, key = self._service, self._key
        # Payments started and not yet answered; ``idle`` is set whenever there are none.
        # Each is answered from its settlement's done callback: no task per frame.
        unanswered = 0
        idle = asyncio.Event()
        idle.set()

        def answer(outcome: Outcome) -> None:
            # The slot is freed only once the reply is written (below), so a client that
            # sends without reading holds at most STREAM_INFLIGHT_MAX payments here.
            replies.put_nowait(encode_pay_responses([outcome])[0])

        def settled(idempotency_key: str, joined: bool, future: asyncio.Future[Outcome]) -> None:
            nonlocal unanswered
            try:
                try:
                    outcome = outcome_of(future, joined)
                except Exception as err:
                    outcome = _failed_outcome(idempotency_key, err)
                answer(outcome)
            finally:
                unanswered -= 1
                if not unanswered:
                    idle.set()

        def start(n: int, frame: bytes) -> None:
            nonlocal unanswered
            (intent,) = convert.intents_of_frames([frame], key, field=f"request {n}", sender=sender)
            if isinstance(intent, InvalidArgument):
                answer(_failed_outcome("", intent))
                return
            try:
                future, joined = service.pay_nowait(intent)
            except Exception as err:  # refused before any work: a key conflict, overload
                answer(_failed_outcome(intent.idempotency_key, err))
                return
            unanswered += 1
            idle.clear()
            future.add_done_callback(functools.partial(settled, intent.idempotency_key, joined))

        async def read() -> None:
            try:
                n = 0
                async for frame in request_iterator:
                    await slots.acquire()
                    start(n, frame)
                    n += 1
            finally:
                # Replies of payments already started go out before the stream ends,
                # even when reading failed: they may have settled.
                await idle.wait()
                replies.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (reply := await replies.get()) is not None:
                yield reply
                slots.release()
            await reader
        finally:
            reader.cancel()

    async def PayBatch(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Settles each payment on its own and answers them in request order; a payment
        that fails on its own is a FAILED result named by its gRPC code, as in PayStream.
        The core splits and decodes the call's payments, each on its own."""
        deadline = await _deadline(context)
        try:
            items = convert.intents_of_batch(
                request, self._key, PAY_BATCH_MAX, deadline, current_caller().name
            )
        except RequestUndecodable as err:
            await _abort(context, err, "PayBatch")
        decoded = [i for i in items if not isinstance(i, InvalidArgument)]
        try:
            # Admitted or refused whole, before any of it is queued.
            settled = await self._service.pay_many(decoded)
        except Overloaded as err:
            await _abort(context, err, "PayBatch")
        outcomes = iter(settled)
        results: list[Outcome] = []
        for item in items:
            if isinstance(item, InvalidArgument):
                results.append(_failed_outcome("", item))
                continue
            outcome = next(outcomes)
            results.append(
                _failed_outcome(item.idempotency_key, outcome)
                if isinstance(outcome, BaseException)
                else outcome
            )
        # The reply is encoded in the core: no protobuf message per payment here.
        return encode_pay_batch_response(results)

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Payment:
        try:
            payment_id, key = convert.get_payment_arguments(request)
            record = await self._service.get_payment(payment_id=payment_id, idempotency_key=key)
            caller = current_caller()
            if not caller.sees_every_payment and record.intent.sender != caller.name:
                # Answered word for word as an unknown payment: another caller's payments
                # are not this one's to learn of, not even that they exist.
                name, value = ("payment_id", payment_id) if payment_id else ("idempotency_key", key)
                raise NotFound(f"no payment with {name} {echo(value)}")
        except Exception as err:
            await _abort(context, err, "GetPayment")
        return convert.payment_msg(record)

    async def Refund(
        self, request: pb.RefundRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefundResponse:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            key, payment_id, amount_minor, currency, reason = convert.refund_arguments(request)
            if caller := current_caller().name:
                await self._service.record_access(
                    convert.refund_access(caller, key, payment_id, amount_minor, currency)
                )
            outcome = await self._service.refunds.refund(
                key, payment_id, amount_minor, currency, reason, deadline
            )
        except Exception as err:
            await _abort(context, err, "Refund")
        return convert.refund_response(outcome)

    async def WatchSettlements(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SettlementEvent]:
        """Events after ``from_cursor`` in order, then live ones; at least once (resume
        from the last cursor received). Ends cleanly when the server drains."""
        try:
            cursor, kinds, account_id = convert.watch_arguments(request, EVENT_KINDS)
        except InvalidArgument as err:
            await _abort(context, err, "WatchSettlements")
        events = self._service.watch(cursor, kinds, account_id)
        try:
            async for event in events:
                yield convert.event_msg(event)
        except Exception as err:  # Overloaded past the bound on open streams, a store error
            await _abort(context, err, "WatchSettlements")

    async def Reconcile(
        self, request: pb.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """The report as the bytes of a ReconcileReport, encoded by the core."""
        try:
            arguments = convert.reconcile_arguments(request, self._mappings_dir)
            if caller := current_caller().name:
                await self._service.record_access(
                    convert.reconcile_access(caller, request.gateway, request.report_csv)
                )
            # The reply is built on the reconciliation's thread, not the event loop.
            reply = await self._service.reconcile_into(convert.reconcile_report, *arguments)
        except Exception as err:
            await _abort(context, err, "Reconcile")
        return reply

    async def AdjustBalance(
        self, request: pb.AdjustBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdjustBalanceResponse:
        """Moves a balance by what another system decided; idempotent on its key. The
        audit row it writes names its source system (settlement/adjustments.py)."""
        try:
            outcome = await self._service.adjustments.adjust(convert.adjust_arguments(request))
        except Exception as err:
            await _abort(context, err, "AdjustBalance")
        return convert.adjust_response(outcome)

    async def UpsertSubscribers(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> pb.UpsertSummary:
        """Reads changes and commits them in batches (``UPSERT_BATCH_MAX``), each
        through the service's one entry point; answers once the last has committed. A
        bad change ends the call INVALID_ARGUMENT "changes[N].FIELD: ...": the changes
        before it are applied, none from it on. A change that gives its line a number
        another line keeps waits for the changes after it (up to a batch's worth, or the
        stream's end): a later one may free the number (a port between two lines)."""
        caller = current_caller().name
        summary = pb.UpsertSummary()
        stream = ChangeStream(request_iterator)

        async def apply(batch: SubscriberChanges) -> None:
            result = await self._service.apply_subscriber_changes(batch, caller)
            summary.applied += result.applied
            summary.stale += result.stale
            summary.created += len(result.created)
            summary.batches += 1

        try:
            carried = SubscriberChanges()
            while True:
                batch = await stream.fill(carried)
                if not batch:
                    break
                carried = SubscriberChanges()
                try:
                    await apply(batch)
                except InvalidArgument as err:
                    # The store refused one change: nothing of its batch was written;
                    # the changes before it are, now.
                    bad = batch.index_of(err.field.split(".", 1)[0])
                    if bad is None:
                        raise
                    if bad:
                        await apply(batch.prefix(bad))
                    carried = batch.suffix(bad)
                    if not (
                        isinstance(err, NumberTaken)
                        and stream.more()
                        and len(carried) < UPSERT_BATCH_MAX
                    ):
                        raise
            stream.check()
        except Exception as err:
            await _abort(context, err, "UpsertSubscribers")
        finally:
            stream.close()
        summary.received = stream.received
        return summary


class ChangeStream:
    """The frames of an UpsertSubscribers stream, read ahead (up to
    ``UPSERT_READ_AHEAD``) while batches commit, handed out as batches."""

    def __init__(self, frames: AsyncIterator[bytes]) -> None:
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(UPSERT_READ_AHEAD)
        self._reader = asyncio.ensure_future(self._read(frames))
        self.received = 0  # frames parsed into changes
        # Why the stream ended: None while it goes on; the bad frame's error, the broken
        # stream's, or _END.
        self._ended: BaseException | None = None

    async def _read(self, frames: AsyncIterator[bytes]) -> None:
        try:
            async for frame in frames:
                await self._queue.put(frame)
        except Exception as err:  # the caller's stream broke: what came before stands
            await self._queue.put(err)
            return
        await self._queue.put(None)

    def more(self) -> bool:
        """Whether changes may still come."""
        return self._ended is None

    async def fill(self, batch: SubscriberChanges) -> SubscriberChanges:
        """``batch`` (changes carried over) with what has been read added: at least one
        change more unless the stream has ended, then what is waiting, up to
        ``UPSERT_BATCH_MAX``. A bad frame ends the stream (``check`` raises it)."""
        if self._ended is not None:
            return batch
        item = await self._queue.get()
        while True:
            if item is None or isinstance(item, BaseException):
                self._ended = item or _END
                return batch
            try:
                convert.add_subscriber_change(batch, item, f"changes[{self.received}]")
            except InvalidArgument as err:
                self._ended = err
                return batch
            self.received += 1
            if len(batch) >= UPSERT_BATCH_MAX:
                return batch
            if self._queue.empty():
                # A little company, as the payment batcher waits for (a stream that
                # outpaces its frames would otherwise commit them one or two at a time).
                try:
                    item = await asyncio.wait_for(self._queue.get(), UPSERT_LINGER_S)
                except TimeoutError:
                    return batch
                continue
            item = self._queue.get_nowait()

    def check(self) -> None:
        """Raises what ended the stream, unless it ended as the caller closed it."""
        if self._ended is not None and self._ended is not _END:
            raise self._ended

    def close(self) -> None:
        self._reader.cancel()


_END = EOFError("the stream ended")
