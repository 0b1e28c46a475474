"""`quickpay bench`: drive a running engine with Pay or PayStream calls and report.

Closed loop by default (``--concurrency`` callers); ``--rate`` makes it an open loop with
latency measured from each request's intended send time. Prints a live progress line
and a final table; ``--json`` and ``--plot`` write the figures and their timeline.
Two rates (RATES below): every answer, and the settled ones alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from quickpay_engine.bench.load import (
    BATCH_SIZE,
    CALL_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    ConnectFailed,
    LoadPlan,
)
from quickpay_engine.bench.report import plot, table, to_json, write_json
from quickpay_engine.bench.runner import WorkerFailed, run_load
from quickpay_engine.bench.scenario import Mix, RequestSource, parse_methods
from quickpay_engine.commands import add_command
from quickpay_engine.config import settings_from
from quickpay_engine.errors import ImportRowError
from quickpay_engine.subscribers import parse_csv

# Answers with these codes are what the scenario asked for (its malformed share);
# any other error makes the run exit 1.
EXPECTED_ERRORS = frozenset({"INVALID_ARGUMENT"})
# A bearer token for a server with an access file (docs/operations.md).
TOKEN_VARIABLE = "QUICKPAY_TOKEN"  # noqa: S105 (the variable's name, not a token)
# What the two rates count (report.rates): a declined or refused payment costs the engine
# less than a settled one, so the first alone overstates settlement capacity.
RATES = """rates, per second of the measured window (after --warmup):
  payments/s (JSON throughput_per_s)  every measured request: settled, declined,
                                      refused with an error, or timed out
  settled/s  (JSON settled_per_s)     only the answers whose status is SETTLED (a
                                      replayed retry of a settled payment included)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "bench", "send a load of Pay calls and report")
    parser.epilog = RATES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    target = parser.add_argument_group("target")
    target.add_argument("--target", help="HOST:PORT of the engine (default: --listen)")
    target.add_argument("--tls", action="store_true", help="connect with TLS")
    target.add_argument("--tls-ca", type=Path, help="PEM roots for TLS (default: system roots)")
    target.add_argument("--tls-server-name", help="name to check in the server certificate")
    target.add_argument("--tls-cert", type=Path, help="PEM client certificate, for mTLS")
    target.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    # The token is read from QUICKPAY_TOKEN only (see run): a flag's value shows in `ps`.
    load = parser.add_argument_group("load")
    load.add_argument(
        "--rpc",
        choices=["unary", "stream", "batch"],
        default="unary",
        help="Pay, PayStream or PayBatch",
    )
    load.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"--rpc batch: payments per PayBatch call, at most 1000 ({BATCH_SIZE}); a"
        " closed loop keeps --concurrency payments in flight in calls of this size, an open"
        " loop sends a call full or 2 ms after its first payment",
    )
    load.add_argument("--count", type=int, help="measured payments to send (default 5000)")
    load.add_argument("--duration", type=float, help="measured seconds, instead of --count")
    load.add_argument("--warmup", type=float, default=0.0, help="seconds not measured first (0)")
    load.add_argument("--concurrency", type=int, default=64, help="closed loop: callers (64)")
    load.add_argument("--rate", type=float, help="open loop: requests per second in total")
    load.add_argument(
        "--arrival", choices=["constant", "poisson"], default="constant", help="open loop gaps"
    )
    load.add_argument("--channels", type=int, default=4, help="connections per process (4)")
    load.add_argument("--processes", type=int, default=1, help="client processes (1)")
    load.add_argument("--timeout", type=float, default=CALL_TIMEOUT_S, help="seconds per call (30)")
    load.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT_S,
        help="seconds to connect before giving up (10)",
    )
    mix = parser.add_argument_group("scenario")
    mix.add_argument("--scenario", type=Path, help="TOML or JSON file with the mix (flags win)")
    mix.add_argument("--subscribers", type=Path, help="CSV (default DATA_DIR/subscribers.csv)")
    mix.add_argument("--seed", type=int, default=1, help="scenario random seed (1)")
    mix.add_argument("--invalid-share", type=float, help="malformed requests (0.02)")
    mix.add_argument("--declined-share", type=float, help="business declines (0.03)")
    mix.add_argument("--fraud-share", type=float, help="card-testing-like requests (0)")
    mix.add_argument("--duplicate-share", type=float, help="retries of a recent key (0)")
    mix.add_argument("--bill-share", type=float, help="bill payments among payments")
    mix.add_argument("--methods", help="weights, e.g. card=0.6,wallet=0.3,bank_account=0.1")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--json",
        type=Path,
        help="write the figures and timeline here (throughput_per_s and settled_per_s:"
        " see the rates below)",
    )
    out.add_argument("--plot", type=Path, help="write a PNG of throughput and latency here")
    out.add_argument(
        "--answers",
        type=Path,
        help="write every answer here as CSV (key, kind, status, reason, error, payment id,"
        " replayed); with --processes N, one file per process: FILE.0 ... FILE.N-1",
    )
    out.add_argument("--interval", type=float, default=1.0, help="timeline tick, seconds (1)")
    out.add_argument("--no-progress", action="store_true", help="no live progress line")
    parser.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"quickpay bench: {message}", file=sys.stderr)
    return 2


