"""Fraud scoring in the Pay path: every reply carries the assessment; DECLINE declines,
REVIEW declines into the review queue unless stepped up; observe mode only reports."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import bill, settings_for
from quickpay_engine._engine import Engine, FraudScorer, fraud_card_fingerprint, sign_assertion
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.domain import (
    FraudAssessment,
    Method,
    MethodDetail,
    MethodKind,
    PaymentIntent,
    Purpose,
)
from quickpay_engine.fraud import DECISIONS, REASON_CODES, default_model_json, default_rules
from quickpay_engine.server import create_server
from quickpay_engine.settlement.fraud_gate import FraudGate, card_fingerprint
from quickpay_engine.settlement.validation import build_validation_columns
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
    gate = FraudGate(engine, b"k" * 32, scorer(review, decline))
    (verdict,) = gate.score([intent("s1", assertion)], now_s=1_790_000_000)
    assert verdict.decline_reason == reason


def test_card_fingerprints_are_keyed() -> None:
    pan = "4242424242424242"
    assert card_fingerprint(b"a" * 32, pan) != card_fingerprint(b"b" * 32, pan)
    assert card_fingerprint(b"a" * 32, pan) == card_fingerprint(b"a" * 32, pan) != 0
    assert card_fingerprint(b"a" * 32, "") == 0


PANS = [
    "4242424242424242", "5555555555554444", "378282246310005", "6011111111111117",
    "4000056655665556", "3566002020360505", "6759649826438453", "4111111111111111",
    "1234", "",
]  # fmt: skip


@pytest.mark.parametrize("key", [b"k" * 32, b"", b"another key of another length"])
def test_the_cores_card_fingerprint_is_the_python_definition(key) -> None:
    """Fingerprints persist in the fraud state: the core's must equal the definition
    (first 8 bytes of HMAC-SHA256, big-endian; 0 for no card, never 0 for a card)."""
    for pan in PANS:
        assert fraud_card_fingerprint(key, pan) == card_fingerprint(key, pan), pan
    assert fraud_card_fingerprint(key, "") == 0


def card_intent(key: str, pan: str, account: str = "acc-post", **kw) -> PaymentIntent:
    kind = MethodKind.CARD if pan else MethodKind.CARRIER_BALANCE
    return PaymentIntent(
        key, "fp", account, kw.get("msisdn", "+306900000002"), kw.get("amount", 1_000), "EUR",
        Purpose.BILL_PAYMENT, Method(kind, "m"), kw.get("channel", "app"),
        kw.get("device", "dev-1"), kw.get("ip", "192.0.2.1"),
        detail=MethodDetail(card_pan=pan, subscriber_assertion=kw.get("assertion", "")),
    )  # fmt: skip


def python_columns(engine: Engine, key: bytes, intents: list[PaymentIntent]) -> dict:
    """The fraud columns as FraudGate built them in Python before the core did."""
    account_ids = [i.account_id for i in intents]
    plans, countries, swapped, created = engine.subscriber_profiles(account_ids)
    pans = [i.detail.card_pan for i in intents]
    return {
        "account_ids": account_ids,
        "msisdns": [i.msisdn for i in intents],
        "amounts_minor": np.array([i.amount_minor for i in intents], np.int64),
        "purposes": np.array([i.purpose for i in intents], np.uint8),
        "methods": np.array([i.method.kind for i in intents], np.uint8),
        "card_fingerprints": np.array([card_fingerprint(key, p) for p in pans], np.uint64),
        "card_bins": [p[:6] if len(p) >= 12 and p.isdigit() else "" for p in pans],
        "device_ids": [i.device_id for i in intents],
        "ips": [i.ip for i in intents],
        "channels": [i.channel for i in intents],
        "plans": plans,
        "countries": countries,
        "sim_swapped_at_s": swapped,
        "created_at_s": created,
    }


def mixed_intents() -> list[PaymentIntent]:
    return [
        card_intent("m0", "4242424242424242"),
        card_intent("m1", "4242424242424242", device="dev-2", amount=90_000),
        card_intent("m2", "5555555555554444", account="acc-pre", msisdn="+254700000004"),
        card_intent("m3", "", ip="198.51.100.7", channel="web"),
        card_intent("m4", "378282246310005", assertion="v1.k1.signed", amount=250_000),
        card_intent("m5", "4111111111111111", account="acc-post-barred", device=""),
        card_intent("m6", "4242424242424242", device="dev-3", ip="2001:db8::1"),
    ]


def assessments_of(scores, decisions, reasons) -> list[FraudAssessment]:
    """The assessments FraudGate built in Python from the scorer's columns."""
    return [
        FraudAssessment(s, DECISIONS[d], tuple(REASON_CODES[c] for c in r if c))
        for s, d, r in zip(scores.tolist(), decisions.tolist(), reasons.tolist(), strict=True)
    ]


