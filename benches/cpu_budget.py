"""Where the CPU goes per payment, end to end, on this machine.

    .venv/bin/python benches/cpu_budget.py [--runs 2] [--seconds 8] [--out benches/RESULTS.md]

The same `quickpay bench` load (unary Pay, 64 callers; then PayStream, 256 in flight)
against `quickpay serve` on SQLite with the bundled gateway simulators at zero added
latency, and against the bare grpc.aio echo server, runs alternating. While each run is
in its measured window, the CPU time of every process in the play is read from /proc:
the server, the simulators it started (its child processes), the load client, and the
whole machine. Dividing by the payments answered in that window gives the CPU each
component spends per payment, and how busy the machine was.

What it is for: a throughput target stated as a ratio to the echo server (issue 6) or
to pgbench (issue 7) is only reachable if the CPU per payment of everything on the
machine fits in its cores at that rate. The last column says what rate the machine
could carry at 100 % busy with these costs.

The "engine+metrics" rows run the same server with `--metrics-listen` while a scraper
reads /metrics once a second (Prometheus' usual interval is 15 s, so this is the
costlier case): the cost of the metrics is the difference to the "engine" rows of the
same run. `--servers` picks which of the three kinds run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from compare import (
    ROOT,
    Log,
    Server,
    gateways_file,
    machine,
    run_window,
    seeded_data,
    write_section,
)

BEGIN = "<!-- section: cpu budget (benches/cpu_budget.py) -->"
END = "<!-- end section: cpu budget -->"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
LOADS = {
    "unary": ["--rpc", "unary", "--concurrency", "64"],
    "stream": ["--rpc", "stream", "--concurrency", "256"],
    # One client process, so that its CPU is read whole (it starts no workers).
    "batch": ["--rpc", "batch", "--batch-size", "500", "--concurrency", "1000"],
}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (fields 14, 15)


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) * TICK_S, sum(values) * TICK_S


@dataclass
class Sample:
    """CPU seconds per component at one instant."""

    server: float
    simulators: float
    client: float
    busy: float
    total: float
    at: float = field(default_factory=time.monotonic)


def sample(server: int, client: int) -> Sample:
    client_pids = [client, *children(client)]
    busy, total = machine_busy_s()
    return Sample(
        server=cpu_s(server),
        simulators=sum(cpu_s(c) for c in children(server)),
        client=sum(cpu_s(c) for c in client_pids),
        busy=busy,
        total=total,
    )


def measure(
    log: Log, work: Path, common: list[str], server: Server, load: list[str], seconds: float
) -> dict[str, float]:
    """One load run against ``server``; CPU ms per payment of each component in the
    middle of its measured window, the machine's busy share and the rate."""
    first, last, report = run_window(
        log,
        work / "cpu-run.json",
        common,
        server,
        load,
        seconds,
        lambda client: sample(server.proc.pid, client),
    )
    rate = report["throughput_per_s"]
    # The answers that settled: the rest are declines (fraud velocity among them, when
    # few subscribers pay often) and refusals, which cost less than a settlement.
    statuses = report.get("statuses", {})
    paid = rate * (last.at - first.at)
    per = {
        part: 1e3 * (getattr(last, part) - getattr(first, part)) / paid
        for part in ("server", "simulators", "client")
    }
    per["busy"] = (last.busy - first.busy) / (last.total - first.total)
    per["rate"] = rate
    per["settled"] = statuses.get("SETTLED", 0) / max(1, sum(statuses.values()))
    per["settled_rate"] = report["settled_per_s"]
    return per


SERVERS = ("engine", "engine+metrics", "echo")
# Subscribers seeded. A load deals them out each once before any pays again, and each
# run's three loads pay about 100,000 times. With 20,000, every line paid every few
# seconds and fraud scoring's velocity rules declined half of PayBatch (a decline costs
# less than a settlement, so the CPU per answer looked lower than a settlement's).
SUBSCRIBERS = 200_000
# How often the "engine+metrics" server is scraped while it is measured.
SCRAPE_EVERY_S = 1.0


