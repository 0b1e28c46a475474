"""Matching a settlement report against billing: every row and every billed capture ends
in exactly one category. Pure: the same inputs give the same report."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

from quickpay_engine._engine import Reconciled, SettlementReport, discrepancy_categories
from quickpay_engine.domain import BilledCapture, Discrepancy
from quickpay_engine.reconcile.report import ReportError, ReportRow, ReportRows

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
EPOCH = date(1970, 1, 1)
# The engine names the same categories in the same order.
assert tuple(discrepancy_categories()) == CATEGORIES, "engine and Python disagree"


class Reconciliation:
    """The outcome of one report. Its discrepancies stay in the engine (``held``): the
    server writes and answers them from there; ``discrepancies`` makes Python objects
    of them only when read (the CLI, tests)."""

    def __init__(self, gateway: str, business_day: date, held: Reconciled) -> None:
        self.gateway = gateway
        self.business_day = business_day
        self.held = held

    @property
    def records(self) -> int:
        return self.held.records

    @property
    def matched(self) -> int:
        return self.held.matched

    @cached_property
    def discrepancies(self) -> list[Discrepancy]:
        return [Discrepancy(*d) for d in self.held.discrepancies()]

    def counts(self) -> dict[str, int]:
        return dict(zip(CATEGORIES, self.held.counts(), strict=True))


def day_bounds_us(day: date) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start_us = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return start_us, start_us + DAY_US


# RFC 3339 dates run from year 0 to 9999 and an offset can push one past either end;
# Python's dates run from year 1 to 9999.
_DAY_OUT_OF_RANGE = (
    "captured_at: the report's business day is outside years 1 to 9999; give business_day"
)


def business_day_of(rows: Iterable[ReportRow]) -> date:
    """The day most of the report's captures fall on (a report covers one business day)."""
    if isinstance(rows, ReportRows):
        day = rows.parsed.business_day()
        if day is None:
            raise ReportError("an empty report has no business day; give it explicitly")
        try:
            return EPOCH + timedelta(days=day)
        except OverflowError:
            raise ReportError(_DAY_OUT_OF_RANGE) from None
    days: dict[date, int] = {}
    for row in rows:
        try:
            day_of = datetime.fromtimestamp(row.captured_at_us / 1_000_000, UTC).date()
        except (OverflowError, ValueError, OSError):
            raise ReportError(_DAY_OUT_OF_RANGE) from None
        days[day_of] = days.get(day_of, 0) + 1
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
    it, is OUTSIDE_WINDOW. The matching runs in the engine (engine/src/reconcile);
    ``rows`` from ``read_rows`` are already there, other rows are copied in.
    """
    if isinstance(rows, ReportRows):
        parsed = rows.parsed
    else:
        parsed = SettlementReport.from_rows(
            [
                (
                    r.line,
                    r.gateway_reference,
                    r.merchant_reference,
                    r.amount_minor,
                    r.currency,
                    r.type,
                    r.status,
                    r.captured_at_us,
                )
                for r in rows
            ]
        )
    start_us, end_us = day_bounds_us(business_day)
    held = parsed.reconcile(
        gateway, business_day.isoformat(), start_us, end_us, tolerance_s, billed
    )
    return Reconciliation(gateway, business_day, held)
