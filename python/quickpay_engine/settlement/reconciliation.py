"""Running a reconciliation: read the report, fetch what billing settled, match, persist."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from datetime import date
from functools import cached_property

from quickpay_engine._engine import Reconciled
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
# Discrepancies are written this many per transaction. On SQLite every writer takes the
# file's one write lock, the payment writer's batches too: a run's writes are cut into
# short transactions (a few ms each) with a pause after each, as long as it took, so a
# batch waiting for the lock gets it between two of them (benches/RESULTS.md).
DISCREPANCY_CHUNK = 256
# A chunk that found SQLite's write lock taken for all of the store's busy timeout (the
# payment writer saturated) is tried again this many times: payments go first, and the
# reconciliation is slower rather than failed.
LOCKED_RETRIES = 5
# The pause after a chunk is at most this long (a chunk that waited out a busy timeout
# does not make the next one wait as long).
PAUSE_MAX_S = 0.1


class ReconcileRun:
    """A reconciliation and the investigation state of each discrepancy it found. Both
    stay in the engine (``result.held``), where the store wrote them from and the reply
    is encoded from; ``states`` is built in Python only when read (the CLI)."""

    def __init__(self, result: Reconciliation) -> None:
        self.result = result

    @cached_property
    def states(self) -> dict[str, tuple[str, str]]:
        """discrepancy id -> (status, note)."""
        ids = (d.discrepancy_id for d in self.result.discrepancies)
        return dict(zip(ids, self.result.held.states(), strict=True))


def run(
    store: SqliteStore,
    gateway: str,
    lines: Iterable[str],
    mapping: ColumnMapping | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    business_day: date | None = None,
) -> ReconcileRun:
    """Reconciles one gateway report against the store; synchronous (in the server, on
    the reconciliation's own thread and connection: service.py). The rows, the matching,
    the discrepancies' writes (SQLite) and the reply stay in the engine: no Python object
    per row."""
    rows = read_rows(lines, mapping)  # held in the engine: no Python object per row
    day = business_day or business_day_of(rows)
    start_us, end_us = day_bounds_us(day)
    margin_us = tolerance_s * 1_000_000
    billed = store.billed_captures(gateway, start_us - margin_us, end_us + margin_us)
    result = reconcile(gateway, day, rows, billed, tolerance_s)
    record_in_chunks(store, gateway, day.isoformat(), result.held)
    return ReconcileRun(result)


def record_in_chunks(
    store: SqliteStore, gateway: str, business_day: str, found: Reconciled
) -> None:
    """``store.record_reconciled`` in transactions of at most ``DISCREPANCY_CHUNK``, each
    followed by a pause as long as it took, so another writer waiting for the lock is
    never kept out longer than one chunk. The states read back are kept in ``found``."""
    now_us = time.time_ns() // 1_000
    took_s = 0.0
    for start in range(0, len(found), DISCREPANCY_CHUNK):
        if start:
            time.sleep(min(took_s, PAUSE_MAX_S))
        began = time.perf_counter()
        stop = min(start + DISCREPANCY_CHUNK, len(found))
        _record(store, gateway, business_day, found, start, stop, now_us)
        took_s = time.perf_counter() - began


def _record(
    store: SqliteStore,
    gateway: str,
    business_day: str,
    found: Reconciled,
    start: int,
    stop: int,
    now_us: int,
) -> None:
    for _ in range(LOCKED_RETRIES):
        try:
            store.record_reconciled(found, gateway, business_day, start, stop, now_us)
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err):
                raise
    store.record_reconciled(found, gateway, business_day, start, stop, now_us)
