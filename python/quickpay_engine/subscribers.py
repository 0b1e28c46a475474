"""Subscribers in: the billing system's CSV export, parsed strictly, and a seeded generator.

The columns keep the names DESIGN.md fixes. A bad row is reported with its line number,
and since parsing finishes before anything is written, nothing from a bad file is
half-loaded.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TextIO

from quickpay_engine._engine import currency_exponent
from quickpay_engine.domain import LineStatus, Plan, SubscriberRow
from quickpay_engine.errors import ImportRowError

COLUMNS = (
    "account_id",
    "msisdn",
    "plan",
    "status",
    "currency",
    "balance_minor",
    "country",
    "sim_swapped_at",
    "created_at",
)

# A file may hold at most this many rows; a larger export is split by the carrier.
# At the bound the import fails before writing anything.
ROWS_MAX = 5_000_000

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def parse_csv(text: TextIO) -> list[SubscriberRow]:
    """Parses a whole export; raises ImportRowError naming the first bad line."""
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRowError(1, "empty file: expected a header row") from None
    except csv.Error as err:
        raise ImportRowError(1, f"malformed CSV: {err}") from None
    header = [name.strip() for name in header]
    if sorted(header) != sorted(COLUMNS):
        missing = sorted(set(COLUMNS) - set(header))
        extra = sorted(set(header) - set(COLUMNS))
        raise ImportRowError(
            1, f"header must name {', '.join(COLUMNS)}; missing {missing}, unknown {extra}"
        )
    rows: list[SubscriberRow] = []
    accounts: set[str] = set()
    msisdns: set[str] = set()
    try:
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            if len(rows) >= ROWS_MAX:
                raise ImportRowError(line, f"more than {ROWS_MAX} rows in one file")
            if len(fields) != len(header):
                raise ImportRowError(line, f"expected {len(header)} fields, found {len(fields)}")
            row = _row(dict(zip(header, fields, strict=True)), line)
            if row.account_id in accounts:
                raise ImportRowError(line, f"account_id {row.account_id!r} appears twice")
            if row.msisdn in msisdns:
                raise ImportRowError(line, f"msisdn {row.msisdn!r} appears twice")
            accounts.add(row.account_id)
            msisdns.add(row.msisdn)
            rows.append(row)
    except csv.Error as err:
        raise ImportRowError(reader.line_num, f"malformed CSV: {err}") from None
    return rows


def _row(f: dict[str, str], line: int) -> SubscriberRow:
    def bad(column: str, why: str) -> ImportRowError:
        return ImportRowError(line, f"{column} {f[column]!r}: {why}")

    if not _ACCOUNT_ID.fullmatch(f["account_id"]):
        raise bad("account_id", "must be 1 to 64 characters of [A-Za-z0-9_-]")
    if not _E164.fullmatch(f["msisdn"]):
        raise bad("msisdn", "must be E.164 ('+' then 8 to 15 digits, no leading zero)")
    try:
        plan = Plan[f["plan"]]
    except KeyError:
        raise bad("plan", "must be PREPAID or POSTPAID") from None
    try:
        status = LineStatus[f["status"]]
    except KeyError:
        raise bad("status", "must be ACTIVE, SUSPENDED, BARRED or CLOSED") from None
    if currency_exponent(f["currency"]) is None:
        raise bad("currency", "must be an ISO 4217 alphabetic code with a minor unit")
    if not _INTEGER.fullmatch(f["balance_minor"]):
        raise bad("balance_minor", "must be a whole number of minor units (no decimal point)")
    if not _COUNTRY.fullmatch(f["country"]):
        raise bad("country", "must be an ISO 3166 alpha-2 code such as GR")
    swapped = _time(f, "sim_swapped_at", line) if f["sim_swapped_at"] else None
    return SubscriberRow(
        account_id=f["account_id"],
        msisdn=f["msisdn"],
        plan=plan,
        status=status,
        currency=f["currency"],
        balance_minor=int(f["balance_minor"]),
        country=f["country"],
        sim_swapped_at_s=swapped,
        created_at_s=_time(f, "created_at", line),
    )


def _time(f: dict[str, str], column: str, line: int) -> int:
    try:
        moment = datetime.fromisoformat(f[column])
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in f[column]:
        raise ImportRowError(line, f"{column} {f[column]!r}: must be RFC 3339 with a time zone")
    return int(moment.timestamp())


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
