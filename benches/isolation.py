"""Pay's rate alone and beside a caller that would starve it (issue #20, item 6): four
clients looping 4 MiB Reconcile reports, and WATCH idle WatchSettlements streams. Writes
its section of benches/RESULTS.md.

    .venv/bin/python benches/isolation.py [--runs 3] [--seconds 8] [--out benches/RESULTS.md]
    .venv/bin/python benches/isolation.py --serve-python DIR   # another tree's python/

`quickpay serve` (SQLite, bundled simulators at 0 ms) and `quickpay bench --rpc unary`
(64 callers) in processes of their own; the load in a third. Each run measures Pay
alone, beside the reconciling clients, alone, beside the watchers, in that order, so
that drift on this shared machine hits every window alike; the figure is the median of
the runs' ratios (beside / the alone window just before it). ``--serve-python`` runs
the server from another checkout's ``python/`` (the compiled core copied into it), for
the figures before the change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Log, Server, bench_once, gateways_file, machine, seeded_data, write_section

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- section: isolation (issue 20 item 6) -->"
END = "<!-- end section: isolation -->"
REPORT_BYTES = 4 * 1024 * 1024 - 64 * 1024  # under the transport's 4 MiB bound
RECONCILERS = 4
WATCHERS = 1_000  # WATCH_STREAMS_MAX: as many as the server takes
DAY = "2026-11-24"


def report_csv() -> bytes:
    """A report of captures billing never saw, just under 4 MiB: one discrepancy a row."""
    head = "gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at\n"
    out, k, size = [head], 0, len(head)
    while True:
        line = f"gw-b-{k:08d},pay_b_{k:08d},{100 + k},EUR,CAPTURE,SETTLED,{DAY}T12:00:00Z\n"
        if size + len(line) > REPORT_BYTES:
            return "".join(out).encode()
        out.append(line)
        size += len(line)
        k += 1


async def reconcile_load(target: str) -> None:
    """RECONCILERS clients, each looping one 4 MiB report, until killed."""
    import grpc

    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc

    request = pb.ReconcileRequest(gateway="acq-a", report_csv=report_csv(), business_day=DAY)
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.SettlementStub(channel)

        async def loop(n: int) -> None:
            runs = 0
            while True:
                try:
                    await stub.Reconcile(request)
                    runs += 1
                except grpc.aio.AioRpcError as err:
                    print(f"reconciler {n}: {err.code().name}", flush=True)
                    await asyncio.sleep(0.1)
                print(f"reconciler {n}: {runs} runs", flush=True)

        await asyncio.gather(*(loop(n) for n in range(RECONCILERS)))


async def watch_load(target: str) -> None:
    """WATCHERS streams of an account nobody pays (idle), open until killed."""
    import grpc

    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SettlementStub(channel)
        streams = [
            stub.WatchSettlements(pb.WatchRequest(account_id="idle-nobody"))
            for _ in range(WATCHERS)
        ]
        reads = [asyncio.ensure_future(s.read()) for s in streams]
        await asyncio.sleep(1)
        refused = sum(1 for r in reads if r.done() and r.exception() is not None)
        print(f"watchers open: {WATCHERS - refused}, refused {refused}", flush=True)
        await asyncio.gather(*reads, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--serve-python", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-isolation")
    parser.add_argument(
        "--loads",
        nargs="+",
        choices=["reconcile", "watch"],
        default=["reconcile", "watch"],
        help="which loads to measure beside Pay (default both)",
    )
    parser.add_argument("--load", choices=["reconcile", "watch"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        asyncio.run((reconcile_load if args.load == "reconcile" else watch_load)(args.target))
        return 0

    log, work = Log(), args.work
    work.mkdir(parents=True, exist_ok=True)
    quickpay = str(Path(sys.executable).parent / "quickpay")
    common = seeded_data(log, work, 10_000)
    env = dict(os.environ)
    if args.serve_python:
        env["PYTHONPATH"] = str(args.serve_python)
    before = machine()
    argv = [quickpay, "serve", "--listen", "127.0.0.1:0", *common,
            "--gateways", str(gateways_file(work, 0)), "--fraud-mode", "observe"]  # fmt: skip
    os.environ.update(env)  # the server inherits it (compare.Server passes no env)
    engine = Server(log, argv, work / "serve.log")
    os.environ.pop("PYTHONPATH", None)
    flags = ["--rpc", "unary", "--concurrency", "64", "--duration", str(args.seconds),
             "--warmup", "1"]  # fmt: skip
    ratios: dict[str, list[float]] = {"reconcile": [], "watch": []}
    rates: dict[str, list[float]] = {"alone": [], "reconcile": [], "watch": []}
    try:
        for run in range(args.runs):
            for load in args.loads:
                out = work / f"alone-{load}-{run}.json"
                alone = bench_once(log, out, common, engine.target, flags)["throughput_per_s"]
                loader_argv = [sys.executable, __file__, "--load", load, "--target", engine.target]
                log.note(loader_argv)
                with (work / f"{load}-{run}.log").open("w") as loader_log:
                    loader = subprocess.Popen(
                        loader_argv, stdout=loader_log, stderr=subprocess.STDOUT
                    )
                    time.sleep(3)  # the reports sent and the first runs going / streams open
                    try:
                        out = work / f"beside-{load}-{run}.json"
                        beside = bench_once(log, out, common, engine.target, flags)[
                            "throughput_per_s"
                        ]
                    finally:
                        loader.kill()
                        loader.wait()
                rates["alone"].append(alone)
                rates[load].append(beside)
                ratios[load].append(beside / alone)
                done = _runs(work / f"{load}-{run}.log")
                print(
                    f"run {run} {load}: alone {alone:.0f}/s beside {beside:.0f}/s"
                    + (
                        f" ({done} Reconcile runs answered while the load ran)"
                        if load == "reconcile"
                        else ""
                    ),
                    flush=True,
                )
                time.sleep(2)
    finally:
        engine.stop()
    section = render(args, log, before, rates, ratios)
    print(section)
    if args.out:
        write_section(args.out, section, BEGIN, END)
    return 0


def _runs(loader_log: Path) -> int:
    """Reconcile runs the loader's clients had answered when it was stopped."""
    last: dict[str, int] = {}
    for line in loader_log.read_text().splitlines():
        if found := re.fullmatch(r"(reconciler \d+): (\d+) runs", line):
            last[found[1]] = int(found[2])
    return sum(last.values())


