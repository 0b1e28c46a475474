"""Where a load's CPU goes across the whole machine, and how long each server thread
waits for a CPU, with serve flags compared run by run.

    .venv/bin/python benches/machine_cpu.py --rpc batch
    .venv/bin/python benches/machine_cpu.py --rpc stream --runs 4 --flags-b "--batch-linger-ms 4"

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
seed, so the two are compared on the same host minutes apart.
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

from compare import Log, Server, engine_argv, gateways_file, seeded_data

LOADS = {
    "batch": ["--rpc", "batch", "--batch-size", "500", "--concurrency", "2000"],
    "unary": ["--rpc", "unary", "--concurrency", "64"],
    "stream": ["--rpc", "stream", "--concurrency", "256"],
}
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
WINDOW_S = 10.0
# Seconds of load before the window opens (the warm-up and the server's first batches).
SETTLE_S = 4.0


def processes() -> dict[int, tuple[float, str, int]]:
    """Every process's CPU seconds, command line and parent."""
    out: dict[int, tuple[float, str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # ended meanwhile
        cpu = (int(fields[11]) + int(fields[12])) * TICK_S
        out[int(entry.name)] = (cpu, command.strip(), int(fields[1]))
    return out


def threads(pid: int) -> dict[int, tuple[str, float, float, int, int]]:
    """Each thread of ``pid``: name, CPU s, run-queue wait s, voluntary and involuntary
    context switches."""
    out: dict[int, tuple[str, float, float, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            run_ns, wait_ns, _ = map(int, (task / "schedstat").read_text().split())
            status = dict(
                line.split(":\t", 1)
                for line in (task / "status").read_text().splitlines()
                if ":\t" in line
            )
        except OSError:
            continue
        out[int(task.name)] = (
            name, run_ns / 1e9, wait_ns / 1e9,
            int(status["voluntary_ctxt_switches"]), int(status["nonvoluntary_ctxt_switches"]),
        )  # fmt: skip
    return out


def one_run(
    log: Log, work: Path, common: list[str], flags: str, rpc: str, seconds: float, seed: int
) -> None:
    bin_ = Path(sys.executable).parent
    gateways = ["--gateways", str(gateways_file(work, 0))]
    argv = engine_argv(str(bin_ / "quickpay"), common, [*gateways, *shlex.split(flags)])
    serve_log = work / "serve.log"
    server = Server(log, argv, serve_log)
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
        before_p, before_t = processes(), threads(server.proc.pid)
        time.sleep(window)
        after_p, after_t = processes(), threads(server.proc.pid)
        out, _ = client.communicate(timeout=seconds + 120)
    finally:
        server.stop()
    settled = float(re.search(r"settled/s\s+([\d,.]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    batches = re.findall(r"\((mean [\d.]+), largest", serve_log.read_text())
    server_cpu = after_p[server.proc.pid][0] - before_p[server.proc.pid][0]
    per_settled = server_cpu / (settled * window) * 1e3 if settled else float("nan")
    print(
        f"flags {flags or '(defaults)'!r}: settled/s {settled:,.0f}, server CPU"
        f" {server_cpu:.2f} s in {window:.0f} s ({per_settled:.3f} ms per settled"
        f" payment), batches {batches[-1] if batches else '?'}"
    )
    # The load's own processes, whatever else the machine runs: the server, the
    # simulators it started (its children) and the client.
    ours = {server.proc.pid, client.pid} | {
        p for p, (_, _, parent) in after_p.items() if parent == server.proc.pid
    }
    used = sorted(
        (after_p[p][0] - before_p[p][0], after_p[p][1])
        for p in ours
        if p in after_p and p in before_p
    )
    for cpu, command in reversed(used):
        print(f"  process  {cpu:6.2f} s  {command[:90]}")
    rows = sorted(
        (
            (a[1] - before_t[t][1], a[0], a[2] - before_t[t][2], a[3] - before_t[t][3],
             a[4] - before_t[t][4])
            for t, a in after_t.items() if t in before_t
        ),
        reverse=True,
    )  # fmt: skip
    for cpu, name, wait, voluntary, preempted in rows:
        print(
            f"  thread   {name:16s} CPU {cpu:5.2f} s  run-queue wait {wait:5.2f} s"
            f"  gave the CPU up {voluntary:6d}  preempted {preempted:6d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpc", choices=tuple(LOADS), default="batch")
    parser.add_argument("--seconds", type=float, default=16.0, help="load per run (16)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--flags", default="", help="serve flags of every run (or of A)")
    parser.add_argument("--flags-b", default=None, help="serve flags of B, alternating")
    parser.add_argument("--work", type=Path, default=Path("var/machine-cpu"))
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = Log()
    common = seeded_data(log, work, args.subscribers)
    seed = int(time.time())
    for run in range(args.runs):
        pair = [args.flags] if args.flags_b is None else [args.flags, args.flags_b]
        for flags in pair if run % 2 == 0 else pair[::-1]:
            seed += 1
            one_run(log, work, common, flags, args.rpc, args.seconds, seed)


if __name__ == "__main__":
    main()
