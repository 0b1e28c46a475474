"""py-spy profile of a server under unary Pay or PayStream load, counted per function on
the event loop's thread (issue 15: what the engine does per call beyond the echo).

    .venv/bin/pip install py-spy          # not a dependency
    .venv/bin/python benches/profile_calls.py --rpc unary --server engine --work var/prof
    .venv/bin/python benches/profile_calls.py --rpc unary --server echo --work var/prof

Starts `quickpay serve` on SQLite with the bundled simulators at 0 ms (the same setup as
cpu_budget.py) or the bare grpc.aio echo server, loads it with `quickpay bench --rpc
unary --concurrency 64` (or `--rpc stream --concurrency 256`) for ``--seconds`` + 8 s,
records ``--seconds`` of it with `py-spy record --threads --format raw --nonblocking`,
and prints the samples per thread and, on the MainThread, the functions with the most
samples by self (the innermost frame) and by total (anywhere in the stack). Run it from
another tree with PYTHONPATH=TREE/python to profile another build.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

from _support import pyspy_stacks, record_pyspy
from compare import Log, Server, gateways_file, seeded_data

LOADS = {
    "unary": ["--rpc", "unary", "--concurrency", "64"],
    "stream": ["--rpc", "stream", "--concurrency", "256"],
}
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def record(
    work: Path, out: Path, server_kind: str, rpc: str, seconds: float, flags: list[str]
) -> None:
    work.mkdir(parents=True, exist_ok=True)
    log = Log()
    bin_ = Path(sys.executable).parent
    common = seeded_data(log, work, 20_000)
    if server_kind == "echo":
        argv = [sys.executable, "-m", "quickpay_engine.bench.echo", "--listen", "127.0.0.1:0"]
    else:
        argv = [str(bin_ / "quickpay"), "serve", "--listen", "127.0.0.1:0", *common,
                "--gateways", str(gateways_file(work, 0)), *flags]  # fmt: skip
    server = Server(log, argv, work / f"prof-{server_kind}.log")
    try:
        client = subprocess.Popen(
            [str(bin_ / "quickpay"), "bench", *common, "--target", server.target,
             "--no-progress", *LOADS[rpc], "--duration", str(seconds + 6), "--warmup", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(3)
        record_pyspy(server.proc.pid, out, seconds, rate=200)
        client.wait(timeout=120)
    finally:
        server.stop()


def _name(frame: str) -> str:
    """``func (path/to/file.py:12)`` as ``file.py:func``."""
    found = FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    return f"{found['file'].rsplit('/', 1)[-1]}:{found['func']}"


def summarize(out: Path, top: int) -> str:
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total_in: collections.Counter[str] = collections.Counter()
    total = main = 0
    for stack in pyspy_stacks(out):
        n = stack.count
        total += n
        thread = stack.thread.rstrip("0123456789")
        threads[thread] += n
        if thread != "MainThread":
            continue
        main += n
        names = [_name(f) for f in stack.frames]
        if names:
            own[names[-1]] += n
        for name in set(names):
            total_in[name] += n
    lines = [
        f"samples {total}; by thread: "
        + ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in threads.most_common(8)),
        f"MainThread {main} samples; by self:",
    ]
    lines += [f"  {100 * v / main:5.1f} %  {k}" for k, v in own.most_common(top)]
    lines.append("by total (anywhere in the stack):")
    lines += [f"  {100 * v / main:5.1f} %  {k}" for k, v in total_in.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("var/prof"))
    parser.add_argument("--server", choices=("engine", "echo"), default="engine")
    parser.add_argument("--rpc", choices=tuple(LOADS), default="unary")
    parser.add_argument("--seconds", type=float, default=12.0, help="recorded s (12)")
    parser.add_argument(
        "--serve-flags", default="", help="more flags for `quickpay serve`, one string"
    )
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="py-spy's raw output")
    parser.add_argument("--summarize-only", action="store_true", help="read --out, record none")
    args = parser.parse_args()
    out = args.out or args.work / f"{args.server}-{args.rpc}.pyspy.txt"
    if not args.summarize_only:
        record(args.work, out, args.server, args.rpc, args.seconds, args.serve_flags.split())
    print(summarize(out, args.top))


if __name__ == "__main__":
    main()
