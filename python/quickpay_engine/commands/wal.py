"""`quickpay wal verify` and `quickpay wal inspect`: read the ledger's write-ahead log
offline, through the engine's own decoder, without changing a byte.

The log is where ``quickpay serve`` writes it, ``<data-dir>/ledger``
(``Settings.ledger_dir``), unless ``--wal-dir`` names another directory.
`verify` exits 0 when the log is intact, 1 when it is corrupt (naming the file and
offset) and 2 when there is no log; a torn tail is reported but is not corruption,
since recovery truncates it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quickpay_engine import _engine
from quickpay_engine.commands import add_command, add_group
from quickpay_engine.config import Settings, settings_from
from quickpay_engine.errors import WalCorruption, WalFailure
from quickpay_engine.ledger_limits import for_reading

WAL_DIR_HELP = "log directory (default: DATA_DIR/ledger, where serve writes it)"

# At most this many records are listed by one `inspect` (use --from-seq to page on).
INSPECT_LIMIT_MAX = 100_000


def wal_dir(args: argparse.Namespace) -> Path:
    """The log directory the command reads."""
    if args.wal_dir:
        return Path(args.wal_dir)
    return settings_from(args).ledger_dir


def guarded_dir(args: argparse.Namespace, settings: Settings) -> Path | None:
    """The data dir whose lock the command holds while it reads: the one its log is in,
    or none for a --wal-dir outside --data-dir (a copy, or another engine's log)."""
    directory = wal_dir(args)
    inside = directory.resolve().is_relative_to(settings.data_dir.resolve())
    return settings.data_dir if inside else None


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = add_group(subparsers, "wal", "read the ledger's write-ahead log offline")
    verify = add_command(actions, "verify", "check every checksum, the chain, and a replay")
    verify.add_argument("--wal-dir", help=WAL_DIR_HELP)
    verify.set_defaults(run=run_verify, data_dir_access=guarded_dir)
    inspect = add_command(actions, "inspect", "list the log's records")
    inspect.add_argument("--wal-dir", help=WAL_DIR_HELP)
    inspect.add_argument("--from-seq", type=int, default=0, help="first record to list")
    inspect.add_argument(
        "--limit", type=int, default=1000, help=f"records to list (at most {INSPECT_LIMIT_MAX})"
    )
    inspect.set_defaults(run=run_inspect, data_dir_access=guarded_dir)


def _missing(command: str, directory: Path) -> int | None:
    if directory.is_dir():
        return None
    print(f"quickpay wal {command}: no log directory at {directory}", file=sys.stderr)
    return 2


def run_verify(args: argparse.Namespace) -> int:
    directory = wal_dir(args)
    if (code := _missing("verify", directory)) is not None:
        return code
    try:
        limits = for_reading(directory)
        report = _engine.wal_verify(
            str(directory), transfers_max=limits.transfers_max, payments_max=limits.payments_max
        )
    except WalCorruption as err:
        print(f"log CORRUPT: {err}")
        return 1
    except WalFailure as err:
        print(f"quickpay wal verify: {err}", file=sys.stderr)
        return 2
    print(
        f"log intact: {report['records']} records in {report['segments']} segments, "
        f"last seq {report['last_seq']}, snapshot at {report['snapshot_seq']}, "
        f"{report['records_replayed']} replayed"
    )
    tail = report["torn_tail"]
    if tail is not None:
        print(
            f"torn tail: {tail['bytes']} bytes at offset {tail['offset']} of {tail['segment']} "
            f"({tail['reason']}); recovery truncates it"
        )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    directory = wal_dir(args)
    if (code := _missing("inspect", directory)) is not None:
        return code
    limit = min(max(args.limit, 0), INSPECT_LIMIT_MAX)
    try:
        records = _engine.wal_inspect(str(directory), args.from_seq, limit)
    except (WalCorruption, WalFailure) as err:
        print(f"log CORRUPT: {err}" if isinstance(err, WalCorruption) else str(err))
        return 1
    print("seq\tsegment\toffset\tbytes\tchecksum\tkind\tevents\tok\tnow_ns")
    for seq, segment, offset, size, checksum, kind, events, ok, now_ns in records:
        name = Path(segment).name
        print(
            f"{seq}\t{name}\t{offset}\t{size}\t{checksum:#010x}\t{kind}\t{events}\t{ok}\t{now_ns}"
        )
    return 0