def render(args, log: Log, before, rates, ratios) -> str:
    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f}..{max(values):,.0f} |"

    lines = [
        BEGIN,
        "## Isolation: Pay beside Reconcile and idle watchers (issue 20, item 6)",
        "",
        f"Server python: {args.serve_python or 'this checkout'}; machine: {before['cpu']},"
        f" {before['cores']}; commit {before['commit']}; load before {before['load before']}.",
        "",
        "| Pay/s (unary, 64 callers) | median | range |",
        "|---|---|---|",
        row("alone", rates["alone"]),
        *(
            [
                row(
                    f"beside {RECONCILERS} clients looping 4 MiB Reconcile reports",
                    rates["reconcile"],
                )
            ]
            if rates["reconcile"]
            else []
        ),
        *(
            [row(f"beside {WATCHERS} idle WatchSettlements streams", rates["watch"])]
            if rates["watch"]
            else []
        ),
        "",
        "| ratio beside / alone (same run) | median | range |",
        "|---|---|---|",
        *(
            f"| {k} | {statistics.median(v):.2f} | {min(v):.2f}..{max(v):.2f} |"
            for k, v in ratios.items()
            if v
        ),
        "",
        "Commands:",
        "",
        *(f"    {c}" for c in dict.fromkeys(_shape(c) for c in log.commands)),
        END,
    ]
    return "\n".join(lines) + "\n"


def _shape(command: str) -> str:
    """A command with its run number and port left out, so each shape is listed once."""
    command = re.sub(r"-\d+\.json", "-RUN.json", command)
    return re.sub(r"127\.0\.0\.1:\d{2,}", "127.0.0.1:PORT", command)


if __name__ == "__main__":
    raise SystemExit(main())
