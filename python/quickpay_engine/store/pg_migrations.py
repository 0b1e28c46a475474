"""Versioned SQL migrations for the PostgreSQL store, shipped as package data.

Each file ``store/migrations/postgres/NNNN_name.sql`` is one version. ``migrate`` applies
the missing ones in order, each in its own transaction together with its row in
``schema_migrations``, so a crash leaves the database at a whole version. The store
checks the version at start and refuses a database that is behind (or ahead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from quickpay_engine.errors import StoreError

MIGRATIONS_PACKAGE = "quickpay_engine.store.migrations.postgres"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Held while migrating, so two `quickpay db migrate` runs against one database apply
# each version once (an arbitrary constant: "qpmigrat" in ASCII).
MIGRATION_LOCK = 0x71706D6967726174

_LEDGER_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One shipped schema version."""

    version: int
    name: str
    sql: str


def shipped() -> list[Migration]:
    """Every migration in the package, in version order; versions run 1, 2, 3 ... whole."""
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    # A gap or a repeated number is a packaging bug, not a database state.
    assert [m.version for m in found] == list(range(1, len(found) + 1)), found
    return found


def latest() -> int:
    """The schema version this build writes."""
    return len(shipped())


def applied_version(conn: psycopg.Connection) -> int:
    """The database's schema version: 0 for a database the engine never migrated."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    (version,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()  # type: ignore[misc]
    return int(version)


def migrate(url: str) -> list[int]:
    """Brings the database at ``url`` to the latest version; returns the versions applied."""
    applied: list[int] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for migration in shipped():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute(_LEDGER_TABLE)
                if applied_version(conn) >= migration.version:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
    return applied


def require_current(conn: psycopg.Connection, where: str) -> None:
    """Refuses to run on a database whose schema is not the one this build writes."""
    have, want = applied_version(conn), latest()
    if have < want:
        raise StoreError(
            f"{where} is at schema version {have}; this build needs {want}:"
            " run `quickpay db migrate` with the same database URLs first"
        )
    if have > want:
        raise StoreError(
            f"{where} is at schema version {have}, newer than this build's {want}:"
            " run a newer quickpay against it"
        )
