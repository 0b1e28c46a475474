"""`make bench`: every benchmark with its baseline measured in the same run, written to
this area's section of benches/RESULTS.md.

1. The micro-benchmarks: every ``benches/bench_*.py`` (pytest-benchmark), whoever wrote
   it. A benchmark names its baseline in ``benchmark.extra_info["baseline"]`` (the name
   of another benchmark of the run); the table gives the ratio to it.
2. End to end: ``quickpay bench`` against ``quickpay serve`` (SQLite) and against the
   bare grpc.aio echo server (``quickpay_engine.bench.echo``), the same client, the same
   flags, runs alternating between the two so that drift hits both.
3. pgbench against the local PostgreSQL: the baseline the PostgreSQL store (issue 7)
   will be put beside. Skipped, and said so, when PostgreSQL or pgbench is missing.

Each end-to-end figure is the median of ``--runs`` runs with its range (min to max).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- section: load benchmarking (quickpay bench, make bench) -->"
END = "<!-- end section: load benchmarking -->"
PGBENCH_CANDIDATES = ["pgbench", "/usr/lib/postgresql/15/bin/pgbench"]
PG_URL = os.environ.get("QUICKPAY_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres")
# A server that has not printed its port after this long has failed to start.
START_TIMEOUT_S = 30.0


@dataclass
class Scenario:
    """One end-to-end comparison: the same `quickpay bench` flags against both servers."""

    name: str
    flags: list[str]
    what: str  # what the figure says, for the reader


@dataclass
class Figures:
    """One metric's values over the runs."""

    values: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def spread(self) -> str:
        if not self.values:
            return "n/a"
        return f"{min(self.values):,.1f}..{max(self.values):,.1f}"


class Log:
    """The exact commands run, in order, for RESULTS.md."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def note(self, argv: list[str]) -> None:
        """Records a command started some other way (in the background)."""
        self.commands.append(_short(shlex.join(argv)))

    def run(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.note(argv)
        return subprocess.run(argv, text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload]

    def details(self) -> list[str]:
        """The commands, each once in the order first run, as a folded Markdown block."""
        return [
            "<details><summary>Exact commands</summary>",
            "",
            "```",
            *dict.fromkeys(self.commands),
            "```",
            "",
            "</details>",
        ]


def _short(arg: str) -> str:
    return arg.replace(str(ROOT) + "/", "").replace(sys.executable, ".venv/bin/python")


def machine() -> dict[str, str]:
    """CPU, cores, kernel and the versions that shape the figures."""
    lscpu = subprocess.run(["lscpu"], text=True, capture_output=True, check=False).stdout
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lscpu.splitlines())
    )
    versions = {
        name: _version(name) for name in ("grpcio", "protobuf", "hdrhistogram", "pytest-benchmark")
    }
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, capture_output=True
    ).stdout.strip()
    return {
        "cpu": fields.get("Model name", platform.processor() or "unknown"),
        "cores": f"{os.cpu_count()} logical ({fields.get('Thread(s) per core', '?')} per core)",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "commit": commit or "unknown",
        "load before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


# -- 1. micro-benchmarks -------------------------------------------------------------


def benchmark_env() -> dict[str, str]:
    """The environment of a pytest-benchmark run of its own, never a pytest-xdist
    worker's: pytest-benchmark turns itself off (no timing, no JSON) in a process that
    carries a worker's variables, which a child inherits when a test under `make test`'s
    workers drives this script."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}


