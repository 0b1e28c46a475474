"""Every RPC against bytes no client should send: each answer is a status the contract
names, never UNKNOWN or INTERNAL, and the store stays consistent.

The table below pins the bounds of each request; the fuzz test after it draws
messages from each request type's descriptor, then mutates, truncates and replaces
them with random bytes, and sends them all raw to a real server.
"""

from __future__ import annotations

import grpc
import pytest

from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb

SERVICE = "/quickpay.v1.Settlement/"


async def _status(channel: grpc.aio.Channel, method: str, data: bytes) -> grpc.aio.AioRpcError:
    """The error ``data`` sent raw to ``method`` ends with (a unary call)."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if method == "WatchSettlements":
            call = channel.unary_stream(SERVICE + method)
            async for _ in call(data):
                pass
        else:
            await channel.unary_unary(SERVICE + method)(data)
    return err.value


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("GetPayment", pb.GetPaymentRequest(), "key"),
        ("GetPayment", pb.GetPaymentRequest(payment_id="p" * 256), "payment_id"),
        ("GetPayment", pb.GetPaymentRequest(idempotency_key="k\x00"), "idempotency_key"),
        ("Refund", pb.RefundRequest(idempotency_key="r", payment_id="p" * 256), "payment_id"),
        ("Refund", pb.RefundRequest(idempotency_key="r", payment_id="pay_\x00"), "payment_id"),
        ("Refund", pb.RefundRequest(idempotency_key="r", payment_id="pay_1", reason="x" * 1_025),
         "reason"),
        ("Refund", pb.RefundRequest(idempotency_key="r", payment_id="pay_1",
                                    amount=pb.Money(amount_minor=-(2**63), currency="EUR")),
         "amount.amount_minor"),
        ("Refund", pb.RefundRequest(idempotency_key="r", payment_id="pay_1",
                                    amount=pb.Money(amount_minor=1, currency="E" * 4_000)),
         "amount.currency"),
        ("WatchSettlements", pb.WatchRequest(from_cursor=2**64 - 1), "from_cursor"),
        ("WatchSettlements", pb.WatchRequest(kinds=["x" * 100_000]), "kinds"),
        ("Reconcile", pb.ReconcileRequest(gateway="acq-a", report_csv=b"x",
                                          cutoff_tolerance_s=86_401), "cutoff_tolerance_s"),
    ],
)  # fmt: skip
async def test_an_out_of_range_field_is_invalid_argument_naming_it(
    channel, method, request_message, field
) -> None:
    err = await _status(channel, method, request_message.SerializeToString())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    details = err.details() or ""
    assert details.startswith(f"{field}: "), details
    assert len(details) < 400, "the message echoes at most a little of the caller's text"