class Scraper:
    """Reads /metrics every SCRAPE_EVERY_S on a thread, as Prometheus would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scrapes = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY_S):
            try:
                with urllib.request.urlopen(self.url, timeout=10) as reply:
                    reply.read()
            except OSError as err:  # a slow answer on a loaded host: the next one counts
                self.failures.append(str(err))
                continue
            self.scrapes += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_all(
    log: Log,
    work: Path,
    runs: int,
    seconds: float,
    servers: tuple[str, ...] = SERVERS,
    subscribers: int = SUBSCRIBERS,
) -> dict[tuple[str, str], list[dict]]:
    quickpay = str(Path(sys.executable).parent / "quickpay")
    common = seeded_data(log, work, subscribers)
    # Each load its own seed: the same one would deal the subscribers in the same order
    # every time, so each load would pay again the lines the one before had just paid.
    seeds = itertools.count(1)
    gateways = ["--gateways", str(gateways_file(work, 0))]
    figures: dict[tuple[str, str], list[dict]] = {}
    for _ in range(runs):
        for who in servers:
            engine = [quickpay, "serve", "--listen", "127.0.0.1:0", *common, *gateways]
            argv = {
                "engine": engine,
                "engine+metrics": [*engine, "--metrics-listen", "127.0.0.1:0"],
                "echo": [
                    sys.executable, "-m", "quickpay_engine.bench.echo", "--listen", "127.0.0.1:0"
                ],
            }[who]  # fmt: skip
            logfile = work / f"cpu-{who}.log"
            server = Server(log, argv, logfile)
            scraper = None
            if who == "engine+metrics":
                found = re.search(r"metrics and probes on (http://\S+/)", logfile.read_text())
                assert found, "no metrics address in the server's log"
                scraper = Scraper(found.group(1) + "metrics")
            try:
                for name, load in LOADS.items():
                    seeded = [*load, "--seed", str(next(seeds))]
                    figures.setdefault((who, name), []).append(
                        measure(log, work, common, server, seeded, seconds)
                    )
            finally:
                if scraper is not None:
                    scraper.stop()
                    assert scraper.scrapes > 0, f"/metrics never answered: {scraper.failures}"
                server.stop()
    return figures


def render(
    figures: dict[tuple[str, str], list[dict]], args: argparse.Namespace, info: dict, log: Log
) -> str:
    cores = os.cpu_count() or 1
    lines = [
        BEGIN,
        "## Where the CPU goes per payment (`benches/cpu_budget.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by"
        f" `benches/cpu_budget.py --runs {args.runs} --seconds {args.seconds:g}` on commit"
        f" {info['commit']}; {info['cpu']}, {info['cores']}, Python {info['python']}.",
        "",
        "CPU milliseconds per answered call, read from /proc in the middle of each run's"
        " measured window: the server process (all its threads), the gateway simulators it"
        " started (the engine only), the load client, and how busy the whole machine was."
        f" Median of {args.runs} runs. Ceiling: the rate {cores} cores could carry at 100 %"
        " busy with these costs (cores / total CPU per call). Settled: the share of the"
        f" answers that were SETTLED ({args.subscribers:,} subscribers seeded, dealt out"
        " each once before any pays again, a seed per load; the load's 2 % malformed and"
        " 3 % wrong-line requests are the rest, and fraud scoring declines what pays too"
        " often). Calls/s counts every answer, declines"
        " and errors included (`quickpay bench`'s throughput_per_s); settled/s only the"
        " SETTLED ones (its settled_per_s).",
        "",
        "| server | load | calls/s | server ms | simulators ms | client ms | total ms |"
        " machine busy | ceiling/s | settled | settled/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (who, load), runs in figures.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        total = med["server"] + med["simulators"] + med["client"]
        lines.append(
            f"| {who} | {' '.join(LOADS[load])} | {med['rate']:,.0f} | {med['server']:.3f}"
            f" | {med['simulators']:.3f} | {med['client']:.3f} | {total:.3f}"
            f" | {100 * med['busy']:.0f} % | {1e3 * cores / total:,.0f}"
            f" | {100 * med['settled']:.0f} % | {med['settled_rate']:,.0f} |"
        )
    lines += ["", *log.details(), END, ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured s per run (8)")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-cpu")
    parser.add_argument("--out", type=Path, help="write the section into this RESULTS.md")
    parser.add_argument(
        "--subscribers", type=int, default=SUBSCRIBERS, help=f"subscribers seeded ({SUBSCRIBERS:,})"
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"which of {','.join(SERVERS)} to run"
    )
    args = parser.parse_args()
    servers = tuple(args.servers.split(","))
    if not set(servers) <= set(SERVERS):
        parser.error(f"--servers: expected some of {','.join(SERVERS)}")
    if args.seconds < 5:
        parser.error("--seconds must be at least 5 (the window skips the first and last)")
    args.work.mkdir(parents=True, exist_ok=True)
    log = Log()
    info = machine()
    figures = run_all(log, args.work, args.runs, args.seconds, servers, args.subscribers)
    text = render(figures, args, info, log)
    print(text)
    if args.out:
        write_section(args.out, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