def micro(log: Log, work: Path, quick: bool) -> tuple[list[dict], str]:
    """Runs every benches/bench_*.py; returns their rows and pytest's verdict."""
    out = work / "micro.json"
    argv = [sys.executable, "-m", "pytest", "benches", "-o", "python_files=bench_*.py", "-q"]
    argv += [f"--benchmark-json={out}", "-p", "no:cacheprovider"]
    env = benchmark_env()
    if quick:
        env["QUICKPAY_BENCH_SIZE"] = "smoke"
        argv += ["--benchmark-min-rounds=1", "--benchmark-max-time=0.05"]
    done = log.run(argv, cwd=ROOT, env=env, timeout=600)
    verdict = (done.stdout.strip().splitlines() or ["no output"])[-1]
    if not out.exists():
        return [], f"failed: {verdict}\n{done.stderr[-2000:]}"
    data = json.loads(out.read_text())
    rows = []
    by_name = {b["name"]: b for b in data["benchmarks"]}
    for b in data["benchmarks"]:
        stats = b["stats"]
        baseline = b.get("extra_info", {}).get("baseline")
        base = by_name.get(baseline) if baseline else None
        rows.append(
            {
                "file": b["fullname"].split("::")[0],
                "name": b["name"],
                "median_us": stats["median"] * 1e6,
                "iqr_us": stats["iqr"] * 1e6,
                "rounds": stats["rounds"],
                "rows_per_call": b.get("extra_info", {}).get("rows_per_call"),
                "baseline": baseline or "",
                # Per row, so a batch compares with its single form and a batch commit
                # with one fsync on the same footing: cost per payment.
                "ratio": _per_row(b) / _per_row(base) if base else None,
            }
        )
    return rows, verdict


def _per_row(bench: dict) -> float:
    return bench["stats"]["median"] / (bench.get("extra_info", {}).get("rows_per_call") or 1)


# -- 2. end to end -------------------------------------------------------------------


class Server:
    """A server process that prints ``listening on HOST:PORT``; stopped with SIGTERM."""

    def __init__(self, log: Log, argv: list[str], logfile: Path) -> None:
        log.commands.append(_short(shlex.join(argv)) + " &")
        self._out = logfile.open("w")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            m = re.search(r"^listening on (\S+)$", logfile.read_text(), re.M)
            if m:
                self.target = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{argv[0]} did not start: {logfile.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


# PayBatch: calls of 500 from 2,000 callers in 2 client processes (one process's event
# loop would otherwise be the limit).
BATCH_LOAD = ["--rpc", "batch", "--batch-size", "500", "--concurrency", "2000", "--processes", "2"]


def scenarios(seconds: float, warmup: float) -> list[Scenario]:
    """The comparisons: the closed loops give capacity, the open loop the latency at a
    rate both servers can carry."""
    timed = ["--duration", str(seconds), "--warmup", str(warmup)]
    return [
        Scenario(
            "unary closed 64",
            ["--rpc", "unary", "--concurrency", "64", *timed],
            "Pay, 64 callers on 4 connections, 1 client process",
        ),
        Scenario(
            "unary closed 64, 2 procs",
            ["--rpc", "unary", "--concurrency", "64", "--processes", "2", *timed],
            "the same from 2 client processes: if the echo figure rises, one client"
            " process was the bottleneck of the line above",
        ),
        Scenario(
            "stream closed 256",
            ["--rpc", "stream", "--concurrency", "256", *timed],
            "PayStream, 256 in flight on 4 streams, 1 client process",
        ),
        Scenario(
            "batch closed 2000, 500 per call",
            [*BATCH_LOAD, *timed],
            "PayBatch, calls of 500 payments from 2,000 callers in 2 client processes",
        ),
        Scenario(
            "unary open 300/s",
            ["--rpc", "unary", "--rate", "300", "--arrival", "poisson", *timed],
            "Pay at 300/s Poisson arrivals, latency from the intended send time",
        ),
    ]


# The bundled simulators' roles, for the gateway files the end-to-end runs use.
GATEWAY_ROLES = {
    "acq-a": ["card", "bank_account"],
    "acq-b": ["card"],
    "wallet-x": ["wallet", "carrier_balance"],
}
# The added gateway latency the latency-hiding comparison puts beside zero.
GATEWAY_LATENCY_MS = 20


def gateways_file(work: Path, latency_ms: int) -> Path:
    """A --gateways file of bundled simulators (started by `quickpay serve` as child
    processes) that add ``latency_ms`` to every request and never decline or fail."""
    lines = ["[defaults]", "timeout_ms = 5000", "pool_max = 256", ""]
    for name, methods in GATEWAY_ROLES.items():
        lines += [
            "[[gateway]]",
            f'name = "{name}"',
            f"methods = {json.dumps(methods)}",
            'currencies = ["EUR", "GBP", "KES", "NGN", "INR", "USD"]',
            "[gateway.simulator]",
            "seed = 1",
            f"latency_ms_median = {latency_ms}",
            f"latency_ms_p99 = {latency_ms}",
            "",
        ]
    path = work / f"gateways-{latency_ms}ms.toml"
    path.write_text("\n".join(lines))
    return path


def seeded_data(
    log: Log, work: Path, subscribers: int, env: dict[str, str] | None = None
) -> list[str]:
    """A fresh data dir with seeded subscribers; returns its --data-dir flags. ``env``:
    the commands' environment (another tree's build: its PYTHONPATH), else this one's."""
    quickpay = str(Path(sys.executable).parent / "quickpay")
    data = work / "e2e"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    common = ["--data-dir", str(data)]
    for argv in (
        [quickpay, "seed", "--subscribers", str(subscribers), "--seed", "1", *common],
        [quickpay, "subscribers", "import", str(data / "subscribers.csv"), *common],
    ):
        done = log.run(argv, cwd=ROOT, env=env)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr}")
    return common


