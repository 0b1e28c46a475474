"""Issue #20 item 3: rewrites of the audit trail that `quickpay audit verify` and
`quickpay verify` once passed. After real traffic (payments, a decline, refunds, each
commit anchoring the trail's head in the ledger's log), each tampering is done as a
writer of the database without the data dir's audit key would do it, and is found.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BOTH_BACKENDS, settings_for
from test_verify import make_traffic

# The embedded store, one PostgreSQL database and three with two-phase commit: the same
# code path (store/audit_check.py and the anchor written by the pipeline) on each. Under
# two-phase commit the head is anchored once the billing database (the trail's) has
# committed the prepared batch.
pytestmark = BOTH_BACKENDS


class Database:
    """The store's tables as whoever can write the database (but not read the data dir's
    audit key) sees them."""

    def __init__(self, data_dir: Path, database_urls: list[str] | None) -> None:
        if database_urls is None:
            self._conn: Any = sqlite3.connect(settings_for(data_dir).sqlite_path)
            self._mark = "?"
        else:
            import psycopg

            self._conn = psycopg.connect(database_urls[0], autocommit=True)
            self._mark = "%s"
        # Where the AR ledger lives: its own database under two-phase commit.
        self._ar = self._conn
        if database_urls is not None and len(database_urls) > 1:
            self._ar = psycopg.connect(database_urls[1], autocommit=True)

    def rows(self, sql: str, *params: object) -> list[tuple]:
        return list(self._conn.execute(sql.replace("?", self._mark), params).fetchall())

    def execute(self, sql: str, *params: object) -> None:
        self._conn.execute(sql.replace("?", self._mark), params)

    def execute_ar(self, sql: str, *params: object) -> None:
        """A write to the AR ledger's database."""
        self._ar.execute(sql.replace("?", self._mark), params)

    def close(self) -> None:
        if self._ar is not self._conn:
            self._ar.close()
        if self._conn is not None:
            self._conn.commit()
            self._conn.close()
            self._conn = None


@pytest.fixture
async def db(stub, server, data_dir: Path, database_urls: list[str] | None) -> Iterator[Database]:
    await make_traffic(stub, server)  # every hold posted, every head anchored
    opened = Database(data_dir, database_urls)
    yield opened
    opened.close()


def cli(data_dir: Path, database_urls: list[str] | None, *command: str):
    url = ["--database-url", database_urls[0]] if database_urls else []
    if database_urls is not None and len(database_urls) > 1:
        billing, ar, provisioning = database_urls
        url += ["--billing-url", billing, "--ar-url", ar, "--provisioning-url", provisioning]
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", *command, "--data-dir", str(data_dir), *url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def plain_sha256(prev_hash: str, seq: int, content: str) -> str:
    """How rows were hashed before the chain was keyed, and all a keyless writer has."""
    return hashlib.sha256(f"{seq}|{prev_hash}|{content}".encode()).hexdigest()


def test_traffic_leaves_a_keyed_anchored_trail(
    db: Database, data_dir: Path, database_urls: list[str] | None
) -> None:
    (last,) = db.rows("SELECT max(seq) FROM audit_log")[0]
    done = cli(data_dir, database_urls, "audit", "verify")
    assert done.returncode == 0, done.stdout
    assert f"intact: {last} rows (keyed from row 1; reaches the ledger's anchor" in done.stdout
    assert cli(data_dir, database_urls, "verify").returncode == 0


def test_a_row_edited_and_the_rest_rehashed_with_plain_sha256_is_found(
    db: Database, data_dir: Path, database_urls: list[str] | None
) -> None:
    trail = db.rows("SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq")
    prev = trail[3][1]
    for seq, _, content, _ in trail[3:]:
        if seq == 4:
            content = content.replace('"amount_minor":', '"amount_minor":1')
        row_hash = plain_sha256(prev, seq, content)
        db.execute(
            "UPDATE audit_log SET prev_hash = ?, content = ?, row_hash = ? WHERE seq = ?",
            prev, content, row_hash, seq,
        )  # fmt: skip
        prev = row_hash
    db.close()
    done = cli(data_dir, database_urls, "audit", "verify")
    assert done.returncode == 1
    assert "BROKEN at row 4: content does not match its keyed hash" in done.stdout, done.stdout
    done = cli(data_dir, database_urls, "verify")
    assert done.returncode == 1
    assert "audit trail broken at row 4" in done.stdout, done.stdout


def test_the_last_20_rows_deleted_are_found(
    db: Database, data_dir: Path, database_urls: list[str] | None
) -> None:
    (last,) = db.rows("SELECT max(seq) FROM audit_log")[0]
    assert last > 20
    db.execute("DELETE FROM audit_log WHERE seq > ?", last - 20)
    db.close()
    done = cli(data_dir, database_urls, "audit", "verify")
    assert done.returncode == 1
    cut = (
        f"BROKEN at row {last - 19}: the trail ends at row {last - 20}, but the ledger's log"
        f" anchored row {last} at a commit (rows were cut from the end)"
    )
    assert cut in done.stdout, done.stdout
    done = cli(data_dir, database_urls, "verify")
    assert done.returncode == 1
    assert f"audit trail broken at row {last - 19}" in done.stdout, done.stdout


def test_an_amount_edited_in_history_and_both_ar_legs_is_found(
    db: Database, data_dir: Path, database_urls: list[str] | None
) -> None:
    ((payment_id, amount),) = db.rows(
        "SELECT payment_id, amount_minor FROM payments WHERE idempotency_key = 'b3'"
    )
    db.execute("UPDATE payments SET amount_minor = 1 WHERE payment_id = ?", payment_id)
    db.execute_ar(
        "UPDATE ar_entries SET debit_minor = 1 WHERE document_id = ? AND leg = 1", payment_id
    )
    db.execute_ar(
        "UPDATE ar_entries SET credit_minor = 1 WHERE document_id = ? AND leg = 2", payment_id
    )
    db.close()
    said = (
        f"payment {payment_id} is (acc-post-barred, 1, EUR) SETTLED in history,"
        f" (acc-post-barred, {amount}, EUR) settled in the audit trail"
    )
    done = cli(data_dir, database_urls, "audit", "verify")
    assert done.returncode == 1
    assert said in done.stdout, done.stdout
    done = cli(data_dir, database_urls, "verify")
    assert done.returncode == 1
    assert said in done.stdout, done.stdout
