"""Server CPU per payment, thread by thread (issue 15): which of the server's threads
the time goes to, in µs per payment answered (the last line: per payment settled).

    .venv/bin/python benches/thread_cpu.py [--rpc batch|unary|stream] [--seconds 10]
        [--runs 2] [--work var/threads]

Starts `quickpay serve` on SQLite with the bundled simulators at 0 ms (the setup of
cpu_budget.py), loads it with PayBatch (500 payments a call, 2,000 callers in two
client processes), unary Pay (64 callers) or PayStream (256 in flight), and reads each thread's CPU time from /proc/PID/task/TID/stat at
both ends of a window inside the measured part. Threads are grouped by name with
their digits stripped (the ledger's threads, the gateway senders). Counts, not
samples: the figure holds on a loaded host as long as the load is the same. The rate it
is divided by is the client's count of every answer in that window (`quickpay bench`'s
throughput_per_s: declines and errors included); "total per settled" divides the total
by the share of them that settled, and the first line gives the settled rate itself
(settled_per_s) beside the answered one.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

from compare import BATCH_LOAD, Log, Server, gateways_file, run_window, seeded_data

TICK = os.sysconf("SC_CLK_TCK")
LOADS = {
    "batch": BATCH_LOAD,
    "unary": ["--rpc", "unary", "--concurrency", "64"],
    "stream": ["--rpc", "stream", "--concurrency", "256"],
}


def threads(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (name, CPU seconds) of every thread of ``pid`` now."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds of the whole process, threads that ended included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def group(name: str) -> str:
    return name.rstrip("0123456789_-") or name


def run_once(
    log: Log, work: Path, common: list[str], server: Server, load: list[str], seconds: float
) -> dict:
    pid = server.proc.pid
    (first, whole0, t0), (last, whole1, t1), report = run_window(
        log,
        work / "threads-run.json",
        common,
        server,
        load,
        seconds,
        lambda _client: (threads(pid), process_cpu(pid), time.monotonic()),
    )
    rate = report["throughput_per_s"]
    statuses = report.get("statuses", {})
    settled = statuses.get("SETTLED", 0) / max(1, sum(statuses.values()))
    paid = rate * (t1 - t0)
    by: collections.Counter[str] = collections.Counter()
    for tid, (name, cpu) in last.items():
        by[group(name)] += cpu - first.get(tid, (name, 0.0))[1]
    # Threads that started and ended inside the window: in the process's count only.
    by["(ended threads)"] = (whole1 - whole0) - sum(by.values())
    return {
        "rate": rate,
        "settled": settled,
        "settled_rate": report["settled_per_s"],
        "us": {k: 1e6 * v / paid for k, v in by.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpc", choices=sorted(LOADS), default="batch")
    parser.add_argument(
        "--server",
        choices=("engine", "echo"),
        default="engine",
        help="the engine, or the bare grpc.aio echo server (the baseline of cpu_budget.py)",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--subscribers",
        type=int,
        default=20_000,
        help="subscribers seeded; few pay often enough to trip fraud velocity rules",
    )
    parser.add_argument(
        "--serve-flags", default="", help='more flags for `quickpay serve`, e.g. "--batch-max 64"'
    )
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("var/threads"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log = Log()
    bin_ = Path(sys.executable).parent
    common = seeded_data(log, args.work, args.subscribers)
    argv = [str(bin_ / "quickpay"), "serve", "--listen", "127.0.0.1:0", *common,
            "--gateways", str(gateways_file(args.work, 0)), *args.serve_flags.split()]  # fmt: skip
    if args.server == "echo":
        argv = [sys.executable, "-m", "quickpay_engine.bench.echo", "--listen", "127.0.0.1:0"]
    server = Server(log, argv, args.work / "threads-serve.log")
    try:
        load = LOADS[args.rpc]
        runs = [
            run_once(log, args.work, common, server, load, args.seconds) for _ in range(args.runs)
        ]
    finally:
        server.stop()
    names = sorted({k for r in runs for k in r["us"]}, key=lambda k: -runs[0]["us"].get(k, 0))
    print(
        f"load average {os.getloadavg()[0]:.1f}; answers "
        + ", ".join(
            f"{r['rate']:,.0f}/s ({100 * r['settled']:.0f} % settled, {r['settled_rate']:,.0f}"
            " settled/s)"
            for r in runs
        )
    )
    for name in names:
        figures = ", ".join(f"{r['us'].get(name, 0.0):6.1f}" for r in runs)
        print(f"{name:24s} {figures}  µs per payment")
    print(f"{'total':24s} " + ", ".join(f"{sum(r['us'].values()):6.1f}" for r in runs))
    print(
        f"{'total per settled':24s} "
        + ", ".join(f"{sum(r['us'].values()) / max(r['settled'], 1e-9):6.1f}" for r in runs)
    )


if __name__ == "__main__":
    main()