def tree_env(tree: str) -> dict[str, str]:
    """The environment that runs ``tree``'s build (its python/ with its _engine)."""
    return {**os.environ, "PYTHONPATH": f"{tree}/python"}


def seeded_trees(log: Log, work: Path, trees_arg: str, subscribers: int) -> dict[str, list[str]]:
    """For A/B runs of several builds (``trees_arg``: comma-separated worktrees): each
    tree's resolved path and the --data-dir flags of a data dir of its own, seeded by
    that tree's build (so a tree whose schema is older is not handed a newer file)."""
    trees = [str(Path(t).resolve()) for t in trees_arg.split(",")]
    work.mkdir(parents=True, exist_ok=True)
    return {
        t: seeded_data(log, work / f"tree{k}", subscribers, env=tree_env(t))
        for k, t in enumerate(trees)
    }


def bench_once(log: Log, out: Path, common: list[str], target: str, flags: list[str]) -> dict:
    """One `quickpay bench` run; its JSON report."""
    quickpay = str(Path(sys.executable).parent / "quickpay")
    argv = [quickpay, "bench", *common, "--target", target, "--no-progress"]
    done = log.run([*argv, *flags, "--json", str(out)], cwd=ROOT)
    if not out.exists():
        raise RuntimeError(f"quickpay bench failed: {done.stderr[-2000:]}")
    return json.loads(out.read_text())


Sampled = TypeVar("Sampled")


def run_window(
    log: Log,
    out: Path,
    common: list[str],
    server: Server,
    load: list[str],
    seconds: float,
    sample: Callable[[int], Sampled],
    started: Callable[[], bool] | None = None,
) -> tuple[Sampled, Sampled, dict]:
    """One `quickpay bench` run of ``load`` against ``server``, ``seconds`` measured
    after a second of warm-up, in the background; ``sample(client_pid)`` is taken at
    both ends of a window inside the measured part (cpu_budget.py and thread_cpu.py read
    /proc there). Returns the two samples and the run's JSON report (written to ``out``).

    ``started()``: true once the load has begun (the server's /metrics counts a call);
    the window is timed from then, not from the client's launch. Without it the window
    assumes the client starts at once, which a client that first reads many subscribers
    (200,000: seconds) does not."""
    quickpay = str(Path(sys.executable).parent / "quickpay")
    out.unlink(missing_ok=True)
    warmup = 1.0
    argv = [quickpay, "bench", *common, "--target", server.target, "--no-progress", *load,
            "--duration", str(seconds), "--warmup", str(warmup), "--json", str(out)]  # fmt: skip
    log.note(argv)
    client = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if started is not None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while client.poll() is None and time.monotonic() < deadline and not started():
            time.sleep(0.05)
    # The window: from a second into the measured part to a second before its end, so
    # start-up and drain are outside it.
    time.sleep(warmup + 1.5)
    first = sample(client.pid)
    time.sleep(max(1.0, seconds - 3.0))
    last = sample(client.pid)
    _, err = client.communicate(timeout=seconds + 120)
    if not out.exists():
        raise RuntimeError(f"quickpay bench failed: {err.decode()[-2000:]}")
    return first, last, json.loads(out.read_text())


