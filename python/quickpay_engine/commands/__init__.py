"""Subcommands of `quickpay`; see quickpay_engine.cli for the protocol."""

import argparse


def add_command(
    subparsers: argparse._SubParsersAction, name: str, help_text: str
) -> argparse.ArgumentParser:
    """Adds a subcommand that takes the common flags (--listen, --data-dir, ...)."""
    common = subparsers.common_parent  # type: ignore[attr-defined]
    return subparsers.add_parser(name, help=help_text, description=help_text, parents=[common])


def add_group(
    subparsers: argparse._SubParsersAction, name: str, help_text: str
) -> argparse._SubParsersAction:
    """Adds a subcommand with actions of its own (`quickpay wal verify`); returns the
    actions' subparsers, to fill with `add_command`. The common flags go on the actions,
    since argparse lets a nested parser's defaults overwrite its parent's values."""
    group = subparsers.add_parser(name, help=help_text, description=help_text)
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.common_parent = subparsers.common_parent  # type: ignore[attr-defined]
    return actions
