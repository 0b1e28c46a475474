"""`quickpay audit verify`: walks the keyed, hash-chained audit trail, checks that it
still reaches the head the ledger's log anchored, and checks every row against the
payments, refunds and AR legs it speaks of; names the first bad row.

`quickpay audit new-key`: makes a new audit key when the data dir's is lost for good,
the one way past the writers' refusal to start without it (storage.store_audit_key)."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from quickpay_engine._engine import EngineError
from quickpay_engine.commands import READS, WRITES, add_command, add_group
from quickpay_engine.config import settings_from
from quickpay_engine.errors import ConfigError
from quickpay_engine.keyfile import KEY_BYTES, install_key
from quickpay_engine.ledger_limits import open_ledger
from quickpay_engine.storage import audit_tail, claim_databases, open_store
from quickpay_engine.store.audit import KEY_FILE, NEW_KEY, first_keyed, key_id, keyed
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
        if report.unverifiable_through:
            print(
                f"rows {report.unverifiable_from} to {report.unverifiable_through} were keyed"
                " with a key lost and"
                f" replaced by `quickpay audit new-key` (row {report.keyed_from}): their"
                " order and links check, their content cannot be verified"
            )
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
    """Makes the data dir's audit key where there is none; refuses to replace one.

    Over a keyed trail, the trail names the new key before the key file is written: a
    marker row under it and a row saying which rows the lost key leaves unverifiable,
    in one transaction. A crash between the two leaves the file missing again, and
    running the command again writes another marker; the writers never find a key file
    that the trail does not name (storage.store_audit_key refuses that)."""
    settings = settings_from(args)
    path = settings.data_dir / KEY_FILE
    if path.exists():
        raise ConfigError(
            f"{path} already exists; nothing was changed (to replace a wrong key whose"
            " right one is lost for good, move this file aside first)"
        )
    tail = audit_tail(settings)
    key = secrets.token_bytes(KEY_BYTES)
    lost = tail is not None and keyed(tail)
    if lost:
        assert tail is not None
        # On PostgreSQL, refused while an engine owns the databases: it would chain its
        # next rows under the key it holds, after this marker.
        owner = claim_databases(settings, "quickpay audit new-key")
        try:
            store = open_store(settings, key=key)
            try:
                store.record_access(
                    {
                        "kind": NEW_KEY,
                        "key_id": key_id(key),
                        "unverifiable_from": first_keyed(store.audit_rows()),
                        "unverifiable_through": tail.seq,
                    }
                )
            finally:
                store.close()
        finally:
            if owner is not None:
                owner.close()
    install_key(path, key)
    print(f"made a new audit key: {path} (back it up apart from the database)")
    if lost:
        assert tail is not None
        print(
            f"rows up to {tail.seq} of the audit trail were keyed with the lost key and can"
            " no longer be verified (`quickpay audit verify` checks their order and links"
            f" and says so). From row {tail.seq + 1} (a marker, then a row naming the lost"
            " rows) the trail is keyed with the new key."
        )
    return 0