def engine_argv(quickpay: str, common: list[str], gateways: list[str]) -> list[str]:
    """`quickpay serve` as this file's engine runs: fraud scoring observes. It scores
    every payment as in production, but the runs pay each line again within minutes of
    the last (hundreds of thousands of payments over 200,000 lines), which it would
    rightly decline, short-cutting the saga; so every payment takes the whole path
    (pg_compare.py does the same)."""
    return [quickpay, "serve", "--listen", "127.0.0.1:0", "--fraud-mode", "observe",
            *common, *gateways]  # fmt: skip


def latency_hiding(
    log: Log, work: Path, runs: int, seconds: float, warmup: float, subscribers: int
) -> dict[int, Figures]:
    """Settled payments/s with the gateways at 0 ms and at GATEWAY_LATENCY_MS, 256
    callers, alternating; the batches in flight at once are what hide the latency."""
    quickpay = str(Path(sys.executable).parent / "quickpay")
    common = seeded_data(log, work, subscribers)
    flags = ["--rpc", "unary", "--concurrency", "256", "--duration", str(seconds),
             "--warmup", str(warmup)]  # fmt: skip
    rates: dict[int, Figures] = {0: Figures(), GATEWAY_LATENCY_MS: Figures()}
    seeds = itertools.count(1)
    for run in range(runs):
        for latency_ms, figures in rates.items():
            gateways = ["--gateways", str(gateways_file(work, latency_ms))]
            engine = Server(
                log, engine_argv(quickpay, common, gateways), work / f"serve-{latency_ms}ms.log"
            )
            try:
                out = work / f"latency-{latency_ms}ms-{run}.json"
                seeded = [*flags, "--seed", str(next(seeds))]
                report = bench_once(log, out, common, engine.target, seeded)
            finally:
                engine.stop()
            figures.values.append(report["settled_per_s"])
    return rates


def end_to_end(
    log: Log, work: Path, runs: int, seconds: float, warmup: float, subscribers: int
) -> list[dict]:
    """Each scenario ``runs`` times against the engine and the echo baseline."""
    quickpay = str(Path(sys.executable).parent / "quickpay")
    common = seeded_data(log, work, subscribers)
    gateways = ["--gateways", str(gateways_file(work, 0))]
    engine = Server(log, engine_argv(quickpay, common, gateways), work / "serve.log")
    try:
        echo = Server(
            log,
            [sys.executable, "-m", "quickpay_engine.bench.echo", "--listen", "127.0.0.1:0"],
            work / "echo.log",
        )
    except RuntimeError:
        engine.stop()
        raise
    results = []
    seeds = itertools.count(1)
    try:
        for scenario in scenarios(seconds, warmup):
            figures: dict[str, dict[str, Figures]] = {
                who: {m: Figures() for m in ("rate", "settled", "p50", "p99", "p999")}
                for who in ("engine", "echo")
            }
            errors = {"engine": 0, "echo": 0}
            slug = re.sub(r"\W+", "-", scenario.name)
            for run in range(runs):
                for who, server in (("engine", engine), ("echo", echo)):
                    out = work / f"{slug}-{who}-{run}.json"
                    # Each run its own seed: the same one would deal the subscribers in
                    # the same order, paying again the lines the run before had paid.
                    flags = [*scenario.flags, "--seed", str(next(seeds))]
                    report = bench_once(log, out, common, server.target, flags)
                    f = figures[who]
                    f["rate"].values.append(report["throughput_per_s"])
                    f["settled"].values.append(report["settled_per_s"])
                    f["p50"].values.append(report["latency_ms"]["p50"])
                    f["p99"].values.append(report["latency_ms"]["p99"])
                    f["p999"].values.append(report["latency_ms"]["p99.9"])
                    errors[who] += sum(
                        v for k, v in report["errors"].items() if k != "INVALID_ARGUMENT"
                    )
            results.append({"scenario": scenario, "figures": figures, "errors": errors})
    finally:
        engine.stop()
        echo.stop()
    return results


