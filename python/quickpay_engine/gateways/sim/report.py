"""The settlement report: one CSV row per capture or refund of a business day.

Columns (they keep their names; the reconciliation reads them):
gateway_reference, merchant_reference, amount_minor, currency, type (CAPTURE | REFUND),
status (SETTLED | VOIDED), captured_at (RFC 3339 UTC).

``inject_discrepancies`` is the hook for reconciliation tests: it corrupts a clean
report with a chosen number of each kind of discrepancy, seeded, and says exactly
what it did, so a test can demand that reconciliation finds those and nothing else.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import random
from typing import Any

COLUMNS = (
    "gateway_reference",
    "merchant_reference",
    "amount_minor",
    "currency",
    "type",
    "status",
    "captured_at",
)

# The kinds a reconciliation must tell apart, each against the billing database:
DISCREPANCY_KINDS = (
    "missing_in_billing",  # a row for a payment billing never saw (a new reference)
    "missing_at_gateway",  # a real row dropped: billing has a payment the report lacks
    "amount_mismatch",  # a real row's amount_minor changed
    "currency_mismatch",  # a real row's currency changed
    "status_mismatch",  # a real SETTLED row reported as VOIDED
    "duplicate",  # a real row reported twice
    "outside_window",  # a real row dated on the previous business day
)


@dataclasses.dataclass(frozen=True, slots=True)
class Injected:
    """One discrepancy put into a report on purpose."""

    kind: str
    merchant_reference: str
    gateway_reference: str


def parse_inject(spec: str) -> dict[str, int]:
    """Parses "amount_mismatch:2,duplicate:1" into counts; unknown kinds are refused."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, n = part.partition(":")
        if kind not in DISCREPANCY_KINDS or not n.isdigit():
            raise ValueError(f"bad discrepancy {part!r}; expected KIND:N with KIND in "
                             f"{', '.join(DISCREPANCY_KINDS)}")  # fmt: skip
        counts[kind] = counts.get(kind, 0) + int(n)
    return counts


def inject_discrepancies(
    rows: list[dict[str, Any]], counts: dict[str, int], seed: int
) -> tuple[list[dict[str, Any]], list[Injected]]:
    """A corrupted copy of ``rows`` and the list of what was done.

    Each kind that alters a real row takes a distinct row, so one row carries at most
    one discrepancy; when the report has too few rows, fewer are injected than asked
    and the returned list says how many.
    """
    rng = random.Random(seed)
    out = [dict(r) for r in rows]
    free = list(range(len(out)))
    rng.shuffle(free)
    injected: list[Injected] = []
    dropped: set[int] = set()
    extra: list[dict[str, Any]] = []
    for kind in DISCREPANCY_KINDS:
        for n in range(counts.get(kind, 0)):
            if kind == "missing_in_billing":
                template = out[0] if out else None
                row = _phantom(template, seed, n)
                extra.append(row)
                injected.append(Injected(kind, row["merchant_reference"],
                                         row["gateway_reference"]))  # fmt: skip
                continue
            if not free:
                break
            i = free.pop()
            row = out[i]
            if kind == "missing_at_gateway":
                dropped.add(i)
            elif kind == "amount_mismatch":
                row["amount_minor"] = int(row["amount_minor"]) + rng.randint(1, 500)
            elif kind == "currency_mismatch":
                row["currency"] = "USD" if row["currency"] != "USD" else "EUR"
            elif kind == "status_mismatch":
                row["status"] = "VOIDED" if row["status"] == "SETTLED" else "SETTLED"
            elif kind == "duplicate":
                extra.append(dict(row))
            elif kind == "outside_window":
                row["captured_at"] = _day_before(row["captured_at"])
            injected.append(Injected(kind, row["merchant_reference"], row["gateway_reference"]))
    kept = [r for i, r in enumerate(out) if i not in dropped]
    return kept + extra, injected


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The report text, header first, rows in the given order."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row[c] for c in COLUMNS})
    return text.getvalue()


def _phantom(template: dict[str, Any] | None, seed: int, n: int) -> dict[str, Any]:
    tag = hashlib.blake2b(f"phantom|{seed}|{n}".encode(), digest_size=16).hexdigest()
    return {
        "gateway_reference": f"PHANTOM-{tag[:10].upper()}",
        "merchant_reference": f"pay_{tag}",
        "amount_minor": 1_000 + n,
        "currency": template["currency"] if template else "EUR",
        "type": "CAPTURE",
        "status": "SETTLED",
        "captured_at": template["captured_at"] if template else "1970-01-01T00:00:00.000000Z",
    }


def _day_before(stamp: str) -> str:
    moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) - dt.timedelta(days=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
