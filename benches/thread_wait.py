"""Where a running server's threads spend the wall clock: on a CPU, waiting for one
(the run queue), or neither (sleeping: waiting for work, a lock or the disk).

    .venv/bin/python benches/thread_wait.py [--delay 8] [--seconds 4] [--match "bin/quickpay serve"]

Waits for a process whose command line contains ``--match`` (start the load, e.g.
`benches/pg_compare.py --layouts sqlite`, beside it), then reads every thread's
/proc/PID/task/TID/schedstat (ns on a CPU, ns runnable but waiting for one, time slices)
``--delay`` seconds later and ``--seconds`` after that, and prints each group of threads
(names with their digits stripped, as thread_cpu.py groups them) as fractions of the
window. A thread that waits long in the run queue is short of CPU, not of work: on a
machine whose cores the server shares with its load, that says the machine is the bound,
not the thread.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from thread_cpu import group


class Thread(NamedTuple):
    """One thread at one instant: its name, ns on a CPU, ns runnable but waiting for
    one, time slices, and its context switches, voluntary (it blocked: a lock, epoll, a
    futex) and not (it was preempted)."""

    name: str
    on_cpu: int
    waiting: int
    slices: int
    voluntary: int
    preempted: int


def sample(pid: int) -> dict[int, Thread]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            on_cpu, waiting, slices = map(int, (task / "schedstat").read_text().split())
            status = (task / "status").read_text()
        except OSError:
            continue  # ended meanwhile
        switches = dict(line.split(":\t", 1) for line in status.splitlines() if "ctxt" in line)
        out[int(task.name)] = Thread(
            name, on_cpu, waiting, slices,
            int(switches["voluntary_ctxt_switches"]), int(switches["nonvoluntary_ctxt_switches"]),
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--match", default="bin/quickpay serve")
    args = parser.parse_args()
    while True:
        found = subprocess.run(["pgrep", "-f", args.match], capture_output=True, text=True)
        # Not this process: a --match given on its command line matches it too.
        pids = [int(p) for p in found.stdout.split() if int(p) != os.getpid()]
        if pids:
            pid = pids[0]
            break
        time.sleep(0.2)
    time.sleep(args.delay)
    first, t0 = sample(pid), time.monotonic()
    time.sleep(args.seconds)
    last, wall = sample(pid), (time.monotonic() - t0) * 1e9
    groups: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
    for tid, t in last.items():
        if tid in first:
            g = groups[group(t.name)]
            g[0] += t.on_cpu - first[tid].on_cpu
            g[1] += t.waiting - first[tid].waiting
            g[2] += t.slices - first[tid].slices
            g[3] += 1
    print("| thread | threads | on a CPU | in the run queue | slices/s |")
    print("|---|---:|---:|---:|---:|")
    for name, (on_cpu, waiting, slices, count) in sorted(groups.items(), key=lambda g: -g[1][0]):
        if on_cpu / wall >= 0.005:
            print(f"| `{name}` | {count} | {on_cpu / wall:.3f} | {waiting / wall:.3f} |"
                  f" {slices / (wall / 1e9):,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
