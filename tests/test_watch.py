"""WatchSettlements: the outbox as an ordered, resumable, filtered stream of events."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from conftest import bill, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb

EUR = "EUR"


async def take(stream, n: int, timeout_s: float = 10) -> list[pb.SettlementEvent]:
    events: list[pb.SettlementEvent] = []

    async def read() -> None:
        async for event in stream:
            events.append(event)
            if len(events) == n:
                return

    await asyncio.wait_for(read(), timeout_s)
    stream.cancel()
    return events


async def test_events_come_in_order_with_the_change_they_describe(stub) -> None:
    paid = await stub.Pay(bill("w1", amount=pb.Money(amount_minor=8_000, currency=EUR)))
    declined = await stub.Pay(bill("w2", msisdn="+306900000002"))
    events = await take(stub.WatchSettlements(pb.WatchRequest()), 3)
    assert [e.kind for e in events] == ["service_state", "settlement", "decline"]
    assert [e.cursor for e in events] == sorted(e.cursor for e in events)
    assert all(e.schema_version == 1 for e in events)
    state, settled, decline = events
    assert state.service_state_changed == pb.ServiceStateChanged(
        msisdn="+306900000001", state_before="BARRED", state_after="ACTIVE"
    )
    assert settled.payment_id == paid.payment_id
    assert settled.settled.amount == pb.Money(amount_minor=8_000, currency=EUR)
    assert settled.settled.purpose == pb.BILL_PAYMENT
    assert settled.settled.confirmation.confirmation_id == paid.confirmation.confirmation_id
    assert settled.settled.confirmation.ledger_sequence == paid.confirmation.ledger_sequence
    assert settled.settled.confirmation.service_state_after == "ACTIVE"
    assert decline.payment_id == declined.payment_id
    assert decline.declined.decline_reason == "MSISDN_MISMATCH"
    assert len({e.event_id for e in events}) == 3


async def test_resume_from_a_cursor_and_filter(stub) -> None:
    for n in range(5):
        await stub.Pay(topup(f"r{n}", amount=pb.Money(amount_minor=100, currency="KES")))
    await stub.Pay(bill("r-bill", account_id="acc-post", msisdn="+306900000002"))
    everything = await take(stub.WatchSettlements(pb.WatchRequest()), 7)
    after = everything[2].cursor
    resumed = await take(stub.WatchSettlements(pb.WatchRequest(from_cursor=after)), 4)
    assert [e.event_id for e in resumed] == [e.event_id for e in everything[3:]]
    only = await take(
        stub.WatchSettlements(pb.WatchRequest(kinds=["settlement"], account_id="acc-post")), 1
    )
    assert only[0].account_id == "acc-post" and only[0].kind == "settlement"


async def test_a_watcher_sees_payments_settled_after_it_started(stub) -> None:
    stream = stub.WatchSettlements(pb.WatchRequest(kinds=["settlement"]))
    reader = asyncio.ensure_future(take(stream, 3))
    await asyncio.sleep(0.1)
    paid = [
        await stub.Pay(topup(f"live{n}", amount=pb.Money(amount_minor=100, currency="KES")))
        for n in range(3)
    ]
    events = await reader
    assert [e.payment_id for e in events] == [p.payment_id for p in paid]


async def test_unknown_kind_is_invalid_argument(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.WatchSettlements(pb.WatchRequest(kinds=["settlement", "bogus"])):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bogus" in err.value.details()


async def test_draining_server_ends_watch_streams_promptly(server, stub) -> None:
    stream = stub.WatchSettlements(pb.WatchRequest())
    reader = asyncio.ensure_future(take(stream, 1_000, timeout_s=30))
    await asyncio.sleep(0.1)
    started = asyncio.get_running_loop().time()
    await server.stop(grace_s=10)
    assert await asyncio.wait_for(reader, 5) == [], "the stream ends cleanly, with no error"
    assert asyncio.get_running_loop().time() - started < 5, "a watch must not hold the drain"


async def test_a_refund_is_an_event_with_its_totals(stub) -> None:
    paid = await stub.Pay(bill("w-rf"))
    await stub.Refund(
        pb.RefundRequest(
            idempotency_key="w-rf-1",
            payment_id=paid.payment_id,
            amount=pb.Money(amount_minor=1_200, currency=EUR),
        )
    )
    (event,) = await take(stub.WatchSettlements(pb.WatchRequest(kinds=["refund"])), 1)
    assert event.payment_id == paid.payment_id
    assert event.refunded.amount == pb.Money(amount_minor=1_200, currency=EUR)
    assert event.refunded.refunded_total == pb.Money(amount_minor=1_200, currency=EUR)
    assert event.refunded.status == pb.PARTIALLY_REFUNDED
    assert event.refunded.refund_id.startswith("rf_")


@pytest.mark.parametrize("cursor", [2**63, 2**64 - 1])
async def test_a_cursor_past_the_signed_64_bit_range_is_invalid_argument(stub, cursor) -> None:
    """Cursors are signed 64-bit in every store, so no event has one past 2^63-1: such a
    cursor is a caller's mistake, named, not UNKNOWN from SQLite's integer binding."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.WatchSettlements(pb.WatchRequest(from_cursor=cursor)):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("from_cursor: "), err.value.details()


