"""The audit trail's hash chain: each row covers the previous row's hash and a canonical
encoding of its own content, so an altered, inserted or deleted row breaks the chain at
a row that `quickpay audit verify` can name.

The chain is keyed: a row's hash is HMAC-SHA256 under the installation's audit key
(``audit.key`` in the data dir, 32 random bytes made at first start, 0600), so whoever
can write the database but not read that file cannot re-hash the rows after one they
altered. A trail begun with a key is keyed from row 1. A trail begun before the key
existed hashes with plain SHA-256 up to a marker row (``audit.keyed``, naming the key),
written by the first commit after the upgrade; every row from the marker on is keyed.
The marker's own hash covers the plain rows before it, so they cannot be rewritten
either once it is written.

What a key cannot show is a trail cut short: the rows that remain still verify. So the
head (last row) is anchored in the ledger's write-ahead log after each commit, and
verification checks that the trail still reaches that row with that hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from quickpay_engine.errors import ConfigError
from quickpay_engine.keyfile import secret_key

# The hash before the first row.
GENESIS = "0" * 64

# The key's file in the data dir.
KEY_FILE = "audit.key"

# The marker row's kind: from this row on, rows are keyed.
KEYED = "audit.keyed"
ALGORITHM = "hmac-sha256"


def audit_key(data_dir: Path) -> bytes:
    """The installation's audit key, made on first use (32 bytes, 0600). Whether a
    missing key may be made depends on the trail (``keyed``): see storage.open_store."""
    return secret_key(data_dir / KEY_FILE)


class AuditKeyMissing(ConfigError):
    """The audit key's file is missing while the trail has rows keyed with it."""


def keyed(tail: AuditRow | None) -> bool:
    """Whether the trail ending in ``tail`` holds keyed rows, told from its last row
    alone: once a trail is keyed every later row is, so a trail whose last row is plain
    SHA-256 (written before the key existed) or an empty one has none, and a key made
    for it loses nothing."""
    return tail is not None and plain_hash(tail.prev_hash, tail.seq, tail.content) != tail.row_hash


def lost_key(path: Path, tail: AuditRow, *, checking: bool) -> AuditKeyMissing:
    """The error of a missing key file while the trail ending in ``tail`` is keyed: for
    a check (``checking``), which cannot verify the trail without it; for a writer,
    which must not start the chain again under a new key unless the operator says so."""
    what = f"{path} is missing: the audit trail ({tail.seq} rows) is keyed with it"
    if checking:
        return AuditKeyMissing(
            f"{what}, so the trail cannot be verified without it; restore it from its"
            " backup (nothing was created)"
        )
    return AuditKeyMissing(
        f"{what}, and a new key would break the chain (no row written under the lost key"
        " would verify again); restore it from its backup, or, if it is lost for good,"
        " run `quickpay audit new-key` to go on under a new key"
    )


class AuditKeyMismatch(ConfigError):
    """The audit key's file does not verify the trail's last keyed row."""


def wrong_key(path: Path, tail: AuditRow | None, key: bytes) -> AuditKeyMismatch | None:
    """The error of a key file that is not the trail's (None when it is, or when the
    trail has no keyed row to tell by): a writer must not go on under it, since its
    first commit would start the chain again after a marker, and none of the rows
    before would verify under the key the operator keeps (a key restored from another
    installation's backup, say)."""
    if tail is None or not keyed(tail):
        return None
    if chain_hash(key, tail.prev_hash, tail.seq, tail.content) == tail.row_hash:
        return None
    return AuditKeyMismatch(
        f"{path} does not verify the audit trail's last row ({tail.seq}): it is not the"
        f" key the trail was written with (this one is {key_id(key)}), or that row was"
        " altered; restore the trail's own key from its backup (`quickpay audit verify`"
        " names the first row that fails), or, if that key is lost for good, move this"
        " file aside and run `quickpay audit new-key`; nothing was written"
    )


# The row `quickpay audit new-key` writes after the new key's marker: which rows the
# lost key leaves unverifiable.
NEW_KEY = "audit.new_key"


def canonical(content: Mapping[str, object]) -> str:
    """One encoding per content: sorted keys, no spaces, ASCII only, integers as they are."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def plain_hash(prev_hash: str, seq: int, encoded: str) -> str:
    """A row's hash before the chain was keyed: SHA-256 over its sequence number, the
    previous hash and its content. Verification only: nothing is written with it."""
    return hashlib.sha256(f"{seq}|{prev_hash}|{encoded}".encode()).hexdigest()


def chain_hash(key: bytes, prev_hash: str, seq: int, encoded: str) -> str:
    """A row's hash: HMAC-SHA256 under the audit key over the same message."""
    return hmac.digest(key, f"{seq}|{prev_hash}|{encoded}".encode(), "sha256").hex()


