"""The `quickpay` command: one entry point, a subcommand per job.

Each subcommand lives in ``quickpay_engine.commands.<name>`` and exposes
``register(subparsers)``, which adds its parser(s) with ``set_defaults(run=...)``;
``run(args) -> int`` is the exit code. Each subcommand takes the shared flags it reads,
as ``config.COMMAND_FLAGS`` lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from quickpay_engine.commands import READS, WRITES
from quickpay_engine.config import settings_from
from quickpay_engine.config_file import apply as apply_config_file
from quickpay_engine.errors import ConfigError, QuickpayError
from quickpay_engine.logs import LOG_FORMATS
from quickpay_engine.logs import configure as configure_logs

# The subcommand modules, in the order `quickpay --help` lists them.
COMMAND_MODULES = [
    "serve",
    "seed",
    "subscribers",
    "bench",
    "adjust",
    "verify",
    "recover",
    "db",
    "audit",
    "reconcile",
    "wal",
    "fraud",
    "gateway_sim",
    "doctor",
    "config_show",
]


def versions() -> str:
    """What `quickpay --version` prints: the package, the engine (the Rust core it was
    built from) and the gRPC contract it speaks, one per line."""
    from quickpay_engine import __version__
    from quickpay_engine._engine import ENGINE_VERSION
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2

    return (
        f"quickpay-engine {__version__}\n"
        f"engine {ENGINE_VERSION}\n"
        f"contract {settlement_pb2.DESCRIPTOR.package}"
    )


class _VersionAction(argparse.Action):
    """--version: the versions are read only when asked for (the contract's module is
    not imported by every command)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(versions())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every subcommand registered."""
    parser = argparse.ArgumentParser(prog="quickpay", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("QUICKPAY_LOG_FORMAT", "text"),
        help="text lines, or one JSON object per line with time, level, logger, message,"
        " payment_id, idempotency_key and caller where known (QUICKPAY_LOG_FORMAT,"
        " default text)",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="settings file: every flag's setting by its name (data_dir for --data-dir);"
        " a flag beats its variable, which beats the file (QUICKPAY_CONFIG)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"quickpay_engine.commands.{name}").register(subparsers)
    return parser


# What the engine writes (the data dir, the SQLite file, the write-ahead log, the gateway
# simulators' books) holds MSISDNs and payment history: owner-only, whatever the
# caller's umask (directories 0700, files 0600).
UMASK = 0o077


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns its exit code (2 for a usage or config error)."""
    os.umask(UMASK)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = " ".join([args.command, *([args.action] if "action" in args else [])])
    name = f"quickpay {command}"
    try:
        # The file's settings are checked, and filled in, before anything is opened.
        args.sources = apply_config_file(args, argv, command)
    except QuickpayError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2
    configure_logs(args.log_format, args.verbose)
    try:
        with owning(args, name):
            return int(args.run(args))
    except QuickpayError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def owning(args: argparse.Namespace, name: str) -> Iterator[None]:
    """Holds the data dir (and a SQLite file outside it) for a command that declared
    ``set_defaults(data_dir_access=WRITES or READS)``, or a callable of ``(args,
    settings)`` answering the data dir a reader reads (None: none); see commands/.
    Refused (ownership.InUse, exit 2) while another process holds either."""
    from quickpay_engine.store.ownership import InUse, hold

    declared = getattr(args, "data_dir_access", None)
    if declared is None:
        yield
        return
    settings = settings_from(args)
    if (check := getattr(args, "check", None)) is not None:
        check(args)  # the command's own flags, refused before anything is opened
    directory: Path | None = settings.data_dir
    if callable(declared):
        directory, declared = declared(args, settings), READS
    if declared not in (READS, WRITES):
        raise ConfigError(f"{name}: unknown data dir access {declared!r}")  # a bug of ours
    if directory is None or (declared == READS and not directory.is_dir()):
        yield  # nothing there to read, and a reader creates nothing
        return
    sqlite_file = None if settings.postgres else settings.sqlite_path
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(hold(directory, sqlite_file, name))
        except InUse as err:
            # A command may say what works instead (``set_defaults(in_use_hint=...)``).
            if hint := getattr(args, "in_use_hint", ""):
                raise InUse(f"{err}, {hint}") from None
            raise
        if declared == WRITES:
            # A data dir made before (or by another tool) is closed to others too: what
            # is inside is then out of their reach, whatever each file's own mode.
            directory.chmod(0o700)
        yield


if __name__ == "__main__":
    sys.exit(main())
