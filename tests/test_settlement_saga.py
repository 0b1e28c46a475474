"""The settlement saga against real gateway processes: captures, declines, failover,
lost responses, refunds and recovery after an interrupted batch (invariants 3 and 4)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from conftest import bill, settings_for, topup
from gateway_procs import SimulatorSet
from quickpay_engine._engine import Ledger
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.server import RunningServer, create_server
from quickpay_engine.settlement.ledger_book import (
    RESERVED,
    ROLLED_BACK,
    SETTLED,
    LedgerBook,
)
from quickpay_engine.store import SqliteStore


async def _served(data_dir: Path, gateways: Path | None = None) -> RunningServer:
    return await create_server(settings_for(data_dir, gateways=gateways))


def _stub(running: RunningServer) -> tuple[grpc.aio.Channel, pb_grpc.SettlementStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    return channel, pb_grpc.SettlementStub(channel)


def _ledger_states(running: RunningServer, payment_ids: list[str]) -> list[int]:
    return running.service.book.states(payment_ids)


async def _posted_states(running: RunningServer, payment_ids: list[str]) -> list[int]:
    """The states once the holds of answered payments are posted (after the reply)."""
    await running.service._pipeline.drain()
    return _ledger_states(running, payment_ids)


@pytest.fixture
def own_sims(tmp_path: Path):
    """Simulators for this test alone, so their faults can be changed."""
    (tmp_path / "own").mkdir()
    sims = SimulatorSet(tmp_path / "own").start()
    try:
        yield sims
    finally:
        sims.stop()


async def test_card_bill_is_captured_at_the_first_acquirer_and_settled(
    stub, server, simulators
) -> None:
    reply = await stub.Pay(bill("saga-1"))
    assert reply.status == pb.SETTLED
    c = reply.confirmation
    assert c.gateway == "acq-a" and c.gateway_reference
    at_gateway = simulators.payment("acq-a", reply.payment_id)
    assert at_gateway is not None
    assert at_gateway["state"] == "CAPTURED"
    assert at_gateway["gateway_reference"] == c.gateway_reference
    assert at_gateway["captured_minor"] == 3_000
    assert await _posted_states(server, [reply.payment_id]) == [SETTLED]
    assert server.service.book.unfinished() == {}


async def test_wallet_topup_goes_to_the_wallet_provider(stub, server, simulators) -> None:
    reply = await stub.Pay(topup("saga-2"))
    assert reply.status == pb.SETTLED
    assert reply.confirmation.gateway == "wallet-x"
    assert simulators.payment("wallet-x", reply.payment_id)["state"] == "CAPTURED"
    assert simulators.payment("acq-a", reply.payment_id) is None


async def test_gateway_decline_is_recorded_and_the_hold_voided(data_dir, own_sims) -> None:
    for name in ("acq-a", "acq-b"):
        own_sims.set_faults(name, {"seed": 3, "declines": {"DO_NOT_HONOUR": 1.0}})
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        reply = await stub.Pay(bill("saga-decline"))
        assert reply.status == pb.DECLINED
        assert reply.decline_reason == "DO_NOT_HONOUR"
        assert _ledger_states(running, [reply.payment_id]) == [ROLLED_BACK]
        stored = await stub.GetPayment(pb.GetPaymentRequest(payment_id=reply.payment_id))
        assert stored.status == pb.DECLINED
        # Nothing moved: the line stays barred and owes what it owed.
        assert running.store.subscriber("acc-post-barred").balance_minor == 8_000
        assert running.store.verify() == []
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_failover_to_the_second_acquirer_when_the_first_is_down(data_dir, own_sims) -> None:
    own_sims.stop("acq-a")
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        reply = await stub.Pay(bill("saga-failover"))
        assert reply.status == pb.SETTLED
        assert reply.confirmation.gateway == "acq-b"
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_a_lost_response_is_looked_up_and_captured_once(data_dir, own_sims) -> None:
    # acq-a processes every sale and then withholds the answer.
    own_sims.set_faults("acq-a", {"seed": 4, "lost_response_rate": 1.0})
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        reply = await stub.Pay(bill("saga-lost"), timeout=30)
        assert reply.status == pb.SETTLED
        assert reply.confirmation.gateway == "acq-a"
        # Captured once, at acq-a only: the lookup found it, nothing failed over.
        assert own_sims.payment("acq-a", reply.payment_id)["state"] == "CAPTURED"
        assert own_sims.payment("acq-b", reply.payment_id) is None
        again = await stub.Pay(bill("saga-lost"))
        assert again.replayed and again.payment_id == reply.payment_id
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_no_gateway_answering_fails_the_payment_and_voids_the_hold(
    data_dir, own_sims
) -> None:
    own_sims.stop("acq-a")
    own_sims.stop("acq-b")
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        reply = await stub.Pay(bill("saga-down"), timeout=30)
        assert reply.status == pb.FAILED
        assert reply.decline_reason == "GATEWAY_UNAVAILABLE"
        assert _ledger_states(running, [reply.payment_id]) == [ROLLED_BACK]
        assert running.store.verify() == []
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_a_hundred_concurrent_identical_requests_settle_once(
    stub, server, simulators
) -> None:
    replies = await asyncio.gather(*(stub.Pay(bill("saga-same")) for _ in range(100)))
    assert {r.payment_id for r in replies} == {replies[0].payment_id}
    assert sum(not r.replayed for r in replies) == 1
    assert simulators.payment("acq-a", replies[0].payment_id)["captured_minor"] == 3_000
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000 - 3_000


async def test_pay_and_pay_batch_racing_on_one_key_settle_it_once(stub, server, simulators) -> None:
    """A PayBatch call queues its payments as one group; a unary Pay of a key the group
    is settling joins that payment, and a group of a key a Pay is settling joins the
    Pay's: either way one settlement, the others its replays."""
    batch = pb.PayBatchRequest(payments=[bill("saga-raced"), topup("saga-raced-topup")])
    calls = [stub.PayBatch(batch)] + [stub.Pay(bill("saga-raced")) for _ in range(20)]
    calls.insert(10, stub.PayBatch(batch))
    replies = await asyncio.gather(*calls)
    batches = [r for r in replies if isinstance(r, pb.PayBatchResponse)]
    bills = [r for r in replies if isinstance(r, pb.PayResponse)]
    bills += [b.results[0] for b in batches]
    assert {r.payment_id for r in bills} == {bills[0].payment_id}
    assert {r.status for r in bills} == {pb.SETTLED}
    assert sum(not r.replayed for r in bills) == 1
    topups = [b.results[1] for b in batches]
    assert {r.payment_id for r in topups} == {topups[0].payment_id}
    assert sum(not r.replayed for r in topups) == 1
    assert simulators.payment("acq-a", bills[0].payment_id)["captured_minor"] == 3_000
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000 - 3_000


