"""`quickpay audit verify`: walks the keyed, hash-chained audit trail, checks that it
still reaches the head the ledger's log anchored, and checks every row against the
payments, refunds and AR legs it speaks of; names the first bad row.

`quickpay audit new-key`: makes a new audit key when the data dir's is lost for good,
the one way past the writers' refusal to start without it (storage.store_audit_key)."""

from __future__ import annotations

import argparse
from pathlib import Path

from quickpay_engine._engine import EngineError
from quickpay_engine.commands import READS, WRITES, add_command, add_group
from quickpay_engine.config import settings_from
from quickpay_engine.errors import ConfigError
from quickpay_engine.ledger_limits import open_ledger
from quickpay_engine.storage import audit_tail, open_store
from quickpay_engine.store.audit import KEY_FILE, audit_key, keyed
from quickpay_engine.store.audit_check import check_trail


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = add_group(subparsers, "audit", "check the audit trail")
    add_command(
        actions, "verify", "verify the audit trail's keyed chain, its anchor and its rows"
    ).set_defaults(run=run_verify, data_dir_access=READS)
    add_command(
        actions,
        "new-key",
        f"make a new {KEY_FILE} when the data dir's is lost for good (the rows keyed with"
        " the lost one can no longer be verified)",
    ).set_defaults(run=run_new_key, data_dir_access=WRITES)


def anchored_head(ledger_dir: Path) -> tuple[int, str] | None:
    """The audit head the ledger's log anchored last: (seq, hex hash); None without one.
    Raises ``EngineError`` when the log cannot be read."""
    if not ledger_dir.is_dir():
        return None
    ledger = open_ledger(ledger_dir)
    try:
        anchor = ledger.audit_anchor()
    finally:
        ledger.close()
    return None if anchor is None else (anchor[0], anchor[1].hex())


def run_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.postgres and not settings.sqlite_path.exists():
        print(f"quickpay audit verify: no database at {settings.sqlite_path}")
        return 2
    try:
        anchor = anchored_head(settings.ledger_dir)
    except EngineError as err:
        print(f"quickpay audit verify: the ledger at {settings.ledger_dir} cannot be read: {err}")
        return 2
    store = open_store(settings, checking=True)
    try:
        report, mismatches = check_trail(store, store.audit_key, anchor)
    finally:
        store.close()
    status = 0
    if report.broken is None:
        keyed = f"keyed from row {report.keyed_from}" if report.keyed_from else "no keyed row yet"
        anchored = f"reaches the ledger's anchor at row {anchor[0]}" if anchor else "no anchor"
        print(f"audit trail intact: {report.good} rows ({keyed}; {anchored})")
    else:
        b = report.broken
        print(
            f"audit trail BROKEN at row {b.seq}: {b.problem} ({report.good} rows before it verify)"
        )
        status = 1
    if mismatches:
        print(f"audit rows that disagree with the store: {len(mismatches)}")
        for line in mismatches:
            print(f"  {line}")
        status = 1
    return status


def run_new_key(args: argparse.Namespace) -> int:
    """Makes the data dir's audit key where there is none; refuses to replace one."""
    settings = settings_from(args)
    path = settings.data_dir / KEY_FILE
    if path.exists():
        raise ConfigError(f"{path} already exists; nothing was changed")
    tail = audit_tail(settings)
    audit_key(settings.data_dir)
    print(f"made a new audit key: {path} (back it up apart from the database)")
    if tail is not None and keyed(tail):
        print(
            f"rows 1 to {tail.seq} of the audit trail were keyed with the lost key and can"
            " no longer be verified: `quickpay audit verify` reports the chain broken at"
            " the first of them. The next commit writes a marker row, from which the trail"
            " is keyed with the new key."
        )
    return 0
