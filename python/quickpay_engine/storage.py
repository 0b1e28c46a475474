"""Wiring: the store the settings name, opened and checked.

``sqlite:///PATH`` (the default) is the embedded file; ``postgresql://...`` is the
PostgreSQL store, on one database or, when ``--billing-url``, ``--ar-url`` and
``--provisioning-url`` differ, on several committed together by two-phase commit.
"""

from __future__ import annotations

from quickpay_engine.config import Settings
from quickpay_engine.settlement.twophase import TwoPhaseStore, open_two_phase
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.audit import audit_key
from quickpay_engine.store.pg_owner import PgOwner
from quickpay_engine.store.postgres import PostgresStore, PostgresUrls

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
    settings: Settings, *, coordinate: bool = False, owner: PgOwner | None = None
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
    """
    # The audit chain's key is the data dir's, whichever database the rows go to.
    key = audit_key(settings.data_dir)
    if not settings.postgres:
        return SqliteStore(settings.sqlite_path, key)
    store = PostgresStore(PostgresUrls(*settings.domain_urls), key)
    if owner is not None:
        store.fence = owner.prove
    if not store.urls.split or not coordinate:
        return store
    return open_two_phase(store, settings.data_dir / TWO_PHASE_DIR)
