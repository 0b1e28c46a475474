"""Wiring: the store the settings name, opened and checked.

``sqlite:///PATH`` (the default) is the embedded file; ``postgresql://...`` is the
PostgreSQL store, on one database or, when ``--billing-url``, ``--ar-url`` and
``--provisioning-url`` differ, on several committed together by two-phase commit.
"""

from __future__ import annotations

from quickpay_engine.config import Settings
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.postgres import PostgresStore, PostgresUrls

# Every store has the same public methods (see store/sqlite.py); the wiring holds one.
Store = SqliteStore | PostgresStore


def open_store(settings: Settings) -> Store:
    """Opens the store ``settings`` name; a PostgreSQL database behind on migrations is
    refused with the command that fixes it."""
    if not settings.postgres:
        return SqliteStore(settings.sqlite_path)
    return PostgresStore(PostgresUrls(*settings.domain_urls))
