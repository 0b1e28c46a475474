"""The audit trail's hash chain: each row covers the previous row's hash and a canonical
encoding of its own content, so an altered, inserted or deleted row breaks the chain at
a row that `quickpay audit verify` can name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The hash before the first row.
GENESIS = "0" * 64


def canonical(content: Mapping[str, object]) -> str:
    """One encoding per content: sorted keys, no spaces, ASCII only, integers as they are."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def chain_hash(prev_hash: str, seq: int, encoded: str) -> str:
    """The row's hash: SHA-256 over its sequence number, the previous hash and its content."""
    return hashlib.sha256(f"{seq}|{prev_hash}|{encoded}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    prev_hash: str
    content: str
    row_hash: str


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where the chain first fails and why."""

    seq: int
    problem: str


def verify(rows: Iterable[AuditRow]) -> tuple[int, ChainBreak | None]:
    """Checks rows in sequence order; returns how many were good and the first break."""
    expected_seq = 1
    prev = GENESIS
    good = 0
    for row in rows:
        if row.seq != expected_seq:
            what = "missing" if row.seq > expected_seq else "repeated"
            return good, ChainBreak(expected_seq, f"row {expected_seq} is {what} (found {row.seq})")
        if row.prev_hash != prev:
            return good, ChainBreak(
                row.seq, "does not follow the row before it (a row was inserted or deleted)"
            )
        if chain_hash(row.prev_hash, row.seq, row.content) != row.row_hash:
            return good, ChainBreak(row.seq, "content does not match its hash (altered)")
        prev = row.row_hash
        expected_seq += 1
        good += 1
    return good, None
