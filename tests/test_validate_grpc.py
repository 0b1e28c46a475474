"""Through gRPC: one Pay request per reject code gets exactly that code.

Format failures (1..99) come back as INVALID_ARGUMENT naming the field; business
declines (100 and up) as status DECLINED with the code's name as decline_reason.
Configuration-dependent codes (block list, keys, limits) reconfigure the running
engine first, the way an operator rotates keys without a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from conftest import SUBSCRIBERS, _row, bill, card, seed_store, settings_for, topup
from quickpay_engine._engine import reject_codes, sign_assertion
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.domain import LineStatus, Plan
from quickpay_engine.server import RunningServer, create_server

SECRET = bytes(range(32))
KEYS = {"assertion_keys": [{"key_id": "k1", "secret_hex": SECRET.hex()}]}
FIELDS = {name: field for _, name, field, _ in reject_codes()}


def _token(
    account: str = "acc-post-barred",
    msisdn: str = "+306900000001",
    ttl_s: int = 600,
    secret: bytes = SECRET,
) -> str:
    return sign_assertion("k1", secret, account, msisdn, int(time.time()) + ttl_s)


def _method(**kind: object) -> pb.PaymentMethod:
    return pb.PaymentMethod(**kind)  # type: ignore[arg-type]


def _card(pan: str = "4242424242424242", month: int = 12, year: int = 2031) -> pb.PaymentMethod:
    return _method(card=pb.Card(pan=pan, expiry_month=month, expiry_year=year))


def _eur(minor: int) -> pb.Money:
    return pb.Money(amount_minor=minor, currency="EUR")


Build = Callable[[str], pb.PayRequest]

# code name -> (engine configuration, request). Every code but OK appears once.
CASES: dict[str, tuple[dict[str, object], Build]] = {
    "IDEMPOTENCY_KEY_INVALID": ({}, lambda k: bill("tab\tkey")),
    "ACCOUNT_ID_INVALID": ({}, lambda k: bill(k, account_id="acc post")),
    "MSISDN_INVALID": ({}, lambda k: bill(k, msisdn="306900000001")),
    "AMOUNT_NOT_POSITIVE": ({}, lambda k: bill(k, amount=_eur(0))),
    "AMOUNT_TOO_LARGE": ({}, lambda k: bill(k, amount=_eur(10**12 + 1))),
    "CURRENCY_UNKNOWN": ({}, lambda k: bill(k, amount=pb.Money(amount_minor=1, currency="EUX"))),
    "PURPOSE_INVALID": ({}, lambda k: bill(k, purpose=pb.PURPOSE_UNSPECIFIED)),
    "METHOD_MISSING": ({}, lambda k: bill(k, method=pb.PaymentMethod())),
    "MSISDN_COUNTRY_CODE_UNKNOWN": ({}, lambda k: bill(k, msisdn="+2812345678")),
    "MSISDN_LENGTH_INVALID": ({}, lambda k: bill(k, msisdn="+3069000000")),
    "AMOUNT_BELOW_PURPOSE_MIN": (
        {"prepaid_topup_amount_min": {"major": 1}},
        lambda k: topup(k, amount=pb.Money(amount_minor=50, currency="KES"))),
    "AMOUNT_ABOVE_PURPOSE_MAX": (
        {"bill_payment_amount_max": {"major": 50_000}}, lambda k: bill(k, amount=_eur(5_000_001))),
    "CARD_PAN_INVALID": ({}, lambda k: bill(k, method=_card("4242 4242 4242 4242"))),
    "CARD_LUHN_FAILED": ({}, lambda k: bill(k, method=_card("4242424242424241"))),
    "CARD_SCHEME_UNKNOWN": ({}, lambda k: bill(k, method=_card("1000000000000008"))),
    "CARD_LENGTH_INVALID": ({}, lambda k: bill(k, method=_card("41111111111114"))),
    "CARD_EXPIRY_MONTH_INVALID": ({}, lambda k: bill(k, method=_card(month=13))),
    "CARD_EXPIRY_YEAR_INVALID": ({}, lambda k: bill(k, method=_card(year=1999))),
    "IBAN_INVALID": (
        {}, lambda k: bill(k, method=_method(bank_account=pb.BankAccount(iban="GR16 0110")))),
    "IBAN_CHECKSUM_FAILED": ({}, lambda k: bill(k, method=_method(
        bank_account=pb.BankAccount(iban="GR1601101250000000012300696")))),
    "IBAN_COUNTRY_UNKNOWN": ({}, lambda k: bill(k, method=_method(
        bank_account=pb.BankAccount(iban="US64SVBKUS6S3300958879")))),
    # A Spanish account with one digit mistyped; its IBAN check digits made over it.
    "IBAN_NATIONAL_CHECK_FAILED": ({}, lambda k: bill(k, method=_method(
        bank_account=pb.BankAccount(iban="ES2921000418460200051332")))),
    "WALLET_PROVIDER_INVALID": ({}, lambda k: bill(k, method=_method(
        wallet=pb.Wallet(provider="M-Pesa", wallet_id="w1")))),
    "WALLET_ID_INVALID": ({}, lambda k: bill(k, method=_method(
        wallet=pb.Wallet(provider="mpesa", wallet_id="")))),
    "CHANNEL_INVALID": ({}, lambda k: bill(k, channel="app store")),
    "DEVICE_ID_INVALID": ({}, lambda k: bill(k, device_id="dev 1")),
    "IP_INVALID": ({}, lambda k: bill(k, ip="300.1.1.1")),
    "ASSERTION_MALFORMED": ({}, lambda k: bill(k, subscriber_assertion="v1.k1")),
    "ACCOUNT_NOT_FOUND": ({}, lambda k: bill(k, account_id="acc-nobody")),
    "MSISDN_MISMATCH": ({}, lambda k: bill(k, msisdn="+306900000002")),
    "ACCOUNT_CLOSED": ({}, lambda k: bill(
        k, account_id="acc-closed", msisdn="+306900000005", purpose=pb.PREPAID_TOPUP)),
    "CURRENCY_MISMATCH": ({}, lambda k: bill(k, amount=pb.Money(amount_minor=1, currency="USD"))),
    "PURPOSE_NOT_ALLOWED_FOR_PLAN": ({}, lambda k: bill(k, purpose=pb.PREPAID_TOPUP)),
    "ACCOUNT_STATUS_FORBIDS_PURPOSE": (
        {}, lambda k: topup(k, account_id="acc-pre-suspended", msisdn="+254700000009")),
    "ASSERTION_KEY_UNKNOWN": ({}, lambda k: bill(k, subscriber_assertion=_token())),
    "ASSERTION_SIGNATURE_INVALID": (
        KEYS, lambda k: bill(k, subscriber_assertion=_token(secret=bytes(32)))),
    "ASSERTION_EXPIRED": (KEYS, lambda k: bill(k, subscriber_assertion=_token(ttl_s=-1))),
    "ASSERTION_SUBJECT_MISMATCH": (
        KEYS, lambda k: bill(k, subscriber_assertion=_token("acc-post", "+306900000002"))),
    "METHOD_NOT_ALLOWED": ({}, lambda k: topup(
        k, method=_method(carrier_balance=pb.CarrierBalance()))),
    "CARD_EXPIRED": ({}, lambda k: bill(k, method=_card(month=1, year=2020))),
    "CARD_BIN_BLOCKED": ({"blocked_bins": ["424242"]}, lambda k: bill(k)),
    "WALLET_PROVIDER_UNKNOWN": ({}, lambda k: bill(k, method=_method(
        wallet=pb.Wallet(provider="venmo", wallet_id="w1")))),
    "METHOD_AMOUNT_LIMIT_EXCEEDED": (
        {"method_amount_max": {"CARD": {"major": 10}}}, lambda k: bill(k)),
    "TOPUP_ABOVE_PLAN_MAXIMUM": (
        {"prepaid_balance_max": {"major": 100}},
        lambda k: topup(k, account_id="acc-pre", msisdn="+254700000004")),
    "BILL_OVERPAYMENT": ({}, lambda k: bill(k, amount=_eur(8_000 + 10_001))),
    "INSUFFICIENT_CREDIT": ({}, lambda k: bill(
        k, method=_method(carrier_balance=pb.CarrierBalance()))),
    "DAILY_COUNT_LIMIT": ({"daily_count_max": 0}, lambda k: bill(k)),
    "DAILY_AMOUNT_LIMIT": ({"daily_amount_max": {"major": 0}}, lambda k: bill(k)),
    "MONTHLY_COUNT_LIMIT": ({"monthly_count_max": 0}, lambda k: bill(k)),
    "MONTHLY_AMOUNT_LIMIT": ({"monthly_amount_max": {"major": 0}}, lambda k: bill(k)),
}  # fmt: skip

# A suspended prepaid line beside the shared fixture's subscribers.
ROWS = [
    *SUBSCRIBERS,
    _row("acc-pre-suspended", "+254700000009", Plan.PREPAID, LineStatus.SUSPENDED, "KES",
         1_000, "KE"),
]  # fmt: skip


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, pb_grpc.SettlementStub]]:
    seed_store(tmp_path, ROWS)
    running = await create_server(settings_for(tmp_path))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, pb_grpc.SettlementStub(channel)
    finally:
        await running.stop(grace_s=1)


def test_every_reject_code_has_a_case() -> None:
    names = {name for _, name, _, _ in reject_codes()} - {"OK"}
    assert names == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_one_request_per_reject_code(served, name: str) -> None:
    server, stub = served
    config, build = CASES[name]
    server.service.engine.configure(json.dumps(config))
    request = build(f"case-{name.lower()}")
    field = FIELDS[name]
    if field:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Pay(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(field + ":"), err.value.details()
    else:
        reply = await stub.Pay(request)
        assert reply.status == pb.DECLINED, reply
        assert reply.decline_reason == name
        assert reply.decline_detail


async def test_the_good_request_beside_the_cases_settles(served) -> None:
    server, stub = served
    server.service.engine.configure(json.dumps(KEYS))
    reply = await stub.Pay(bill("good-1", method=card(), subscriber_assertion=_token()))
    assert reply.status == pb.SETTLED, reply
