"""Refunds under concurrency: a refund key is bound to its payment and payload, one
payment's refunds run one at a time, and every account's ledger balance agrees with
its billing history afterwards (issue #20, item 1)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import pytest

from conftest import bill, settings_for
from quickpay_engine._engine import ids_array
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.server import RunningServer
from quickpay_engine.settlement.ledger_book import subscriber_account
from quickpay_engine.settlement.refunds import Refunds

# Connections the concurrent callers spread over (one HTTP/2 connection each).
CHANNELS = 4


def ledger_net(server: RunningServer, account_id: str) -> int:
    """What the engine's ledger holds for an account: payments in less refunds out."""
    found, _, debits, _, credits = server.service.book.ledger.balances(
        ids_array([subscriber_account(account_id)])
    )
    assert found[0]
    return int(credits[0]) - int(debits[0])


def billing_net(data_dir: Path, account_id: str) -> int:
    """The same from billing's records: payments in less refunds out."""
    with sqlite3.connect(settings_for(data_dir).sqlite_path) as db:
        (net,) = db.execute(
            "SELECT coalesce(sum(CASE kind WHEN 'PAYMENT' THEN amount_minor"
            " ELSE -amount_minor END), 0) FROM billing_records WHERE account_id = ?",
            (account_id,),
        ).fetchone()
    return int(net)


@pytest.fixture
async def stubs(server: RunningServer):
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for _ in range(CHANNELS)]
    try:
        yield [pb_grpc.SettlementStub(c) for c in channels]
    finally:
        for c in channels:
            await c.close()


async def _two_payments(stub) -> tuple[pb.PayResponse, pb.PayResponse]:
    """Two settled bill payments of two subscribers."""
    a = await stub.Pay(bill("pay-a"))
    b = await stub.Pay(
        bill(
            "pay-b", account_id="acc-post", msisdn="+306900000002",
            amount=pb.Money(amount_minor=2_000, currency="EUR"),
        )
    )  # fmt: skip
    assert (a.status, b.status) == (pb.SETTLED, pb.SETTLED)
    return a, b


def _refund(key: str, payment_id: str, amount: int) -> pb.RefundRequest:
    return pb.RefundRequest(
        idempotency_key=key,
        payment_id=payment_id,
        amount=pb.Money(amount_minor=amount, currency="EUR"),
    )


async def _call(stub, request: pb.RefundRequest) -> pb.RefundResponse | grpc.aio.AioRpcError:
    try:
        return await stub.Refund(request)
    except grpc.aio.AioRpcError as err:
        return err


async def test_one_refund_key_for_two_payments_at_once_moves_money_once(
    stubs, server: RunningServer, data_dir: Path, simulators
) -> None:
    a, b = await _two_payments(stubs[0])
    keys = [f"shared-{n}" for n in range(12)]
    calls = []
    for n, key in enumerate(keys):
        calls.append((key, a.payment_id, stubs[n % CHANNELS], _refund(key, a.payment_id, 100)))
        calls.append(
            (key, b.payment_id, stubs[(n + 1) % CHANNELS], _refund(key, b.payment_id, 100))
        )
    replies = await asyncio.gather(*(_call(stub, r) for _, _, stub, r in calls))

    by_key: dict[str, list[str]] = {k: [] for k in keys}
    for (key, payment_id, _, _), reply in zip(calls, replies, strict=True):
        other = b.payment_id if payment_id == a.payment_id else a.payment_id
        if isinstance(reply, grpc.aio.AioRpcError):
            assert reply.code() == grpc.StatusCode.FAILED_PRECONDITION, reply.details()
            assert other not in reply.details() and "rf_" not in reply.details()
            by_key[key].append("refused")
        else:
            assert reply.payment_id == payment_id, "a reply describing another payment"
            assert reply.status == pb.PARTIALLY_REFUNDED
            by_key[key].append(payment_id)
    for key, seen in by_key.items():
        # One of the two callers made the refund, of the payment it named; the other was
        # refused, whichever came first.
        assert seen.count("refused") == 1, f"{key}: {seen}"

    refunded = {
        p: sum(p in seen for seen in by_key.values()) * 100 for p in (a.payment_id, b.payment_id)
    }
    assert sum(refunded.values()) == 100 * len(keys)
    for paid, account in ((a, "acc-post-barred"), (b, "acc-post")):
        stored = await stubs[0].GetPayment(pb.GetPaymentRequest(payment_id=paid.payment_id))
        assert stored.refunded.amount_minor == refunded[paid.payment_id]
        at_gateway = simulators.payment(paid.confirmation.gateway, paid.payment_id)
        assert at_gateway["refunded_minor"] == refunded[paid.payment_id]
        assert ledger_net(server, account) == billing_net(data_dir, account), account
        paid_minor = 3_000 if paid is a else 2_000
        assert billing_net(data_dir, account) == paid_minor - refunded[paid.payment_id]
    assert server.store.verify() == []


