"""PayBatch through a real gRPC server: each payment settles on its own, results come
back in request order, and a call over the bound is refused whole."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from conftest import BOTH_BACKENDS, bill, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.servicer import PAY_BATCH_MAX

pytestmark = BOTH_BACKENDS


async def test_each_payment_gets_its_own_outcome_in_request_order(stub, server) -> None:
    payments = [
        bill("batch-bill"),
        topup("batch-topup"),
        bill("batch-bad-msisdn", msisdn="0030690"),
        bill("batch-closed", account_id="acc-closed", msisdn="+306900000005"),
        topup("batch-topup", amount=pb.Money(amount_minor=7_000, currency="KES")),
    ]
    reply = await stub.PayBatch(pb.PayBatchRequest(payments=payments))
    assert [r.idempotency_key for r in reply.results] == [p.idempotency_key for p in payments]
    paid, topped, bad, closed, conflict = reply.results
    assert paid.status == pb.SETTLED and paid.confirmation.gateway == "acq-a"
    assert topped.status == pb.SETTLED and topped.confirmation.gateway == "wallet-x"
    assert (bad.status, bad.decline_reason) == (pb.FAILED, "INVALID_ARGUMENT")
    assert "msisdn" in bad.decline_detail and not bad.payment_id
    assert closed.status == pb.DECLINED and closed.decline_reason
    # The same key with another amount, in the same call: refused, nothing moved twice.
    assert (conflict.status, conflict.decline_reason) == (pb.FAILED, "FAILED_PRECONDITION")
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000 - 3_000
    assert server.store.subscriber("acc-pre-barred").balance_minor == 5_000

    again = await stub.PayBatch(pb.PayBatchRequest(payments=payments[:2]))
    assert [(r.payment_id, r.status, r.replayed) for r in again.results] == [
        (paid.payment_id, pb.SETTLED, True),
        (topped.payment_id, pb.SETTLED, True),
    ]
    assert server.store.verify() == []


async def test_a_call_over_the_bound_is_refused_whole(stub, server) -> None:
    payments = [bill(f"batch-over-{i}") for i in range(PAY_BATCH_MAX + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PayBatch(pb.PayBatchRequest(payments=payments))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "payments" in (err.value.details() or "")
    assert server.store.get_payment(idempotency_key="batch-over-0") is None
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000


async def test_an_empty_call_answers_nothing_and_a_full_one_answers_each_in_order(
    stub, server
) -> None:
    empty = await stub.PayBatch(pb.PayBatchRequest())
    assert list(empty.results) == []
    # The bound itself is taken: 1,000 payments, every one malformed in its own way. Each
    # names an account of its own: payments of one account settle one batch after
    # another, so 1,000 of one account would take 1,000 batches.
    payments = [
        bill(f"batch-full-{i}", account_id=f"acc-{i}", msisdn=f"+{i}") for i in range(PAY_BATCH_MAX)
    ]
    reply = await stub.PayBatch(pb.PayBatchRequest(payments=payments), timeout=60)
    assert [r.idempotency_key for r in reply.results] == [p.idempotency_key for p in payments]
    assert {(r.status, r.decline_reason) for r in reply.results} == {
        (pb.FAILED, "INVALID_ARGUMENT")
    }


async def test_payments_of_one_account_in_one_call_settle_one_after_another(stub, server) -> None:
    """Each payment of an account is settled against the balance its predecessor left,
    in the order they came: five bills of 5.00 EUR pay off a line owing 25.00, each
    confirmation showing its own step down."""
    payments = [
        bill(
            f"batch-step-{i}",
            account_id="acc-post",
            msisdn="+306900000002",
            amount=pb.Money(amount_minor=500, currency="EUR"),
        )
        for i in range(5)
    ]
    reply = await stub.PayBatch(pb.PayBatchRequest(payments=payments), timeout=60)
    assert [r.status for r in reply.results] == [pb.SETTLED] * 5, reply
    after = [r.confirmation.balance_after.amount_minor for r in reply.results]
    assert after == [2_000, 1_500, 1_000, 500, 0]
    assert server.store.subscriber("acc-post").balance_minor == 0
    assert server.store.verify() == []


async def test_a_key_twice_in_one_call_settles_once_and_the_second_is_its_replay(
    stub, server
) -> None:
    payments = [bill("batch-twice"), topup("batch-once"), bill("batch-twice")]
    first, once, second = (await stub.PayBatch(pb.PayBatchRequest(payments=payments))).results
    assert first.status == pb.SETTLED and not first.replayed
    assert once.status == pb.SETTLED
    assert (second.payment_id, second.status, second.replayed) == (
        first.payment_id, pb.SETTLED, True,
    )  # fmt: skip
    # Charged once: the line owed 80.00 and the bill paid 30.00.
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000 - 3_000
    assert server.store.verify() == []


async def test_a_retry_of_a_deferred_payment_of_a_call_gets_that_payment(stub, server) -> None:
    """The second payment of an account in a call waits for a later batch; a unary Pay
    of its key sent meanwhile is the same payment (joined while it settles, a replay
    after): one payment id, one charge, whichever comes first."""

    def step(i: int) -> pb.PayRequest:
        return bill(
            f"batch-deferred-{i}",
            account_id="acc-post",
            msisdn="+306900000002",
            amount=pb.Money(amount_minor=500, currency="EUR"),
        )

    call = stub.PayBatch(pb.PayBatchRequest(payments=[step(0), step(1)]), timeout=60)
    retries = [stub.Pay(step(1), timeout=60) for _ in range(5)]
    reply, *retried = await asyncio.gather(call, *retries)
    first, second = reply.results
    assert (first.status, second.status) == (pb.SETTLED, pb.SETTLED)
    assert {r.payment_id for r in retried} == {second.payment_id}
    assert sum(not r.replayed for r in [second, *retried]) == 1
    assert server.store.subscriber("acc-post").balance_minor == 2_500 - 1_000
    assert server.store.verify() == []
