"""Pay and GetPayment through a real gRPC server, on each store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import BOTH_BACKENDS, bill, card, database_dump, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.server import RunningServer

pytestmark = BOTH_BACKENDS


async def balance_of(server: RunningServer, account_id: str) -> tuple[int, str]:
    row = server.store.subscriber(account_id)
    assert row is not None
    return row.balance_minor, row.status.name


async def test_health_is_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "quickpay.v1.Settlement"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health.Check(health_pb2.HealthCheckRequest(service="quickpay.v1.Nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_settlement_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names = {s.name for s in reply.list_services_response.service}
        break
    assert "quickpay.v1.Settlement" in names
    assert "grpc.health.v1.Health" in names


async def test_bill_payment_settles_and_restores_a_paid_up_line(stub, server) -> None:
    first = await stub.Pay(bill("bill-1", amount=pb.Money(amount_minor=3_000, currency="EUR")))
    assert first.status == pb.SETTLED
    assert first.payment_id.startswith("pay_")
    assert not first.replayed
    assert first.confirmation.balance_after == pb.Money(amount_minor=5_000, currency="EUR")
    assert first.confirmation.service_state_after == "BARRED", "still owes 50.00"
    assert first.confirmation.ledger_sequence > 0
    assert first.confirmation.settled_at.seconds > 0

    second = await stub.Pay(bill("bill-2", amount=pb.Money(amount_minor=5_000, currency="EUR")))
    assert second.status == pb.SETTLED
    assert second.confirmation.balance_after.amount_minor == 0
    assert second.confirmation.service_state_after == "ACTIVE"
    assert second.confirmation.ledger_sequence > first.confirmation.ledger_sequence
    assert await balance_of(server, "acc-post-barred") == (0, "ACTIVE")


async def test_topup_credits_a_prepaid_line_and_restores_it(stub, server) -> None:
    reply = await stub.Pay(topup("top-1"))
    assert reply.status == pb.SETTLED
    assert reply.confirmation.balance_after == pb.Money(amount_minor=5_000, currency="KES")
    assert reply.confirmation.service_state_after == "ACTIVE"
    assert await balance_of(server, "acc-pre-barred") == (5_000, "ACTIVE")


async def test_get_payment_by_id_and_by_key(stub) -> None:
    paid = await stub.Pay(bill("get-1"))
    by_id = await stub.GetPayment(pb.GetPaymentRequest(payment_id=paid.payment_id))
    by_key = await stub.GetPayment(pb.GetPaymentRequest(idempotency_key="get-1"))
    assert by_id == by_key
    assert by_id.status == pb.SETTLED
    assert by_id.amount == pb.Money(amount_minor=3_000, currency="EUR")
    assert by_id.method_kind == "CARD"
    assert by_id.method_display == "card ****4242"
    assert by_id.confirmation == paid.confirmation
    for request in (
        pb.GetPaymentRequest(payment_id="pay_nope"),
        pb.GetPaymentRequest(idempotency_key="never-used"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetPayment(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPayment(pb.GetPaymentRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_replay_returns_the_stored_response(stub, server) -> None:
    first = await stub.Pay(bill("replay-1"))
    again = await stub.Pay(bill("replay-1"))
    assert again.replayed
    assert again.payment_id == first.payment_id
    assert again.confirmation == first.confirmation
    assert await balance_of(server, "acc-post-barred") == (5_000, "BARRED"), "charged once"


async def test_same_key_other_payload_is_failed_precondition(stub, server) -> None:
    await stub.Pay(bill("conflict-1"))
    other = bill("conflict-1", amount=pb.Money(amount_minor=3_001, currency="EUR"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(other)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "conflict-1" in err.value.details()
    # A different card counts as a different payload too.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(bill("conflict-1", method=card("5555555555554444")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await balance_of(server, "acc-post-barred") == (5_000, "BARRED")


async def test_fifty_concurrent_identical_requests_settle_once(stub, server) -> None:
    replies = await asyncio.gather(*(stub.Pay(bill("storm-1")) for _ in range(50)))
    assert {r.payment_id for r in replies} == {replies[0].payment_id}
    assert all(r.status == pb.SETTLED for r in replies)
    assert sum(not r.replayed for r in replies) == 1
    assert await balance_of(server, "acc-post-barred") == (5_000, "BARRED")


async def test_concurrent_same_key_different_payload_one_wins(stub, server) -> None:
    a = bill("race-1")
    b = bill("race-1", amount=pb.Money(amount_minor=100, currency="EUR"))
    results = await asyncio.gather(stub.Pay(a), stub.Pay(b), return_exceptions=True)
    settled = [r for r in results if isinstance(r, pb.PayResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(settled) == 1 and len(refused) == 1
    assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    stored = await stub.GetPayment(pb.GetPaymentRequest(idempotency_key="race-1"))
    balance, _ = await balance_of(server, "acc-post-barred")
    assert balance == 8_000 - stored.amount.amount_minor
    assert settled[0].confirmation.balance_after.amount_minor == balance


MALFORMED = [
    ("idempotency_key", {"idempotency_key": ""}),
    ("idempotency_key", {"idempotency_key": "k" * 256}),
    ("idempotency_key", {"idempotency_key": "tab\tkey"}),
    ("account_id", {"account_id": ""}),
    ("account_id", {"account_id": "acc post"}),
    ("msisdn", {"msisdn": "306900000001"}),
    ("msisdn", {"msisdn": "+0306900000001"}),
    ("msisdn", {"msisdn": "+30690000000123456"}),
    ("amount.amount_minor", {"amount": pb.Money(amount_minor=0, currency="EUR")}),
    ("amount.amount_minor", {"amount": pb.Money(amount_minor=-100, currency="EUR")}),
    ("amount.amount_minor", {"amount": pb.Money(amount_minor=10**12 + 1, currency="EUR")}),
    ("amount.currency", {"amount": pb.Money(amount_minor=100, currency="EURO")}),
    ("amount.currency", {"amount": pb.Money(amount_minor=100, currency="eur")}),
    ("amount.currency", {"amount": pb.Money(amount_minor=100, currency="")}),
    ("purpose", {"purpose": pb.PURPOSE_UNSPECIFIED}),
    ("method", {"method": pb.PaymentMethod()}),
]


@pytest.mark.parametrize(("field", "overrides"), MALFORMED)
async def test_malformed_field_is_invalid_argument_and_writes_nothing(
    stub, server, field, overrides
) -> None:
    key = overrides.get("idempotency_key", "malformed-1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(bill(**{"key": "malformed-1"}, **overrides))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":")
    assert server.store.get_payment(idempotency_key=str(key)) is None
    assert await balance_of(server, "acc-post-barred") == (8_000, "BARRED")


# The near miss beside each malformed case: the same field, just inside the rule.
async def test_near_misses_of_the_malformed_cases_settle(stub) -> None:
    for n, overrides in enumerate(
        [
            {"idempotency_key": "k" * 255},
            {"amount": pb.Money(amount_minor=1, currency="EUR")},
            # Any method set passes the format rule; a wallet also passes the method
            # and balance layers (carrier balance needs credit this line lacks).
            {"method": pb.PaymentMethod(wallet=pb.Wallet(provider="mpesa", wallet_id="w-1"))},
        ]
    ):
        key = overrides.pop("idempotency_key", f"near-{n}")
        reply = await stub.Pay(bill(key, **overrides))
        assert reply.status == pb.SETTLED, (overrides, reply.decline_reason)


# Operators and gateway nodes write channels in upper case; the contract takes them in
# any case and keeps one spelling, the lower-case one.
async def test_channel_names_are_case_insensitive(stub, server) -> None:
    first = await stub.Pay(bill("channel-1", channel="USSD"))
    assert first.status == pb.SETTLED, first.decline_reason
    stored = await stub.GetPayment(pb.GetPaymentRequest(idempotency_key="channel-1"))
    assert stored.channel == "ussd"
    # The same payment spelled another way is the same payload: a replay, not a conflict.
    for spelling in ("ussd", "Ussd"):
        again = await stub.Pay(bill("channel-1", channel=spelling))
        assert again.replayed and again.payment_id == first.payment_id
    assert (await stub.Pay(bill("channel-2", channel="APP"))).status == pb.SETTLED
    assert await balance_of(server, "acc-post-barred") == (2_000, "BARRED"), "charged twice"


# The near misses: only ASCII letters fold. A look-alike that Unicode lower-casing would
# turn into ASCII (the Kelvin sign becomes "k") and other characters stay refused.
@pytest.mark.parametrize("name", ["\u212aIOSK", "ÜSSD", "US SD", "U" * 33])
async def test_channel_near_misses_stay_invalid(stub, server, name) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(bill("channel-bad", channel=name))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("channel:")
    assert server.store.get_payment(idempotency_key="channel-bad") is None


DECLINES = [
    ("ACCOUNT_NOT_FOUND", {"account_id": "acc-nobody"}),
    ("MSISDN_MISMATCH", {"msisdn": "+306900000002"}),
    ("CURRENCY_MISMATCH", {"amount": pb.Money(amount_minor=3_000, currency="USD")}),
    ("PURPOSE_NOT_ALLOWED_FOR_PLAN", {"purpose": pb.PREPAID_TOPUP}),
    (
        "ACCOUNT_CLOSED",
        {"account_id": "acc-closed", "msisdn": "+306900000005", "purpose": pb.PREPAID_TOPUP},
    ),
]


@pytest.mark.parametrize(("reason", "overrides"), DECLINES)
async def test_business_decline_is_declined_with_history_row(stub, server, reason, overrides):
    reply = await stub.Pay(bill("decline-1", **overrides))
    assert reply.status == pb.DECLINED
    assert reply.decline_reason == reason
    assert reply.decline_detail
    assert not reply.HasField("confirmation")
    stored = await stub.GetPayment(pb.GetPaymentRequest(idempotency_key="decline-1"))
    assert stored.status == pb.DECLINED
    assert stored.decline_reason == reason
    assert await balance_of(server, "acc-post-barred") == (8_000, "BARRED")
    again = await stub.Pay(bill("decline-1", **overrides))
    assert (
        again.replayed and again.decline_reason == reason and again.payment_id == reply.payment_id
    )


async def test_card_number_is_never_stored(stub, server, data_dir, database_urls) -> None:
    pan = "4000056655665556"
    await stub.Pay(bill("pan-1", method=card(pan)))
    await stub.Pay(bill("pan-2", account_id="acc-nobody", method=card(pan)))
    server.store.close()  # flush nothing pending; read the files as they are on disk
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert pan.encode() not in path.read_bytes(), path
    if database_urls is not None:
        dump = b"".join(database_dump(url) for url in set(database_urls))
        assert b"pan-1" in dump, "the dump holds the payments"
        assert pan.encode() not in dump
        assert pan[-4:].encode() in dump, "the last four digits are kept for display"


async def test_refund_of_an_unknown_payment_is_not_found(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Refund(pb.RefundRequest(idempotency_key="r", payment_id="pay_x"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_pay_stream_replies_for_every_request_by_key(stub, server) -> None:
    requests = [
        topup(f"stream-{n}", amount=pb.Money(amount_minor=100, currency="KES")) for n in range(40)
    ]
    requests.append(topup("stream-bad", msisdn="254700000003"))
    replies = [r async for r in stub.PayStream(iter(requests))]
    by_key = {r.idempotency_key: r for r in replies}
    assert set(by_key) == {r.idempotency_key for r in requests}
    assert all(by_key[f"stream-{n}"].status == pb.SETTLED for n in range(40))
    assert by_key["stream-bad"].status == pb.FAILED
    assert by_key["stream-bad"].decline_reason == "INVALID_ARGUMENT"
    assert by_key["stream-bad"].decline_detail.startswith("msisdn:")
    assert await balance_of(server, "acc-pre-barred") == (4_000, "ACTIVE")
