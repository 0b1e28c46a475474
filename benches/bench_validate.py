"""Validation pipeline: ns per payment, single call and batch of 10,000, against the
same format checks done in Python by python-stdnum and phonenumbers in the same run.

    .venv/bin/python -m pytest benches/bench_validate.py -s -p no:randomly

Batches are realistic: 10,000 subscribers in five countries; card 50%, wallet 35%,
bank account 12%, carrier balance 3% (bill payments only: the default matrix refuses
it for top-ups, which take a bank account instead); one payment in ten carries a
subscriber assertion; nearly all pass, so every layer runs. Timings are reported, never
asserted; the last test prints the ratios.
"""

from __future__ import annotations

import json
import random

import numpy as np
import phonenumbers
import pytest
import stdnum.iban
from stdnum import luhn
from stdnum.es import ccc

from quickpay_engine._engine import NO_TIME, Engine, Requests, sign_assertion
from quickpay_engine.domain import Method, MethodDetail, MethodKind, PaymentIntent, Purpose
from quickpay_engine.settlement.validation import build_validation_columns

BATCH = 10_000
NOW = 1_795_629_600
SECRET = bytes(range(32))
RESULTS_NS: dict[str, tuple[float, float]] = {}  # name -> (min, mean) ns per payment

COUNTRIES = [  # (country, currency, msisdn prefix, digits after prefix)
    ("GR", "EUR", "+3069", 8),
    ("KE", "KES", "+2547", 8),
    ("DE", "EUR", "+4915", 9),
    ("NG", "NGN", "+23480", 8),
    ("US", "USD", "+1202", 7),
]


