"""`quickpay serve`: the gRPC server on uvloop."""

from __future__ import annotations

import argparse
import os

import uvloop

from quickpay_engine.commands import WRITES, add_command
from quickpay_engine.config import settings_from
from quickpay_engine.errors import ConfigError
from quickpay_engine.security.settings import add_security_flags, check_exposure, security_from
from quickpay_engine.settlement.batcher import BatchSettings

# Bounds of the batching flags: a batch goes to the gateways in one sale_many call, so
# it is at most what that takes (the router's SALE_BATCH_MAX, not imported here to keep
# the command line light); lingering longer than a second would only add latency.
SALE_BATCH_MAX = 4_096
LINGER_MS_MAX = 1_000.0
BATCHES_IN_FLIGHT_MAX = 64


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "serve", "serve quickpay.v1.Settlement over gRPC")
    defaults = BatchSettings()
    flags = (
        ("--batch-max", "QUICKPAY_BATCH_MAX", int, defaults.batch_max,
         f"payments per micro-batch at most, 1 to {SALE_BATCH_MAX}"),
        ("--batch-linger-ms", "QUICKPAY_BATCH_LINGER_MS", float, defaults.linger_ms,
         "how long a batch waits after its first payment for more, and once more per"
         " batch being processed ahead of it, while more are expected within that"
         " (at lower rates a batch starts at once)"),
        ("--batches-in-flight", "QUICKPAY_BATCHES_IN_FLIGHT", int, defaults.inflight_max,
         "batches at the gateways or committing at once, which hides gateway latency"),
    )  # fmt: skip
    for flag, variable, kind, default, what in flags:
        parser.add_argument(
            flag,
            type=kind,
            # A string default: argparse converts (and refuses) a variable's value the
            # way it does a flag's.
            default=os.environ.get(variable, str(default)),
            help=f"{what} ({variable}, default {default:g})",
        )
    add_security_flags(parser)
    parser.set_defaults(run=run, data_dir_access=WRITES, check=check)


def check(args: argparse.Namespace) -> None:
    """The serve-only flags checked before anything starts."""
    batching_from(args)
    security = security_from(args)
    check_exposure(settings_from(args).listen, security)


def batching_from(args: argparse.Namespace) -> BatchSettings:
    """The batching flags, checked against their bounds."""
    if not 1 <= args.batch_max <= SALE_BATCH_MAX:
        raise ConfigError(f"--batch-max {args.batch_max}: expected 1 to {SALE_BATCH_MAX}")
    if not 0 <= args.batch_linger_ms <= LINGER_MS_MAX:
        raise ConfigError(
            f"--batch-linger-ms {args.batch_linger_ms:g}: expected 0 to {LINGER_MS_MAX:g}"
        )
    if not 1 <= args.batches_in_flight <= BATCHES_IN_FLIGHT_MAX:
        raise ConfigError(
            f"--batches-in-flight {args.batches_in_flight}: expected 1 to {BATCHES_IN_FLIGHT_MAX}"
        )
    return BatchSettings(
        batch_max=args.batch_max,
        linger_ms=args.batch_linger_ms,
        inflight_max=args.batches_in_flight,
        queue_max=max(BatchSettings().queue_max, args.batch_max),
    )


def run(args: argparse.Namespace) -> int:
    from quickpay_engine.server import serve

    return uvloop.run(serve(settings_from(args), batching_from(args), security_from(args)))
