"""The Settlement gRPC service. Exceptions become status codes here and nowhere else."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

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
    OutcomePending,
    Overloaded,
    QuickpayError,
    ShuttingDown,
)
from quickpay_engine.reconcile.report import ReportError
from quickpay_engine.settlement.service import SettlementService

log = logging.getLogger(__name__)

# Payments one PayStream may have in flight; at the bound the stream stops reading
# requests until replies go out (back-pressure through HTTP/2 flow control).
STREAM_INFLIGHT_MAX = 1_024
# Payments one PayBatch call may carry; a larger call is refused whole (INVALID_ARGUMENT)
# before any of it is settled. One call's payments all wait in the settlement queue at
# once, so the bound is also what one caller can put there.
PAY_BATCH_MAX = 1_000

_STATUS: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (IdempotencyConflict, grpc.StatusCode.FAILED_PRECONDITION),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # The ledger holds one retention window's payments; full, it refuses the batch
    # before any gateway is called.
    (CapacityExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (ReportError, grpc.StatusCode.INVALID_ARGUMENT),
    (OutcomePending, grpc.StatusCode.UNAVAILABLE),
]


async def _abort(context: grpc.aio.ServicerContext, err: BaseException, rpc: str) -> None:
    """Ends the call with the status ``err`` maps to; an unexpected error is logged."""
    code, message = status_of(err)
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", rpc, exc_info=err)
    await context.abort(code, message)


def status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from our exceptions to gRPC status codes."""
    for kind, code in _STATUS:
        if isinstance(err, kind):
            return code, str(err)
    if isinstance(err, EngineError | QuickpayError):
        return grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}"
    return grpc.StatusCode.INTERNAL, "internal error"


def _failed_reply(idempotency_key: str, err: BaseException) -> pb.PayResponse:
    """The reply of one payment of a stream or a batch that failed on its own: FAILED,
    with its gRPC code's name as the reason, where a unary call would end with it."""
    code, message = status_of(err)
    if code is grpc.StatusCode.INTERNAL:
        log.error("a payment failed", exc_info=err)
    return convert.pay_response(
        Outcome("", idempotency_key, PaymentStatus.FAILED, code.name, message)
    )


def _undecodable(n: int) -> pb.PayResponse:
    """The reply to the ``n``th frame of a stream, which is not a PayRequest."""
    return pb.PayResponse(
        status=pb.FAILED,
        decline_reason=grpc.StatusCode.INVALID_ARGUMENT.name,
        decline_detail=f"request {n}: not a PayRequest",
    )


class SettlementServicer(pb_grpc.SettlementServicer):
    """quickpay.v1.Settlement over a SettlementService."""

    def __init__(
        self, service: SettlementService, fingerprint_key: bytes, mappings_dir: Path
    ) -> None:
        self._service = service
        self._key = fingerprint_key
        self._mappings_dir = mappings_dir

    async def Pay(
        self, request: pb.PayRequest, context: grpc.aio.ServicerContext
    ) -> pb.PayResponse:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before any work"
            )
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            outcome = await self._service.pay(convert.intent_of(request, self._key, deadline))
        except Exception as err:
            await _abort(context, err, "Pay")
        return convert.pay_response(outcome)

    async def PayStream(
        self, request_iterator: AsyncIterator[pb.PayRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PayResponse]:
        """Replies as payments finish, possibly out of order. A request that fails on its
        own (malformed, key conflict) gets a FAILED reply with the gRPC code's name as
        ``decline_reason``; the stream goes on. A frame that is not a PayRequest at all
        gets one with no key and "request N: not a PayRequest" (N counts from 0). However
        the stream ends, every payment started is answered first."""
        replies: asyncio.Queue[pb.PayResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_INFLIGHT_MAX)
        tasks: set[asyncio.Task[None]] = set()

        async def settle(request: pb.PayRequest) -> None:
            try:
                outcome = await self._service.pay(convert.intent_of(request, self._key))
                reply = convert.pay_response(outcome)
            except Exception as err:
                reply = _failed_reply(request.idempotency_key, err)
            # The slot is freed only once the reply is written (below), so a client that
            # sends without reading holds at most STREAM_INFLIGHT_MAX payments here.
            await replies.put(reply)

        async def read() -> None:
            try:
                # context.read, not the iterator: a frame that does not decode raises
                # here and the next read gets the next frame, where the iterator would
                # be finished by the first.
                for n in itertools.count():
                    try:
                        request = await context.read()
                    except DecodeError:
                        await slots.acquire()
                        await replies.put(_undecodable(n))
                        continue
                    if request is grpc.aio.EOF:
                        break
                    await slots.acquire()
                    task = asyncio.create_task(settle(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            finally:
                # Replies of payments already started go out before the stream ends,
                # even when reading failed: they may have settled.
                while tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
                await replies.put(None)

        reader = asyncio.create_task(read())
        try:
            while (reply := await replies.get()) is not None:
                yield reply
                slots.release()
            await reader
        finally:
            reader.cancel()

    async def PayBatch(
        self, request: pb.PayBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.PayBatchResponse:
        """Settles each payment on its own and answers them in request order; a payment
        that fails on its own is a FAILED result named by its gRPC code, as in PayStream."""
        count = len(request.payments)
        if count > PAY_BATCH_MAX:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"payments: {count} in one call; at most {PAY_BATCH_MAX}",
            )
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before any work"
            )
        deadline = None if remaining is None else time.monotonic() + remaining
        intents = [convert.intent_of(p, self._key, deadline) for p in request.payments]
        outcomes = await self._service.pay_many(intents)
        return pb.PayBatchResponse(
            results=[
                _failed_reply(p.idempotency_key, o)
                if isinstance(o, BaseException)
                else convert.pay_response(o)
                for p, o in zip(request.payments, outcomes, strict=True)
            ]
        )

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Payment:
        which = request.WhichOneof("key")
        if which is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "payment_id or idempotency_key is required"
            )
        try:
            record = await self._service.get_payment(
                payment_id=request.payment_id, idempotency_key=request.idempotency_key
            )
        except Exception as err:
            await context.abort(*status_of(err))
        return convert.payment_msg(record)

    async def Refund(
        self, request: pb.RefundRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefundResponse:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        amount = request.amount if request.HasField("amount") else None
        try:
            outcome = await self._service.refunds.refund(
                request.idempotency_key,
                request.payment_id,
                amount.amount_minor if amount is not None else None,
                amount.currency if amount is not None else "",
                request.reason,
                deadline,
            )
        except Exception as err:
            await _abort(context, err, "Refund")
        return convert.refund_response(outcome)

    async def WatchSettlements(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SettlementEvent]:
        """Events after ``from_cursor`` in order, then live ones; at least once (resume
        from the last cursor received). Ends cleanly when the server drains."""
        unknown = sorted(set(request.kinds) - set(EVENT_KINDS))
        if unknown:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"kinds: unknown {unknown}; expected any of {list(EVENT_KINDS)}",
            )
        events = self._service.watch(request.from_cursor, list(request.kinds), request.account_id)
        async for event in events:
            yield convert.event_msg(event)

    async def Reconcile(
        self, request: pb.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReconcileReport:
        try:
            arguments = convert.reconcile_arguments(request, self._mappings_dir)
            run = await self._service.reconcile(*arguments)
        except Exception as err:
            await context.abort(*status_of(err))
        return convert.reconcile_report(run)
