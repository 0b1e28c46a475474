"""Reading a gateway settlement report: CSV through a column mapping, strictly.

The default mapping reads the bundled gateway simulators' export (columns
gateway_reference, merchant_reference, amount_minor, currency, type, status,
captured_at). Another gateway's CSV is read by a mapping file, without code:

    # acquirer-x.toml
    [columns]
    gateway_reference = "PSP Ref"
    merchant_reference = "Merchant Ref"
    amount = "Gross"
    currency = "Ccy"
    type = "Record Type"
    status = "State"
    captured_at = "Booking Date"
    [amounts]
    unit = "major"          # "minor" (integer cents) or "major" ("12.50")
    [values]
    CAPTURE = ["Settled", "Captured"]   # the gateway's words for our values
    REFUND = ["Refunded"]
    VOIDED = ["Cancelled"]
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from quickpay_engine._engine import currency_exponent
from quickpay_engine.errors import QuickpayError

FIELDS = (
    "gateway_reference",
    "merchant_reference",
    "amount",
    "currency",
    "type",
    "status",
    "captured_at",
)
TYPES = ("CAPTURE", "REFUND")
STATUSES = ("SETTLED", "VOIDED")


class ReportError(QuickpayError):
    """A report row cannot be read; the message names its line."""


@dataclass(frozen=True)
class ColumnMapping:
    """Which CSV column holds each field, and how the gateway writes amounts and words."""

    columns: dict[str, str] = field(
        default_factory=lambda: {f: f for f in FIELDS} | {"amount": "amount_minor"}
    )
    amount_unit: str = "minor"
    values: dict[str, str] = field(default_factory=dict)  # the gateway's word -> ours

    @classmethod
    def load(cls, path: Path) -> ColumnMapping:
        """Reads a mapping file (TOML, as in this module's docstring)."""
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ReportError(f"{path}: {err}") from None
        columns = data.get("columns", {})
        missing = [f for f in FIELDS if f not in columns]
        if missing:
            raise ReportError(f"{path}: [columns] must name {', '.join(missing)}")
        unit = data.get("amounts", {}).get("unit", "minor")
        if unit not in ("minor", "major"):
            raise ReportError(f"{path}: amounts.unit must be 'minor' or 'major', not {unit!r}")
        values = {word: ours for ours, words in data.get("values", {}).items() for word in words}
        return cls(columns={f: columns[f] for f in FIELDS}, amount_unit=unit, values=values)


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One line of a settlement report, in our terms."""

    line: int
    gateway_reference: str
    merchant_reference: str
    amount_minor: int
    currency: str
    type: str
    status: str
    captured_at_us: int


def read_rows(lines: Iterable[str], mapping: ColumnMapping | None = None) -> Iterator[ReportRow]:
    """Parses a report; raises ReportError naming the first bad line."""
    mapping = mapping or ColumnMapping()
    reader = csv.reader(lines, strict=True)
    try:
        yield from _rows(reader, mapping)
    except csv.Error as err:
        raise ReportError(f"line {reader.line_num}: malformed CSV ({err})") from None
    except UnicodeDecodeError as err:
        raise ReportError(f"line {reader.line_num}: not UTF-8 ({err.reason})") from None


def _rows(reader: Any, mapping: ColumnMapping) -> Iterator[ReportRow]:
    try:
        header = next(reader)
    except StopIteration:
        raise ReportError("line 1: empty report, expected a header row") from None
    try:
        index = {f: header.index(mapping.columns[f]) for f in FIELDS}
    except ValueError as err:
        raise ReportError(f"line 1: header lacks a column the mapping names ({err})") from None
    words = mapping.values
    major = mapping.amount_unit == "major"
    i_ref, i_merchant, i_amount, i_currency, i_type, i_status, i_time = (index[f] for f in FIELDS)
    width = max(index.values()) + 1
    # The loop is the hot path of a 100,000-row report: plain locals, no per-row dicts.
    for cells in reader:
        if not cells:
            continue
        if len(cells) < width:
            raise ReportError(f"line {reader.line_num}: expected {len(header)} fields")
        kind = cells[i_type].strip()
        kind = words.get(kind, kind)
        status = cells[i_status].strip()
        status = words.get(status, status)
        if kind not in TYPES:
            raise ReportError(
                f"line {reader.line_num}: type {cells[i_type]!r} is not one of {TYPES}"
            )
        if status not in STATUSES and status not in TYPES:
            raise ReportError(
                f"line {reader.line_num}: status {cells[i_status]!r} is not one of {STATUSES}"
            )
        currency = cells[i_currency].strip()
        yield ReportRow(
            reader.line_num,
            cells[i_ref].strip(),
            cells[i_merchant].strip(),
            _amount(cells[i_amount].strip(), currency, major, reader.line_num),
            currency,
            kind,
            "SETTLED" if status in TYPES else status,
            _time(cells[i_time].strip(), reader.line_num),
        )


def _amount(text: str, currency: str, major: bool, line: int) -> int:
    if not major:
        try:
            return int(text)
        except ValueError:
            raise ReportError(
                f"line {line}: amount {text!r} is not a whole number of minor units"
            ) from None
    exponent = currency_exponent(currency)
    if exponent is None:
        raise ReportError(f"line {line}: currency {currency!r} is not ISO 4217")
    try:
        minor = Decimal(text).scaleb(exponent)
        if not minor.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ReportError(f"line {line}: amount {text!r} is not a number") from None
    if minor != minor.to_integral_value():
        raise ReportError(f"line {line}: amount {text!r} has more decimals than {currency}")
    return int(minor)


def _time(text: str, line: int) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ReportError(f"line {line}: captured_at {text!r} must be RFC 3339 with a time zone")
    # Whole seconds are exact in a float; the microseconds are added as an integer.
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond
