"""Fresh PostgreSQL databases for the suites that run against the real server.

scripts/services.sh (run by CI before the tests) starts PostgreSQL and creates role
``quickpay`` (CREATEDB) and database ``quickpay_test``; each test gets databases of its
own, made from a migrated template so making one is a file copy, not a migration.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import psycopg
import pytest

from quickpay_engine.store.pg_migrations import migrate, shipped

ADMIN_URL = os.environ.get("QUICKPAY_TEST_PG", "postgresql://quickpay@127.0.0.1:5432/quickpay_test")
# The template is named after the migrations it holds, so a build with other migrations
# makes a template of its own instead of reusing a stale one.
_TEMPLATE = (
    "qp_template_" + hashlib.sha256("".join(m.sql for m in shipped()).encode()).hexdigest()[:12]
)


def url_of(dbname: str) -> str:
    """A postgresql:// URL for a database on the test server."""
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    return f"postgresql://{info.get('user', 'quickpay')}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{dbname}"


def unavailable() -> str:
    """Why the PostgreSQL suites cannot run here ("" when they can)."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as err:
        return f"PostgreSQL not reachable at {ADMIN_URL} (run scripts/services.sh): {err}"
    return ""


def require() -> None:
    """Skips the calling test when PostgreSQL is missing; CI always has it."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


# Several pytest processes (the -n workers of pytest-xdist, other checkouts' runs) share
# the server and the template: CREATE DATABASE ... TEMPLATE fails while another session is
# connected to the template (migrating it), so making or migrating the template and
# copying it happen under one advisory lock (held on the admin database, released with
# its session).
_TEMPLATE_LOCK = int.from_bytes(hashlib.sha256(_TEMPLATE.encode()).digest()[:7], "big")
_migrated = False


def _ensure_template(conn: psycopg.Connection) -> None:
    """Makes and migrates the template, once per process; ``conn`` holds the lock."""
    global _migrated
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (_TEMPLATE,))
    if row.fetchone() is None:
        conn.execute(f"CREATE DATABASE {_TEMPLATE}")
        _migrated = False
    if not _migrated:
        # Idempotent: a template made by an older build gets the newer migrations.
        migrate(url_of(_TEMPLATE))
        _migrated = True


def create_database(prefix: str = "qp_t") -> str:
    """A new, migrated database; returns its URL. Drop it with ``drop_database``."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_TEMPLATE_LOCK,))
        _ensure_template(conn)
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    return url_of(name)


def reset_database(url: str) -> None:
    """Empties every table of a test database (its schema stays), as if freshly made.

    Much cheaper than a new database: DROP DATABASE forces a checkpoint, which on a busy
    machine costs a second or more, so a module makes its databases once and each test
    starts from empty ones.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        for (gid,) in conn.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
        ).fetchall():
            conn.execute(f"ROLLBACK PREPARED '{gid}'")
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename != 'schema_migrations'"
                # Children before the tables they reference (refunds -> payments ->
                # subscribers): pg_tables' own order changes when a migration alters one.
                " ORDER BY tablename = 'subscribers', tablename = 'payments'"
            )
        ]
        # DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE makes new files
        # for every table and index, which costs far more than deleting a few rows.
        with conn.transaction():
            for table in tables:
                conn.execute(f"DELETE FROM {table}")
            for (sequence,) in conn.execute(
                "SELECT pg_get_serial_sequence(c.table_name, c.column_name)"
                " FROM information_schema.columns c"
                " WHERE c.table_schema = 'public' AND c.is_identity = 'YES'"
            ).fetchall():
                conn.execute("SELECT setval(%s, 1, false)", (sequence,))


def prepared_transactions(urls: list[str]) -> list[tuple[str, str]]:
    """(database, gid) of every transaction left prepared in these databases."""
    names = [psycopg.conninfo.conninfo_to_dict(u)["dbname"] for u in urls]
    with psycopg.connect(ADMIN_URL) as conn:
        return conn.execute(
            "SELECT database, gid FROM pg_prepared_xacts WHERE database = ANY(%s)", (names,)
        ).fetchall()


def drop_database(url: str) -> None:
    """Drops a test database, ending its sessions and prepared transactions first."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        for (gid,) in conn.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
        ).fetchall():
            conn.execute(f"ROLLBACK PREPARED '{gid}'")
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