def _mix(args: argparse.Namespace) -> Mix:
    overrides: dict[str, object] = {
        "invalid": args.invalid_share,
        "declined": args.declined_share,
        "fraud": args.fraud_share,
        "duplicate": args.duplicate_share,
        "bill_share": args.bill_share,
        "methods": parse_methods(args.methods) if args.methods else None,
    }
    if args.scenario:
        return Mix.from_file(args.scenario, **overrides)
    return Mix(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = args.subscribers or settings.data_dir / "subscribers.csv"
    if args.count is not None and args.duration is not None:
        return _fail("--count and --duration exclude each other")
    count = args.count if args.count is not None or args.duration is not None else 5_000
    try:
        plan = LoadPlan(
            target=args.target or settings.listen,
            rpc=args.rpc,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            rate_per_s=args.rate,
            arrival=args.arrival,
            count=count,
            duration_s=args.duration,
            warmup_s=args.warmup,
            channels=args.channels,
            interval_s=args.interval,
            timeout_s=args.timeout,
            connect_timeout_s=args.connect_timeout,
            tls=args.tls or args.tls_ca is not None or args.tls_cert is not None,
            tls_ca=args.tls_ca,
            tls_server_name=args.tls_server_name,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            # From the environment, not a flag: a flag's value shows in `ps`.
            token=os.environ.get(TOKEN_VARIABLE) or None,
            seed=args.seed,
            answers=args.answers,
        )
        mix = _mix(args)
        with path.open(newline="") as text:
            subscribers = parse_csv(text)
        run_id = f"bench-{time.time_ns():x}"
        RequestSource(subscribers, args.seed, mix, run_id)  # refuses an unusable file now
        if args.processes < 1 or args.processes > plan.concurrency:
            return _fail("--processes must be between 1 and --concurrency")
    except (OSError, ImportRowError, ValueError) as err:
        return _fail(str(err))
    try:
        tally, timeline = run_load(
            plan, subscribers, mix, run_id, args.processes, progress=not args.no_progress
        )
    except (WorkerFailed, ConnectFailed) as err:
        print(f"quickpay bench: the run failed: {err}", file=sys.stderr)
        return 1
    print(table(tally, plan))
    report = to_json(tally, plan, mix, timeline, args.processes)
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    if args.plot:
        plot(args.plot, report)
        print(f"wrote {args.plot}")
    unexpected = sum(v for k, v in tally.errors.items() if k not in EXPECTED_ERRORS)
    return 1 if unexpected else 0