def key_id(key: bytes) -> str:
    """Names a key without revealing it, so a wrong key is told apart from tampering."""
    return hashlib.sha256(b"quickpay audit key id\x00" + key).hexdigest()[:16]


def marker(key: bytes) -> str:
    """The content of the row where the keyed chain starts."""
    return canonical({"kind": KEYED, "algorithm": ALGORITHM, "key_id": key_id(key)})


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    prev_hash: str
    content: str
    row_hash: str


def continue_from(
    head: AuditRow | None, key: bytes
) -> tuple[list[tuple[int, str, str, str]], tuple[int, str]]:
    """Where a writer's next rows go: the rows to write first (the marker, when the
    trail has rows and its last is not keyed under ``key``: a trail from before the key)
    and the (seq, hash) they then follow. One HMAC per batch."""
    if head is None:
        return [], (0, GENESIS)  # a new trail is keyed from row 1
    seq, prev = head.seq, head.row_hash
    if chain_hash(key, head.prev_hash, head.seq, head.content) == head.row_hash:
        return [], (seq, prev)
    encoded = marker(key)
    row_hash = chain_hash(key, prev, seq + 1, encoded)
    return [(seq + 1, prev, encoded, row_hash)], (seq + 1, row_hash)


# The kinds of row that say who asked for a refund or a reconciliation run (the caller
# as the access file names it), written before the work.
ACCESS_REFUND = "access.refund"
ACCESS_RECONCILE = "access.reconcile"


def entry_rows(
    head: AuditRow | None, key: bytes, content: Mapping[str, object]
) -> list[tuple[int, str, str, str]]:
    """The rows that append one entry of ``content`` after ``head``: the marker first
    when the trail is from before the key (see ``continue_from``)."""
    return entries_rows(head, key, [content])


def entries_rows(
    head: AuditRow | None, key: bytes, contents: Iterable[Mapping[str, object]]
) -> list[tuple[int, str, str, str]]:
    """The rows that append one entry per content after ``head``, chained in order
    (the marker first, as ``entry_rows``)."""
    rows, (seq, prev) = continue_from(head, key)
    for content in contents:
        encoded = canonical(content)
        seq += 1
        row_hash = chain_hash(key, prev, seq, encoded)
        rows.append((seq, prev, encoded, row_hash))
        prev = row_hash
    return rows


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where the chain first fails and why."""

    seq: int
    problem: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What a walk of the trail found."""

    good: int  # rows that verify, before the break if any
    broken: ChainBreak | None
    keyed_from: int  # the marker's seq; 0 when no row is keyed
    last_seq: int  # the last row walked
    # Rows from the first to the second of these were keyed with a key `quickpay audit
    # new-key` replaced (0, 0: none): their order and links were checked, their content
    # cannot be.
    unverifiable_from: int = 0
    unverifiable_through: int = 0


def _is_marker(content: str) -> bool:
    if f'"kind":"{KEYED}"' not in content:
        return False
    try:
        return json.loads(content).get("kind") == KEYED
    except ValueError:
        return False