# -- refunds -----------------------------------------------------------------------------


async def test_partial_then_full_refund_and_over_refund_refused(stub, server, simulators) -> None:
    paid = await stub.Pay(bill("saga-refund"))
    assert paid.status == pb.SETTLED

    part = await stub.Refund(
        pb.RefundRequest(
            idempotency_key="rf-1",
            payment_id=paid.payment_id,
            amount=pb.Money(amount_minor=1_000, currency="EUR"),
            reason="customer asked",
        )
    )
    assert part.status == pb.PARTIALLY_REFUNDED
    assert part.refunded_total.amount_minor == 1_000 and part.gateway_reference
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000 - 3_000 + 1_000

    replay = await stub.Refund(
        pb.RefundRequest(
            idempotency_key="rf-1",
            payment_id=paid.payment_id,
            amount=pb.Money(amount_minor=1_000, currency="EUR"),
        )
    )
    assert replay.replayed and replay.refund_id == part.refund_id
    assert replay.refunded_total.amount_minor == 1_000

    over = await stub.Refund(
        pb.RefundRequest(
            idempotency_key="rf-2",
            payment_id=paid.payment_id,
            amount=pb.Money(amount_minor=2_001, currency="EUR"),
        )
    )
    assert over.decline_reason == "REFUND_EXCEEDS_CAPTURED"
    assert over.status == pb.PARTIALLY_REFUNDED
    assert over.refunded_total.amount_minor == 1_000

    rest = await stub.Refund(pb.RefundRequest(idempotency_key="rf-3", payment_id=paid.payment_id))
    assert rest.status == pb.REFUNDED
    assert rest.refunded_total.amount_minor == 3_000
    at_gateway = simulators.payment("acq-a", paid.payment_id)
    assert at_gateway["state"] == "REFUNDED" and at_gateway["refunded_minor"] == 3_000

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Refund(
            pb.RefundRequest(
                idempotency_key="rf-1",
                payment_id=paid.payment_id,
                amount=pb.Money(amount_minor=500, currency="EUR"),
            )
        )  # the same key, another amount
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stored = await stub.GetPayment(pb.GetPaymentRequest(payment_id=paid.payment_id))
    assert stored.status == pb.REFUNDED
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000
    assert server.store.verify() == []
    events = server.store.outbox_after(0, kinds=["refund"])
    assert len(events) == 2


