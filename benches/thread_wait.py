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
import subprocess
import time
from pathlib import Path

from thread_cpu import group


def sample(pid: int) -> dict[int, tuple[str, int, int, int]]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            on_cpu, waiting, slices = map(int, (task / "schedstat").read_text().split())
        except OSError:
            continue  # ended meanwhile
        out[int(task.name)] = (name, on_cpu, waiting, slices)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--match", default="bin/quickpay serve")
    args = parser.parse_args()
    while True:
        found = subprocess.run(["pgrep", "-f", args.match], capture_output=True, text=True)
        if found.stdout.split():
            pid = int(found.stdout.split()[0])
            break
        time.sleep(0.2)
    time.sleep(args.delay)
    first, t0 = sample(pid), time.monotonic()
    time.sleep(args.seconds)
    last, wall = sample(pid), (time.monotonic() - t0) * 1e9
    groups: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
    for tid, (name, on_cpu, waiting, slices) in last.items():
        if tid in first:
            g = groups[group(name)]
            g[0] += on_cpu - first[tid][1]
            g[1] += waiting - first[tid][2]
            g[2] += slices - first[tid][3]
            g[3] += 1
    print("| thread | threads | on a CPU | in the run queue | slices/s |")
    print("|---|---:|---:|---:|---:|")
    for name, (on_cpu, waiting, slices, count) in sorted(groups.items(), key=lambda g: -g[1][0]):
        if on_cpu / wall >= 0.005:
            print(f"| `{name}` | {count} | {on_cpu / wall:.3f} | {waiting / wall:.3f} |"
                  f" {slices / (wall / 1e9):,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
