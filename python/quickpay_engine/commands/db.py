"""`quickpay db migrate`: brings every configured PostgreSQL database to this build's schema."""

from __future__ import annotations

import argparse

from quickpay_engine.commands import add_command, add_group
from quickpay_engine.config import settings_from
from quickpay_engine.errors import ConfigError
from quickpay_engine.storage import claim_databases
from quickpay_engine.store.pg_migrations import latest, migrate


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = add_group(subparsers, "db", "manage the PostgreSQL databases")
    add_command(
        actions,
        "migrate",
        "apply the schema migrations this build ships to the billing, AR and provisioning"
        " databases (--database-url and the per-domain URLs); safe to run again",
    ).set_defaults(run=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.postgres:
        raise ConfigError(
            "db migrate is for PostgreSQL (--database-url postgresql://...); the embedded"
            " SQLite file creates its schema itself"
        )
    # Not under a running engine: it checked the schema at start and relies on it.
    owner = claim_databases(settings, "quickpay db migrate")
    try:
        for url in dict.fromkeys(settings.domain_urls):  # each database once, in order
            applied = migrate(url)
            done = ", ".join(map(str, applied)) if applied else "none (already current)"
            print(f"db migrate: {_redacted(url)}: applied {done}; at version {latest()}")
    finally:
        if owner is not None:
            owner.close()
    return 0


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{host}"
