"""Subscribers in: the billing system's CSV export, parsed strictly, and a seeded generator.

The columns keep the names DESIGN.md fixes. The file is read by the core as a stream
(store/subscriber_file.rs), so an import holds one chunk at a time whatever the file's
size; a bad row is reported with its line number, and since the import is one
transaction, nothing from a bad file is half-loaded.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from quickpay_engine._engine import (
    NO_TIME,
    SUBSCRIBER_COLUMNS,
    SUBSCRIBER_ROWS_MAX,
    Engine,
    SubscriberFile,
    SubscriberFileError,
)
from quickpay_engine.domain import LineStatus, Plan, SubscriberRow
from quickpay_engine.errors import ImportRowError

# One checked row as the core's reader gives it: (line, account_id, msisdn, plan, status,
# currency, balance_minor, country, sim_swapped_at_s or None, created_at_s).
FileRow = tuple[int, str, str, int, int, str, int, str, int | None, int]

# The file's header: the core's list (store/subscriber_file.rs), its one source.
COLUMNS: tuple[str, ...] = SUBSCRIBER_COLUMNS

# A file may hold at most this many rows: the engine's subscriber table holds no more
# (one partition of a carrier's base, 20 million). At the bound the import fails before
# writing anything. Files are read as a stream, so the bound is not about memory.
ROWS_MAX = SUBSCRIBER_ROWS_MAX

# Rows per chunk read from a file where they cross into Python (PostgreSQL, parse_csv).
FILE_CHUNK_ROWS = 50_000


def read_chunks(source: SubscriberFile) -> Iterator[list[FileRow]]:
    """A file's checked rows, chunk by chunk; raises ImportRowError at the first bad
    line, after the chunks before it."""
    while True:
        try:
            chunk = source.read(FILE_CHUNK_ROWS)
        except SubscriberFileError as err:
            line, message = err.args
            raise ImportRowError(line, message) from None
        if not chunk:
            return
        yield chunk


def open_file(path: Path) -> SubscriberFile:
    """Opens a subscriber file and checks its header (ImportRowError, OSError)."""
    try:
        return SubscriberFile.open(str(path))
    except SubscriberFileError as err:
        line, message = err.args
        raise ImportRowError(line, message) from None


def parse_csv(text: TextIO) -> list[SubscriberRow]:
    """Parses a whole export held in memory (tests and small tools: an import streams
    the file instead); raises ImportRowError naming the first bad line. Same reader,
    checks and messages as an import."""
    try:
        source = SubscriberFile.from_bytes(text.read().encode())
    except SubscriberFileError as err:
        line, message = err.args
        raise ImportRowError(line, message) from None
    rows: list[SubscriberRow] = []
    accounts: set[str] = set()
    msisdns: set[str] = set()
    for chunk in read_chunks(source):
        for line, a, m, p, s, c, b, co, sw, cr in chunk:
            if a in accounts:
                raise ImportRowError(line, f"account_id {a!r} appears twice")
            if m in msisdns:
                raise ImportRowError(line, f"msisdn {m!r} appears twice")
            accounts.add(a)
            msisdns.add(m)
            rows.append(SubscriberRow(a, m, Plan(p), LineStatus(s), c, b, co, sw, cr))
    return rows


# Subscribers per chunk where rows cross Python on their way to the engine (the
# PostgreSQL load): memory for one chunk, never the whole base.
LOAD_CHUNK_ROWS = 100_000


def upsert_rows(engine: Engine, rows: Sequence[tuple[Any, ...]]) -> None:
    """Upserts database rows (the store's subscriber columns, in COLUMNS' order) into
    the engine's table as one batch of columns."""
    if not rows:
        return
    a, m, p, s, c, b, co, sw, cr = zip(*rows, strict=True)
    engine.upsert_subscribers(
        list(a),
        list(m),
        np.array(p, np.uint8),
        np.array(s, np.uint8),
        list(c),
        np.array(b, np.int64),
        list(co),
        np.array([NO_TIME if t is None else t for t in sw], np.int64),
        np.array(cr, np.int64),
    )


