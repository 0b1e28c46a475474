"""Subscriber changes applied live (issue #24 item 3): how fast a running server takes a
file of new lines through UpsertSubscribers, against the offline import of the same
file into a stopped data dir (the baseline, in the same run). Writes its section of
benches/RESULTS.md.

    .venv/bin/python benches/subscriber_changes.py [--base 20000] [--changes 20000]

Each figure is one `quickpay subscribers import` process, wall time from its start to
its exit (parsing the file included): offline into a data dir holding ``--base``
seeded lines; then ``--listen`` to `quickpay serve` on a copy of that data dir (SQLite,
bundled simulators), the same file; then the same file again, every change stale.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import machine, write_section

from quickpay_engine.subscribers import generate, write_csv

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- section: live subscriber changes (issue 24 item 3) -->"
END = "<!-- end section: live subscriber changes -->"
QUICKPAY = str(Path(sys.executable).parent / "quickpay")


def timed(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    took = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr[-2000:]}")
    return took, done.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=20_000, help="lines held before (20000)")
    parser.add_argument("--changes", type=int, default=20_000, help="new lines sent (20000)")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-subscribers")
    parser.add_argument("--out", type=Path, default=ROOT / "benches" / "RESULTS.md")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    base_csv, new_csv = args.work / "base.csv", args.work / "new.csv"
    rows = list(generate(args.base + args.changes, seed=1))  # numbers unique across both
    with base_csv.open("w", newline="") as out:
        write_csv(rows[: args.base], out)
    with new_csv.open("w", newline="") as out:
        write_csv(rows[args.base :], out)
    offline, live = args.work / "offline", args.work / "live"
    timed([QUICKPAY, "subscribers", "import", str(base_csv), "--data-dir", str(offline)])
    shutil.copytree(offline, live)

    offline_s, _ = timed(
        [QUICKPAY, "subscribers", "import", str(new_csv), "--data-dir", str(offline)]
    )
    log = (args.work / "serve.log").open("w")
    server = subprocess.Popen(
        [QUICKPAY, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(live)],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        target = server.stdout.readline().strip().removeprefix("listening on ")
        send = [QUICKPAY, "subscribers", "import", str(new_csv), "--listen", target,
                "--change-version", "1"]  # fmt: skip
        live_s, said = timed(send)
        stale_s, said_again = timed(send)
    finally:
        server.terminate()
        server.wait(30)
    batches = re.search(r"in (\d+) batches", said)
    m = machine()
    n = args.changes
    rows = [
        ("offline import into a stopped data dir (baseline)", offline_s, ""),
        ("--listen to a running server: new lines", live_s, said),
        ("--listen again: every change stale", stale_s, said_again),
    ]
    table = "\n".join(f"| {what} | {s:.2f} s | {n / s:,.0f} |" for what, s, _ in rows)
    section = f"""{BEGIN}
## Live subscriber changes (UpsertSubscribers)

Command: `.venv/bin/python benches/subscriber_changes.py --base {args.base} --changes {n}`
(release build; machine: {m["cpu"]}, {m["cores"]}; commit {m["commit"]}; load before
{m["load before"]}).

{n:,} new lines (a seeded file) into a data dir holding {args.base:,}, each figure one
`quickpay subscribers import` process from start to exit, parsing included. The live
run commits {batches.group(1) if batches else "?"} batches (at most 500 changes each:
lines, versions and one audit row per change in one transaction, then the ledger
accounts, the engine's table and the fraud profiles).

| run | wall | lines/s |
|---|---|---|
{table}

The server's answer: `{said}`; the second time: `{said_again}`.
{END}
"""
    write_section(args.out, section, BEGIN, END)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
