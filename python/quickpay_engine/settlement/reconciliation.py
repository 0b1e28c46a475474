"""Running a reconciliation: read the report, fetch what billing settled, match, persist."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from quickpay_engine.reconcile.matcher import (
    Reconciliation,
    business_day_of,
    day_bounds_us,
    reconcile,
)
from quickpay_engine.reconcile.report import ColumnMapping, read_rows
from quickpay_engine.store import SqliteStore

# A capture this close to midnight may land on the next day's report (seconds).
DEFAULT_TOLERANCE_S = 900


@dataclass
class ReconcileRun:
    """A reconciliation and the investigation state of each discrepancy it found."""

    result: Reconciliation
    states: dict[str, tuple[str, str]]  # discrepancy id -> (status, note)


def run(
    store: SqliteStore,
    gateway: str,
    lines: Iterable[str],
    mapping: ColumnMapping | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    business_day: date | None = None,
) -> ReconcileRun:
    """Reconciles one gateway report against the store; synchronous (the store's thread)."""
    rows = read_rows(lines, mapping)  # held in the engine: no Python object per row
    day = business_day or business_day_of(rows)
    start_us, end_us = day_bounds_us(day)
    margin_us = tolerance_s * 1_000_000
    billed = store.billed_captures(gateway, start_us - margin_us, end_us + margin_us)
    result = reconcile(gateway, day, rows, billed, tolerance_s)
    states = store.record_discrepancies(
        gateway, day.isoformat(), result.discrepancies, time.time_ns() // 1_000
    )
    return ReconcileRun(result, states)