async def test_a_declined_payment_cannot_be_refunded(stub) -> None:
    declined = await stub.Pay(bill("saga-closed", account_id="acc-closed", msisdn="+306900000005"))
    assert declined.status == pb.DECLINED
    refused = await stub.Refund(
        pb.RefundRequest(idempotency_key="rf-x", payment_id=declined.payment_id)
    )
    assert refused.decline_reason == "NOT_REFUNDABLE"


# -- recovery ----------------------------------------------------------------------------


async def test_recovery_settles_a_captured_payment_and_forgets_an_unsent_one(
    data_dir: Path, simulators
) -> None:
    """A batch interrupted after the gateway captured one payment and before the other
    was sent: at the next start the captured one is committed and posted, the other is
    voided at the gateways and rolled back, and nothing is journalled any more."""
    from quickpay_engine.api.convert import intent_of
    from quickpay_engine.server import fingerprint_key

    running = await _served(data_dir)
    key = fingerprint_key(data_dir)
    pipeline = running.service._pipeline  # the saga's stage 1, run by hand
    captured_intent = intent_of(bill("rec-captured"), key)
    unsent_intent = intent_of(topup("rec-unsent"), key)
    batch = await pipeline._prepare([captured_intent, unsent_intent])
    captured, unsent = (batch.decisions[k] for k in batch.reserved)
    result = await pipeline._sale(captured)
    assert result.gateway == "acq-a"
    # The process dies here: no CAPTURED record, no commit, no post.
    pipeline.in_flight.clear()
    await running.service.router.close()
    await running.stop_gateways()
    running.service.book.close()
    running.store.close()
    await running.server.stop(0)

    book = LedgerBook(Ledger.open(data_dir / "ledger"))
    assert book.states([captured.payment_id, unsent.payment_id]) == [RESERVED, RESERVED]
    book.close()

    again = await _served(data_dir)
    try:
        states = again.service.book.states([captured.payment_id, unsent.payment_id])
        assert states == [SETTLED, ROLLED_BACK]
        record = again.store.get_payment(payment_id=captured.payment_id)
        assert record is not None and record.outcome.status == pb.SETTLED
        assert record.outcome.confirmation.gateway_reference == result.gateway_reference
        assert again.store.get_payment(payment_id=unsent.payment_id) is None
        assert again.store.attempts() == {}
        # The unsent one was voided where it could have landed.
        assert simulators.payment("wallet-x", unsent.payment_id)["state"] == "VOIDED"
        assert again.store.verify() == []
        # Its caller never had an answer; a retry with the same key now settles.
        channel, stub = _stub(again)
        retry = await stub.Pay(topup("rec-unsent"))
        assert retry.status == pb.SETTLED and retry.payment_id != unsent.payment_id
        await channel.close()
    finally:
        await again.stop(grace_s=1)


def test_store_keeps_no_card_number_in_the_journal(tmp_path: Path) -> None:
    from quickpay_engine.api.convert import intent_of

    store = SqliteStore(tmp_path / "q.sqlite3")
    try:
        intent = intent_of(bill("journal"), b"k" * 32)
        assert store.journal_attempts([("pay_" + "1" * 32, intent)]) == [True]
        assert store.journal_attempts([("pay_" + "2" * 32, intent)]) == [False]  # key held
        (text,) = store._db.execute("SELECT intent FROM settlement_attempts").fetchone()
        assert "4242424242424242" not in text and "4242" in text
        assert store.attempts()["pay_" + "1" * 32].amount_minor == 3_000
    finally:
        store.close()


async def test_a_capture_billing_refuses_is_given_back_and_marked_failed(
    stub, server, simulators
) -> None:
    # The account disappears from billing after the engine loaded it: validation passes,
    # the gateway captures, and the commit can never succeed.
    server.store._db.execute("DELETE FROM subscribers WHERE account_id = 'acc-post'")
    reply = await stub.Pay(bill("saga-gone", account_id="acc-post", msisdn="+306900000002"))
    assert reply.status == pb.FAILED
    assert reply.decline_reason == "ACCOUNT_GONE"
    assert simulators.payment("acq-a", reply.payment_id)["state"] == "VOIDED"
    assert _ledger_states(server, [reply.payment_id]) == [ROLLED_BACK]
    stored = await stub.GetPayment(pb.GetPaymentRequest(payment_id=reply.payment_id))
    assert stored.status == pb.FAILED
    assert server.store.attempts() == {}
    assert server.store.verify() == []


