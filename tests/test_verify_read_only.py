"""`quickpay verify` and `quickpay audit verify` are strictly read-only: they upgrade
no schema and write nothing, neither to the SQLite file nor to its -wal (whose
transactions they still read), nor to PostgreSQL; a store at an older schema is refused
naming the command that upgrades it."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import settings_for
from quickpay_engine.storage import open_store
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.ownership import LOCK_FILE, SQLITE_LOCK_SUFFIX
from quickpay_engine.store.pg_migrations import latest
from quickpay_engine.store.sqlite import SCHEMA_VERSION
from test_audit_key import keyed_trail
from test_store_sqlite import settle

CHECKS = (("verify",), ("audit", "verify"))


def cli(data_dir: Path, urls: list[str] | None, *command: str) -> subprocess.CompletedProcess[str]:
    """`quickpay COMMAND` on the data dir, and on PostgreSQL (billing, AR, provisioning)
    when ``urls`` says so."""
    argv = [sys.executable, "-m", "quickpay_engine.cli", *command, "--data-dir", str(data_dir)]
    if urls:
        argv += ["--database-url", urls[0], "--billing-url", urls[0], "--ar-url", urls[1]]
        argv += ["--provisioning-url", urls[2]]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(data_dir: Path) -> dict[str, tuple[str, int]]:
    """Every file in the data dir (but its lock files, which every command takes and
    releases, store/ownership.py) with its content's hash and modification time."""
    locks = (LOCK_FILE, f"quickpay.sqlite3{SQLITE_LOCK_SUFFIX}")
    return {
        str(p.relative_to(data_dir)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and p.name not in locks
    }


def at_schema_5(data_dir: Path) -> Path:
    """A data dir with keyed traffic, as the build of schema 5 left it (the indexes it
    had, and its version)."""
    keyed_trail(data_dir, None)
    path = settings_for(data_dir).sqlite_path
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE INDEX payments_by_account ON payments (account_id, seq);"
            " CREATE INDEX billing_by_account ON billing_records (account_id);"
            " PRAGMA user_version = 5;"
        )
    db.close()
    return path


@pytest.mark.parametrize("command", CHECKS)
def test_a_check_refuses_an_older_schema_and_leaves_the_data_dir_byte_for_byte(
    data_dir: Path, command: tuple[str, ...]
) -> None:
    path = at_schema_5(data_dir)
    before = snapshot(data_dir)
    assert f"{path.name}-wal" not in before  # the last connection's close removed it
    done = cli(data_dir, None, *command)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{path} holds schema version 5; this build uses {SCHEMA_VERSION}" in done.stderr
    assert "run `quickpay recover` (or `quickpay serve`) with this build first" in done.stderr
    assert snapshot(data_dir) == before
    # What the message says to do upgrades it (the writers' open), and the check passes.
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()
    done = cli(data_dir, None, *command)
    assert done.returncode == 0, (done.stdout, done.stderr)


@pytest.mark.parametrize("command", CHECKS)
def test_a_check_of_a_current_file_writes_nothing_and_creates_no_wal(
    data_dir: Path, command: tuple[str, ...]
) -> None:
    keyed_trail(data_dir, None)
    # A bundled simulator's books (one no payment went to), which `verify` reads
    # beside the store (WAL, closed).
    books = data_dir / "gateways" / "acq-idle" / "ledger.sqlite3"
    books.parent.mkdir(parents=True)
    db = sqlite3.connect(books)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(
        "CREATE TABLE payments (merchant_reference TEXT, gateway_reference TEXT,"
        " state TEXT, refunded_minor INTEGER)"
    )
    db.close()
    before = snapshot(data_dir)
    assert not [name for name in before if name.endswith(("-wal", "-shm"))], before
    done = cli(data_dir, None, *command)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert snapshot(data_dir) == before


# A writer killed between its commit and its last close: the commit is in the -wal
# alone, which the checks must read and must not fold into the file. (The UPDATE breaks
# an invariant, so that `verify` proves it read it.)
_KILLED_WRITER = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA wal_autocheckpoint = 0")
db.execute("UPDATE subscribers SET balance_minor = balance_minor - 1 WHERE account_id = 'acc-pre'")
os._exit(0)
"""


def test_the_checks_read_a_left_wal_and_change_neither_it_nor_the_file(data_dir: Path) -> None:
    keyed_trail(data_dir, None)
    path = settings_for(data_dir).sqlite_path
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], check=True, timeout=30)
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 0
    # The -shm is the log's index, shared memory in a file: a reader may rebuild it.
    watched = [path.name, wal.name]
    before = {k: v for k, v in snapshot(data_dir).items() if k != f"{path.name}-shm"}
    assert all(name in before for name in watched)
    done = cli(data_dir, None, "verify")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "balance is not opening balance plus billing history" in done.stdout
    assert "(account, balance, expected): acc-pre," in done.stdout
    done = cli(data_dir, None, "audit", "verify")
    assert done.returncode == 0, (done.stdout, done.stderr)
    after = {k: v for k, v in snapshot(data_dir).items() if k != f"{path.name}-shm"}
    assert after == before


POSTGRES = pytest.mark.parametrize("backend", ("postgres", "postgres-2pc"), indirect=True)


def committed(data_dir: Path, urls: list[str]) -> None:
    """A batch committed (keyed audit rows), through the two-phase coordinator where the
    databases differ."""
    store = open_store(settings_for(data_dir, database_urls=urls), coordinate=True)
    try:
        store.commit_batch([settle("k1", account="acc-pre"), settle("k2")], now_us=1)
    finally:
        store.close()


@POSTGRES
def test_on_postgresql_the_checks_open_read_only_sessions(
    data_dir: Path, database_urls: list[str]
) -> None:
    committed(data_dir, database_urls)
    for command in CHECKS:
        done = cli(data_dir, database_urls, *command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    store = open_store(settings_for(data_dir, database_urls=database_urls), checking=True)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            store.record_access({"kind": "check"})
    finally:
        store.close()


@POSTGRES
def test_on_postgresql_a_database_behind_is_refused_naming_db_migrate(
    data_dir: Path, database_urls: list[str]
) -> None:
    committed(data_dir, database_urls)
    with psycopg.connect(database_urls[0], autocommit=True) as conn:
        (name,) = conn.execute(
            "DELETE FROM schema_migrations WHERE version = %s RETURNING name", (latest(),)
        ).fetchone()  # type: ignore[misc]
    try:
        for command in CHECKS:
            done = cli(data_dir, database_urls, *command)
            assert done.returncode == 2, (command, done.stdout, done.stderr)
            said = f"is at schema version {latest() - 1}; this build needs {latest()}"
            assert said in done.stderr
            assert "run `quickpay db migrate`" in done.stderr
        with psycopg.connect(database_urls[0], autocommit=True) as conn:
            found = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        assert found == (latest() - 1,)
    finally:  # the module's databases serve its other tests
        with psycopg.connect(database_urls[0], autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (latest(), name),
            )