# -- 3. pgbench ----------------------------------------------------------------------


def pgbench(log: Log, runs: int, seconds: float, scale: int) -> dict:
    """TPC-B-like (-N) transactions per second on the local PostgreSQL, or why not."""
    exe = next((c for c in PGBENCH_CANDIDATES if shutil.which(c)), None)
    if exe is None:
        return {"skipped": "pgbench not found"}
    psql = str(Path(exe).parent / "psql") if "/" in exe else "psql"
    conn = PG_URL.split()
    args = [f"--{k}={v}" for k, v in (p.split("=", 1) for p in conn)]
    ready = log.run([psql, *args, "-d", "postgres", "-tAc", "SELECT version()"])
    if ready.returncode:
        return {"skipped": f"PostgreSQL not reachable ({ready.stderr.strip()[:200]})"}
    version = ready.stdout.strip().split(" on ")[0]
    log.run([psql, *args, "-d", "postgres", "-c", "DROP DATABASE IF EXISTS quickpay_bench"])
    log.run([psql, *args, "-d", "postgres", "-c", "CREATE DATABASE quickpay_bench"])
    init = log.run([exe, *args, "-i", "-s", str(scale), "-q", "quickpay_bench"])
    if init.returncode:
        return {"skipped": f"pgbench -i failed: {init.stderr.strip()[-300:]}"}
    tps, latency = Figures(), Figures()
    for _ in range(runs):
        done = log.run(
            [
                exe,
                *args,
                "-N",
                "-c",
                "8",
                "-j",
                "2",
                "-T",
                str(int(max(seconds, 1))),
                "quickpay_bench",
            ]
        )
        m = re.search(r"tps = ([\d.]+)", done.stdout)
        lat = re.search(r"latency average = ([\d.]+) ms", done.stdout)
        if not m:
            return {"skipped": f"pgbench failed: {done.stderr.strip()[-300:]}"}
        tps.values.append(float(m.group(1)))
        latency.values.append(float(lat.group(1)) if lat else float("nan"))
    log.run([psql, *args, "-d", "postgres", "-c", "DROP DATABASE IF EXISTS quickpay_bench"])
    return {"version": version, "tps": tps, "latency": latency, "scale": scale}


# -- RESULTS.md ----------------------------------------------------------------------