async def test_the_sweep_finishes_what_the_pipeline_let_go_and_spares_what_it_holds(
    data_dir: Path, simulators, monkeypatch
) -> None:
    from quickpay_engine.api.convert import intent_of
    from quickpay_engine.server import fingerprint_key
    from quickpay_engine.settlement import service as service_module

    monkeypatch.setattr(service_module, "SWEEP_S", 0.1)
    running = await _served(data_dir)
    try:
        key = fingerprint_key(data_dir)
        pipeline = running.service._pipeline
        batch = await pipeline.prepare(
            [intent_of(bill("sweep-captured"), key), intent_of(topup("sweep-held"), key)]
        )
        captured, held = (batch.decisions[k] for k in batch.reserved)
        assert (await pipeline._sale(captured)).gateway == "acq-a"
        # The pipeline lets go of the captured one (as after an unanswered gateway) and
        # keeps the other: the sweep must finish the first and leave the second alone.
        pipeline.in_flight.discard(captured.payment_id)
        for _ in range(100):
            if running.store.get_payment(payment_id=captured.payment_id) is not None:
                break
            await asyncio.sleep(0.05)
        record = running.store.get_payment(payment_id=captured.payment_id)
        assert record is not None and record.outcome.status == pb.SETTLED
        await asyncio.sleep(0.3)  # a few more sweeps
        assert _ledger_states(running, [captured.payment_id, held.payment_id]) == [
            SETTLED,
            RESERVED,
        ]
        pipeline.in_flight.discard(held.payment_id)
        for _ in range(100):
            # The sweep rolls the hold back, then forgets the journal entry: wait for both,
            # or the check below races the second.
            rolled_back = _ledger_states(running, [held.payment_id]) == [ROLLED_BACK]
            if rolled_back and not running.store.attempts():
                break
            await asyncio.sleep(0.05)
        assert _ledger_states(running, [held.payment_id]) == [ROLLED_BACK]
        assert running.store.attempts() == {}
    finally:
        await running.stop(grace_s=1)


@pytest.mark.parametrize(
    ("method", "gateway"),
    [
        (
            pb.PaymentMethod(bank_account=pb.BankAccount(iban="GR1601101250000000012300695")),
            "acq-a",
        ),
        (
            pb.PaymentMethod(wallet=pb.Wallet(provider="mpesa", wallet_id="306900000002")),
            "wallet-x",
        ),
    ],
)
async def test_each_method_settles_at_the_gateway_that_takes_it(
    stub, simulators, method, gateway
) -> None:
    key = f"saga-method-{gateway}-{method.WhichOneof('kind')}"
    reply = await stub.Pay(
        bill(key, account_id="acc-post", msisdn="+306900000002", method=method,
             amount=pb.Money(amount_minor=500, currency="EUR"))
    )  # fmt: skip
    assert reply.status == pb.SETTLED, reply
    assert reply.confirmation.gateway == gateway
    assert simulators.payment(gateway, reply.payment_id)["state"] == "CAPTURED"


async def test_two_payments_of_one_account_in_flight_are_validated_one_after_the_other(
    stub, server
) -> None:
    """acc-post owes 25.00 EUR and may overpay by 100.00: one payment of 100.00 passes,
    but not two. Sent together they would be validated against the same balance; the
    second is held back until the first has committed, and is then declined."""
    amount = pb.Money(amount_minor=10_000, currency="EUR")
    replies = await asyncio.gather(
        *(
            stub.Pay(bill(f"saga-twice-{n}", account_id="acc-post", msisdn="+306900000002",
                          amount=amount))
            for n in range(2)
        )
    )  # fmt: skip
    assert sorted(r.status for r in replies) == [pb.SETTLED, pb.DECLINED]
    declined = next(r for r in replies if r.status == pb.DECLINED)
    assert declined.decline_reason == "BILL_OVERPAYMENT"
    assert server.store.subscriber("acc-post").balance_minor == 2_500 - 10_000