def _pan(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + luhn.calc_check_digit(body)


def _iban(rng: random.Random) -> str:
    """German (no national check) or Spanish (its DC digits checked too), half each."""
    if rng.random() < 0.5:
        bban = "".join(rng.choice("0123456789") for _ in range(18))
        return "DE" + stdnum.iban.calc_check_digits("DE00" + bban) + bban
    bban = "".join(rng.choice("0123456789") for _ in range(20))
    return ccc.to_iban(bban[:8] + ccc.calc_check_digits(bban) + bban[10:])


def _world(seed: int = 1) -> tuple[Engine, list[PaymentIntent]]:
    rng = random.Random(seed)
    keys = [{"key_id": "k1", "secret_hex": SECRET.hex()}]
    engine = Engine(json.dumps({"assertion_keys": keys, "blocked_bins": ["400000", "51000000"]}))
    subs = []
    for i in range(BATCH):
        country, currency, prefix, digits = COUNTRIES[i % len(COUNTRIES)]
        msisdn = prefix + "".join(rng.choice("0123456789") for _ in range(digits))
        prepaid = i % 2 == 0
        subs.append((f"acc-{i:06d}", msisdn, 1 if prepaid else 2, currency, country,
                     50_000 if prepaid else 100_000))  # fmt: skip
    n = len(subs)
    engine.upsert_subscribers(
        [s[0] for s in subs],
        [s[1] for s in subs],
        np.array([s[2] for s in subs], np.uint8),
        np.ones(n, np.uint8),
        [s[3] for s in subs],
        np.array([s[5] for s in subs], np.int64),
        [s[4] for s in subs],
        np.full(n, NO_TIME, np.int64),
        np.full(n, 1_600_000_000, np.int64),
    )
    intents = []
    for i in range(BATCH):
        account, msisdn, plan, currency, _, _ = subs[rng.randrange(n)]
        purpose = Purpose.PREPAID_TOPUP if plan == 1 else Purpose.BILL_PAYMENT
        roll = rng.random()
        if roll < 0.5:
            pan = _pan(rng, rng.choice(["4", "51", "2221", "37", "6011", "3530"]), 16)
            if pan.startswith("37"):
                pan = _pan(rng, "37", 15)
            kind, detail = MethodKind.CARD, MethodDetail(pan, rng.randint(1, 12), 2028)
        elif roll < 0.85:
            kind = MethodKind.WALLET
            detail = MethodDetail(wallet_provider="mpesa", wallet_id=msisdn[1:])
        elif roll < 0.97 or purpose is Purpose.PREPAID_TOPUP:
            kind, detail = MethodKind.BANK_ACCOUNT, MethodDetail(iban=_iban(rng))
        else:
            kind, detail = MethodKind.CARRIER_BALANCE, MethodDetail()
        if rng.random() < 0.1:
            token = sign_assertion("k1", SECRET, account, msisdn, NOW + 600)
            detail = MethodDetail(**{**_fields(detail), "subscriber_assertion": token})
        intents.append(PaymentIntent(
            idempotency_key=f"idem-{seed}-{i:08d}", fingerprint="", account_id=account,
            msisdn=msisdn, amount_minor=rng.randint(100, 5_000), currency=currency,
            purpose=purpose, method=Method(kind, ""), channel=rng.choice(["app", "ussd", "web"]),
            device_id=f"dev-{rng.randrange(10**9):09d}",
            ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            detail=detail,
        ))  # fmt: skip
    return engine, intents


def _fields(detail: MethodDetail) -> dict[str, object]:
    return {f: getattr(detail, f) for f in MethodDetail.__slots__}


@pytest.fixture(scope="module")
def world() -> tuple[Engine, list[PaymentIntent], dict[str, np.ndarray]]:
    engine, intents = _world()
    return engine, intents, build_validation_columns(intents)


def _record(benchmark, name: str, per: int) -> None:
    if benchmark.disabled:  # a smoke run (--benchmark-disable) measures nothing
        return
    stats = benchmark.stats.stats
    RESULTS_NS[name] = (stats.min * 1e9 / per, stats.mean * 1e9 / per)


def test_engine_batch_10000(benchmark, world) -> None:
    engine, _, columns = world
    codes = benchmark(lambda: engine.validate(**columns, now_s=NOW))
    passed = int((codes == 0).sum())
    assert passed > BATCH * 0.9, np.unique(codes, return_counts=True)  # every layer ran
    _record(benchmark, "engine batch 10,000 (columns prebuilt)", BATCH)


def test_engine_batch_10000_no_assertions(benchmark, world) -> None:
    engine, _, columns = world
    plain = {**columns, "assertions": np.zeros(BATCH, "S1")}
    codes = benchmark(lambda: engine.validate(**plain, now_s=NOW))
    assert int((codes == 0).sum()) > BATCH * 0.9
    _record(benchmark, "engine batch 10,000, no assertions", BATCH)


def test_engine_single(benchmark, world) -> None:
    engine, intents, _ = world
    one = build_validation_columns(intents[:1])
    codes = benchmark(lambda: engine.validate(**one, now_s=NOW))
    assert codes.tolist() == [0]
    _record(benchmark, "engine single payment (columns prebuilt)", 1)


def test_build_columns_10000(benchmark, world) -> None:
    _, intents, _ = world
    benchmark(lambda: build_validation_columns(intents))
    _record(benchmark, "build_validation_columns, 10,000", BATCH)


def test_core_columns_10000(benchmark, world) -> None:
    """The saga's way (issue 15): the core reads the intents once (``Requests``) and
    builds the columns; the same arrays as ``build_validation_columns`` (tests/
    test_requests.py holds them equal)."""
    _, intents, _ = world
    benchmark(lambda: Requests(intents).validation_columns())
    _record(benchmark, "Requests(intents).validation_columns(), 10,000", BATCH)


def test_engine_batch_10000_with_column_building(benchmark, world) -> None:
    engine, intents, _ = world
    benchmark(lambda: engine.validate(**build_validation_columns(intents), now_s=NOW))
    _record(benchmark, "engine batch 10,000 incl. column building", BATCH)


def _python_formats(intents: list[PaymentIntent]) -> int:
    """The format checks of the engine's first layer that the reference libraries
    cover, per payment: MSISDN (phonenumbers parse + possible length), card
    (stdnum Luhn), IBAN (stdnum)."""
    ok = 0
    for i in intents:
        number = phonenumbers.parse(i.msisdn, None)
        good = phonenumbers.is_possible_number(number)
        if i.method.kind is MethodKind.CARD:
            good = good and luhn.is_valid(i.detail.card_pan)
        elif i.method.kind is MethodKind.BANK_ACCOUNT:
            good = good and stdnum.iban.is_valid(i.detail.iban)
        ok += good
    return ok


def test_baseline_python_formats_10000(benchmark, world) -> None:
    _, intents, _ = world
    ok = benchmark.pedantic(lambda: _python_formats(intents), rounds=3, iterations=1)
    assert ok > BATCH * 0.9
    _record(benchmark, "baseline: stdnum + phonenumbers formats, 10,000", BATCH)


def test_report() -> None:
    """Prints ns per payment (min and mean over rounds) and the speed-up over the
    baseline, min against min (not asserted)."""
    base = RESULTS_NS.get("baseline: stdnum + phonenumbers formats, 10,000")
    print("\nns per payment                                             min       mean   speed-up")
    for name, (low, mean) in RESULTS_NS.items():
        ratio = f"{base[0] / low:9.1f}x" if base and low else ""
        print(f"  {name:52s} {low:8.1f} {mean:10.1f} {ratio}")
