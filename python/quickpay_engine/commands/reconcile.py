"""`quickpay reconcile REPORT.csv`: a gateway settlement report against billing."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import date
from pathlib import Path

from quickpay_engine.commands import WRITES, add_command
from quickpay_engine.config import settings_from
from quickpay_engine.reconcile.matcher import CATEGORIES
from quickpay_engine.reconcile.report import ColumnMapping
from quickpay_engine.settlement.reconciliation import DEFAULT_TOLERANCE_S, ReconcileRun, run
from quickpay_engine.storage import open_store

FIELDS = (
    "discrepancy_id",
    "category",
    "payment_id",
    "gateway_reference",
    "gateway_amount_minor",
    "billing_amount_minor",
    "currency",
    "status",
    "note",
    "detail",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "reconcile", "match a gateway settlement report to billing")
    parser.add_argument("report", type=Path, help="the gateway's settlement report (CSV)")
    parser.add_argument("--gateway", required=True, help="the gateway that sent the report")
    parser.add_argument(
        "--business-day", type=date.fromisoformat, help="YYYY-MM-DD (default: inferred)"
    )
    parser.add_argument(
        "--tolerance-s",
        type=int,
        default=DEFAULT_TOLERANCE_S,
        help=f"cut-off tolerance around midnight (default {DEFAULT_TOLERANCE_S})",
    )
    parser.add_argument(
        "--mapping", type=Path, help="column mapping file for another gateway's CSV"
    )
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
    parser.set_defaults(run=run_command, data_dir_access=WRITES)


def run_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    mapping = ColumnMapping.load(args.mapping) if args.mapping else None
    store = open_store(settings)
    try:
        with args.report.open(newline="") as lines:
            outcome = run(store, args.gateway, lines, mapping, args.tolerance_s, args.business_day)
    except OSError as err:
        print(f"quickpay reconcile: {err}", file=sys.stderr)
        return 2
    finally:
        store.close()
    {"table": _table, "json": _json, "csv": _csv}[args.format](outcome)
    open_ones = [
        d for d in outcome.result.discrepancies if outcome.states[d.discrepancy_id][0] != "RESOLVED"
    ]
    return 1 if open_ones else 0


def _rows(outcome: ReconcileRun) -> list[dict[str, object]]:
    rows = []
    for d in outcome.result.discrepancies:
        status, note = outcome.states[d.discrepancy_id]
        rows.append(
            {**{f: getattr(d, f) for f in FIELDS if hasattr(d, f)}, "status": status, "note": note}
        )
    return rows


def _table(outcome: ReconcileRun) -> None:
    r = outcome.result
    print(f"gateway {r.gateway}, business day {r.business_day}:", end=" ")
    print(f"{r.records} records, {r.matched} matched")
    counts = r.counts()
    for category in CATEGORIES:
        print(f"  {category:<22} {counts[category]}")
    for row in _rows(outcome):
        ids = f"{row['payment_id'] or '-':<38} {row['gateway_reference'] or '-':<24}"
        print(f"  {row['category']:<22} {ids} {row['status']:<13} {row['detail']}")


def _json(outcome: ReconcileRun) -> None:
    r = outcome.result
    document = {
        "gateway": r.gateway,
        "business_day": r.business_day.isoformat(),
        "records": r.records,
        "matched": r.matched,
        "counts_by_category": r.counts(),
        "discrepancies": _rows(outcome),
    }
    json.dump(document, sys.stdout, indent=2)
    print()


def _csv(outcome: ReconcileRun) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in _rows(outcome))


# A cell a spreadsheet reads as a formula begins with one of these (OWASP, "CSV
# Injection"); reports carry text a gateway (or whoever wrote its report) chose.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell that would start a formula, prefixed with ' so it stays text (the
    csv module quotes it where needed); numbers and other cells unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
