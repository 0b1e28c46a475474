"""`quickpay audit verify`: walks the hash-chained audit trail and names the first bad row."""

from __future__ import annotations

import argparse

from quickpay_engine.commands import READS, add_command, add_group
from quickpay_engine.config import settings_from
from quickpay_engine.storage import open_store
from quickpay_engine.store.audit import verify


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = add_group(subparsers, "audit", "check the audit trail")
    add_command(actions, "verify", "verify the audit trail's hash chain").set_defaults(
        run=run_verify, data_dir_access=READS
    )


def run_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.postgres and not settings.sqlite_path.exists():
        print(f"quickpay audit verify: no database at {settings.sqlite_path}")
        return 2
    store = open_store(settings)
    try:
        good, broken = verify(store.audit_rows())
    finally:
        store.close()
    if broken is None:
        print(f"audit trail intact: {good} rows")
        return 0
    print(
        f"audit trail BROKEN at row {broken.seq}: {broken.problem} ({good} rows before it verify)"
    )
    return 1
