"""`quickpay gateway-sim`: one simulated payment gateway, served on loopback.

The server is Rust (engine/src/python/sim/: hyper on a tokio runtime, SQLite books,
the fault dice), so a load benchmark of the engine measures the engine and not the
simulator; this command parses the flags, checks the fault model, starts it, and waits
for a signal (or stdin's end) to stop it.

It prints "listening on HOST:PORT" once ready (so --listen 127.0.0.1:0 can pick a free
port) and keeps its books in DATA_DIR/gateways/NAME/, so it survives its own restart.

With --export-report DAY it serves nothing: it writes that business day's settlement
CSV from the books (with --inject KIND:N,... discrepancies, see gateways/sim/report.py)
to --out or stdout, and what it injected as JSON lines to stderr (or OUT.injected.json).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import tomllib
from pathlib import Path

import uvloop

from quickpay_engine.commands import add_command
from quickpay_engine.errors import ConfigError

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
PORT_MAX = 65_535


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "gateway-sim", "serve a simulated payment gateway (HTTP/JSON) on loopback"
    )
    # The engine's QUICKPAY_LISTEN is not the simulator's address: a flag of its own,
    # with no variable, on a free port unless told.
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        help="loopback HOST:PORT to serve on (default 127.0.0.1:0: a free port, printed as"
        " 'listening on HOST:PORT')",
    )
    parser.add_argument("--name", default="sim", help="gateway name (default sim)")
    parser.add_argument(
        "--faults", type=Path, help="fault model file (TOML or JSON; see gateways/sim/faults.py)"
    )
    parser.add_argument("--faults-json", help="fault model as inline JSON (overrides --faults)")
    parser.add_argument("--seed", type=int, help="fault model seed (overrides the file's)")
    parser.add_argument(
        "--export-report", metavar="YYYY-MM-DD", help="write this day's settlement CSV and exit"
    )
    parser.add_argument("--inject", default="", help="discrepancies to inject: KIND:N,...")
    parser.add_argument("--inject-seed", type=int, default=0, help="which rows they hit")
    parser.add_argument("--out", type=Path, help="report file (default stdout)")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (the supervisor's children never outlive it)",
    )
    parser.set_defaults(run=run)
    parser.description = (
        "Serve a simulated payment gateway (HTTP/JSON) on loopback; its books live in"
        " DATA_DIR/gateways/NAME/."
    )


def run(args: argparse.Namespace) -> int:
    from quickpay_engine._engine import GatewaySim
    from quickpay_engine.gateways.sim.faults import FaultModel
    from quickpay_engine.gateways.sim.hooks import Hooks, fingerprint_key
    from quickpay_engine.gateways.sim.ledger import LEDGER_FILE
    from quickpay_engine.gateways.supervisor import sim_data_dir

    if args.export_report:
        return export_report(args)
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    if host not in LOOPBACK or not port.isdigit() or int(port) > PORT_MAX:
        raise ConfigError(f"--listen {args.listen!r}: the simulator serves loopback only")
    table: dict = {}
    try:
        if args.faults:
            text = args.faults.read_text()
            table = json.loads(text) if args.faults.suffix == ".json" else tomllib.loads(text)
        if args.faults_json:
            table = json.loads(args.faults_json)
        if args.seed is not None:
            table["seed"] = args.seed
        model = FaultModel.from_dict(table)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"fault model: {err}") from None
    data_dir = sim_data_dir(Path(args.data_dir), args.name)
    books = data_dir / LEDGER_FILE
    try:
        # The server runs on threads of its own (Rust); this thread waits for the end.
        sim = GatewaySim(
            args.name, books, fingerprint_key(data_dir), json.dumps(model.to_dict()),
            host, int(port), Hooks(args.name, books),
        )  # fmt: skip
    except OSError as err:
        raise ConfigError(f"gateway-sim {args.name}: {err}") from None
    try:
        uvloop.run(_wait(f"listening on {host}:{sim.port}", args.exit_on_stdin_eof))
    finally:
        sim.stop()
    print(f"gateway-sim {args.name}: stopped", file=sys.stderr)
    return 0


async def _wait(ready: str, exit_on_stdin_eof: bool) -> None:
    """Says it is ready, then waits for SIGTERM, SIGINT or (if asked) stdin's end."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_on_stdin_eof:
        loop.add_reader(sys.stdin.fileno(), _stop_on_eof, sys.stdin.fileno(), stop)
    print(ready, flush=True)
    await stop.wait()


def export_report(args: argparse.Namespace) -> int:
    """Writes one business day's settlement report from the books, offline."""
    from quickpay_engine.gateways.sim.ledger import LEDGER_FILE, report_rows
    from quickpay_engine.gateways.sim.report import inject_discrepancies, parse_inject, to_csv
    from quickpay_engine.gateways.supervisor import sim_data_dir

    books = sim_data_dir(Path(args.data_dir), args.name) / LEDGER_FILE
    if not books.exists():
        raise ConfigError(f"no books for gateway {args.name!r} at {books}")
    try:
        counts = parse_inject(args.inject)
    except ValueError as err:
        raise ConfigError(f"--inject: {err}") from None
    rows, injected = inject_discrepancies(
        report_rows(books, args.export_report), counts, args.inject_seed
    )
    notes = "".join(json.dumps(dataclasses.asdict(i)) + "\n" for i in injected)
    if args.out:
        args.out.write_text(to_csv(rows))
        if injected:
            args.out.with_suffix(".injected.json").write_text(notes)
    else:
        sys.stdout.write(to_csv(rows))
        sys.stderr.write(notes)
    return 0


def _stop_on_eof(fd: int, stop: asyncio.Event) -> None:
    if not os.read(fd, 4096):
        asyncio.get_running_loop().remove_reader(fd)
        stop.set()
