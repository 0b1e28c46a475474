"""`quickpay subscribers import FILE.csv`: loads the billing system's export, all or nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quickpay_engine.commands import WRITES, add_command, add_group
from quickpay_engine.config import settings_from
from quickpay_engine.errors import ImportRowError
from quickpay_engine.storage import claim_databases, open_store


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = add_group(subparsers, "subscribers", "manage the subscriber table")
    load = add_command(actions, "import", "load a subscriber CSV (all rows or none)")
    load.add_argument("file", type=Path, help="CSV with the columns DESIGN.md fixes")
    load.add_argument(
        "--replace",
        action="store_true",
        help="the file is the whole base: lines missing from it are CLOSED (never deleted);"
        " without it, the file's rows are inserted or updated and the others left as they are",
    )
    load.set_defaults(run=run_import, data_dir_access=WRITES)


def run_import(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    # The file is read as a stream inside the import's one transaction: a bad line
    # rolls it back, so nothing of the file is loaded.
    try:
        args.file.stat()
    except OSError as err:
        print(f"quickpay subscribers import: {err}", file=sys.stderr)
        return 1
    # On PostgreSQL, refused while an engine owns the database: it keeps the subscribers'
    # balances in memory, and would go on from the ones this import replaces.
    owner = claim_databases(settings, "quickpay subscribers import")
    try:
        store = open_store(settings)
        try:
            n, closed = store.import_subscriber_file(args.file, replace=args.replace)
        finally:
            store.close()
    except OSError as err:
        print(f"quickpay subscribers import: {err}", file=sys.stderr)
        return 1
    except ImportRowError as err:
        print(
            f"quickpay subscribers import: {args.file}: {err}; nothing was loaded", file=sys.stderr
        )
        return 1
    finally:
        if owner is not None:
            owner.close()
    done = f"imported {n} subscribers from {args.file} into {settings.database_url}"
    if args.replace:
        done += f"; {closed} lines missing from the file closed"
    print(done)
    return 0
