"""The core's copy of a batch's requests (``_engine.Requests``): every column it cuts is
the one the Python builders build from the same intents, so the saga's stages see the
same payments whichever builds them. Intents come both from the core's decode of real
PayRequest bytes and from Python, with the odd but legal values a client may send."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from quickpay_engine._engine import Requests, Sales
from quickpay_engine.api import convert
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.domain import Method, MethodDetail, MethodKind, PaymentIntent
from quickpay_engine.errors import BatchTooLarge, InvalidBatch
from quickpay_engine.settlement.ledger_book import KINDS_BY_PURPOSE, account_kind
from quickpay_engine.settlement.pipeline import sales_of
from quickpay_engine.settlement.validation import build_validation_columns
from quickpay_engine.store.rows import (
    Decision,
    _intent_columns,
    commit_columns,
    journal_columns,
    journal_columns_of,
)
from test_validate import intent


def python_intent(key: str, **overrides: object) -> PaymentIntent:
    """test_validate's card bill payment, under ``key``."""
    return intent(idempotency_key=key, **overrides)


def decoded_intents() -> list[PaymentIntent]:
    """Real PayRequests of every method, decoded by the core as a PayBatch call is."""
    requests = [
        pb.PayRequest(
            idempotency_key="dec-card", account_id="acc-1", msisdn="+254712345678",
            amount=pb.Money(amount_minor=1_000, currency="KES"), purpose=pb.PREPAID_TOPUP,
            method=pb.PaymentMethod(card=pb.Card(pan="5500000000000004", expiry_month=1,
                                                 expiry_year=2031)),
            channel="USSD", device_id="d", ip="2001:db8::1",
        ),
        pb.PayRequest(
            idempotency_key="dec-wallet", account_id="acc-2", msisdn="+306912345678",
            amount=pb.Money(amount_minor=7, currency="EUR"), purpose=pb.BILL_PAYMENT,
            method=pb.PaymentMethod(wallet=pb.Wallet(provider="mpesa", wallet_id="w-1")),
            channel="app", subscriber_assertion="a.b.c",
        ),
        pb.PayRequest(
            idempotency_key="dec-iban", account_id="acc-3", msisdn="+306912345678",
            amount=pb.Money(amount_minor=99, currency="EUR"), purpose=pb.BILL_PAYMENT,
            method=pb.PaymentMethod(
                bank_account=pb.BankAccount(iban="GR1601101250000000012300695")
            ),
        ),
        pb.PayRequest(
            idempotency_key="dec-balance", account_id="acc-4", msisdn="+306912345678",
            amount=pb.Money(amount_minor=1, currency="EUR"), purpose=pb.PREPAID_TOPUP,
            method=pb.PaymentMethod(carrier_balance=pb.CarrierBalance()),
        ),
        pb.PayRequest(idempotency_key="dec-empty"),  # every field left out
    ]  # fmt: skip
    batch = pb.PayBatchRequest(payments=requests).SerializeToString()
    intents = convert.intents_of_batch(batch, b"k" * 32, 1_000, 12.5, "gw-1")
    assert all(isinstance(i, PaymentIntent) for i in intents)
    return intents  # type: ignore[return-value]


def odd_intents() -> list[PaymentIntent]:
    """Built in Python: text no decode produces (non-ASCII, NUL, a lone surrogate, empty
    and long fields), an unknown purpose number and no deadline."""
    return [
        python_intent("plain"),
        python_intent("ümlaut-κλειδί", channel="κανάλι", device_id=""),
        python_intent("nul\x00inside", ip="\x00"),
        python_intent("surrogate\udc80", account_id="acc-\ud800"),
        python_intent("long", device_id="d" * 300, purpose=7),
        python_intent("wallet", method=Method(MethodKind.WALLET, "wallet x"),
                      detail=MethodDetail(wallet_provider="x", wallet_id="y"), sender="op"),
        python_intent("zero-deadline", deadline=0.0),
        python_intent("deadline", deadline=99.5),
    ]  # fmt: skip


@pytest.mark.parametrize("source", [decoded_intents, odd_intents, lambda: []])
def test_validation_columns_are_the_python_builders(source) -> None:  # type: ignore[no-untyped-def]
    intents = source()
    ours = Requests(intents).validation_columns()
    theirs = build_validation_columns(intents)
    assert ours.keys() == theirs.keys()
    for name, column in theirs.items():
        assert ours[name].dtype == column.dtype, name
        assert ours[name].flags["C_CONTIGUOUS"], name
        np.testing.assert_array_equal(ours[name], column, err_msg=name)


