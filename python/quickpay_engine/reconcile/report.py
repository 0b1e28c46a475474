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

The parsing itself runs in the engine (engine/src/reconcile, the csv crate) with the
GIL released; this module keeps the mapping file, the Python types and the one error.
"""

from __future__ import annotations

import io
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from quickpay_engine._engine import ReportInvalid, SettlementReport
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


class ReportRows:
    """A parsed report: iterable (and re-iterable) as ReportRow, held by the engine so
    that matching it never builds a Python object per row."""

    __slots__ = ("parsed",)

    def __init__(self, parsed: SettlementReport) -> None:
        self.parsed = parsed

    def __iter__(self) -> Iterator[ReportRow]:
        return (ReportRow(*row) for row in self.parsed.rows())

    def __len__(self) -> int:
        return len(self.parsed)


def read_rows(lines: Iterable[str], mapping: ColumnMapping | None = None) -> ReportRows:
    """Parses a report (in the engine); raises ReportError naming the first bad line."""
    mapping = mapping or ColumnMapping()
    text = _text(lines)
    try:
        parsed = SettlementReport.parse(
            text, [mapping.columns[f] for f in FIELDS], mapping.amount_unit, mapping.values
        )
    except ReportInvalid as err:
        raise ReportError(str(err)) from None
    return ReportRows(parsed)


def _text(lines: Iterable[str]) -> str:
    """The report as one string. Lines given without their ending (a list of rows) get
    one, as the csv module would read them."""
    if isinstance(lines, io.StringIO):
        return lines.read()
    parts: list[str] = []
    try:
        for line in lines:
            parts.append(line if line.endswith(("\n", "\r")) else line + "\n")
    except UnicodeDecodeError as err:
        raise ReportError(f"line {len(parts) + 1}: not UTF-8 ({err.reason})") from None
    return "".join(parts)
