"""Differential test: the engine's report reader and matcher against the pure-Python
ones they replaced (kept here, condensed, as the reference).

Random reports with every kind of discrepancy, refund rows, a mapping with decimal
amounts and the gateway's own words, and single corrupted cells must give the same
rows, the same error message (line number included) and the same reconciliation: the
same categories in the same order, with the same discrepancy ids and details, since
persisted investigations are keyed by those ids. 300 reports by default
(QUICKPAY_FULL=1: 3,000). One deliberate difference, not generated here: the engine
holds amounts in i64, so an amount beyond it is refused where Python had big ints.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

import pytest

from quickpay_engine._engine import currency_exponent
from quickpay_engine.domain import BilledCapture, Discrepancy
from quickpay_engine.reconcile.matcher import business_day_of, day_bounds_us, reconcile
from quickpay_engine.reconcile.report import (
    FIELDS,
    ColumnMapping,
    ReportError,
    ReportRow,
    read_rows,
)

REPORTS = 3_000 if os.environ.get("QUICKPAY_FULL") else 300
DAY = date(2026, 11, 24)
START_US, END_US = day_bounds_us(DAY)
HOUR_US = 3_600 * 1_000_000
TYPES = ("CAPTURE", "REFUND")
STATUSES = ("SETTLED", "VOIDED")


# -- the reference: the Python reader and matcher as they were ------------------------


def ref_read_rows(lines: list[str], mapping: ColumnMapping) -> list[ReportRow]:
    reader = csv.reader(lines, strict=True)
    try:
        return list(_ref_rows(reader, mapping))
    except csv.Error as err:
        raise ReportError(f"line {reader.line_num}: malformed CSV ({err})") from None


def _ref_rows(reader, mapping):  # type: ignore[no-untyped-def]
    header = next(reader)
    index = {f: header.index(mapping.columns[f]) for f in FIELDS}
    words = mapping.values
    width = max(index.values()) + 1
    for cells in reader:
        if not cells:
            continue
        line = reader.line_num
        if len(cells) < width:
            raise ReportError(f"line {line}: expected {len(header)} fields")
        raw_kind, raw_status = cells[index["type"]], cells[index["status"]]
        kind = words.get(raw_kind.strip(), raw_kind.strip())
        status = words.get(raw_status.strip(), raw_status.strip())
        if kind not in TYPES:
            raise ReportError(f"line {line}: type {raw_kind!r} is not one of {TYPES}")
        if status not in STATUSES and status not in TYPES:
            raise ReportError(f"line {line}: status {raw_status!r} is not one of {STATUSES}")
        currency = cells[index["currency"]].strip()
        amount = _ref_amount(cells[index["amount"]].strip(), currency, mapping, line)
        yield ReportRow(
            line,
            cells[index["gateway_reference"]].strip(),
            cells[index["merchant_reference"]].strip(),
            amount,
            currency,
            kind,
            "SETTLED" if status in TYPES else status,
            _ref_time(cells[index["captured_at"]].strip(), line),
        )


def _ref_amount(text: str, currency: str, mapping: ColumnMapping, line: int) -> int:
    if mapping.amount_unit == "minor":
        try:
            return int(text)
        except ValueError:
            raise ReportError(
                f"line {line}: amount {text!r} is not a whole number of minor units"
            ) from None
    exponent = currency_exponent(currency)
    if exponent is None:
        raise ReportError(f"line {line}: currency {currency!r} is not ISO 4217")
    try:
        minor = Decimal(text).scaleb(exponent)
        if not minor.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ReportError(f"line {line}: amount {text!r} is not a number") from None
    if minor != minor.to_integral_value():
        raise ReportError(f"line {line}: amount {text!r} has more decimals than {currency}")
    return int(minor)


def _ref_time(text: str, line: int) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ReportError(f"line {line}: captured_at {text!r} must be RFC 3339 with a time zone")
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def ref_reconcile(rows, billed, tolerance_s):  # type: ignore[no-untyped-def]
    tol = tolerance_s * 1_000_000
    by_reference = {c.gateway_reference: c for c in billed}
    by_payment = {c.payment_id: c for c in billed}
    seen, found, out = set(), set(), []
    records = matched = 0

    def flag(category, capture, row, detail):  # type: ignore[no-untyped-def]
        payment_id = capture.payment_id if capture else row.merchant_reference
        reference = row.gateway_reference if row else capture.gateway_reference
        line = row.line if row and category == "DUPLICATE_AT_GATEWAY" else 0
        key = f"acq-a|{DAY}|{category}|{payment_id}|{reference}|{line}"
        out.append(
            Discrepancy(
                "dsc_" + hashlib.sha256(key.encode()).hexdigest()[:24],
                category,
                payment_id,
                reference,
                row.amount_minor if row else None,
                capture.amount_minor if capture else None,
                row.currency if row else capture.currency,
                detail,
            )
        )

    for row in rows:
        records += 1
        if row.type != "CAPTURE":
            matched += 1
            continue
        if row.gateway_reference in seen:
            again = f"gateway reference reported again at line {row.line}"
            flag("DUPLICATE_AT_GATEWAY", by_reference.get(row.gateway_reference), row, again)
            continue
        seen.add(row.gateway_reference)
        capture = by_reference.get(row.gateway_reference) or by_payment.get(row.merchant_reference)
        if capture is not None and capture.payment_id in found:
            again = f"payment captured again as {row.gateway_reference} at line {row.line}"
            flag("DUPLICATE_AT_GATEWAY", capture, row, again)
            continue
        if capture is None and row.status == "VOIDED":
            matched += 1  # given back: nothing moved on either side
            continue
        if capture is None:
            flag(
                "MISSING_IN_BILLING",
                None,
                row,
                "the gateway captured a payment billing never settled",
            )
            continue
        found.add(capture.payment_id)
        if row.currency != capture.currency:
            flag(
                "CURRENCY_MISMATCH",
                capture,
                row,
                f"gateway {row.currency}, billing {capture.currency}",
            )
        elif row.amount_minor != capture.amount_minor:
            amounts = f"gateway {row.amount_minor}, billing {capture.amount_minor} minor units"
            flag("AMOUNT_MISMATCH", capture, row, amounts)
        elif row.status != "SETTLED" and not capture.refunded:
            flag("STATUS_MISMATCH", capture, row, f"gateway {row.status}, billing SETTLED")
        elif (
            not (START_US - tol <= row.captured_at_us < END_US + tol)
            or abs(row.captured_at_us - capture.settled_at_us) > tol
        ):
            flag(
                "OUTSIDE_WINDOW",
                capture,
                row,
                "captured outside the business day and its tolerance",
            )
        else:
            matched += 1
    for capture in by_payment.values():
        if (
            capture.payment_id not in found
            and START_US - tol <= capture.settled_at_us < END_US - tol
        ):
            flag(
                "MISSING_AT_GATEWAY",
                capture,
                None,
                "billing settled it; the gateway's report lacks it",
            )
    return records, matched, out


# -- generated reports -----------------------------------------------------------------

ACQUIRER_X = ColumnMapping(
    columns={
        "gateway_reference": "PSP Ref",
        "merchant_reference": "Merchant Ref",
        "amount": "Gross",
        "currency": "Ccy",
        "type": "Record Type",
        "status": "State",
        "captured_at": "Booking Date",
    },
    amount_unit="major",
    values={"Settled": "CAPTURE", "Refunded": "REFUND", "Cancelled": "VOIDED"},
)
CURRENCIES = {"EUR": 2, "KES": 2, "JPY": 0, "KWD": 3}


def stamp(rng: random.Random, us: int) -> str:
    moment = datetime.fromtimestamp(us / 1_000_000, UTC)
    text = moment.isoformat(timespec=rng.choice(["seconds", "milliseconds", "microseconds"]))
    return text.replace("+00:00", "Z") if rng.random() < 0.5 else text


def major(amount_minor: int, currency: str) -> str:
    exponent = CURRENCIES[currency]
    return str(Decimal(amount_minor).scaleb(-exponent)) if exponent else str(amount_minor)


def generate(rng: random.Random, mapping: ColumnMapping) -> tuple[list[str], list[BilledCapture]]:
    """A day's billed captures and the gateway's report of them, with discrepancies."""
    n = rng.randint(0, 40)
    billed = []
    for k in range(n):
        at = START_US + rng.randrange(-2 * HOUR_US, 26 * HOUR_US)
        currency = rng.choice(list(CURRENCIES))
        billed.append(
            BilledCapture(
                f"pay_{k % max(1, n - 2)}",  # now and then a payment billed twice
                f"gw-{k}",
                rng.randint(1, 10**6),
                currency,
                at,
                refunded=rng.random() < 0.1,
            )
        )
    major_amounts = mapping.amount_unit == "major"
    words = {ours: word for word, ours in mapping.values.items()}
    rows = []
    for c in billed:
        if rng.random() < 0.1:
            continue  # missing at the gateway
        amount, currency, at = c.amount_minor, c.currency, c.settled_at_us + rng.randint(0, 10**8)
        roll = rng.random()
        if roll < 0.05:
            amount += rng.randint(1, 99)
        elif roll < 0.1:
            currency = rng.choice(list(CURRENCIES))
        elif roll < 0.15:
            at += rng.choice([-1, 1]) * rng.randint(1, 5) * HOUR_US
        kind = "REFUND" if rng.random() < 0.05 else "CAPTURE"
        status = "VOIDED" if rng.random() < 0.1 else "SETTLED"
        cells = {
            "gateway_reference": c.gateway_reference,
            "merchant_reference": c.payment_id if rng.random() < 0.9 else "",
            "amount": major(amount, currency) if major_amounts else str(amount),
            "currency": currency,
            "type": words.get(kind, kind),
            "status": words.get(status, status),
            "captured_at": stamp(rng, at),
        }
        rows.append(cells)
        if rng.random() < 0.05:
            rows.append(dict(cells))  # reported twice
        if rng.random() < 0.05:
            rows.append({**cells, "gateway_reference": f"{c.gateway_reference}-again"})
    if rng.random() < 0.3:
        rows.append({**(rows[0] if rows else {}), **phantom(rng, major_amounts)})
    rng.shuffle(rows)
    names = list(mapping.columns.values())
    rng.shuffle(names)
    back = {name: field for field, name in mapping.columns.items()}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=rng.choice(["\n", "\r\n"]))
    writer.writerow(names)
    for cells in rows:
        if rng.random() < 0.05:
            writer.writerow([])  # a blank line
        writer.writerow([cells[back[name]] for name in names])
    return out.getvalue().splitlines(keepends=True), billed


def phantom(rng: random.Random, major_amounts: bool) -> dict[str, str]:
    return {
        "gateway_reference": f"gw-phantom-{rng.randrange(1000)}",
        "merchant_reference": "pay_phantom",
        "amount": "1.00" if major_amounts else "100",
        "currency": "EUR",
        "type": "Settled" if major_amounts else "CAPTURE",
        "status": "Settled" if major_amounts else "SETTLED",
        "captured_at": "2026-11-24T12:00:00Z",
    }


CORRUPTIONS = ["", "x", "12,50", "1.005", "1e3", "CHARGEBACK", "2026-11-24 10:00", "Z", "'q'"]


def corrupt(rng: random.Random, lines: list[str]) -> list[str]:
    """One cell of one data row replaced by something likely wrong."""
    if len(lines) < 2:
        return lines
    k = rng.randrange(1, len(lines))
    cells = next(csv.reader([lines[k]]))
    if not cells:
        return lines
    cells[rng.randrange(len(cells))] = rng.choice(CORRUPTIONS)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return [*lines[:k], out.getvalue(), *lines[k + 1 :]]


def outcome(lines: list[str], mapping: ColumnMapping, read, billed, tolerance_s):  # type: ignore[no-untyped-def]
    try:
        rows = list(read(lines, mapping))
    except ReportError as err:
        return ("error", str(err))
    if billed is None:
        return ("rows", rows)
    if read is ref_read_rows:
        return ("matched", ref_reconcile(rows, billed, tolerance_s))
    result = reconcile("acq-a", DAY, read_rows(lines, mapping), billed, tolerance_s)
    return ("matched", (result.records, result.matched, result.discrepancies))


@pytest.mark.parametrize("mapping", [ColumnMapping(), ACQUIRER_X], ids=["default", "acquirer-x"])
def test_the_engine_reads_and_matches_as_the_python_reference_did(
    mapping: ColumnMapping,
) -> None:
    rng = random.Random(20261124)
    compared = {"error": 0, "matched": 0}
    for _ in range(REPORTS):
        lines, billed = generate(rng, mapping)
        tolerance_s = rng.choice([0, 30, 900, 7200])
        if rng.random() < 0.3:
            lines = corrupt(rng, lines)
        ours = outcome(lines, mapping, read_rows, billed, tolerance_s)
        reference = outcome(lines, mapping, ref_read_rows, billed, tolerance_s)
        assert ours == reference, "".join(lines)
        compared[ours[0]] += 1
        if ours[0] == "matched":
            assert list(read_rows(lines, mapping)) == ref_read_rows(lines, mapping)
    # Both branches were exercised, not just one.
    assert compared["error"] > REPORTS // 20 and compared["matched"] > REPORTS // 2, compared


def test_rows_given_as_python_objects_match_as_rows_read_by_the_engine() -> None:
    rng = random.Random(7)
    lines, billed = generate(rng, ColumnMapping())
    while len(lines) < 10:
        lines, billed = generate(rng, ColumnMapping())
    parsed = read_rows(lines)
    as_objects = reconcile("acq-a", DAY, list(parsed), billed, 900)
    held = reconcile("acq-a", DAY, parsed, billed, 900)
    assert (as_objects.records, as_objects.matched, as_objects.discrepancies) == (
        held.records,
        held.matched,
        held.discrepancies,
    )
    assert business_day_of(parsed) == business_day_of(list(parsed))
    with pytest.raises(ReportError, match="empty report has no business day"):
        business_day_of(read_rows(lines[:1]))