def verdicts_of(intents, verdict_columns, decline) -> list[int]:
    """What FraudGate made of each verdict: 0 proceed, 1 FRAUD_DECLINED, 2 FRAUD_REVIEW
    (a REVIEW proceeds with a subscriber assertion and a score under ``decline``)."""
    scores, decisions, _ = verdict_columns
    return [
        1 if d == 2 else 2 if d == 1 and not (i.detail.subscriber_assertion and s < decline)
        else 0
        for i, s, d in zip(intents, scores.tolist(), decisions.tolist(), strict=True)
    ]  # fmt: skip


@pytest.mark.parametrize(("review", "decline"), [(0, 1000), (0, 0), (300, 600), (1000, 1000)])
def test_the_core_scores_validation_columns_as_the_python_columns_did(review, decline) -> None:
    """The same payments scored from the validation columns (the core building the
    features, fingerprints and profiles) and from the columns Python used to build:
    the same scores, decisions, reasons and verdicts, and the same state afterwards."""
    from conftest import SUBSCRIBERS

    key = b"k" * 32
    engine = Engine()
    load_rows(engine, SUBSCRIBERS)
    intents = mixed_intents()
    now = 1_790_000_000
    old, new = scorer(review, decline), scorer(review, decline)
    gate = FraudGate(engine, key, new)
    rows = np.array([0, 2, 3, 4, 5, 6, 1], np.int64)  # a selection, out of order
    chosen = [intents[r] for r in rows]
    for rounds in range(3):  # the state learns alike: observe, then score again
        columns = python_columns(engine, key, chosen)
        want = old.score(columns, now_s=now)
        batch, *got, verdicts, assessments = new.score_validated(
            engine, build_validation_columns(intents), rows, card_key=key, now_s=now,
            enforce=True, assessment_type=FraudAssessment,
        )  # fmt: skip
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b)
        assert batch.card_fingerprints.tolist() == columns["card_fingerprints"].tolist()
        assert batch.card_bins == columns["card_bins"]
        assert assessments == assessments_of(*want)
        assert verdicts.tolist() == verdicts_of(chosen, want, decline)
        # FraudGate.score, the same path for a list of intents (a second attempt each)
        want = old.score(columns, now_s=now)
        got_verdicts = gate.score(chosen, now)
        assert [v.assessment for v in got_verdicts] == assessments_of(*want)
        assert [v.decline_reason for v in got_verdicts] == [
            ("", "FRAUD_DECLINED", "FRAUD_REVIEW")[v] for v in verdicts_of(chosen, want, decline)
        ]
        outcomes = np.array([1, 2, 1, 1, 2, 1, 1], np.uint8)
        old.observe(columns, outcomes, now_s=now)
        new.observe_batch(batch, outcomes, now_s=now)
        assert old.tracked() == new.tracked()
        now += 60 * (rounds + 1)


def test_shadow_mode_never_declines_in_the_core() -> None:
    from conftest import SUBSCRIBERS

    engine = Engine()
    load_rows(engine, SUBSCRIBERS)
    gate = FraudGate(engine, b"k" * 32, scorer(0, 0), enforce=False)
    verdicts = gate.score(mixed_intents(), 1_790_000_000)
    assert [v.decline_reason for v in verdicts] == [""] * len(verdicts)
    assert {v.assessment.decision for v in verdicts} == {"DECLINE"}


def test_score_validated_refuses_rows_out_of_range() -> None:
    from conftest import SUBSCRIBERS
    from quickpay_engine._engine import InvalidBatch

    engine = Engine()
    load_rows(engine, SUBSCRIBERS)
    columns = build_validation_columns(mixed_intents()[:2])
    for rows in ([2], [-1]):
        with pytest.raises(InvalidBatch, match="rows"):
            scorer(0, 1000).score_validated(
                engine, columns, np.array(rows, np.int64), card_key=b"k", now_s=0,
                enforce=True, assessment_type=FraudAssessment,
            )  # fmt: skip


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
