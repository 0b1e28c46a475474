"""Matching a settlement report against billing: every row and every billed capture ends
in exactly one category. Pure: the same inputs give the same report."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from quickpay_engine.domain import BilledCapture, Discrepancy
from quickpay_engine.reconcile.report import ReportError, ReportRow

MATCHED = "MATCHED"
MISSING_IN_BILLING = "MISSING_IN_BILLING"
MISSING_AT_GATEWAY = "MISSING_AT_GATEWAY"
AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
STATUS_MISMATCH = "STATUS_MISMATCH"
DUPLICATE_AT_GATEWAY = "DUPLICATE_AT_GATEWAY"
OUTSIDE_WINDOW = "OUTSIDE_WINDOW"
CATEGORIES = (
    MISSING_IN_BILLING,
    MISSING_AT_GATEWAY,
    AMOUNT_MISMATCH,
    CURRENCY_MISMATCH,
    STATUS_MISMATCH,
    DUPLICATE_AT_GATEWAY,
    OUTSIDE_WINDOW,
)

DAY_US = 86_400 * 1_000_000


@dataclass
class Reconciliation:
    """The outcome of one report."""

    gateway: str
    business_day: date
    records: int = 0
    matched: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {c: 0 for c in CATEGORIES}
        for d in self.discrepancies:
            counts[d.category] += 1
        return counts


def day_bounds_us(day: date) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start_us = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return start_us, start_us + DAY_US


def business_day_of(rows: Sequence[ReportRow]) -> date:
    """The day most of the report's captures fall on (a report covers one business day)."""
    days: dict[date, int] = {}
    for row in rows:
        day = datetime.fromtimestamp(row.captured_at_us / 1_000_000, UTC).date()
        days[day] = days.get(day, 0) + 1
    if not days:
        raise ReportError("an empty report has no business day; give it explicitly")
    return max(days, key=lambda d: (days[d], d))


def reconcile(
    gateway: str,
    business_day: date,
    rows: Iterable[ReportRow],
    billed: Iterable[BilledCapture],
    tolerance_s: int,
) -> Reconciliation:
    """Categorizes every report row and every billed capture of the day.

    A row is matched to billing by gateway reference, else by merchant reference (our
    payment id). A capture billed in the last ``tolerance_s`` of the day may appear on the
    next day's report, so its absence is not a discrepancy; a row dated outside the day
    widened by the tolerance, or more than the tolerance away from when billing settled
    it, is OUTSIDE_WINDOW.
    """
    tolerance_us = tolerance_s * 1_000_000
    start_us, end_us = day_bounds_us(business_day)
    result = Reconciliation(gateway, business_day)
    by_reference = {}
    by_payment = {}
    for capture in billed:
        by_reference[capture.gateway_reference] = capture
        by_payment[capture.payment_id] = capture
    seen: set[str] = set()  # gateway references already reported as captures
    found: set[str] = set()  # payment ids the report accounted for

    def flag(
        category: str, capture: BilledCapture | None, row: ReportRow | None, detail: str
    ) -> None:
        payment_id = capture.payment_id if capture else (row.merchant_reference if row else "")
        reference = row.gateway_reference if row else (capture.gateway_reference if capture else "")
        # A duplicate is one per extra line; everything else is one per payment and reference.
        line = row.line if row and category == DUPLICATE_AT_GATEWAY else 0
        key = f"{gateway}|{business_day}|{category}|{payment_id}|{reference}|{line}"
        result.discrepancies.append(
            Discrepancy(
                discrepancy_id="dsc_" + hashlib.sha256(key.encode()).hexdigest()[:24],
                category=category,
                payment_id=payment_id,
                gateway_reference=reference,
                gateway_amount_minor=row.amount_minor if row else None,
                billing_amount_minor=capture.amount_minor if capture else None,
                currency=(row.currency if row else capture.currency if capture else ""),
                detail=detail,
            )
        )

    for row in rows:
        result.records += 1
        if row.type != "CAPTURE":
            # Refund rows are matched against billing's refunds (the refund issue); they
            # are counted, not judged, here.
            result.matched += 1
            continue
        if row.gateway_reference in seen:
            again = f"gateway reference reported again at line {row.line}"
            flag(DUPLICATE_AT_GATEWAY, by_reference.get(row.gateway_reference), row, again)
            continue
        seen.add(row.gateway_reference)
        capture = by_reference.get(row.gateway_reference) or by_payment.get(row.merchant_reference)
        if capture is not None and capture.payment_id in found:
            # One payment captured again under another reference: a double charge.
            again = f"payment captured again as {row.gateway_reference} at line {row.line}"
            flag(DUPLICATE_AT_GATEWAY, capture, row, again)
            continue
        if capture is None:
            flag(
                MISSING_IN_BILLING,
                None,
                row,
                "the gateway captured a payment billing never settled",
            )
            continue
        found.add(capture.payment_id)
        if row.currency != capture.currency:
            flag(
                CURRENCY_MISMATCH,
                capture,
                row,
                f"gateway {row.currency}, billing {capture.currency}",
            )
        elif row.amount_minor != capture.amount_minor:
            amounts = f"gateway {row.amount_minor}, billing {capture.amount_minor} minor units"
            flag(AMOUNT_MISMATCH, capture, row, amounts)
        elif row.status != "SETTLED" and not capture.refunded:
            flag(STATUS_MISMATCH, capture, row, f"gateway {row.status}, billing SETTLED")
        elif (
            not (start_us - tolerance_us <= row.captured_at_us < end_us + tolerance_us)
            or abs(row.captured_at_us - capture.settled_at_us) > tolerance_us
        ):
            flag(
                OUTSIDE_WINDOW, capture, row, "captured outside the business day and its tolerance"
            )
        else:
            result.matched += 1
    for capture in by_payment.values():
        if capture.payment_id in found:
            continue
        # Billed in the last tolerance of the day before, it was yesterday's run's to
        # skip and is today's to find; billed in today's last tolerance, it is tomorrow's.
        if start_us - tolerance_us <= capture.settled_at_us < end_us - tolerance_us:
            flag(
                MISSING_AT_GATEWAY,
                capture,
                None,
                "billing settled it; the gateway's report lacks it",
            )
    return result
