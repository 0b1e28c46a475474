"""Wiring: the store the settings name, opened and checked.

``sqlite:///PATH`` (the default) is the embedded file; ``postgresql://...`` is the
PostgreSQL store, on one database or, when ``--billing-url``, ``--ar-url`` and
``--provisioning-url`` differ, on several committed together by two-phase commit.
"""

from __future__ import annotations

import secrets
import sqlite3

import psycopg

from quickpay_engine.config import Settings
from quickpay_engine.keyfile import KEY_BYTES
from quickpay_engine.settlement.twophase import TwoPhaseStore, open_two_phase
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.audit import (
    KEY_FILE,
    AuditRow,
    audit_key,
    keyed,
    lost_key,
    wrong_key,
)
from quickpay_engine.store.pg_owner import PgOwner
from quickpay_engine.store.postgres import PostgresStore, PostgresUrls
from quickpay_engine.store.sqlite_library import read_only_uri, require_one_library, sqlite_uri

# Every store has the same public methods (see store/sqlite.py); the wiring holds one.
Store = SqliteStore | PostgresStore | TwoPhaseStore

# Where the two-phase coordinator keeps its decision log and instance id.
TWO_PHASE_DIR = "twophase"


def claim_databases(settings: Settings, command: str) -> PgOwner | None:
    """Takes the ownership lock of every PostgreSQL database the settings name, for a
    command that writes their accounts (serve, recover, subscribers import, db migrate);
    refused (``InUse``, naming the holder) while another engine holds one. None on the
    SQLite file, which the data dir's lock guards (cli.owning)."""
    if not settings.postgres:
        return None
    owner = PgOwner(settings.domain_urls, command)
    owner.acquire()
    return owner


def open_store(
    settings: Settings,
    *,
    coordinate: bool = False,
    owner: PgOwner | None = None,
    checking: bool = False,
    key: bytes | None = None,
) -> Store:
    """Opens the store ``settings`` name; a PostgreSQL database behind on migrations is
    refused with the command that fixes it, and two-phase mode without prepared
    transactions with the setting that enables them.

    ``coordinate``: the caller commits batches (the server, `quickpay recover`), so with
    several databases the store comes with the two-phase coordinator, whose recovery
    resolves what a previous run left prepared before the caller sees the store. Only
    one process per data dir may coordinate. Without it (the other commands: import,
    verify, audit, reconcile write one database at most) the plain store is returned,
    and leaves prepared transactions alone.

    ``owner`` (from ``claim_databases``): every batch and refund the store writes first
    proves, in its own transaction, that the owner's lock is still held.

    ``checking``: the caller only reads (verify, audit verify), so the audit key is
    never made (see ``store_audit_key``), and the store is opened read-only: nothing is
    written to it, and a schema older than this build's is refused with the command that
    upgrades it rather than upgraded (``SqliteStore``'s and ``PostgresStore``'s
    ``read_only``).

    ``key``: the audit key to write under instead of the data dir's (`quickpay audit
    new-key`, whose key is written to the data dir only once the trail names it).
    """
    # The audit chain's key is the data dir's, whichever database the rows go to.
    if key is None:
        key = store_audit_key(settings, checking=checking)
    if not settings.postgres:
        return SqliteStore(settings.sqlite_path, key, read_only=checking)
    store = PostgresStore(PostgresUrls(*settings.domain_urls), key, read_only=checking)
    if owner is not None:
        store.fence = owner.prove
    if not store.urls.split or not coordinate:
        return store
    return open_two_phase(store, settings.data_dir / TWO_PHASE_DIR)


def store_audit_key(settings: Settings, *, checking: bool = False) -> bytes:
    """The data dir's audit key. When its file is missing: with keyed rows in the trail
    the key is lost, and the commands refuse (``AuditKeyMissing``, naming the file)
    rather than make a new one, under which none of those rows would verify again
    (`quickpay audit new-key` is the operator's way past that). With none (a new
    installation, or a trail from a build before the key) a writer makes it, and a
    check (``checking``) goes on under a throwaway key that is never written: it creates
    nothing in the data dir. A writer also refuses a key file that does not verify the
    trail's last keyed row (``AuditKeyMismatch``): the wrong key restored, whose first
    commit would otherwise start the chain again under it."""
    path = settings.data_dir / KEY_FILE
    if path.exists():
        key = audit_key(settings.data_dir)
        if not checking and (mismatch := wrong_key(path, audit_tail(settings), key)):
            raise mismatch
        return key
    tail = audit_tail(settings, read_only=checking)
    if tail is not None and keyed(tail):
        raise lost_key(path, tail, checking=checking)
    if checking:
        return secrets.token_bytes(KEY_BYTES)
    return audit_key(settings.data_dir)


_TAIL = "SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq DESC LIMIT 1"


def audit_tail(settings: Settings, *, read_only: bool = False) -> AuditRow | None:
    """The audit trail's last row, read without opening the store (which needs the key);
    None without a trail (no database yet, or no table). ``read_only``: for a checker,
    which writes nothing (``sqlite_library.read_only_uri``)."""
    if settings.postgres:
        with psycopg.connect(settings.domain_urls[0], autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('audit_log')").fetchone() == (None,):
                return None
            row = conn.execute(_TAIL).fetchone()
    else:
        path = settings.sqlite_path
        if not path.exists():
            return None
        require_one_library()  # before this process touches the file
        # A writer's is not mode=ro: a read-only connection to a WAL database leaves its
        # -wal and -shm files behind, where the last connection to close removes them.
        uri = read_only_uri(path) if read_only else sqlite_uri(path, "rw")
        db = sqlite3.connect(uri, uri=True)
        try:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'"
            ).fetchone()
            row = db.execute(_TAIL).fetchone() if exists else None
        finally:
            db.close()
    return AuditRow(*row) if row else None
