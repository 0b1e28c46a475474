"""Subcommands of `quickpay`; see quickpay_engine.cli for the protocol."""

import argparse


def add_command(
    subparsers: argparse._SubParsersAction, name: str, help_text: str
) -> argparse.ArgumentParser:
    """Adds a subcommand that takes the common flags (--listen, --data-dir, ...)."""
    common = subparsers.common_parent  # type: ignore[attr-defined]
    return subparsers.add_parser(name, help=help_text, description=help_text, parents=[common])