async def test_one_refund_key_for_two_amounts_at_once_refunds_one(
    stubs, server: RunningServer, data_dir: Path
) -> None:
    a, _ = await _two_payments(stubs[0])
    requests = [_refund("same-payment", a.payment_id, 100 + n) for n in range(6)]
    replies = await asyncio.gather(*(_call(stubs[n % CHANNELS], r) for n, r in enumerate(requests)))
    made = [r for r in replies if not isinstance(r, grpc.aio.AioRpcError)]
    refused = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
    assert len(made) == 1, [r.details() for r in refused]
    assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert made[0].refunded_total.amount_minor in range(100, 106)
    net = billing_net(data_dir, "acc-post-barred")
    assert net == 3_000 - made[0].refunded_total.amount_minor
    assert ledger_net(server, "acc-post-barred") == net


async def test_one_refund_key_retried_at_once_is_one_refund(
    stubs, server: RunningServer, data_dir: Path
) -> None:
    a, _ = await _two_payments(stubs[0])
    replies = await asyncio.gather(
        *(stubs[n % CHANNELS].Refund(_refund("retried", a.payment_id, 700)) for n in range(6))
    )
    assert len({r.refund_id for r in replies}) == 1
    assert {r.refunded_total.amount_minor for r in replies} == {700}
    assert (
        ledger_net(server, "acc-post-barred") == billing_net(data_dir, "acc-post-barred") == 2_300
    )


async def test_a_refund_key_reused_on_another_payment_names_nothing_of_it(
    stubs, server: RunningServer
) -> None:
    a, b = await _two_payments(stubs[0])
    first = await stubs[0].Refund(_refund("reused", a.payment_id, 100))
    for request in (
        _refund("reused", b.payment_id, 100),
        pb.RefundRequest(idempotency_key="reused", payment_id=b.payment_id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs[1].Refund(request)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = err.value.details()
        assert a.payment_id not in details and first.refund_id not in details, details
    stored = await stubs[0].GetPayment(pb.GetPaymentRequest(payment_id=b.payment_id))
    assert stored.refunded.amount_minor == 0


async def test_a_payment_refund_lock_is_kept_while_a_caller_waits_for_it() -> None:
    """The lock of a payment outlives its holder while another caller waits: a third
    caller arriving then queues behind the waiter instead of running beside it."""
    refunds = Refunds(None, None, None, None, lambda _: None)  # type: ignore[arg-type]
    inside: list[str] = []
    most = 0
    gates = {k: asyncio.Event() for k in ("k1", "k2", "k3")}

    async def body(key: str, payment_id: str, *_: object) -> None:
        nonlocal most
        inside.append(key)
        most = max(most, len(inside))
        await gates[key].wait()
        inside.remove(key)

    refunds._refund = body  # type: ignore[method-assign]

    async def until(condition) -> None:
        for _ in range(1_000):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError("condition not reached")

    first = asyncio.create_task(refunds.refund("k1", "pay_1", None, "", ""))
    await until(lambda: inside == ["k1"])
    second = asyncio.create_task(refunds.refund("k2", "pay_1", None, "", ""))
    for _ in range(10):
        await asyncio.sleep(0)  # the second caller is now waiting for the lock
    gates["k1"].set()
    await first  # the first caller's lock released, the second not yet running
    third = asyncio.create_task(refunds.refund("k3", "pay_1", None, "", ""))
    await until(lambda: inside != [])
    for _ in range(10):
        await asyncio.sleep(0)
    assert most == 1 and len(inside) == 1, inside
    gates["k2"].set()
    gates["k3"].set()
    await asyncio.gather(second, third)
    assert most == 1
    assert not refunds._locks, "no lock left behind once every caller is done"
    assert not refunds._key_locks
