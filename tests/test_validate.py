"""The validation bindings from Python: columns, errors, configuration, state.

Rule-by-rule behaviour is tested in Rust (engine/src/validate/); here, what a Python
caller sees: the column contract, typed errors, the reject-code table, configuration,
holds, usage counters and assertions signed by an independent HMAC implementation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json

import numpy as np
import pytest

from quickpay_engine._engine import (
    BATCH_MAX,
    NO_TIME,
    Engine,
    default_engine_config,
    reject_codes,
    sign_assertion,
)
from quickpay_engine.domain import (
    LineStatus,
    Method,
    MethodDetail,
    MethodKind,
    PaymentIntent,
    Plan,
    Purpose,
)
from quickpay_engine.errors import (
    BatchTooLarge,
    ColumnError,
    ConfigInvalid,
    InvalidBatch,
    StateRefused,
)
from quickpay_engine.settlement.validation import (
    build_validation_columns,
    text_column,
    validate_batch,
    validate_one,
)

NOW = 1_795_629_600  # 2026-11-25T18:00:00Z
SECRET = bytes(range(32))
CODES = {name: number for number, name, _, _ in reject_codes()}


def engine(**config: object) -> Engine:
    e = Engine(json.dumps(config))
    e.upsert_subscribers(
        ["acc-post", "acc-pre"],
        ["+306912345678", "+254712345678"],
        np.array([Plan.POSTPAID, Plan.PREPAID], np.uint8),
        np.array([LineStatus.ACTIVE, LineStatus.ACTIVE], np.uint8),
        ["EUR", "KES"],
        np.array([5_000, 10_000], np.int64),
        ["GR", "KE"],
        np.array([NO_TIME, NO_TIME], np.int64),
        np.array([1_600_000_000, 1_600_000_000], np.int64),
    )
    return e


def intent(**overrides: object) -> PaymentIntent:
    """A card bill payment of 25.00 EUR for acc-post that passes every layer."""
    fields: dict[str, object] = {
        "idempotency_key": "k-1",
        "fingerprint": "f",
        "account_id": "acc-post",
        "msisdn": "+306912345678",
        "amount_minor": 2_500,
        "currency": "EUR",
        "purpose": Purpose.BILL_PAYMENT,
        "method": Method(MethodKind.CARD, "card ****1111"),
        "channel": "app",
        "device_id": "dev-1",
        "ip": "192.0.2.1",
        "detail": MethodDetail(card_pan="4111111111111111", card_expiry_month=12,
                               card_expiry_year=2030),
    }  # fmt: skip
    fields.update(overrides)
    return PaymentIntent(**fields)  # type: ignore[arg-type]


def with_detail(**detail: object) -> PaymentIntent:
    base = intent().detail
    return intent(detail=dataclasses.replace(base, **detail))


def test_reject_code_numbers_never_change() -> None:
    # Clients key on these numbers: a renumbering must fail here, loudly.
    pinned = {
        1: "IDEMPOTENCY_KEY_INVALID", 3: "MSISDN_INVALID", 8: "METHOD_MISSING",
        9: "MSISDN_COUNTRY_CODE_UNKNOWN", 14: "CARD_LUHN_FAILED", 20: "IBAN_CHECKSUM_FAILED",
        27: "ASSERTION_MALFORMED", 100: "ACCOUNT_NOT_FOUND", 104: "PURPOSE_NOT_ALLOWED_FOR_PLAN",
        107: "ASSERTION_SIGNATURE_INVALID", 112: "CARD_BIN_BLOCKED", 117: "INSUFFICIENT_CREDIT",
        121: "MONTHLY_AMOUNT_LIMIT",
    }  # fmt: skip
    table = {number: (name, field) for number, name, field, _ in reject_codes()}
    for number, name in pinned.items():
        assert table[number][0] == name
    for number, (name, field) in table.items():
        assert name == name.upper() and " " not in name
        assert (1 <= number <= 99) == bool(field), name


def test_a_good_payment_passes_and_the_single_form_agrees_with_the_batch() -> None:
    e = engine()
    batch = [intent(), intent(amount_minor=0), with_detail(card_pan="4111111111111112")]
    codes = validate_batch(e, batch, NOW).tolist()
    assert codes == [0, CODES["AMOUNT_NOT_POSITIVE"], CODES["CARD_LUHN_FAILED"]]
    assert [validate_one(e, i, NOW) for i in batch] == codes
    assert validate_batch(e, [], NOW).tolist() == []


def test_the_clock_is_the_callers() -> None:
    e = engine()
    card_of_nov_2026 = with_detail(card_expiry_month=11, card_expiry_year=2026)
    assert validate_one(e, card_of_nov_2026, NOW) == 0
    assert validate_one(e, card_of_nov_2026, NOW + 6 * 86_400) == CODES["CARD_EXPIRED"]


def test_text_columns_keep_nul_and_non_ascii_as_failures() -> None:
    e = engine()
    assert validate_one(e, intent(idempotency_key="k\x00"), NOW) == CODES["IDEMPOTENCY_KEY_INVALID"]
    assert (
        validate_one(e, intent(idempotency_key="k\u00e9"), NOW) == CODES["IDEMPOTENCY_KEY_INVALID"]
    )
    column = text_column(["a", "", "abc"])
    assert column.dtype == np.dtype("S3") and column.flags.c_contiguous


def test_wrong_columns_are_typed_errors() -> None:
    e = engine()
    good = build_validation_columns([intent(), intent()])
    bad_columns: list[tuple[str, object, type[Exception]]] = [
        ("account_ids", ["acc-post", "acc-post"], ColumnError),
        ("account_ids", np.array(["acc-post", "acc-post"]), ColumnError),  # dtype <U, not S
        ("account_ids", np.array([b"acc-post"] * 4)[::2], ColumnError),  # strided view
        ("account_ids", np.array([[b"acc-post"], [b"acc-post"]]), ColumnError),  # 2-D
        ("amounts_minor", np.array([2_500, 2_500], np.int32), ColumnError),
        ("amounts_minor", np.array([2_500, 2_500], ">i8"), ColumnError),  # big-endian
        ("card_expiry_months", np.array([12, 12], np.uint8), ColumnError),
        ("msisdns", text_column(["+306912345678"]), InvalidBatch),  # one row short
    ]
    for name, value, error in bad_columns:
        with pytest.raises(error, match=name):
            e.validate(**{**good, name: value}, now_s=NOW)
    assert e.validate(**good, now_s=NOW).tolist() == [0, 0]


def test_batch_bound() -> None:
    e = engine()
    big = build_validation_columns([intent()] * (BATCH_MAX + 1))
    with pytest.raises(BatchTooLarge):
        e.validate(**big, now_s=NOW)


def test_configuration_is_checked_and_defaults_are_documented() -> None:
    defaults = json.loads(default_engine_config())
    assert defaults["daily_count_max"] > 0 and "CARD" in defaults["method_amount_max"]
    assert json.loads(Engine().config_json()) == defaults
    for bad in ('{"daily_count_mx": 1}', '{"blocked_bins": ["12"]}', "not json"):
        with pytest.raises(ConfigInvalid):
            Engine(bad)


def test_configure_swaps_rules_and_keeps_subscribers() -> None:
    e = engine()
    assert validate_one(e, intent(), NOW) == 0
    e.configure(json.dumps({"blocked_bins": ["411111"]}))
    assert validate_one(e, intent(), NOW) == CODES["CARD_BIN_BLOCKED"]
    with pytest.raises(ConfigInvalid):
        e.configure('{"blocked_bins": ["x"]}')
    assert validate_one(e, intent(), NOW) == CODES["CARD_BIN_BLOCKED"], "old rules stay"
    assert e.subscriber_count() == 2


def test_holds_reduce_available_credit_all_or_nothing() -> None:
    e = engine()
    e.set_states(["acc-post"], np.array([-3_000], np.int64), np.array([1], np.uint8))
    carrier = intent(method=Method(MethodKind.CARRIER_BALANCE, "carrier balance"),
                     amount_minor=3_000)  # fmt: skip
    assert validate_one(e, carrier, NOW) == 0
    e.reserve_holds(["acc-post"], np.array([1], np.int64))
    assert e.held_minor("acc-post") == 1
    assert validate_one(e, carrier, NOW) == CODES["INSUFFICIENT_CREDIT"]
    with pytest.raises(StateRefused, match="acc-none"):
        e.reserve_holds(["acc-post", "acc-none"], np.array([5, 5], np.int64))
    with pytest.raises(StateRefused, match="only 1 is held"):
        e.release_holds(["acc-post"], np.array([2], np.int64))
    assert e.held_minor("acc-post") == 1
    e.release_holds(["acc-post"], np.array([1], np.int64))
    assert validate_one(e, carrier, NOW) == 0
    assert e.held_minor("acc-none") is None
    with pytest.raises(StateRefused):
        e.set_states(["acc-none"], np.array([0], np.int64), np.array([1], np.uint8))


def test_record_settled_feeds_the_daily_count() -> None:
    e = engine(daily_count_max=2)
    for _ in range(2):
        assert validate_one(e, intent(), NOW) == 0
        e.record_settled(["acc-post"], np.array([100], np.int64), np.array([NOW], np.int64))
    assert validate_one(e, intent(), NOW) == CODES["DAILY_COUNT_LIMIT"]
    assert validate_one(e, intent(), NOW + 86_400) == 0


def _python_token(key_id: str, secret: bytes, account: str, msisdn: str, exp: int) -> str:
    signed = f"v1.{key_id}.{account}.{msisdn}.{exp}"
    return signed + "." + hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()


def test_assertions_match_an_independent_hmac_and_rotate() -> None:
    old, new = bytes(32), SECRET
    keys = [{"key_id": "2026-10", "secret_hex": old.hex()},
            {"key_id": "2026-11", "secret_hex": new.hex()}]  # fmt: skip
    e = engine(assertion_keys=keys)
    token = _python_token("2026-11", new, "acc-post", "+306912345678", NOW + 60)
    assert token == sign_assertion("2026-11", new, "acc-post", "+306912345678", NOW + 60)
    for t, expected in [
        (token, 0),
        (_python_token("2026-10", old, "acc-post", "+306912345678", NOW + 60), 0),
        (_python_token("2026-11", old, "acc-post", "+306912345678", NOW + 60),
         CODES["ASSERTION_SIGNATURE_INVALID"]),
        (_python_token("2026-09", old, "acc-post", "+306912345678", NOW + 60),
         CODES["ASSERTION_KEY_UNKNOWN"]),
        (_python_token("2026-11", new, "acc-post", "+306912345678", NOW),
         CODES["ASSERTION_EXPIRED"]),
        (_python_token("2026-11", new, "acc-pre", "+254712345678", NOW + 60),
         CODES["ASSERTION_SUBJECT_MISMATCH"]),
        (token[:-1], CODES["ASSERTION_MALFORMED"]),
    ]:  # fmt: skip
        assert validate_one(e, with_detail(subscriber_assertion=t), NOW) == expected, t
    # Rotation: retiring the old key declines its tokens from then on.
    e.configure(json.dumps({"assertion_keys": keys[1:]}))
    old_token = _python_token("2026-10", old, "acc-post", "+306912345678", NOW + 60)
    assert (
        validate_one(e, with_detail(subscriber_assertion=old_token), NOW)
        == CODES["ASSERTION_KEY_UNKNOWN"]
    )


def test_method_detail_never_shows_the_card_number() -> None:
    i = intent()
    assert "4111111111111111" not in repr(i)
    assert "4111111111111111" not in repr(i.detail)
