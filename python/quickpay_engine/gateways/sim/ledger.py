"""The simulator's own ledger: one SQLite file in its data dir, so it survives restarts.

It plays the acquirer's books: payments keyed by the merchant's reference (our payment
id), and one entry per capture or refund, dated by business day, from which the
settlement report is exported. It stores a card as its last four digits and a keyed
fingerprint, never the number (invariant 7).

Durability: WAL journal with synchronous=NORMAL, which survives the simulator's own
crash or kill (the case it models); a power cut may lose the last commits, which an
acquirer stand-in may.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    merchant_reference  TEXT PRIMARY KEY,
    gateway_reference   TEXT NOT NULL UNIQUE,
    state               TEXT NOT NULL,
    amount_minor        INTEGER NOT NULL,
    currency            TEXT NOT NULL,
    captured_minor      INTEGER NOT NULL DEFAULT 0,
    refunded_minor      INTEGER NOT NULL DEFAULT 0,
    decline_reason      TEXT NOT NULL DEFAULT '',
    method_kind         TEXT NOT NULL,
    method_last4        TEXT NOT NULL DEFAULT '',
    method_fingerprint  TEXT NOT NULL DEFAULT '',
    created_at_us       INTEGER NOT NULL,
    captured_at_us      INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS entries (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_reference     TEXT NOT NULL UNIQUE,
    merchant_reference  TEXT NOT NULL REFERENCES payments(merchant_reference),
    type                TEXT NOT NULL CHECK (type IN ('CAPTURE', 'REFUND')),
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('SETTLED', 'VOIDED')),
    at_us               INTEGER NOT NULL,
    business_day        TEXT NOT NULL,
    refund_reference    TEXT UNIQUE
) STRICT;
CREATE INDEX IF NOT EXISTS entries_by_day ON entries (business_day, id);
"""

PAYMENT_COLUMNS = (
    "merchant_reference, gateway_reference, state, amount_minor, currency, captured_minor,"
    " refunded_minor, decline_reason, method_kind, method_last4, method_fingerprint,"
    " created_at_us, captured_at_us"
)


