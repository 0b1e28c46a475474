"""Reconciliation: every kind of discrepancy found with its category, nothing else flagged,
investigations kept across re-runs, other gateways' CSVs read through a mapping."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import grpc
import pytest

from conftest import SUBSCRIBERS, settings_for
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.domain import BilledCapture, Method, MethodKind, PaymentIntent, Purpose
from quickpay_engine.reconcile.matcher import CATEGORIES, day_bounds_us, reconcile
from quickpay_engine.reconcile.report import ColumnMapping, ReportError, read_rows
from quickpay_engine.settlement.reconciliation import run
from quickpay_engine.store import Decision, SqliteStore

DAY = date(2026, 11, 24)
START_US, END_US = day_bounds_us(DAY)
HOUR_US = 3_600 * 1_000_000
COLUMNS = [
    "gateway_reference",
    "merchant_reference",
    "amount_minor",
    "currency",
    "type",
    "status",
    "captured_at",
]


def rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


def settle_day(store: SqliteStore, n: int) -> list[dict[str, object]]:
    """Settles ``n`` payments through acq-a across DAY; returns the clean report rows."""
    sub = next(s for s in SUBSCRIBERS if s.account_id == "acc-pre")
    rows = []
    for k in range(n):
        at_us = START_US + HOUR_US + k * 60_000_000
        intent = PaymentIntent(
            f"key-{k}",
            "fp",
            sub.account_id,
            sub.msisdn,
            100 + k,
            "KES",
            Purpose.PREPAID_TOPUP,
            Method(MethodKind.CARD, "card"),
            "",
            "",
            "",
        )
        store.commit_batch(
            [Decision(f"pay_{k}", intent, gateway="acq-a", gateway_reference=f"gw-{k}")],
            now_us=at_us,
        )
        rows.append(
            {
                "gateway_reference": f"gw-{k}",
                "merchant_reference": f"pay_{k}",
                "amount_minor": 100 + k,
                "currency": "KES",
                "type": "CAPTURE",
                "status": "SETTLED",
                "captured_at": rfc3339(at_us + 50_000),
            }
        )
    return rows


def to_csv(rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def inject_one_of_each(rows: list[dict[str, object]]) -> dict[str, str]:
    """Corrupts a clean report with one discrepancy of each kind; returns category -> payment."""
    rows[1]["amount_minor"] = int(rows[1]["amount_minor"]) + 7
    rows[2]["currency"] = "USD"
    rows[3]["status"] = "VOIDED"
    rows.append(dict(rows[4]))
    rows[5]["captured_at"] = rfc3339(START_US - 5 * HOUR_US)
    dropped = rows.pop(6)
    rows.append({**rows[0], "gateway_reference": "gw-phantom", "merchant_reference": "pay_phantom"})
    return {
        "AMOUNT_MISMATCH": "pay_1",
        "CURRENCY_MISMATCH": "pay_2",
        "STATUS_MISMATCH": "pay_3",
        "DUPLICATE_AT_GATEWAY": "pay_4",
        "OUTSIDE_WINDOW": "pay_5",
        "MISSING_AT_GATEWAY": str(dropped["merchant_reference"]),
        "MISSING_IN_BILLING": "pay_phantom",
    }


@pytest.fixture
def store(data_dir: Path):
    opened = SqliteStore(settings_for(data_dir).sqlite_path)
    yield opened
    opened.close()


def test_every_injected_discrepancy_is_found_and_nothing_else(store: SqliteStore) -> None:
    rows = settle_day(store, 30)
    expected = inject_one_of_each(rows)
    outcome = run(store, "acq-a", io.StringIO(to_csv(rows)), tolerance_s=900)
    found = {d.category: d.payment_id for d in outcome.result.discrepancies}
    assert found == expected
    assert len(outcome.result.discrepancies) == 7
    assert outcome.result.business_day == DAY
    # Rows 1, 2, 3 and 5 disagree and row 6 is gone; row 4 matches, its copy does not.
    assert outcome.result.matched == 30 - 5
    assert outcome.result.records == 30 - 1 + 2
    assert all(status == ("OPEN", "") for status in outcome.states.values())


def test_rerun_keeps_one_row_each_and_the_investigation(store: SqliteStore) -> None:
    rows = settle_day(store, 12)
    inject_one_of_each(rows)
    first = run(store, "acq-a", io.StringIO(to_csv(rows)))
    target = first.result.discrepancies[0].discrepancy_id
    assert store.set_discrepancy(target, "INVESTIGATING", "called the acquirer")
    again = run(store, "acq-a", io.StringIO(to_csv(rows)))
    assert [d.discrepancy_id for d in again.result.discrepancies] == [
        d.discrepancy_id for d in first.result.discrepancies
    ]
    assert again.states[target] == ("INVESTIGATING", "called the acquirer")
    (count,) = store._db.execute("SELECT count(*) FROM discrepancies").fetchone()
    assert count == 7
    assert not store.set_discrepancy("dsc_none", "RESOLVED", "")


def test_a_capture_near_midnight_may_be_on_the_next_report(store: SqliteStore) -> None:
    sub = next(s for s in SUBSCRIBERS if s.account_id == "acc-pre")
    late_us = END_US - 60_000_000  # 23:59 on DAY: its capture may be reported tomorrow
    intent = PaymentIntent(
        "late",
        "fp",
        sub.account_id,
        sub.msisdn,
        500,
        "KES",
        Purpose.PREPAID_TOPUP,
        Method(MethodKind.CARD, "card"),
        "",
        "",
        "",
    )
    store.commit_batch(
        [Decision("pay_late", intent, gateway="acq-a", gateway_reference="gw-late")], now_us=late_us
    )
    rows = settle_day(store, 3)
    assert (
        run(store, "acq-a", io.StringIO(to_csv(rows)), tolerance_s=900).result.discrepancies == []
    )
    narrow = run(store, "acq-a", io.StringIO(to_csv(rows)), tolerance_s=30)
    assert [(d.category, d.payment_id) for d in narrow.result.discrepancies] == [
        ("MISSING_AT_GATEWAY", "pay_late")
    ]


def test_a_hundred_thousand_clean_records_give_no_discrepancy() -> None:
    rng = random.Random(1)
    billed, rows = [], []
    for k in range(100_000):
        at_us = START_US + rng.randrange(0, END_US - START_US - 3_600_000_000)
        amount, currency = rng.randint(1, 10**7), rng.choice(["EUR", "KES", "GBP"])
        billed.append(BilledCapture(f"pay_{k}", f"gw-{k}", amount, currency, at_us))
        rows.append(f"gw-{k},pay_{k},{amount},{currency},CAPTURE,SETTLED,{rfc3339(at_us + 80_000)}")
    report = read_rows(
        [
            "gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at",
            *rows,
        ]
    )
    result = reconcile("acq-a", DAY, report, billed, 900)
    assert result.records == 100_000
    assert result.matched == 100_000
    assert result.discrepancies == []


def test_another_gateways_csv_through_a_mapping_file(tmp_path: Path) -> None:
    mapping_file = tmp_path / "acquirer-x.toml"
    mapping_file.write_text(
        '[columns]\ngateway_reference = "PSP Ref"\nmerchant_reference = "Merchant Ref"\namount = "Gross"\n'
        'currency = "Ccy"\ntype = "Record Type"\nstatus = "State"\ncaptured_at = "Booking Date"\n'
        '[amounts]\nunit = "major"\n[values]\nCAPTURE = ["Settled"]\nVOIDED = ["Cancelled"]\n'
    )
    mapping = ColumnMapping.load(mapping_file)
    text = "Booking Date,PSP Ref,Merchant Ref,Gross,Ccy,Record Type,State\n2026-11-24T10:00:00+00:00,X1,pay_1,12.50,EUR,Settled,Settled\n2026-11-24T11:00:00Z,X2,pay_2,100,JPY,Settled,Cancelled\n"
    rows = list(read_rows(io.StringIO(text), mapping))
    assert [(r.amount_minor, r.currency, r.type, r.status) for r in rows] == [
        (1250, "EUR", "CAPTURE", "SETTLED"),
        (100, "JPY", "CAPTURE", "VOIDED"),
    ]
    with pytest.raises(
        ReportError, match=re.escape("line 2: amount '1.5' has more decimals than JPY")
    ):
        list(
            read_rows(
                io.StringIO(text.replace("100,JPY", "1.5,JPY").replace("12.50,EUR", "1.5,JPY")),
                mapping,
            )
        )
    (tmp_path / "bad.toml").write_text('[columns]\ngateway_reference = "A"\n')
    with pytest.raises(ReportError, match="must name merchant_reference"):
        ColumnMapping.load(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("gw-1,pay_1,12.50,EUR,CAPTURE,SETTLED,2026-11-24T10:00:00Z", "not a whole number"),
        ("gw-1,pay_1,1250,EUR,CHARGEBACK,SETTLED,2026-11-24T10:00:00Z", "type 'CHARGEBACK'"),
        ("gw-1,pay_1,1250,EUR,CAPTURE,SETTLED,2026-11-24 10:00", "captured_at"),
    ],
)
def test_bad_report_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(ReportError, match=f"line 2: .*{message}"):
        list(read_rows([",".join(COLUMNS), line]))


def test_cli_formats_and_exit_code(data_dir: Path) -> None:
    store = SqliteStore(settings_for(data_dir).sqlite_path)
    rows = settle_day(store, 10)
    store.close()
    clean = data_dir / "clean.csv"
    clean.write_text(to_csv(rows))
    cli = [
        sys.executable,
        "-m",
        "quickpay_engine.cli",
        "reconcile",
        "--data-dir",
        str(data_dir),
        "--gateway",
        "acq-a",
    ]
    done = subprocess.run([*cli, str(clean)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "10 records, 10 matched" in done.stdout
    inject_one_of_each(rows)
    dirty = data_dir / "dirty.csv"
    dirty.write_text(to_csv(rows))
    done = subprocess.run(
        [*cli, str(dirty), "--format", "json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["counts_by_category"] == dict.fromkeys(CATEGORIES, 1)
    done = subprocess.run(
        [*cli, str(dirty), "--format", "csv"], capture_output=True, text=True, timeout=60
    )
    assert len(list(csv.DictReader(io.StringIO(done.stdout)))) == 7


async def test_reconcile_rpc(server, stub) -> None:
    rows = settle_day(server.store, 10)
    inject_one_of_each(rows)
    report = await stub.Reconcile(
        pb.ReconcileRequest(gateway="acq-a", report_csv=to_csv(rows).encode())
    )
    assert report.business_day == DAY.isoformat()
    assert dict(report.counts_by_category) == dict.fromkeys(CATEGORIES, 1)
    mismatch = next(d for d in report.discrepancies if d.category == "AMOUNT_MISMATCH")
    assert mismatch.gateway_amount.amount_minor == mismatch.billing_amount.amount_minor + 7
    assert mismatch.status == "OPEN"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Reconcile(pb.ReconcileRequest(gateway="acq-a", report_csv=b"nonsense\n1,2\n"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Reconcile(
            pb.ReconcileRequest(gateway="acq-a", report_csv=b"x", column_mapping="../etc")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_capture_billed_just_before_midnight_and_never_reported_is_found_next_day(store) -> None:
    sub = next(s for s in SUBSCRIBERS if s.account_id == "acc-pre")
    late_us = START_US - 60_000_000  # 23:59 the day before DAY: tomorrow's report's to show
    intent = PaymentIntent(
        "eve",
        "fp",
        sub.account_id,
        sub.msisdn,
        500,
        "KES",
        Purpose.PREPAID_TOPUP,
        Method(MethodKind.CARD, "card"),
        "",
        "",
        "",
    )
    store.commit_batch(
        [Decision("pay_eve", intent, gateway="acq-a", gateway_reference="gw-eve")], now_us=late_us
    )
    rows = settle_day(store, 3)
    found = run(store, "acq-a", io.StringIO(to_csv(rows)), tolerance_s=900).result.discrepancies
    assert [(d.category, d.payment_id) for d in found] == [("MISSING_AT_GATEWAY", "pay_eve")]


def test_one_payment_captured_twice_under_two_references_is_a_duplicate(store) -> None:
    rows = settle_day(store, 3)
    rows.append({**rows[1], "gateway_reference": "gw-second-capture"})
    found = run(store, "acq-a", io.StringIO(to_csv(rows))).result.discrepancies
    assert [(d.category, d.payment_id, d.gateway_reference) for d in found] == [
        ("DUPLICATE_AT_GATEWAY", "pay_1", "gw-second-capture")
    ]


async def test_unreadable_reports_are_invalid_argument_not_internal(server, stub) -> None:
    for report in [
        b"\xff\xfe not utf-8",
        b"gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at\n",
        b'gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at\n"unterminated,1,2,EUR,CAPTURE,SETTLED,x\n',
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Reconcile(pb.ReconcileRequest(gateway="acq-a", report_csv=report))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, report


_HEADER = b"gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at\n"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        # A capture dated in year 0 or past 9999 (RFC 3339 allows both, a Python date
        # neither): its business day cannot be named, and was INTERNAL.
        ({"report_csv": _HEADER + b"gw-1,pay_1,100,EUR,CAPTURE,SETTLED,0000-06-01T00:00:00Z\n"},
         "captured_at"),
        ({"report_csv": _HEADER + b"gw-1,pay_1,100,EUR,CAPTURE,SETTLED,9999-12-31T23:00:00-23:59\n"},
         "captured_at"),
        ({"cutoff_tolerance_s": 2**32 - 1}, "cutoff_tolerance_s"),
        ({"gateway": "g" * 65}, "gateway"),
        ({"gateway": "acq-a\x00"}, "gateway"),
    ],
)  # fmt: skip
async def test_out_of_range_reconcile_requests_are_invalid_argument(
    server, stub, request_fields, field
) -> None:
    row = b"gw-1,pay_1,100,EUR,CAPTURE,SETTLED,2026-01-02T10:00:00Z\n"
    fields = {"gateway": "acq-a", "report_csv": _HEADER + row, **request_fields}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Reconcile(pb.ReconcileRequest(**fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field in err.value.details(), err.value.details()
