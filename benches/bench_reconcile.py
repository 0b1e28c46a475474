"""Reconciliation throughput: records per second for a clean 100,000-row report, beside
the floor of just reading the same CSV with the csv module (the baseline, same run).

    .venv/bin/python -m pytest benches/bench_reconcile.py --benchmark-only
"""

from __future__ import annotations

import csv
import io
import os
import random
from datetime import UTC, date, datetime

import pytest

from quickpay_engine.domain import BilledCapture
from quickpay_engine.reconcile.matcher import day_bounds_us, reconcile
from quickpay_engine.reconcile.report import read_rows

# Benchmarks double as tests: small by default, full size with QUICKPAY_FULL=1.
RECORDS = 100_000 if os.environ.get("QUICKPAY_FULL") else 5_000
DAY = date(2026, 11, 24)


@pytest.fixture(scope="module")
def report() -> tuple[str, list[BilledCapture]]:
    start_us, end_us = day_bounds_us(DAY)
    rng = random.Random(1)
    billed, lines = (
        [],
        ["gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at"],
    )
    for k in range(RECORDS):
        at_us = start_us + rng.randrange(0, end_us - start_us - 3_600_000_000)
        amount, currency = rng.randint(1, 10**7), rng.choice(["EUR", "KES", "GBP"])
        billed.append(BilledCapture(f"pay_{k}", f"gw-{k}", amount, currency, at_us))
        stamp = datetime.fromtimestamp((at_us + 80_000) / 1e6, UTC).isoformat()
        lines.append(f"gw-{k},pay_{k},{amount},{currency},CAPTURE,SETTLED,{stamp}")
    return "\n".join(lines) + "\n", billed


def test_baseline_csv_read(benchmark, report) -> None:
    text, _ = report
    rows = benchmark(lambda: sum(1 for _ in csv.reader(io.StringIO(text))))
    assert rows == RECORDS + 1
    benchmark.extra_info["records"] = RECORDS


def test_reconcile_clean_report(benchmark, report) -> None:
    text, billed = report
    result = benchmark(lambda: reconcile("acq-a", DAY, read_rows(io.StringIO(text)), billed, 900))
    assert result.matched == RECORDS and not result.discrepancies
    benchmark.extra_info["records"] = RECORDS