class LedgerError(Exception):
    """A request the books refuse; ``code`` is stable, ``http_status`` its status."""

    def __init__(self, http_status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code


@dataclass(frozen=True, slots=True)
class MethodSummary:
    """What the books keep of a payment method."""

    kind: str
    last4: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class SaleIn:
    """A sale or authorization as the simulator decided it."""

    merchant_reference: str
    amount_minor: int
    currency: str
    method: MethodSummary
    decline: str  # "" approves
    capture: bool  # sale (True) or authorize only (False)


def business_day(at_us: int) -> str:
    """The UTC calendar day of a timestamp, YYYY-MM-DD (the acquirer's cut-off is 00:00Z)."""
    return dt.datetime.fromtimestamp(at_us / 1e6, dt.UTC).date().isoformat()


def rfc3339(at_us: int) -> str:
    """A timestamp as RFC 3339 UTC with microseconds."""
    stamp = dt.datetime.fromtimestamp(at_us // 1_000_000, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{at_us % 1_000_000:06d}Z"


class Ledger:
    """The books of one simulated gateway. Single-threaded: call from one thread."""

    def __init__(self, path: Path, gateway: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._prefix = gateway.upper().replace("-", "")

    def close(self) -> None:
        """Closes the file."""
        self._db.close()

    def get(self, merchant_reference: str) -> dict[str, Any] | None:
        """The payment with this reference, as the API returns it, or None."""
        row = self._db.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_reference = ?",  # noqa: S608
            (merchant_reference,),
        ).fetchone()
        return None if row is None else _payment(row)

    def sale(self, sale: SaleIn, now_us: int) -> tuple[dict[str, Any], bool]:
        """Records a sale or authorization; returns (payment, replayed).

        A reference seen before returns the stored payment unchanged, whatever this
        request says: a repeated sale never captures twice, and a reference voided
        by a technical cancel stays voided.
        """
        existing = self.get(sale.merchant_reference)
        if existing is not None:
            return existing, True
        with self._tx():
            seq = self._next_seq()
            reference = f"{self._prefix}-{seq:010d}"
            declined = bool(sale.decline)
            state = "DECLINED" if declined else ("CAPTURED" if sale.capture else "AUTHORIZED")
            captured = sale.amount_minor if state == "CAPTURED" else 0
            m = sale.method
            self._db.execute(
                f"INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES"  # noqa: S608
                " (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                (
                    sale.merchant_reference, reference, state, sale.amount_minor,
                    sale.currency, captured, sale.decline, m.kind, m.last4, m.fingerprint,
                    now_us, now_us if captured else None,
                ),
            )  # fmt: skip
            if captured:
                self._entry(reference, sale.merchant_reference, "CAPTURE", captured,
                            sale.currency, now_us)  # fmt: skip
        payment = self.get(sale.merchant_reference)
        assert payment is not None
        return payment, False

    def capture(self, merchant_reference: str, amount_minor: int | None, now_us: int) -> dict:
        """Captures an authorization (all of it, or ``amount_minor`` of it)."""
        p = self._require(merchant_reference)
        if p["state"] == "CAPTURED":
            return p  # a repeated capture is answered, not repeated
        if p["state"] != "AUTHORIZED":
            raise LedgerError(409, "NOT_CAPTURABLE", f"payment is {p['state']}")
        amount = p["amount_minor"] if amount_minor is None else amount_minor
        if not 0 < amount <= p["amount_minor"]:
            raise LedgerError(422, "CAPTURE_EXCEEDS_AUTHORIZED", "capture above authorization")
        with self._tx():
            self._db.execute(
                "UPDATE payments SET state = 'CAPTURED', captured_minor = ?, captured_at_us = ?"
                " WHERE merchant_reference = ?",
                (amount, now_us, merchant_reference),
            )
            self._entry(p["gateway_reference"], merchant_reference, "CAPTURE", amount,
                        p["currency"], now_us)  # fmt: skip
        return self._require(merchant_reference)

    def void(self, merchant_reference: str, now_us: int) -> dict[str, Any]:
        """Cancels an authorization or a capture of the same business day.

        An unknown reference is recorded as VOIDED (a technical cancel), so a sale
        that arrives late with it is refused instead of captured: the adapters rely on
        this before failing a payment over to another gateway.
        """
        p = self.get(merchant_reference)
        if p is None:
            with self._tx():
                seq = self._next_seq()
                self._db.execute(
                    f"INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES"  # noqa: S608
                    " (?, ?, 'VOIDED', 0, '', 0, 0, '', '', '', '', ?, NULL)",
                    (merchant_reference, f"{self._prefix}-{seq:010d}", now_us),
                )
            return self._require(merchant_reference)
        if p["state"] in ("VOIDED", "DECLINED"):
            return p
        if p["state"] == "CAPTURED" and (
            p["refunded_minor"] or business_day(p["captured_at_us"]) != business_day(now_us)
        ):
            raise LedgerError(409, "NOT_VOIDABLE", "refunded or settled: refund it instead")
        if p["state"] not in ("AUTHORIZED", "CAPTURED"):
            raise LedgerError(409, "NOT_VOIDABLE", f"payment is {p['state']}")
        with self._tx():
            self._db.execute(
                "UPDATE payments SET state = 'VOIDED' WHERE merchant_reference = ?",
                (merchant_reference,),
            )
            self._db.execute(
                "UPDATE entries SET status = 'VOIDED' WHERE merchant_reference = ?"
                " AND type = 'CAPTURE'",
                (merchant_reference,),
            )
        return self._require(merchant_reference)

    def refund(
        self, merchant_reference: str, refund_reference: str, amount_minor: int,
        currency: str, now_us: int,
    ) -> dict[str, Any]:  # fmt: skip
        """Refunds part or all of a capture; idempotent on ``refund_reference``.

        Refunds in total never pass the captured amount.
        """
        done = self._db.execute(
            "SELECT entry_reference, merchant_reference, amount_minor FROM entries"
            " WHERE refund_reference = ?",
            (refund_reference,),
        ).fetchone()
        if done is not None:
            if done[1] != merchant_reference or done[2] != amount_minor:
                raise LedgerError(409, "REFUND_REFERENCE_REUSED", "refund reference reused")
            return self._refund_reply(done[0], refund_reference, amount_minor, True)
        p = self._require(merchant_reference)
        if p["state"] not in ("CAPTURED", "PARTIALLY_REFUNDED"):
            raise LedgerError(409, "NOT_REFUNDABLE", f"payment is {p['state']}")
        if currency != p["currency"]:
            raise LedgerError(422, "CURRENCY_MISMATCH", "refund currency differs from capture")
        if amount_minor <= 0 or p["refunded_minor"] + amount_minor > p["captured_minor"]:
            raise LedgerError(422, "REFUND_EXCEEDS_CAPTURED", "refunds would pass the capture")
        refunded = p["refunded_minor"] + amount_minor
        state = "REFUNDED" if refunded == p["captured_minor"] else "PARTIALLY_REFUNDED"
        with self._tx():
            self._db.execute(
                "UPDATE payments SET state = ?, refunded_minor = ? WHERE merchant_reference = ?",
                (state, refunded, merchant_reference),
            )
            reference = f"{self._prefix}-R{self._next_seq('entries'):010d}"
            entry = self._entry(reference, merchant_reference, "REFUND", amount_minor,
                                currency, now_us, refund_reference)  # fmt: skip
        return self._refund_reply(entry, refund_reference, amount_minor, False)

    def report_rows(self, day: str) -> list[dict[str, Any]]:
        """The business day's captures and refunds, in booking order."""
        rows = self._db.execute(
            "SELECT entry_reference, merchant_reference, amount_minor, currency, type,"
            " status, at_us FROM entries WHERE business_day = ? ORDER BY id",
            (day,),
        ).fetchall()
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

    def _refund_reply(self, entry: str, refund_reference: str, amount: int, replayed: bool):
        payment = self._db.execute(
            "SELECT merchant_reference FROM entries WHERE entry_reference = ?", (entry,)
        ).fetchone()[0]
        return {
            "refund_reference": refund_reference,
            "gateway_reference": entry,
            "amount_minor": amount,
            "replayed": replayed,
            "payment": self._require(payment),
        }

    def _require(self, merchant_reference: str) -> dict[str, Any]:
        p = self.get(merchant_reference)
        if p is None:
            raise LedgerError(404, "NOT_FOUND", "no payment with this merchant reference")
        return p

    def _entry(
        self, entry_reference: str, merchant_reference: str, kind: str, amount: int,
        currency: str, now_us: int, refund_reference: str | None = None,
    ) -> str:  # fmt: skip
        self._db.execute(
            "INSERT INTO entries (entry_reference, merchant_reference, type, amount_minor,"
            " currency, status, at_us, business_day, refund_reference)"
            " VALUES (?, ?, ?, ?, ?, 'SETTLED', ?, ?, ?)",
            (entry_reference, merchant_reference, kind, amount, currency, now_us,
             business_day(now_us), refund_reference),
        )  # fmt: skip
        return entry_reference

    def _next_seq(self, table: str = "payments") -> int:
        # References come from the table's rowid, so they never repeat and stay
        # stable across restarts; max(rowid) is a b-tree lookup, not a scan.
        (n,) = self._db.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()  # noqa: S608
        return int(n) + 1

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if kind else "COMMIT")


def _payment(row: tuple) -> dict[str, Any]:
    (ref, gref, state, amount, currency, captured, refunded, decline, kind, last4, fp,
     created, captured_at) = row  # fmt: skip
    return {
        "merchant_reference": ref,
        "gateway_reference": gref,
        "state": state,
        "amount_minor": amount,
        "currency": currency,
        "captured_minor": captured,
        "refunded_minor": refunded,
        "decline_reason": decline,
        "method": {"kind": kind, "last4": last4, "fingerprint": fp},
        "created_at": rfc3339(created),
        "captured_at": rfc3339(captured_at) if captured_at is not None else None,
        "captured_at_us": captured_at,
    }
