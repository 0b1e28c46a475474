"""Python's read of a simulator's books: the rows of a business day's settlement report.

The books are one SQLite file per simulated gateway, DATA_DIR/gateways/NAME/
ledger.sqlite3, written by the simulator's server in Rust (engine/src/python/sim/
books.rs holds the schema, the rules and how it commits). Python only reads them: the
settlement report (served, or exported offline by `quickpay gateway-sim
--export-report`) and `quickpay verify`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

LEDGER_FILE = "ledger.sqlite3"


def business_day(at_us: int) -> str:
    """The UTC calendar day of a timestamp, YYYY-MM-DD (the acquirer's cut-off is 00:00Z)."""
    return dt.datetime.fromtimestamp(at_us // 1_000_000, dt.UTC).date().isoformat()


def rfc3339(at_us: int) -> str:
    """A timestamp as RFC 3339 UTC with microseconds."""
    stamp = dt.datetime.fromtimestamp(at_us // 1_000_000, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{at_us % 1_000_000:06d}Z"


def report_rows(books: Path, day: str) -> list[dict[str, Any]]:
    """The business day's captures and refunds, in booking order."""
    db = sqlite3.connect(books)
    try:
        rows = db.execute(
            "SELECT entry_reference, merchant_reference, amount_minor, currency, type,"
            " status, at_us FROM entries WHERE business_day = ? ORDER BY id",
            (day,),
        ).fetchall()
    finally:
        db.close()
    return [
        {
            "gateway_reference": r[0],
            "merchant_reference": r[1],
            "amount_minor": r[2],
            "currency": r[3],
            "type": r[4],
            "status": r[5],
            "captured_at": rfc3339(r[6]),
        }
        for r in rows
    ]