def render(
    info: dict[str, str],
    micro_rows: list[dict],
    verdict: str,
    e2e: list[dict],
    hiding: dict[int, Figures],
    pg: dict,
    log: Log,
    runs: int,
    subscribers: int,
    elapsed_s: float,
) -> str:
    """This area's section of RESULTS.md."""
    lines = [
        BEGIN,
        "## Load benchmarking (`quickpay bench`, `make bench`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench`"
        f" ({elapsed_s:.0f} s in all) on commit {info['commit']}.",
        "",
        f"- machine: {info['cpu']}, {info['cores']}, kernel {info['kernel']}",
        f"- Python {info['python']}, SQLite {info['sqlite']}, {info['versions']}",
        f"- load average (1, 5, 15 min) before the run: {info['load before']}, after:"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other engineers' builds share"
        " this machine; the client, the server and the baselines share its 2 cores, so"
        " read the ratios, not the absolute figures, and mind the ranges)",
        "",
        "How to run: `make bench` (this section, about 6 minutes), `make bench-smoke` (tiny"
        " sizes, a check that it runs). A load by hand: `quickpay bench --target HOST:PORT"
        " --rate 500 --arrival poisson --duration 60 --warmup 5 --json run.json --plot"
        " run.png` (open loop; `--concurrency N` without `--rate` for a closed loop,"
        " `--rpc stream` for PayStream, `--processes N`, `--tls --tls-ca FILE`,"
        " `--scenario benches/scenarios/promotion.toml`).",
        "",
        "A `benches/bench_*.py` of any area is picked up by `make bench` and its figures"
        " land in the micro table below. Conventions: name the baseline in"
        ' `benchmark.extra_info["baseline"]` (another benchmark\'s name in the same run)'
        ' and the rows per call in `benchmark.extra_info["rows_per_call"]`; shrink sizes'
        " when `QUICKPAY_BENCH_SIZE=smoke`, which `make test` uses to run each benchmark"
        " once (`tests/test_bench.py`).",
        "",
        "### End to end: the engine against the bare grpc.aio echo server",
        "",
        "Same client (`quickpay bench`), same flags, same machine, runs alternating. The echo"
        " server (`python -m quickpay_engine.bench.echo`) answers every Pay with a canned"
        " settled reply of the same size: it is the floor of gRPC + protobuf + asyncio here,"
        " not a product path. Engine: `quickpay serve` on SQLite (WAL, synchronous=FULL),"
        f" {subscribers:,} seeded subscribers, fraud scoring in observe mode (every payment"
        " scored, none declined by it: the runs pay each line again within minutes),"
        " default mix (2 % malformed, 3 % declined),"
        " every payment through the whole saga: journal and hold, a sale at one of three"
        " bundled gateway simulator processes (HTTP on loopback, zero added latency), the"
        " commit, the post.",
        f"Each figure: median of {runs} runs, range in brackets; ratio = engine / echo."
        " Payments/s counts every answer, settled/s only the SETTLED ones (the others are"
        " the mix's malformed and wrong-line requests); each"
        " run deals the subscribers from a shuffled deck of its own seed.",
        "",
        "| scenario | metric | engine | echo baseline | ratio |",
        "|---|---|---|---|---|",
    ]
    names = {
        "rate": "payments/s",
        "settled": "settled/s",
        "p50": "p50 ms",
        "p99": "p99 ms",
        "p999": "p99.9 ms",
    }
    for r in e2e:
        s, f = r["scenario"], r["figures"]
        for metric, label in names.items():
            eng, base = f["engine"][metric], f["echo"][metric]
            ratio = eng.median() / base.median() if base.median() else float("nan")
            lines.append(
                f"| {s.name} | {label} | {eng.median():,.1f} ({eng.spread()}) |"
                f" {base.median():,.1f} ({base.spread()}) | {ratio:.2f} |"
            )
        if any(r["errors"].values()):
            e = r["errors"]
            lines.append(f"| {s.name} | unexpected errors | {e['engine']} | {e['echo']} | |")
    lines += ["", "Scenarios:", ""]
    lines += [f"- **{r['scenario'].name}**: {r['scenario'].what}." for r in e2e]
    zero, slow = hiding[0], hiding[GATEWAY_LATENCY_MS]
    kept = slow.median() / zero.median() if zero.median() else float("nan")
    lines += [
        "",
        "### Gateway latency hidden by batching",
        "",
        "Pay, 256 callers, the same engine with the bundled simulators adding 0 ms and then"
        f" {GATEWAY_LATENCY_MS} ms to every gateway request (runs alternating; median and"
        " range). Up to 8 batches are at the gateways at once while the next one is"
        " validated and reserved, so the latency is overlapped rather than added.",
        "",
        "| gateway latency | settled/s | ratio to 0 ms |",
        "|---|---|---|",
        f"| 0 ms | {zero.median():,.1f} ({zero.spread()}) | 1.00 |",
        f"| {GATEWAY_LATENCY_MS} ms | {slow.median():,.1f} ({slow.spread()}) | {kept:.2f} |",
    ]
    lines += [
        "",
        "### Micro-benchmarks (every `benches/bench_*.py`)",
        "",
        f"pytest-benchmark, one process; median and interquartile range over the rounds."
        f" pytest: {verdict}. Ratio: cost per row against the benchmark named as its"
        " baseline (per call when the benchmark handles one row).",
        "",
        "| file | benchmark | rows/call | median µs | IQR µs | rounds | baseline | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in micro_rows:
        ratio = f"{m['ratio']:.2f}" if m["ratio"] is not None else ""
        lines.append(
            f"| {m['file']} | {m['name']} | {m['rows_per_call'] or ''} | {m['median_us']:,.1f} |"
            f" {m['iqr_us']:,.1f} | {m['rounds']} | {m['baseline']} | {ratio} |"
        )
    lines += ["", "### PostgreSQL baseline (pgbench)", ""]
    if "skipped" in pg:
        lines.append(f"Not measured: {pg['skipped']}.")
    else:
        lines += [
            f"{pg['version']} on 127.0.0.1:5432, `pgbench -N -c 8 -j 2` at scale {pg['scale']}:"
            f" **{pg['tps'].median():,.0f} tps** ({pg['tps'].spread()}), latency average"
            f" {pg['latency'].median():.2f} ms, median of {len(pg['tps'].values)} runs.",
            "",
            "This is the baseline only: the PostgreSQL store does not exist yet (issue 7);"
            " its settlement throughput goes beside this figure when it lands.",
        ]
    lines += [
        "",
        "### Not measured here",
        "",
        "- More client processes than cores: on 2 cores the client processes take CPU from"
        " the server, so the figures stop at 2.",
        "- Ledger/WAL, fraud and validation baselines (raw fsync of the same disk for the"
        " log, the Python reference libraries for validation): their owners' `bench_*.py`"
        " files name them as baselines and they appear in the micro table when present.",
        "",
        "### Exact commands",
        "",
        "```",
        *_unique(log.commands),
        "```",
        END,
    ]
    return "\n".join(lines) + "\n"


def _unique(commands: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for c in commands:
        key = re.sub(r"[^\s=]+\.json", "OUT.json", re.sub(r"127\.0\.0\.1:\d+", "HOST:PORT", c))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replaces one area's section of RESULTS.md (between ``begin`` and ``end``), or
    appends it; the others stay as they are."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1]
        text = before + section.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benches" / "RESULTS.md")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--runs", type=int, default=3, help="runs per end-to-end figure (3)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured s per run (8)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up s per run (1)")
    # As cpu_budget.py: enough lines that the runs' loads do not pay the same ones again
    # within fraud scoring's velocity windows (benches/RESULTS.md, "Settled, not answered").
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--pg-scale", type=int, default=10, help="pgbench -i -s (10)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks, not figures")
    parser.add_argument("--no-pgbench", action="store_true", help="skip the PostgreSQL baseline")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.warmup, args.subscribers = 1, 1.0, 0.2, 500
        args.pg_scale = 1
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log = Log()
    info = machine()
    print("micro-benchmarks ...", flush=True)
    micro_rows, verdict = micro(log, args.work, args.quick)
    print(f"  {verdict}\nend to end ...", flush=True)
    e2e = end_to_end(log, args.work, args.runs, args.seconds, args.warmup, args.subscribers)
    print("gateway latency hiding ...", flush=True)
    hiding = latency_hiding(log, args.work, args.runs, args.seconds, args.warmup, args.subscribers)
    print("pgbench ...", flush=True)
    pg = (
        {"skipped": "--no-pgbench"}
        if args.no_pgbench
        else pgbench(log, args.runs, args.seconds, args.pg_scale)
    )
    section = render(
        info,
        micro_rows,
        verdict,
        e2e,
        hiding,
        pg,
        log,
        args.runs,
        args.subscribers,
        time.monotonic() - started,
    )
    write_section(args.out, section)
    print(section)
    print(f"wrote {args.out}")
    return 0 if micro_rows and "failed" not in verdict else 1


if __name__ == "__main__":
    sys.exit(main())