def load_rows(engine: Engine, rows: Sequence[SubscriberRow]) -> None:
    """Upserts SubscriberRows into the engine's table (tests, benches, small tools)."""
    upsert_rows(
        engine,
        [
            (r.account_id, r.msisdn, int(r.plan), int(r.status), r.currency, r.balance_minor,
             r.country, r.sim_swapped_at_s, r.created_at_s)
            for r in rows
        ],
    )  # fmt: skip


def rfc3339(epoch_s: int) -> str:
    """Unix seconds as RFC 3339 UTC ("2026-11-25T18:00:00Z")."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# (country, calling code, currency, national number digits, typical bill and top-up in
# minor units). Synthetic, but shaped like real markets.
_MARKETS = [
    ("GR", "30", "EUR", 10, 4_500, 1_000),
    ("GB", "44", "GBP", 10, 3_800, 1_000),
    ("KE", "254", "KES", 9, 150_000, 20_000),
    ("NG", "234", "NGN", 10, 800_000, 100_000),
    ("IN", "91", "INR", 10, 50_000, 19_900),
    ("US", "1", "USD", 10, 6_500, 2_000),
]

SEED_NOW_S = 1_790_000_000  # 2026-09-21; seeded files are the same on every machine.


def generate(count: int, seed: int, now_s: int = SEED_NOW_S) -> Iterator[SubscriberRow]:
    """Realistic synthetic subscribers, the same for the same count and seed.

    60% prepaid. Postpaid lines owe about one bill; one in eight is barred or suspended
    for non-payment (owing two to three bills). Prepaid lines hold a little credit; one
    in ten is barred at zero. One in 200 is closed; one in 50 had a SIM swap this month.
    """
    rng = random.Random(seed)
    for n in range(count):
        country, code, currency, digits, bill, topup = rng.choice(_MARKETS)
        # The running number makes every msisdn unique; the leading 7 keeps it mobile-like.
        national = "7" + str(n).zfill(digits - 1)
        plan = Plan.PREPAID if rng.random() < 0.6 else Plan.POSTPAID
        roll = rng.random()
        if roll < 0.005:
            status = LineStatus.CLOSED
        elif plan is Plan.POSTPAID and roll < 0.13:
            status = rng.choice([LineStatus.BARRED, LineStatus.SUSPENDED])
        elif plan is Plan.PREPAID and roll < 0.105:
            status = LineStatus.BARRED
        else:
            status = LineStatus.ACTIVE
        if plan is Plan.POSTPAID:
            bills = (
                rng.uniform(2, 3)
                if status in (LineStatus.BARRED, LineStatus.SUSPENDED)
                else rng.uniform(0, 1.2)
            )
            balance = int(bill * bills)
        else:
            balance = 0 if status is LineStatus.BARRED else int(topup * rng.uniform(0, 3))
        created = now_s - rng.randint(30, 3_650) * 86_400
        swapped = now_s - rng.randint(0, 30 * 86_400) if rng.random() < 0.02 else None
        yield SubscriberRow(
            account_id=f"acc-{seed}-{n:08d}",
            msisdn=f"+{code}{national}",
            plan=plan,
            status=status,
            currency=currency,
            balance_minor=balance,
            country=country,
            sim_swapped_at_s=swapped,
            created_at_s=created,
        )


def write_csv(rows: Iterable[SubscriberRow], out: TextIO) -> int:
    """Writes rows in the import format; returns how many."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for r in rows:
        writer.writerow(
            [
                r.account_id,
                r.msisdn,
                r.plan.name,
                r.status.name,
                r.currency,
                r.balance_minor,
                r.country,
                rfc3339(r.sim_swapped_at_s) if r.sim_swapped_at_s is not None else "",
                rfc3339(r.created_at_s),
            ]
        )
        n += 1
    return n


def to_csv_text(rows: Iterable[SubscriberRow]) -> str:
    """The rows as CSV text (tests and small tools)."""
    buffer = io.StringIO()
    write_csv(rows, buffer)
    return buffer.getvalue()