def test_intent_columns_follow_the_rows_given() -> None:
    intents = decoded_intents() + odd_intents()
    requests = Requests(intents)
    assert len(requests) == len(intents)
    rows = [3, 0, 7, 7, 10]
    picked = [intents[r] for r in rows]
    assert requests.intent_columns(rows) == _intent_columns(picked)
    ids = [f"pay_{r}" for r in rows]
    assert journal_columns_of(ids, requests.intent_columns(rows)) == journal_columns(
        list(zip(ids, picked, strict=True))
    )
    decisions = [Decision(p, i, decline_reason="X") for p, i in zip(ids, picked, strict=True)]
    assert commit_columns(decisions, requests.intent_columns(rows)) == commit_columns(decisions)
    assert requests.intent_columns([]) == _intent_columns([])


async def test_sales_are_the_python_builders() -> None:
    intents = decoded_intents() + odd_intents()
    rows = list(range(len(intents)))[::-1]
    decisions = [Decision(f"pay_{r}", intents[r]) for r in rows]
    theirs = sales_of(decisions).columns()
    ours = Requests(intents).sales([d.payment_id for d in decisions], rows, -1.0).columns()
    # A decoded request carries its caller's deadline; one without (None, or 0.0 as the
    # Python builder's `or` reads it) gets the one given (the Python builder's is "now"
    # plus the gateway deadline).
    assert ours[-1] == [intents[r].deadline or -1.0 for r in rows]
    assert sorted(set(ours[-1])) == [-1.0, 12.5, 99.5]
    assert ours[:-1] == theirs[:-1]
    assert all(type(k) is MethodKind for k in ours[3])


async def test_sales_route_split_and_send_by_row() -> None:
    intents = decoded_intents() + odd_intents()
    rows = list(range(len(intents)))
    ids = [f"pay_{r}" for r in rows]
    sales = Requests(intents).sales(ids, rows, 10.0)
    # Grouped by (method, currency) in first-appearance order, every row once.
    routes = sales.routes()
    assert sorted(r for _, _, group in routes for r in group) == rows
    for kind, currency, group in routes:
        assert all((intents[r].method.kind, intents[r].currency) == (kind, currency) for r in group)
    assert [(k, c) for k, c, _ in routes] == list(
        dict.fromkeys((i.method.kind, i.currency) for i in intents)
    )
    # Split by deadline as the router's BUDGET_MIN_S check reads it.
    deadlines = [sales.deadline(r) for r in rows]
    live, late = sales.due(rows, 12.5, 0.005)
    assert late == [r for r in rows if deadlines[r] - 12.5 < 0.005]
    assert live == [r for r in rows if deadlines[r] - 12.5 >= 0.005]
    assert sales.payment_id(3) == "pay_3"
    assert sales.currency(3) == intents[3].currency
    # Currencies compared as Python does, a lone surrogate (a Python-built request) too.
    text = ["E\ud800", "E\ud800", "EUR"]
    odd = Sales(["a", "b", "c"], [1] * 3, text, [1] * 3, *([[""] * 3] + [[0] * 3] * 2),
                *([[""] * 3] * 3), [1.0] * 3)  # fmt: skip
    assert odd.routes() == [(1, "E\ud800", [0, 1]), (1, "EUR", [2])]
    part = sales.slice(2, 5)
    assert part.columns() == [column[2:5] for column in sales.columns()]
    assert len(sales.slice(5, 2)) == 0


def test_holds_carry_each_purpose_account_kind() -> None:
    intents = decoded_intents() + odd_intents()
    rows = list(range(len(intents)))
    accounts, kinds, amounts, currencies = Requests(intents).holds(rows, KINDS_BY_PURPOSE)
    assert accounts == [i.account_id for i in intents]
    assert kinds == [account_kind(i.purpose) for i in intents]  # purpose 7 included
    assert amounts == [i.amount_minor for i in intents]
    assert currencies == [i.currency for i in intents]
    with pytest.raises(ValueError, match="kinds_by_purpose"):
        Requests(intents).holds(rows, [])


def test_a_row_past_the_batch_and_a_batch_past_the_bound_are_refused() -> None:
    requests = Requests(odd_intents())
    with pytest.raises(InvalidBatch, match="rows: 8 is not a row of columns of 8"):
        requests.intent_columns([0, 8])
    with pytest.raises(InvalidBatch):
        requests.sales(["p"], [99], 0.0)
    with pytest.raises(InvalidBatch, match="payment_ids"):
        requests.sales([], [0], 0.0)
    with pytest.raises(InvalidBatch, match="rows: 8 is not a row"):
        requests.sales(["p"] * 8, list(range(8)), 0.0).row(8)
    with pytest.raises(OverflowError):
        requests.holds([-1], KINDS_BY_PURPOSE)
    with pytest.raises(BatchTooLarge):
        Requests([python_intent("k")] * 65_537)


def test_an_intent_missing_a_field_is_refused_naming_it() -> None:
    @dataclasses.dataclass
    class Partial:
        idempotency_key: str = "k"

    with pytest.raises(AttributeError, match="method"):
        Requests([Partial()])
    with pytest.raises(TypeError):
        Requests([python_intent("k", channel=5)])