def verify(
    rows: Iterable[AuditRow], key: bytes, anchor: tuple[int, str] | None = None
) -> ChainReport:
    """Checks rows in sequence order: keyed rows from row 1, or plain rows up to the
    marker and keyed rows from it;
    and, given the ledger's ``anchor`` (seq, hash), that the trail reaches that row and
    that it is the row anchored. Returns how many were good and the first break.

    A key lost for good and replaced (`quickpay audit new-key`) leaves the rows keyed
    with it unverifiable: they begin at row 1 or at a marker naming another key, and end
    before a marker under this key followed by the ``NEW_KEY`` row that names the first
    and the last of them. Such rows are walked for their order and links alone and
    reported as ``unverifiable_from`` to ``unverifiable_through``; without that marker
    and row after them (which only the holder of this key can write) the first of them
    is the break, as before."""
    expected_seq = 1
    prev = GENESIS
    good = 0
    keyed_from = 0
    unverifiable_from = unverifiable_through = 0
    # In rows of another key: the break they are unless this key's marker ends them,
    # the good count before them, and the seq of such a marker awaiting its NEW_KEY row.
    lost: ChainBreak | None = None
    good_before = 0
    marker_seq = 0

    def report(broken: ChainBreak | None) -> ChainReport:
        return ChainReport(
            good, broken, keyed_from, expected_seq - 1, unverifiable_from, unverifiable_through
        )

    def ours(row: AuditRow) -> bool:
        return chain_hash(key, row.prev_hash, row.seq, row.content) == row.row_hash

    for row in rows:
        if row.seq != expected_seq:
            what = "missing" if row.seq > expected_seq else "repeated"
            return report(
                ChainBreak(expected_seq, f"row {expected_seq} is {what} (found {row.seq})")
            )
        if row.prev_hash != prev:
            return report(
                ChainBreak(
                    row.seq, "does not follow the row before it (a row was inserted or deleted)"
                )
            )
        if marker_seq:
            if ours(row) and _names_lost_rows(row.content, lost.seq, marker_seq - 1):  # type: ignore[union-attr]
                # The new key's marker and its row: the lost rows end before the marker.
                unverifiable_from, unverifiable_through = lost.seq, marker_seq - 1  # type: ignore[union-attr]
                keyed_from, lost = marker_seq, None
                good = good_before + 1  # the marker; this row counts below
            marker_seq = 0
        elif lost is not None:
            if _is_marker(row.content) and ours(row):
                marker_seq = row.seq
        elif keyed_from:
            if not ours(row):
                return report(
                    ChainBreak(
                        row.seq, "content does not match its keyed hash (altered or re-hashed)"
                    )
                )
        elif row.seq == 1 and ours(row):
            keyed_from = 1
        elif _is_marker(row.content):
            if not ours(row):
                named = json.loads(row.content).get("key_id")
                if named != key_id(key):
                    # Rows of another key: lost and replaced, or the break.
                    lost = ChainBreak(
                        row.seq,
                        f"the keyed chain's first row: the chain was keyed with another key"
                        f" ({named}; {KEY_FILE} holds {key_id(key)})",
                    )
                    good_before = good
                else:
                    return report(
                        ChainBreak(
                            row.seq,
                            "the keyed chain's first row: its keyed hash does not match"
                            " (altered or forged)",
                        )
                    )
            else:
                keyed_from = row.seq
        elif plain_hash(row.prev_hash, row.seq, row.content) != row.row_hash:
            if ours(row):
                problem = "keyed, but no marker row starts the keyed chain before it (deleted)"
            elif row.seq == 1:
                problem = "content does not match its hash (altered, or another audit key)"
                lost, good_before = ChainBreak(row.seq, problem), good
            else:
                problem = "content does not match its hash (altered)"
            if lost is None:
                return report(ChainBreak(row.seq, problem))
        if anchor is not None and row.seq == anchor[0] and row.row_hash != anchor[1]:
            return report(
                ChainBreak(
                    row.seq,
                    "is not the row the ledger's log anchored at this position (the trail"
                    " was rewritten from here)",
                )
            )
        prev = row.row_hash
        expected_seq += 1
        if lost is None:  # not a row of another key's (nor this key's marker after them)
            good += 1
    if lost is not None:
        good = good_before
        return report(lost)
    if anchor is not None and expected_seq - 1 < anchor[0]:
        return report(
            ChainBreak(
                expected_seq,
                f"the trail ends at row {expected_seq - 1}, but the ledger's log anchored row"
                f" {anchor[0]} at a commit (rows were cut from the end)",
            )
        )
    return report(None)


def _names_lost_rows(content: str, first: int, through: int) -> bool:
    """Whether ``content`` is `quickpay audit new-key`'s row for rows ``first`` to
    ``through``."""
    if f'"kind":"{NEW_KEY}"' not in content:
        return False
    try:
        entry = json.loads(content)
    except ValueError:
        return False
    return (
        entry.get("kind") == NEW_KEY
        and entry.get("unverifiable_from") == first
        and entry.get("unverifiable_through") == through
    )


def first_keyed(rows: Iterable[AuditRow]) -> int:
    """The seq of the first row that is not plain SHA-256 (0: none): where the rows of
    a key begin, for `quickpay audit new-key` to name, so that the plain rows before
    them (a trail from before the key) are still checked after the key is replaced."""
    for row in rows:
        if plain_hash(row.prev_hash, row.seq, row.content) != row.row_hash:
            return row.seq
    return 0
