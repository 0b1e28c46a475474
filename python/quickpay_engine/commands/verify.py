"""`quickpay verify`: checks the invariants across the store and exits non-zero on any break."""

from __future__ import annotations

import argparse

from quickpay_engine.commands import add_command
from quickpay_engine.config import settings_from
from quickpay_engine.storage import open_store


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers, "verify", "check the settlement invariants; non-zero exit on any break"
    ).set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.postgres and not settings.sqlite_path.exists():
        print(f"quickpay verify: no database at {settings.sqlite_path}")
        return 2
    store = open_store(settings)
    try:
        problems = store.verify()
    finally:
        store.close()
    if not problems:
        print(f"verify: all invariants hold ({settings.database_url})")
        return 0
    print(f"verify: {len(problems)} problem(s) in {settings.database_url}")
    for line in problems:
        print(f"  {line}")
    return 1
