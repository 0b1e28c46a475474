"""Subcommands of `quickpay`; see quickpay_engine.cli for the protocol."""

import argparse

from quickpay_engine.config import add_flags

# How a command uses the data dir, as ``set_defaults(data_dir_access=...)`` declares it; the CLI
# takes the data dir's lock for both (quickpay_engine.store.ownership), in one place.
# WRITES: creates it if absent and holds it for the whole run. READS: holds it only when
# it exists, so that the command neither reads a log or a database a running writer is
# changing nor leaves a data dir where there was none. Neither: the lock is not taken.
# A command whose own flags must be refused before the lock creates anything also sets
# ``check=fn(args)``.
WRITES = "writes"
READS = "reads"


def add_command(
    subparsers: argparse._SubParsersAction, name: str, help_text: str
) -> argparse.ArgumentParser:
    """Adds a subcommand with the shared flags it reads (config.COMMAND_FLAGS)."""
    command = getattr(subparsers, "command_prefix", "") + name
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    add_flags(parser, command)
    return parser


def add_group(
    subparsers: argparse._SubParsersAction, name: str, help_text: str
) -> argparse._SubParsersAction:
    """Adds a subcommand with actions of its own (`quickpay wal verify`); returns the
    actions' subparsers, to fill with `add_command`. The shared flags go on the actions,
    since argparse lets a nested parser's defaults overwrite its parent's values."""
    group = subparsers.add_parser(name, help=help_text, description=help_text)
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.command_prefix = f"{name} "  # type: ignore[attr-defined]
    return actions
