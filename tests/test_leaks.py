"""Small leaks (issue #20, item 9): what error messages echo, what a key conflict
names, what a reconciliation CSV cell can do in a spreadsheet, who can read the data."""

from __future__ import annotations

import grpc
import pytest

from conftest import bill
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.errors import ECHO_MAX


@pytest.mark.parametrize("rpc", ["GetPayment", "Refund"])
async def test_a_huge_unknown_id_is_not_found_with_a_short_message(stub, rpc: str) -> None:
    huge = "pay_" + "x" * 16_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if rpc == "GetPayment":
            await stub.GetPayment(pb.GetPaymentRequest(payment_id=huge))
        else:
            await stub.Refund(pb.RefundRequest(idempotency_key="r", payment_id=huge))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(err.value.details()) < ECHO_MAX + 100, len(err.value.details())
    assert "pay_xxx" in err.value.details()


async def test_a_pay_key_conflict_names_nothing_of_the_other_payment(stub) -> None:
    first = await stub.Pay(bill("leak-key"))
    assert first.status == pb.SETTLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(bill("leak-key", amount=pb.Money(amount_minor=3_001, currency="EUR")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert first.payment_id not in err.value.details(), err.value.details()
