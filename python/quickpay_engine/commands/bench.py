"""`quickpay bench`: drive a running engine with Pay calls and summarize."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import uvloop

from quickpay_engine.bench.load import run_closed_loop
from quickpay_engine.bench.scenario import Mix, build_requests
from quickpay_engine.commands import add_command
from quickpay_engine.config import settings_from
from quickpay_engine.errors import ImportRowError
from quickpay_engine.subscribers import parse_csv


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "bench", "send a load of Pay calls and summarize")
    parser.add_argument("--target", help="HOST:PORT of the engine (default: --listen)")
    parser.add_argument("--count", type=int, default=5_000, help="payments to send (5000)")
    parser.add_argument("--concurrency", type=int, default=64, help="callers at once (64)")
    parser.add_argument("--channels", type=int, default=4, help="gRPC connections (4)")
    parser.add_argument(
        "--subscribers", type=Path, help="subscriber CSV (default DATA_DIR/subscribers.csv)"
    )
    parser.add_argument("--seed", type=int, default=1, help="scenario random seed (1)")
    parser.add_argument("--invalid-share", type=float, default=0.02, help="malformed share")
    parser.add_argument("--declined-share", type=float, default=0.03, help="declined share")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = args.subscribers or settings.data_dir / "subscribers.csv"
    if args.count < 1 or args.concurrency < 1 or args.channels < 1:
        print(
            "quickpay bench: --count, --concurrency and --channels must be positive",
            file=sys.stderr,
        )
        return 2
    try:
        with path.open(newline="") as text:
            subscribers = parse_csv(text)
        mix = Mix(invalid=args.invalid_share, declined=args.declined_share)
    except (OSError, ImportRowError, ValueError) as err:
        print(f"quickpay bench: {err}", file=sys.stderr)
        return 2
    run_id = f"bench-{time.time_ns():x}"
    requests = build_requests(subscribers, args.count, args.seed, mix, run_id)
    summary = uvloop.run(
        run_closed_loop(
            args.target or settings.listen,
            requests,
            args.concurrency,
            args.channels,
            progress=not args.no_progress,
        )
    )
    print(summary.table())
    # Errors other than the malformed share we sent on purpose mean the run went wrong.
    unexpected = sum(v for k, v in summary.errors.items() if k != "INVALID_ARGUMENT")
    return 1 if unexpected else 0
