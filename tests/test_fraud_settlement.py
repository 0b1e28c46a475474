"""Fraud scoring in the Pay path: every reply carries the assessment; DECLINE declines,
REVIEW declines into the review queue unless stepped up; observe mode only reports."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from conftest import bill, settings_for
from quickpay_engine._engine import Engine, FraudScorer, sign_assertion
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.domain import Method, MethodDetail, MethodKind, PaymentIntent, Purpose
from quickpay_engine.fraud import default_model_json, default_rules
from quickpay_engine.server import create_server
from quickpay_engine.settlement.fraud_gate import FraudGate, card_fingerprint
from quickpay_engine.subscribers import load_rows


def scorer(review: int, decline: int) -> FraudScorer:
    return FraudScorer(
        default_model_json(), default_rules(), review_threshold=review, decline_threshold=decline
    )


async def pay_once(data_dir, request, fraud_mode="enforce", fraud_scorer=None):
    running = await create_server(
        settings_for(data_dir, fraud_mode=fraud_mode), fraud_scorer=fraud_scorer
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            reply = await stub.Pay(request)
            again = await stub.Pay(request)
            stored = await stub.GetPayment(pb.GetPaymentRequest(payment_id=reply.payment_id))
        balance = running.store.subscriber("acc-post-barred").balance_minor
        reviews = running.store._db.execute("SELECT payment_id, score FROM review_queue").fetchall()
    finally:
        await running.stop(grace_s=1)
    return reply, again, stored, balance, reviews


async def test_the_shipped_model_approves_an_ordinary_bill_and_says_so(data_dir) -> None:
    reply, again, stored, balance, reviews = await pay_once(data_dir, bill("f1"))
    assert reply.status == pb.SETTLED
    assert reply.fraud.decision == "APPROVE"
    assert 0 <= reply.fraud.score < 1000
    assert again.replayed and again.fraud == reply.fraud, "a replay carries the assessment"
    assert stored.fraud == reply.fraud
    assert balance == 8_000 - 3_000 and reviews == []


async def test_decline_is_fraud_declined_and_moves_no_money(data_dir) -> None:
    reply, again, stored, balance, reviews = await pay_once(
        data_dir, bill("f2"), fraud_scorer=scorer(0, 0)
    )
    assert reply.status == pb.DECLINED
    assert reply.decline_reason == "FRAUD_DECLINED"
    assert reply.fraud.decision == "DECLINE"
    assert not reply.HasField("confirmation")
    assert again.replayed and again.decline_reason == "FRAUD_DECLINED"
    assert stored.status == pb.DECLINED and stored.fraud.decision == "DECLINE"
    assert balance == 8_000 and reviews == []


async def test_review_is_declined_into_the_review_queue(data_dir) -> None:
    reply, _, _, balance, reviews = await pay_once(
        data_dir, bill("f3"), fraud_scorer=scorer(0, 1000)
    )
    assert reply.status == pb.DECLINED
    assert reply.decline_reason == "FRAUD_REVIEW"
    assert reply.fraud.decision == "REVIEW"
    assert reviews == [(reply.payment_id, reply.fraud.score)]
    assert balance == 8_000


async def test_observe_mode_reports_but_never_declines(data_dir) -> None:
    reply, *_ = await pay_once(
        data_dir, bill("f4"), fraud_mode="observe", fraud_scorer=scorer(0, 0)
    )
    assert reply.status == pb.SETTLED
    assert reply.fraud.decision == "DECLINE"


def intent(key: str, assertion: str = "") -> PaymentIntent:
    return PaymentIntent(
        key, "fp", "acc-post-barred", "+306900000001", 3_000, "EUR", Purpose.BILL_PAYMENT,
        Method(MethodKind.CARD, "card ****4242"), "app", "dev", "192.0.2.1",
        detail=MethodDetail(card_pan="4242424242424242", subscriber_assertion=assertion),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("review", "decline", "assertion", "reason"),
    [
        (0, 1000, "", "FRAUD_REVIEW"),
        (0, 1000, "v1.k1.signed", ""),  # stepped up, score below decline: proceeds
        (0, 0, "v1.k1.signed", "FRAUD_DECLINED"),  # a step-up never overrides a decline
        (1000, 1000, "", ""),
    ],
)
def test_step_up_lets_a_review_through_but_never_a_decline(
    review, decline, assertion, reason
) -> None:
    from conftest import SUBSCRIBERS

    engine = Engine()
    load_rows(engine, SUBSCRIBERS)
    gate = FraudGate(engine.subscriber_profiles, b"k" * 32, scorer(review, decline))
    (verdict,) = gate.score([intent("s1", assertion)], now_s=1_790_000_000)
    assert verdict.decline_reason == reason


def test_card_fingerprints_are_keyed() -> None:
    pan = "4242424242424242"
    assert card_fingerprint(b"a" * 32, pan) != card_fingerprint(b"b" * 32, pan)
    assert card_fingerprint(b"a" * 32, pan) == card_fingerprint(b"a" * 32, pan) != 0
    assert card_fingerprint(b"a" * 32, "") == 0


KEY_ID, SECRET = "k2026", b"s" * 32


def engine_config(tmp_path) -> str:
    path = tmp_path / "engine.json"
    path.write_text(
        json.dumps({"assertion_keys": [{"key_id": KEY_ID, "secret_hex": SECRET.hex()}]})
    )
    return str(path)


async def test_a_signed_assertion_steps_a_review_up_end_to_end(data_dir, tmp_path) -> None:
    settings = dataclasses.replace(
        settings_for(data_dir, fraud_mode="enforce"), engine_config=Path(engine_config(tmp_path))
    )
    running = await create_server(settings, fraud_scorer=scorer(0, 1000))
    token = sign_assertion(KEY_ID, SECRET, "acc-post-barred", "+306900000001", 4_000_000_000)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            plain = await stub.Pay(bill("up-1"))
            stepped = await stub.Pay(bill("up-2", subscriber_assertion=token))
            forged = await stub.Pay(bill("up-3", subscriber_assertion=token[:-1] + "0"))
    finally:
        await running.stop(grace_s=1)
    assert plain.decline_reason == "FRAUD_REVIEW"
    assert stepped.status == pb.SETTLED and stepped.fraud.decision == "REVIEW"
    assert forged.status == pb.DECLINED and forged.decline_reason.startswith("ASSERTION")


def test_a_bad_engine_config_is_a_clear_error(data_dir, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"daily_count_maxx": 1}')
    done = subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", "serve", "--data-dir", str(data_dir),
         "--listen", "127.0.0.1:0", "--engine-config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--engine-config" in done.stderr and "daily_count_maxx" in done.stderr
