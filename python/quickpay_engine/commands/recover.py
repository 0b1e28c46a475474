"""`quickpay recover [--dry-run]`: finish what a crash left unfinished, without serving.

The server does the same at every start, before it serves; this command lets an
operator see (``--dry-run``: looks at the ledger, the store and the gateways, changes
nothing) or do it by hand. The server must not be running on the same data dir.
"""

from __future__ import annotations

import argparse
import asyncio

from quickpay_engine.commands import WRITES, add_command
from quickpay_engine.config import Settings, settings_from
from quickpay_engine.errors import ConfigError
from quickpay_engine.ledger_limits import open_ledger


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "recover", "finish payments and refunds a crash left unfinished"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be done; change nothing"
    )
    parser.set_defaults(run=run, data_dir_access=WRITES)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.postgres and not settings.sqlite_path.exists():
        raise ConfigError(f"no database at {settings.sqlite_path}")
    return asyncio.run(_recover(settings, args.dry_run))


async def _recover(settings: Settings, dry_run: bool) -> int:
    from quickpay_engine.gateways.router import GatewayRouter
    from quickpay_engine.gateways.supervisor import open_gateways
    from quickpay_engine.settlement.adjustments import Adjustments, no_sequencing
    from quickpay_engine.settlement.ledger_book import LedgerBook
    from quickpay_engine.settlement.recovery import Action, Recovery
    from quickpay_engine.storage import claim_databases, open_store
    from quickpay_engine.store.executor import StoreThread

    # The databases' owner (refused beside a running engine), then the store: in
    # two-phase mode opening it resolves what a crash left prepared, first of all.
    owner = claim_databases(settings, "quickpay recover")
    try:
        store = open_store(settings, coordinate=True, owner=owner)
    except BaseException:
        if owner is not None:
            owner.close()
        raise
    thread = StoreThread()
    book = LedgerBook(open_ledger(settings.ledger_dir))
    gateways, stop_gateways = await open_gateways(settings.gateways, settings.data_dir)
    router = GatewayRouter(gateways)
    try:
        await router.start()
        actions = await Recovery(store, thread, book, router).run(dry_run=dry_run)
        # Balance adjustments journalled and not applied (settlement/adjustments.py).
        if dry_run:
            pending = await thread.run(store.pending_adjustments)
            actions += [Action(a.adjustment_id, "PENDING", "apply adjustment") for a in pending]
        else:
            adjustments = Adjustments(store, thread, book, no_sequencing, lambda _: None)
            applied = await adjustments.recover()
            actions += [Action(a, "PENDING", "adjustment applied") for a in applied]
    finally:
        await router.close()
        await stop_gateways()
        book.close()
        thread.close()
        store.close()
        if owner is not None:
            owner.close()
    verb = "would do" if dry_run else "did"
    if not actions:
        print("recover: nothing unfinished")
        return 0
    print(f"recover {verb}:")
    for a in actions:
        print(f"  {a.payment_id}  {a.ledger_state:<11}  {a.action}  {a.detail}")
    waiting = sum(a.action == "waiting" for a in actions)
    return 1 if waiting and not dry_run else 0
