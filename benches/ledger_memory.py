"""Ledger memory per settled payment (two transfers and a settlement state), steady and
at the peak of a snapshot: what the default ledger limits are sized by.

    .venv/bin/python benches/ledger_memory.py 1000000
"""

import asyncio
import gc
import sys
import tempfile
import uuid
from pathlib import Path

from quickpay_engine._engine import Ledger
from quickpay_engine.settlement.ledger_book import KIND_RECEIVABLE, LedgerBook, Movement


def status(field: str) -> int:
    """A byte count from /proc/self/status (VmRSS: resident now, VmHWM: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss():
    return status("VmRSS")


async def main(n):
    d = tempfile.mkdtemp(dir="/tmp")
    book = LedgerBook(Ledger.open(Path(d), payments_max=n + 10, transfers_max=2 * n + 10))
    ids = [f"acc-{i}" for i in range(1000)]
    book.open_accounts(ids, [KIND_RECEIVABLE] * len(ids), ["EUR"] * len(ids))
    gc.collect()
    before = rss()
    chunk = 2000
    for start in range(0, n, chunk):
        moves = [
            Movement("pay_" + uuid.uuid4().hex, ids[(start + k) % 1000], 100, "EUR")
            for k in range(chunk)
        ]
        await book.reserve(moves)
        await book.capture([m.payment_id for m in moves])
        await book.settle([m.payment_id for m in moves])
    gc.collect()
    after = rss()

    def hwm():
        return status("VmHWM")

    peak_before = hwm()
    book.ledger.snapshot()
    print(
        f"snapshot: peak {(hwm() - before) / n:.1f} bytes per payment over the start (peak before it {(peak_before - before) / n:.1f})"
    )
    print(
        f"{n} payments: {(after - before) / n:.1f} bytes each; counts {book.ledger.counts()} usage {book.ledger.usage()}"
    )
    book.close()


asyncio.run(main(int(sys.argv[1])))