@pytest.mark.parametrize("account", ["a" * 65, "acc-pre\x00"])
async def test_an_account_no_payment_can_have_is_invalid_argument(stub, account) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.WatchSettlements(pb.WatchRequest(account_id=account)):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("account_id: "), err.value.details()


async def test_adjustments_and_subscriber_changes_are_events_with_their_bodies(
    stub, server
) -> None:
    """AdjustBalance and UpsertSubscribers write an outbox event each, as payments do:
    signed integer minor units for the money, the change as applied for a line, and a
    stale change (a replay) writes none."""
    adjusted = await stub.AdjustBalance(
        pb.AdjustBalanceRequest(
            idempotency_key="ev-adj-1",
            account_id="acc-pre",
            amount=pb.Money(amount_minor=-250, currency="KES"),
            reason="data bundle",
            source_system="ocs",
        )
    )
    assert adjusted.status == pb.APPLIED
    line = server.store.subscriber("acc-pre")
    assert line is not None
    sim_swap = pb.SubscriberChange(
        account_id="acc-pre", version=7, kind=pb.SIM_SWAP, msisdn=line.msisdn, plan="PREPAID",
        status="ACTIVE", currency="KES", country="KE", opening_balance_minor=99,
    )  # fmt: skip
    sim_swap.sim_swapped_at.seconds = 1_790_000_000
    sim_swap.created_at.seconds = line.created_at_s
    for _ in range(2):  # the second time stale: applied once, one event
        await stub.UpsertSubscribers(iter([sim_swap]))

    kinds = ["adjustment", "subscriber_change"]
    events = await take(stub.WatchSettlements(pb.WatchRequest(kinds=kinds)), 2)
    assert [e.kind for e in events] == kinds
    adj, sub = events
    assert adj.WhichOneof("body") == "adjusted" and adj.account_id == "acc-pre"
    assert adj.payment_id == ""
    assert adj.adjusted.adjustment_id == adjusted.adjustment_id
    assert adj.adjusted.amount == pb.Money(amount_minor=-250, currency="KES")
    assert adj.adjusted.balance_after == pb.Money(amount_minor=15_000 - 250, currency="KES")
    assert (adj.adjusted.reason, adj.adjusted.source_system) == ("data bundle", "ocs")
    assert adj.adjusted.service_state_after == "ACTIVE"
    assert sub.WhichOneof("body") == "subscriber_changed" and sub.account_id == "acc-pre"
    held = pb.SubscriberChange()
    held.CopyFrom(sim_swap)
    held.opening_balance_minor = 0  # a line held keeps its balance: none was opened
    assert sub.subscriber_changed.change == held
    assert not sub.subscriber_changed.opened
    everything = server.store.outbox_after(0, kinds=kinds, limit=100)
    assert [e.event_id for e in everything] == [adj.event_id, sub.event_id]
