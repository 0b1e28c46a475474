"""`quickpay serve`: the gRPC server on uvloop."""

from __future__ import annotations

import argparse

import uvloop

from quickpay_engine.commands import add_command
from quickpay_engine.config import settings_from


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "serve", "serve quickpay.v1.Settlement over gRPC")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from quickpay_engine.server import serve

    return uvloop.run(serve(settings_from(args)))