async def test_a_hanging_gateway_never_leads_to_a_double_capture(data_dir, own_sims) -> None:
    # acq-a holds every sale far past the adapter's timeout before processing it: each
    # sale's fate is unknown until looked up, and a late one may still land.
    own_sims.set_faults("acq-a", {"seed": 6, "timeout_rate": 1.0, "hang_ms": 2500})
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        reply = await stub.Pay(bill("saga-hang"), timeout=30)
        assert reply.status == pb.SETTLED
        await asyncio.sleep(3.0)  # every held request has been processed by now
        states = {
            name: (own_sims.payment(name, reply.payment_id) or {}).get("captured_minor", 0)
            for name in ("acq-a", "acq-b")
        }
        # Captured once, where the confirmation says, and nowhere else.
        assert states[reply.confirmation.gateway] == 3_000
        assert sum(states.values()) == 3_000
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_a_caller_whose_deadline_comes_first_is_told_to_retry_and_the_retry_gets_it(
    data_dir, own_sims
) -> None:
    """Every answer of both acquirers, lookups included, takes 0.9 s, and the sales are
    held past their 0.5 s timeout: the payment cannot end before about 1.4 s (sale
    timeout, then a lookup), whatever the machine's speed, so the caller's 1 s deadline
    always comes first. The caller hears UNAVAILABLE with a retry hint just before its
    deadline (not DEADLINE_EXCEEDED, which would not say whether anything happened); the
    payment goes on, a retry with the same key gets its one outcome, and nothing is
    captured twice."""
    slow = {"seed": 8, "latency_ms_median": 900, "latency_ms_p99": 900}
    for name in ("acq-a", "acq-b"):
        own_sims.set_faults(name, {**slow, "timeout_rate": 1.0, "hang_ms": 100})
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Pay(bill("saga-late"), timeout=1.0)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert "retry with the same idempotency_key" in (err.value.details() or "")
        assert 0.5 < loop.time() - started < 1.0
        retry = await stub.Pay(bill("saga-late"), timeout=30)
        assert retry.status in (pb.SETTLED, pb.FAILED)
        await _captured_once(own_sims, retry)
        again = await stub.Pay(bill("saga-late"))
        assert (again.payment_id, again.status, again.replayed) == (
            retry.payment_id,
            retry.status,
            True,
        )
        assert running.store.verify() == []
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_a_pay_batch_whose_deadline_comes_first_answers_each_payment_to_retry(
    data_dir, own_sims
) -> None:
    """The PayBatch form of the test above: the call's deadline comes before its card
    payment's outcome. Each payment's result is FAILED with UNAVAILABLE and a retry hint
    (the wallet top-up beside it too: the payments of one engine batch commit together,
    after the slowest sale), and a retry of the call gets each payment's one outcome."""
    slow = {"seed": 8, "latency_ms_median": 900, "latency_ms_p99": 900}
    for name in ("acq-a", "acq-b"):
        own_sims.set_faults(name, {**slow, "timeout_rate": 1.0, "hang_ms": 100})
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        call = pb.PayBatchRequest(payments=[bill("batch-late"), topup("batch-fast")])
        for result in (await stub.PayBatch(call, timeout=1.0)).results:
            assert (result.status, result.decline_reason) == (pb.FAILED, "UNAVAILABLE")
            assert "retry with the same idempotency_key" in result.decline_detail
        retried_late, retried_fast = (await stub.PayBatch(call, timeout=30)).results
        assert retried_late.status in (pb.SETTLED, pb.FAILED) and retried_late.payment_id
        assert retried_fast.status == pb.SETTLED and retried_fast.replayed
        await _captured_once(own_sims, retried_late)
        assert running.store.verify() == []
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_sales_that_time_out_and_are_voided_fail_before_the_deadline(
    data_dir, own_sims
) -> None:
    """Both acquirers hold their sales far past the sale timeout (2 s) while lookups and
    voids answer at once, and the caller's deadline is far off: each sale is looked up,
    found not taken and, once its retry times out too, voided, so the payment ends FAILED
    before the deadline and the caller hears that outcome (not UNAVAILABLE). The void
    leaves a tombstone, so the held sales can never capture."""
    for name in ("acq-a", "acq-b"):
        own_sims.set_faults(name, {"seed": 8, "timeout_rate": 1.0, "hang_ms": 60_000})
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        reply = await stub.Pay(bill("saga-voided"), timeout=20.0)
        assert reply.status == pb.FAILED, reply
        assert reply.decline_reason in ("GATEWAY_UNAVAILABLE", "GATEWAY_TIMEOUT"), reply
        for name in ("acq-a", "acq-b"):
            at_gateway = own_sims.payment(name, reply.payment_id)
            assert at_gateway["state"] == "VOIDED", at_gateway
            assert at_gateway.get("captured_minor", 0) == 0, at_gateway
        again = await stub.Pay(bill("saga-voided"))
        assert (again.payment_id, again.status, again.replayed) == (
            reply.payment_id,
            pb.FAILED,
            True,
        )
        assert running.store.subscriber("acc-post-barred").balance_minor == 8_000
        assert running.store.verify() == []
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def _captured_once(sims: SimulatorSet, reply: pb.PayResponse) -> None:
    """Waits until every held sale has been processed (the simulators' hang ends), then
    checks that the acquirers together captured the amount once if the payment settled,
    and nothing otherwise."""
    await asyncio.sleep(3.5)
    captured = [
        (sims.payment(name, reply.payment_id) or {}).get("captured_minor", 0)
        for name in ("acq-a", "acq-b")
    ]
    assert sum(captured) == (3_000 if reply.status == pb.SETTLED else 0), captured


