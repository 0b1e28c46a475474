"""Where a load's CPU goes across the whole machine, and how long each server thread
waits for a CPU, with serve flags compared run by run.

    .venv/bin/python benches/machine_cpu.py --rpc batch
    .venv/bin/python benches/machine_cpu.py --rpc stream --runs 4 --flags-b "--batch-linger-ms 4"
    .venv/bin/python benches/machine_cpu.py --runs 4 --trees /tmp/base,.

Seeds ``--subscribers`` lines (200,000, as cpu_budget.py does) once, then for each run
starts `quickpay serve` on SQLite with the bundled simulators at 0 ms and fraud scoring
observing (make bench's engine, ``compare.engine_argv``), drives it with `quickpay
bench` for ``--seconds``, and over a 10 s window in the middle reads from /proc:

- every process's CPU (utime + stime): the server, the simulators, the load client;
- each server thread's CPU, its run-queue wait (``/proc/PID/task/TID/schedstat``: time
  runnable but not running) and its context switches, voluntary (it blocked: the GIL,
  epoll, a futex) and not (it was preempted).

It prints settled/s, the server's CPU per settled payment and the mean batch (from the
server's exit log) per run. With ``--flags-b`` the runs alternate between the server
flags ``--flags`` (A) and those (B), pair by pair, each on a fresh server and its own
seed, so the two are compared on the same host minutes apart. With ``--trees A,B`` the
runs alternate the same way between two builds: the server runs with
PYTHONPATH=TREE/python (its python/ with its own _engine extension); the data, the
simulators' flags and the load client are this tree's for both.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from compare import Log, Server, engine_argv, gateways_file, seeded_data, tree_env
from cpu_budget import children, cpu_s
from thread_wait import sample

LOADS = {
    "batch": ["--rpc", "batch", "--batch-size", "500", "--concurrency", "2000"],
    "unary": ["--rpc", "unary", "--concurrency", "64"],
    "stream": ["--rpc", "stream", "--concurrency", "256"],
}
WINDOW_S = 10.0
# Seconds of load before the window opens (the warm-up and the server's first batches).
SETTLE_S = 4.0


def command(pid: int) -> str:
    """The command line of ``pid`` ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def one_run(
    log: Log,
    work: Path,
    common: list[str],
    flags: str,
    rpc: str,
    seconds: float,
    seed: int,
    tree: str | None = None,
) -> None:
    bin_ = Path(sys.executable).parent
    gateways = ["--gateways", str(gateways_file(work, 0))]
    argv = engine_argv(str(bin_ / "quickpay"), common, [*gateways, *shlex.split(flags)])
    serve_log = work / "serve.log"
    saved = os.environ.get("PYTHONPATH")
    if tree is not None:  # the server alone runs that tree's build
        os.environ["PYTHONPATH"] = tree_env(tree)["PYTHONPATH"]
    try:
        server = Server(log, argv, serve_log)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    try:
        client = subprocess.Popen(
            [str(bin_ / "quickpay"), "bench", *common, "--target", server.target,
             "--no-progress", *LOADS[rpc], "--duration", str(seconds), "--warmup", "1",
             "--seed", str(seed)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        # The window in the middle of the load: after its first seconds, before its end.
        settle = min(SETTLE_S, seconds / 4)
        time.sleep(settle)
        window = min(WINDOW_S, seconds / 2)
        # The load's own processes, whatever else the machine runs: the server, the
        # simulators it started (its children) and the client.
        ours = [server.proc.pid, *children(server.proc.pid), client.pid]
        before_p, before_t = [cpu_s(p) for p in ours], sample(server.proc.pid)
        time.sleep(window)
        after_p, after_t = [cpu_s(p) for p in ours], sample(server.proc.pid)
        commands = [command(p) for p in ours]
        out, _ = client.communicate(timeout=seconds + 120)
    finally:
        server.stop()
    settled = float(re.search(r"settled/s\s+([\d,.]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    batches = re.findall(r"\((mean [\d.]+), largest", serve_log.read_text())
    server_cpu = after_p[0] - before_p[0]
    per_settled = server_cpu / (settled * window) * 1e3 if settled else float("nan")
    print(
        f"{f'tree {tree}, ' if tree else ''}flags {flags or '(defaults)'!r}: settled/s"
        f" {settled:,.0f}, server CPU"
        f" {server_cpu:.2f} s in {window:.0f} s ({per_settled:.3f} ms per settled"
        f" payment), batches {batches[-1] if batches else '?'}"
    )
    used = sorted(zip(after_p, before_p, commands, strict=True), key=lambda u: u[1] - u[0])
    for after, before, text in used:
        print(f"  process  {after - before:6.2f} s  {text[:90]}")
    rows = sorted(
        (t.on_cpu - before_t[tid].on_cpu, tid) for tid, t in after_t.items() if tid in before_t
    )
    for on_cpu, tid in reversed(rows):
        t, b = after_t[tid], before_t[tid]
        print(
            f"  thread   {t.name:16s} CPU {on_cpu / 1e9:5.2f} s  run-queue wait"
            f" {(t.waiting - b.waiting) / 1e9:5.2f} s  gave the CPU up"
            f" {t.voluntary - b.voluntary:6d}  preempted {t.preempted - b.preempted:6d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpc", choices=tuple(LOADS), default="batch")
    parser.add_argument("--seconds", type=float, default=16.0, help="load per run (16)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--flags", default="", help="serve flags of every run (or of A)")
    parser.add_argument("--flags-b", default=None, help="serve flags of B, alternating")
    parser.add_argument("--trees", default=None, help="A,B: two builds, alternating")
    parser.add_argument("--work", type=Path, default=Path("var/machine-cpu"))
    args = parser.parse_args()
    if args.trees is not None and args.flags_b is not None:
        parser.error("--trees and --flags-b each make the pairs; give one of them")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = Log()
    common = seeded_data(log, work, args.subscribers)
    seed = int(time.time())
    pair: list[tuple[str, str | None]] = [(args.flags, None)]
    if args.flags_b is not None:
        pair = [(args.flags, None), (args.flags_b, None)]
    elif args.trees is not None:
        pair = [(args.flags, str(Path(t).resolve())) for t in args.trees.split(",")]
    for run in range(args.runs):
        for flags, tree in pair if run % 2 == 0 else pair[::-1]:
            seed += 1
            one_run(log, work, common, flags, args.rpc, args.seconds, seed, tree)


if __name__ == "__main__":
    main()