async def test_a_full_ledger_is_resource_exhausted_and_charges_nothing(
    data_dir, simulators, monkeypatch
) -> None:
    """The ledger holds one retention window of payments: full, it refuses the next
    batch before any gateway is called, and the caller hears RESOURCE_EXHAUSTED."""
    from quickpay_engine import server as server_module

    class SmallLedger:
        @staticmethod
        def open(path: Path, **_: object) -> Ledger:
            return Ledger.open(path, transfers_max=2)  # one payment: its hold and post

    monkeypatch.setattr(server_module, "Ledger", SmallLedger)
    running = await _served(data_dir, simulators.gateways_file)
    channel, stub = _stub(running)
    try:
        first = await stub.Pay(bill("saga-full-1"))
        assert first.status == pb.SETTLED
        await running.service._pipeline.drain()  # its hold is posted: the ledger is full
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Pay(bill("saga-full-2"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "transfers" in (err.value.details() or "")
        assert running.store.get_payment(idempotency_key="saga-full-2") is None
        assert running.store.subscriber("acc-post-barred").balance_minor == 8_000 - 3_000
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_a_ledger_refusal_after_the_gateway_is_pending_and_recovery_finishes_it(
    stub, server, monkeypatch
) -> None:
    """The ledger refuses to record CAPTURED after the gateway took the money: the caller
    is told to retry with the same key (never "not done", which invites a new key and a
    second charge); the commit stands, the retry replays it, and recovery posts the
    hold."""
    from quickpay_engine.errors import CapacityExceeded

    capture = server.service.book.capture_and_roll_back
    failures = iter([True])

    async def refusing(captured, voided):
        if next(failures, False):
            raise CapacityExceeded("payments: 1 above the bound")
        return await capture(captured, voided)

    monkeypatch.setattr(server.service.book, "capture_and_roll_back", refusing)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(bill("saga-ledger-late"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry with the same idempotency_key" in (err.value.details() or "")
    retry = await stub.Pay(bill("saga-ledger-late"))
    assert retry.status == pb.SETTLED and retry.replayed
    await server.service.recovery.run()
    assert _ledger_states(server, [retry.payment_id]) == [SETTLED]
    assert server.store.verify() == []


async def test_a_batch_the_database_cannot_commit_settles_nowhere(
    stub, server, simulators, monkeypatch
) -> None:
    """The database fails the batch's transaction after the gateway captured: the capture
    is voided, the hold rolled back, the caller told FAILED, and a retry settles."""
    import sqlite3

    # The saga commits SQLite batches on the core's writer thread (commit_on_core).
    commit = server.store.commit_on_core
    failures = iter([True])

    async def failing(decisions, *args):
        if next(failures, False):
            raise sqlite3.OperationalError("disk I/O error")
        return await commit(decisions, *args)

    monkeypatch.setattr(server.store, "commit_on_core", failing)
    reply = await stub.Pay(bill("saga-db-down"))
    assert reply.status == pb.FAILED
    assert reply.decline_reason == "BILLING_UNAVAILABLE"
    assert simulators.payment("acq-a", reply.payment_id)["state"] == "VOIDED"
    assert _ledger_states(server, [reply.payment_id]) == [ROLLED_BACK]
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000
    retry = await stub.Pay(bill("saga-db-down"))
    assert retry.status == pb.SETTLED and retry.payment_id != reply.payment_id
    assert server.store.verify() == []


@pytest.mark.parametrize(
    "step",
    [
        "find_by_keys",
        "find_by_keys on the reader thread",
        "journal_columns_on_core",
        "reserve_columns",
    ],
)
async def test_a_store_out_of_reach_before_the_gateways_is_unavailable_and_charges_nothing(
    stub, server, simulators, monkeypatch, step
) -> None:
    """The database is out of reach (restarting, disk full) when the batch is looked up
    (on the event loop for a small batch, on the reader thread for a larger one) or
    journalled: nothing has left the process, so the caller hears UNAVAILABLE (retry
    with the same key), never INTERNAL; nothing is charged, and the retry settles."""
    import sqlite3

    from quickpay_engine.settlement import pipeline

    pipe = server.service._pipeline
    assert pipe._inline_reader is not None, "SQLite looks small batches up on the loop"
    key = f"saga-unreachable-{step.replace(' ', '-')}"
    if step == "find_by_keys on the reader thread":
        monkeypatch.setattr(pipeline, "INLINE_LOOKUP_MAX", 0)
        step = "find_by_keys"
        target = pipe._reader[0]
    else:
        owner = {"find_by_keys": pipe._inline_reader, "reserve_columns": server.service.book}
        target = owner.get(step, server.store)
    real = getattr(target, step)
    failures = iter([True])

    def unreachable(*args):
        if next(failures, False):
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args)

    async def unreachable_async(*args):
        if next(failures, False):
            raise sqlite3.OperationalError("disk I/O error")
        return await real(*args)

    is_async = step in ("reserve_columns", "journal_columns_on_core")
    monkeypatch.setattr(target, step, unreachable_async if is_async else unreachable)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(bill(key))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert "retry with the same idempotency_key" in (err.value.details() or "")
    # What one half of the journal-and-hold wrote is taken back at once, and nothing is
    # left in flight (the sweep would never look at it there).
    assert server.service.book.unfinished() == {}
    assert server.store.attempts() == {}
    assert server.service._pipeline.in_flight == set()
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000
    retry = await stub.Pay(bill(key))
    assert retry.status == pb.SETTLED and not retry.replayed
    assert simulators.payment("acq-a", retry.payment_id)["captured_minor"] == 3_000
    assert server.store.verify() == []


async def test_a_lookup_that_meets_the_store_out_of_reach_is_unavailable(
    stub, server, monkeypatch
) -> None:
    import sqlite3

    def unreachable(**_: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(server.service._reader, "get_payment", unreachable)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPayment(pb.GetPaymentRequest(idempotency_key="anything"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()


async def test_a_key_held_by_an_unfinished_attempt_is_unavailable_and_charges_nothing(
    stub, server
) -> None:
    """An attempt journalled before a crash and not yet finished holds its key: a retry
    meanwhile is told UNAVAILABLE (retry later), its hold is voided, nothing is sent to
    a gateway, and once the attempt is finished the retry settles."""
    from quickpay_engine.api.convert import intent_of
    from quickpay_engine.server import fingerprint_key

    earlier = "pay_" + "e" * 32
    intent = intent_of(bill("saga-held"), fingerprint_key(server.service.book.ledger.dir.parent))
    assert server.store.journal_attempts([(earlier, intent)]) == [True]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(bill("saga-held"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "being finished" in (err.value.details() or "")
    assert server.service.book.unfinished() == {}  # the retry's hold was voided
    assert server.store.subscriber("acc-post-barred").balance_minor == 8_000
    server.store.forget_attempts([earlier])
    retry = await stub.Pay(bill("saga-held"))
    assert retry.status == pb.SETTLED


async def test_a_gateway_lost_after_taking_a_sale_is_unavailable_then_finished(
    data_dir, own_sims, monkeypatch
) -> None:
    """acq-a takes the sale and dies before answering, and cannot be asked again before
    the deadline: the caller is told UNAVAILABLE (retry with the same key), the payment
    stays held and journalled, and a retry meanwhile is refused, never sent elsewhere.
    Once acq-a is back, the sweep learns it never captured the sale, voids it, and the
    retry settles."""
    from quickpay_engine.settlement import pipeline as pipeline_module
    from quickpay_engine.settlement import service as service_module

    monkeypatch.setattr(pipeline_module, "GATEWAY_DEADLINE_S", 1.5)
    monkeypatch.setattr(pipeline_module, "RESOLVE_S", 0.5)
    monkeypatch.setattr(service_module, "SWEEP_S", 0.2)
    # acq-a holds every sale before processing it: long enough to die with it in hand.
    own_sims.set_faults("acq-a", {"seed": 7, "timeout_rate": 1.0, "hang_ms": 5_000})
    running = await _served(data_dir, own_sims.gateways_file)
    channel, stub = _stub(running)
    try:
        call = asyncio.ensure_future(stub.Pay(bill("saga-gone")))
        log = own_sims.data_dir / "acq-a.log"
        for _ in range(300):  # until acq-a holds the sale in hand
            if "injected timeout on /v1/payments/sale" in log.read_text():
                break
            await asyncio.sleep(0.05)
        own_sims.kill("acq-a")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retry" in (err.value.details() or "").lower()
        (payment_id,) = running.store.attempts()
        assert _ledger_states(running, [payment_id]) == [RESERVED]
        assert own_sims.payment("acq-b", payment_id) is None, "never failed over blind"
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.Pay(bill("saga-gone"))
        assert again.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "being finished" in (again.value.details() or "")

        own_sims.restart("acq-a")
        for _ in range(100):
            if not running.store.attempts():
                break
            await asyncio.sleep(0.1)
        assert running.store.attempts() == {}
        assert _ledger_states(running, [payment_id]) == [ROLLED_BACK]
        assert own_sims.payment("acq-a", payment_id)["state"] == "VOIDED"
        retry = await stub.Pay(bill("saga-gone"), timeout=30)
        assert retry.status == pb.SETTLED and retry.payment_id != payment_id
        assert running.store.subscriber("acc-post-barred").balance_minor == 5_000
        assert running.store.verify() == []
    finally:
        await channel.close()
        await running.stop(grace_s=1)


async def test_by_deadline_tells_its_own_timeout_from_the_payments_failure() -> None:
    """A settlement that fails with a TimeoutError of its own is that failure, not
    OutcomePending; one still running at the deadline is OutcomePending, and goes on."""
    from quickpay_engine.api.convert import intent_of
    from quickpay_engine.errors import OutcomePending
    from quickpay_engine.settlement.service import _by_deadline

    loop = asyncio.get_running_loop()
    intent = intent_of(bill("deadline-unit"), b"k" * 32, loop.time() + 5.0)

    async def fails():
        raise TimeoutError("the settlement's own")

    with pytest.raises(TimeoutError, match="own"):
        await _by_deadline(asyncio.ensure_future(fails()), intent)
    slow = asyncio.ensure_future(asyncio.sleep(0.3, result="late"))
    soon = intent_of(bill("deadline-unit"), b"k" * 32, loop.time() + 0.1)
    with pytest.raises(OutcomePending):
        await _by_deadline(slow, soon)
    assert await slow == "late", "the payment went on"


async def test_by_deadline_leaves_the_settlement_running_when_its_caller_goes() -> None:
    """A caller cancelled while it waits (with a deadline or without) stops waiting; the
    settlement it waited for is neither cancelled nor changed, and a settlement that
    ends before the deadline is answered as it ended."""
    from quickpay_engine.api.convert import intent_of
    from quickpay_engine.settlement.service import _by_deadline

    loop = asyncio.get_running_loop()
    for deadline in (None, loop.time() + 5.0):
        intent = intent_of(bill("deadline-gone"), b"k" * 32, deadline)
        settling: asyncio.Future[str] = loop.create_future()
        waiting = asyncio.ensure_future(_by_deadline(settling, intent))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not settling.done()
        settling.set_result("settled")
        again = asyncio.ensure_future(_by_deadline(settling, intent))  # type: ignore[arg-type]
        assert await again == "settled"


def test_outcome_of_a_stream_payment_marks_joins_and_names_a_cancelled_settlement() -> None:
    """PayStream's answer of a settlement it started without waiting: a joined one is a
    replay; one cancelled (the engine stopped first) is ShuttingDown, which its reply
    names (UNAVAILABLE), not a CancelledError that would leave the payment unanswered."""
    from quickpay_engine.domain import Outcome, PaymentStatus
    from quickpay_engine.errors import ShuttingDown
    from quickpay_engine.settlement.service import outcome_of

    loop = asyncio.new_event_loop()
    try:
        done: asyncio.Future[Outcome] = loop.create_future()
        done.set_result(Outcome("pay_1", "key-1", PaymentStatus.SETTLED))
        assert not outcome_of(done, joined=False).replayed
        assert outcome_of(done, joined=True).replayed
        cancelled: asyncio.Future[Outcome] = loop.create_future()
        cancelled.cancel()
        with pytest.raises(ShuttingDown):
            outcome_of(cancelled, joined=False)
    finally:
        loop.close()
