"""Settled payments per second with the PostgreSQL store, one database and three with
two-phase commit, beside pgbench's TPC-B-like transactions per second against the same
server in the same run (issues 7 and 15). Writes its own section of benches/RESULTS.md.

    .venv/bin/python benches/pg_compare.py [--rpc stream|batch] [--runs 3] [--seconds 10]
        [--subscribers N] [--out benches/RESULTS.md]

Each run alternates the engine's stores (SQLite file for reference, one PostgreSQL
database, three with 2PC) and pgbench, so drift on this shared machine hits all of them
and the ratios are taken minutes apart at most. The load is `quickpay bench` with only
good payments and fraud scoring in observe mode, so every settlement is the store's
figure: `--rpc stream` is PayStream, 256 in flight (issue 7's section); `--rpc batch`
is PayBatch, calls of 500 from 2,000 callers in 2 client processes (compare.py's
BATCH_LOAD, issue 15's section).

While each engine run is in its measured window, the CPU of every process in play is
read from /proc at both ends (the server by thread, its simulators, the load client,
PostgreSQL's processes, the whole machine), and the server's /metrics (it runs with
`--metrics-listen`) gives each saga stage's time per batch and the payments per batch:
what bounds the rate, in the same run as the rate.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (
    BATCH_LOAD,
    Figures,
    Log,
    Server,
    benchmark_env,
    gateways_file,
    machine,
    run_window,
    write_section,
)
from cpu_budget import children, cpu_s, machine_busy_s
from thread_cpu import group, threads

from quickpay_engine.store.pg_migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- section: postgresql store (issue 7) -->"
END = "<!-- end section: postgresql store -->"
# PayBatch's figures (issue 15): a subsection of their own, right after issue 7's.
BATCH_BEGIN = "<!-- section: postgresql paybatch (issue 15) -->"
BATCH_END = "<!-- end section: postgresql paybatch -->"
ADMIN = os.environ.get("QUICKPAY_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASES = ["qp_e2e_one", "qp_e2e_billing", "qp_e2e_ar", "qp_e2e_provisioning"]
PGBENCH_DB = "qp_e2e_pgbench"
PGBENCH = next(
    (c for c in ("pgbench", "/usr/lib/postgresql/15/bin/pgbench") if shutil.which(c)), None
)


def url(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def recreate(log: Log, names: list[str]) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        for name in names:
            log.commands.append(f"CREATE DATABASE {name}")
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")


def drop(names: list[str]) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# The engine's stores, in run order: the SQLite file (the embedded default, for
# reference), one PostgreSQL database, three with two-phase commit.
LAYOUTS = {
    "sqlite": "engine, SQLite file (reference)",
    "one": "engine, one PostgreSQL database",
    "three": "engine, three databases, 2PC",
}


def engine_flags(layout: str) -> list[str]:
    if layout == "sqlite":
        return []
    if layout == "one":
        return ["--database-url", url("qp_e2e_one")]
    billing, ar, prov = (url(n) for n in DATABASES[1:])
    return [
        "--database-url", billing, "--billing-url", billing, "--ar-url", ar,
        "--provisioning-url", prov,
    ]  # fmt: skip


def prepare(log: Log, work: Path, subscribers: int, layouts: list[str]) -> None:
    quickpay = str(Path(sys.executable).parent / "quickpay")
    recreate(log, DATABASES)
    for name in DATABASES:
        migrate(url(name))
    for layout in layouts:
        data = work / layout
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        common = ["--data-dir", str(data), *engine_flags(layout)]
        for argv in (
            [
                quickpay,
                "seed",
                "--subscribers",
                str(subscribers),
                "--seed",
                "1",
                "--data-dir",
                str(data),
            ],
            [quickpay, "subscribers", "import", str(data / "subscribers.csv"), *common],
        ):
            done = log.run(argv, cwd=ROOT)
            if done.returncode:
                raise RuntimeError(f"{' '.join(argv)}: {done.stderr}")


def load_flags(rpc: str, concurrency: int | None) -> list[str]:
    """`quickpay bench`'s load: PayStream with ``concurrency`` in flight (256 by default),
    or compare.py's PayBatch load (calls of 500, 2,000 callers, 2 client processes)."""
    if rpc == "batch":
        if concurrency is None:
            return list(BATCH_LOAD)
        at = BATCH_LOAD.index("--concurrency")
        return [*BATCH_LOAD[:at], "--concurrency", str(concurrency), *BATCH_LOAD[at + 2 :]]
    return ["--rpc", "stream", "--concurrency", str(concurrency or 256)]


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL server process on this host (the postmaster, its
    background workers and every backend), from /proc."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        total += cpu_s(int(proc.name))
    return total


def scrape(url: str | None) -> dict[str, float]:
    """The server's stage sums and counts, and its batch sizes, from /metrics."""
    if url is None:
        return {}
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(
        r'^quickpay_saga_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$', text, re.M
    ):
        out[f"{m.group(2)}_{m.group(1)}"] = float(m.group(3))
    for m in re.finditer(r"^quickpay_batch_payments_(sum|count) (\S+)$", text, re.M):
        out[f"batch_{m.group(1)}"] = float(m.group(2))
    return out


def sample(server: Server, client: int, metrics: str | None) -> dict:
    """CPU seconds of each part at one instant, the server's by thread, and /metrics."""
    pid = server.proc.pid
    busy, total = machine_busy_s()
    return {
        "at": time.monotonic(),
        "server": cpu_s(pid),
        "threads": threads(pid),
        "simulators": sum(cpu_s(c) for c in children(pid)),
        "client": sum(cpu_s(c) for c in [client, *children(client)]),
        "postgres": postgres_cpu_s(),
        "busy": busy,
        "total": total,
        "metrics": scrape(metrics),
    }


# Saga stages (pipeline.py's laps), in order; "reserve" holds the store's journal write
# beside the ledger's holds, "capture_commit" the store's batch commit beside the
# ledger's capture.
STAGES = ("replay_lookup", "validate_score", "reserve", "gateways", "capture_commit", "post")


def window(first: dict, last: dict, settled_per_s: float) -> dict:
    """What one run's window says: cores used by each part, the server's CPU by thread
    in µs per settled payment, each stage's ms per batch and its share of the window."""
    span = last["at"] - first["at"]
    settled = max(settled_per_s * span, 1.0)
    out: dict = {
        "cores": {
            part: (last[part] - first[part]) / span
            for part in ("server", "simulators", "client", "postgres")
        },
        "busy": (last["busy"] - first["busy"]) / (last["total"] - first["total"]),
    }
    by: collections.Counter[str] = collections.Counter()
    for tid, (name, cpu) in last["threads"].items():
        by[group(name)] += cpu - first["threads"].get(tid, (name, 0.0))[1]
    out["threads_us"] = {k: 1e6 * v / settled for k, v in by.items()}
    m0, m1 = first["metrics"], last["metrics"]
    stages = {}
    for stage in STAGES:
        n = m1.get(f"{stage}_count", 0.0) - m0.get(f"{stage}_count", 0.0)
        s = m1.get(f"{stage}_sum", 0.0) - m0.get(f"{stage}_sum", 0.0)
        if n:
            # ms per batch, and the stage's time over the window (above 1: batches
            # overlap in that stage)
            stages[stage] = (1e3 * s / n, s / span)
    out["stages"] = stages
    n = m1.get("batch_count", 0.0) - m0.get("batch_count", 0.0)
    out["batch"] = (
        (m1.get("batch_sum", 0.0) - m0.get("batch_sum", 0.0)) / n if n else float("nan"),
        n / span,
    )
    return out


def run_engine(
    log: Log, work: Path, layout: str, seconds: float, load: list[str], run: int
) -> dict:
    """One timed load against the engine on ``layout``: settled per second, the share of
    answers that settled, the p99 call latency, and what its window measured."""
    quickpay = str(Path(sys.executable).parent / "quickpay")
    data = work / layout
    common = ["--data-dir", str(data), *engine_flags(layout)]
    # Bundled simulators with no added latency that never decline: the figure is the
    # engine's and its store's, not a gateway's.
    gateways = ["--gateways", str(gateways_file(work, 0))]
    logfile = work / f"serve-{layout}-{run}.log"
    server = Server(
        log,
        [quickpay, "serve", "--listen", "127.0.0.1:0", "--fraud-mode", "observe",
         "--metrics-listen", "127.0.0.1:0", *common, *gateways],
        logfile,
    )  # fmt: skip
    found = re.search(r"metrics and probes on (http://\S+/)", logfile.read_text())
    metrics = found.group(1) + "metrics" if found else None
    flags = [*load, "--invalid-share", "0", "--declined-share", "0", "--duplicate-share", "0",
             "--fraud-share", "0", "--seed", str(run + 1)]  # fmt: skip
    try:
        first, last, report = run_window(
            log,
            work / f"{layout}-{run}.json",
            ["--data-dir", str(data)],
            server,
            flags,
            seconds,
            lambda client: sample(server, client, metrics),
            # The client reads every subscriber before its first call: the window
            # starts once the server has seen a batch.
            (lambda: scrape(metrics).get("batch_count", 0.0) > 0) if metrics else None,
        )
    finally:
        server.stop()
    statuses = report["statuses"]
    return {
        "rate": report["settled_per_s"],
        "settled": statuses.get("SETTLED", 0) / max(1, sum(statuses.values())),
        "p99": report["latency_ms"]["p99"],
        **window(first, last, report["settled_per_s"]),
    }


def run_pgbench(log: Log, clients: int, seconds: float) -> tuple[float, float]:
    """(tps, average latency ms) of pgbench -N (TPC-B-like without the branch and teller
    updates) with ``clients`` connections, synchronous_commit on."""
    assert PGBENCH
    done = log.run(
        [PGBENCH, "-h", "127.0.0.1", "-U", "postgres", "-N", "-c", str(clients),
         "-j", str(min(clients, 2)), "-T", str(int(seconds)), PGBENCH_DB],
        env={**os.environ, "PGOPTIONS": "-c synchronous_commit=on"},
    )  # fmt: skip
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    if not tps:
        raise RuntimeError(f"pgbench failed: {done.stderr[-500:]}")
    return float(tps.group(1)), float(lat.group(1)) if lat else float("nan")


def drivers(log: Log, work: Path) -> list[dict]:
    """The driver comparison of benches/bench_store.py (pytest-benchmark), per batch."""
    out = work / "drivers.json"
    log.run(
        [sys.executable, "-m", "pytest", "benches/bench_store.py", "-o",
         "python_files=bench_*.py", "-k", "pg", "-q", "-p", "no:cacheprovider",
         f"--benchmark-json={out}"],
        cwd=ROOT, env=benchmark_env(),
    )  # fmt: skip
    if not out.exists():
        return []
    return [
        {
            "name": b["name"],
            "median_ms": b["stats"]["median"] * 1e3,
            "iqr_ms": b["stats"]["iqr"] * 1e3,
            "rounds": b["stats"]["rounds"],
        }
        for b in json.loads(out.read_text())["benchmarks"]
    ]


DRIVER_WHAT = {
    "test_pg_rows_psycopg_pipeline": "psycopg 3.3 `executemany`, pipeline mode (baseline)",
    "test_pg_rows_asyncpg": "asyncpg 0.31 `executemany` (own event loop)",
    "test_pg_rows_psycopg_copy": "psycopg 3.3 `COPY ... FROM STDIN`, `write_row`",
    "test_pg_store_commit_batch": "the whole `PostgresStore.commit_batch` (reads, COPY,"
    " balance update, commit)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rpc",
        choices=("stream", "batch"),
        default="stream",
        help="PayStream (issue 7's section) or PayBatch (issue 15's subsection)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="callers: PayStream's in flight (256), PayBatch's callers (2,000)",
    )
    parser.add_argument(
        "--subscribers",
        type=int,
        default=None,
        help="20,000 for PayStream; 200,000 for PayBatch, whose calls of 500 would"
        " otherwise repeat accounts inside a batch (deferred payments)",
    )
    parser.add_argument("--pg-clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS),
        help="the engine's stores to run (all three by default)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-pg")
    parser.add_argument("--out", type=Path, default=None, help="RESULTS.md to update")
    args = parser.parse_args()
    if args.subscribers is None:
        args.subscribers = 200_000 if args.rpc == "batch" else 20_000
    if PGBENCH is None:
        print("pgbench not found", file=sys.stderr)
        return 1
    started = time.monotonic()
    info = machine()
    log = Log()
    args.work.mkdir(parents=True, exist_ok=True)
    print("preparing databases ...", flush=True)
    prepare(log, args.work, args.subscribers, args.layouts)
    recreate(log, [PGBENCH_DB])
    log.run([PGBENCH, "-h", "127.0.0.1", "-U", "postgres", "-i", "-s", "10", "-q", PGBENCH_DB])
    with psycopg.connect(ADMIN) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
    driver_rows = []
    if args.rpc == "stream":
        print("driver micro-benchmarks ...", flush=True)
        driver_rows = drivers(log, args.work)
    load = load_flags(args.rpc, args.concurrency)
    engine: dict[str, list[dict]] = {layout: [] for layout in args.layouts}
    tps = {c: Figures() for c in args.pg_clients}
    lat = {c: Figures() for c in args.pg_clients}
    try:
        for run in range(args.runs):
            for layout in args.layouts:
                print(f"run {run + 1}: {LAYOUTS[layout]} ...", flush=True)
                got = run_engine(log, args.work, layout, args.seconds, load, run)
                engine[layout].append(got)
                print(
                    f"  {got['rate']:,.0f} settled/s, {100 * got['settled']:.0f} % settled,"
                    f" cores: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in got["cores"].items())
                    + f", machine {100 * got['busy']:.0f} % busy",
                    flush=True,
                )
            for clients in args.pg_clients:
                print(f"run {run + 1}: pgbench -c {clients} ...", flush=True)
                t, lt = run_pgbench(log, clients, args.seconds)
                tps[clients].values.append(t)
                lat[clients].values.append(lt)
                print(f"  {t:,.0f} tps", flush=True)
    finally:
        drop([*DATABASES, PGBENCH_DB])
    elapsed = time.monotonic() - started
    if args.rpc == "batch":
        text = render_batch(info, args, version, sync, engine, tps, lat, log, elapsed)
        print(text)
        if args.out:
            place_after(args.out, text, BATCH_BEGIN, BATCH_END, END)
        return 0
    rate = {k: Figures([r["rate"] for r in v]) for k, v in engine.items()}
    p99 = {k: Figures([r["p99"] for r in v]) for k, v in engine.items()}
    text = render(info, args, version, sync, rate, p99, tps, lat, driver_rows, log, elapsed)
    print(text)
    if args.out:
        write_section(args.out, text, BEGIN, END)
    return 0


def place_after(path: Path, section: str, begin: str, end: str, after: str) -> None:
    """``write_section``, except that a section not yet in the file goes right after the
    marker ``after`` (its parent section's end), not at the end of the file."""
    text = path.read_text()
    if begin not in text and after in text:
        head, tail = text.split(after, 1)
        path.write_text(head + after + "\n\n" + section.rstrip("\n") + tail)
        return
    write_section(path, section, begin, end)


def render(info, args, version, sync, rate, p99, tps, lat, driver_rows, log, elapsed_s) -> str:  # type: ignore[no-untyped-def]
    one = rate.get("one", Figures()).median()
    three = rate.get("three", Figures()).median()
    lines = [
        BEGIN,
        "## PostgreSQL store and two-phase commit (issue 7)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by"
        f" `benches/pg_compare.py --runs {args.runs} --seconds {args.seconds:g}`"
        f" ({elapsed_s:.0f} s in all) on commit {info['commit']}; PostgreSQL {version} on"
        f" 127.0.0.1:5432 (synchronous_commit = {sync}, fsync on, stock settings otherwise).",
        "",
        f"- machine: {info['cpu']}, {info['cores']}, kernel {info['kernel']}",
        f"- load average before: {info['load before']}, after:"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}. The machine is shared with"
        " other engineers' builds and tests; client, engine and PostgreSQL share its 2"
        " cores. Read the ratios, and mind the ranges.",
        "",
        f"Engine: `quickpay serve --fraud-mode observe`, {args.subscribers:,} subscribers,"
        " the whole settlement saga (journal, reserve in the write-ahead ledger, a sale at"
        " a bundled gateway simulator over loopback HTTP with no added latency, capture,"
        " one store commit, post), loaded by `quickpay bench --rpc stream --concurrency"
        f" {args.concurrency or 256}` (PayStream on 4 connections) with only good payments, so"
        " every reply is a settlement. The SQLite row is the same engine on the embedded"
        " file: beside it, the PostgreSQL rows say what the store costs, apart from the saga."
        " The store has one connection per database (the single writer thread);"
        " batches of up to 512 payments, one transaction each (three prepared"
        " transactions and a logged decision with two-phase commit).",
        "pgbench: the built-in TPC-B-like script without branch and teller updates (`-N`),"
        " scale 10, against the same server, alternating with the engine runs.",
        f"Each figure: median of {args.runs} runs of {args.seconds:g} s, range in brackets.",
        "",
        f"| system | per second | latency | ratio to pgbench -c {args.pg_clients[-1]} |",
        "|---|---|---|---|",
    ]
    base = tps[args.pg_clients[-1]].median()
    for layout, label in LAYOUTS.items():
        if layout not in rate:
            continue
        f = rate[layout]
        lines.append(
            f"| {label} | {f.median():,.0f} settled payments ({f.spread()}) |"
            f" p99 {p99[layout].median():,.1f} ms | {f.median() / base:.2f} |"
        )
    for clients in args.pg_clients:
        f = tps[clients]
        lines.append(
            f"| pgbench -N -c {clients} | {f.median():,.0f} transactions ({f.spread()}) |"
            f" mean {lat[clients].median():,.1f} ms | {f.median() / base:.2f} |"
        )
    if "one" in rate and "three" in rate:
        lines += [
            "",
            f"Two-phase commit costs {(1 - three / one) * 100:.0f} % of the one-database"
            f" throughput here (three / one = {three / one:.2f}).",
        ]
    lines += [
        "",
        "### The driver: psycopg 3 or asyncpg",
        "",
        "One batch's rows (512 payments: payments, billing records, AR legs, audit rows,"
        " outbox events, from `rows.build`) inserted and committed in one transaction, same"
        " SQL, same server, same run (`benches/bench_store.py -k pg`, 30 rounds each):",
        "",
        "| how | median ms per batch | IQR ms | ratio to the baseline |",
        "|---|---|---|---|",
    ]
    base_ms = next(
        (d["median_ms"] for d in driver_rows if d["name"] == "test_pg_rows_psycopg_pipeline"),
        float("nan"),
    )
    for d in driver_rows:
        lines.append(
            f"| {DRIVER_WHAT.get(d['name'], d['name'])} | {d['median_ms']:,.1f} |"
            f" {d['iqr_ms']:,.1f} | {d['median_ms'] / base_ms:.2f} |"
        )
    lines += [
        "",
        "Chosen: psycopg 3 with `COPY` for a batch's rows. Between the two executemany"
        " forms the table decides; psycopg's COPY beats both, and psycopg's synchronous"
        " connection fits the store's shape (synchronous calls on one store thread, as"
        " for SQLite) without an event loop of its own inside that thread; it also has"
        " the parts two-phase commit needs (`sql.Literal` for PREPARE TRANSACTION ids)"
        " and COPY between connections for `verify` across databases.",
        "",
        *log.details(),
        END,
    ]
    return "\n".join(lines) + "\n"


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ratios(top: list[float], bottom: list[float]) -> Figures:
    """Run-by-run ratios (the two taken minutes apart in the same run)."""
    return Figures([a / b for a, b in zip(top, bottom, strict=False) if b])


def _met(ratio: float, target: float) -> str:
    return "**met**" if ratio >= target else "**not met**"


def render_batch(info, args, version, sync, engine, tps, lat, log, elapsed_s) -> str:  # type: ignore[no-untyped-def]
    """PayBatch's subsection: rates and ratios, then where each run's window went."""
    rates = {k: [r["rate"] for r in v] for k, v in engine.items()}
    top = args.pg_clients[-1]
    base = tps[top]
    load = " ".join(load_flags("batch", args.concurrency))
    lines = [
        BATCH_BEGIN,
        "### PayBatch on PostgreSQL (issue 15)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by"
        f" `benches/pg_compare.py --rpc batch --runs {args.runs} --seconds {args.seconds:g}"
        f" --subscribers {args.subscribers}` ({elapsed_s:.0f} s in all) on commit"
        f" {info['commit']}; PostgreSQL {version} on 127.0.0.1:5432 (synchronous_commit ="
        f" {sync}, fsync on, stock settings otherwise).",
        "",
        f"- machine: {info['cpu']}, {info['cores']}, kernel {info['kernel']}",
        f"- load average before: {info['load before']}, after:"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}. Shared machine: client,"
        " engine, simulators and PostgreSQL share its 2 cores with whatever else runs.",
        "",
        f"Engine: `quickpay serve --fraud-mode observe --metrics-listen`, {args.subscribers:,}"
        f" subscribers, the whole saga, loaded by `quickpay bench {load}` (compare.py's"
        " BATCH_LOAD) with only good payments. Runs alternate SQLite, one database, three"
        f" with 2PC, then pgbench -N -c {' and -c '.join(map(str, args.pg_clients))} (scale"
        " 10) against the same server. Each figure: the median of"
        f" {args.runs} runs of {args.seconds:g} s, the range in brackets; the ratios are"
        " taken run by run (each against the pgbench of its own run), then the median.",
        "",
        f"| system | per second | settled share | latency | ratio to pgbench -c {top} |",
        "|---|---|---|---|---|",
    ]
    for layout, label in LAYOUTS.items():
        if layout not in engine:
            continue
        f = Figures(rates[layout])
        share = _med([r["settled"] for r in engine[layout]])
        p99 = _med([r["p99"] for r in engine[layout]])
        ratio = _ratios(rates[layout], base.values)
        lines.append(
            f"| {label} | {f.median():,.0f} settled payments ({f.spread()}) |"
            f" {100 * share:.1f} % | p99 {p99:,.0f} ms per call of 500 |"
            f" {ratio.median():.2f} ({ratio.spread()}) |"
        )
    for clients in args.pg_clients:
        f = tps[clients]
        ratio = _ratios(f.values, base.values)
        lines.append(
            f"| pgbench -N -c {clients} | {f.median():,.0f} transactions ({f.spread()}) | |"
            f" mean {lat[clients].median():,.1f} ms | {ratio.median():.2f} |"
        )
    lines.append("")
    if "one" in engine:
        r = _ratios(rates["one"], base.values)
        lines.append(
            f"- Target: one database >= 1.0 x pgbench -N -c {top}. Run by run:"
            f" {', '.join(f'{x:.2f}' for x in r.values)}; median {r.median():.2f}:"
            f" {_met(r.median(), 1.0)}."
        )
    if "one" in engine and "three" in engine:
        r = _ratios(rates["three"], rates["one"])
        lines.append(
            "- Target: three databases with 2PC >= 0.7 x one database. Run by run:"
            f" {', '.join(f'{x:.2f}' for x in r.values)}; median {r.median():.2f}:"
            f" {_met(r.median(), 0.7)}."
        )
    lines += [
        "",
        "Where each run's window went (the middle of its measured part, read from /proc"
        " and the server's /metrics at both ends; medians over the runs). Cores: CPU"
        " seconds per second of each part (2 = the whole machine); busy: the whole"
        " machine's share, other work on the host included. Stage: ms per batch, and in"
        " brackets the stage's time over the window (above 1: batches overlap in it;"
        " stage 1, replay lookup to reserve, runs one batch at a time).",
        "",
        "| system | server | simulators | client | PostgreSQL | machine busy |"
        " payments per batch | batches/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layout, label in LAYOUTS.items():
        if layout not in engine:
            continue
        runs = engine[layout]
        cores = {k: _med([r["cores"][k] for r in runs]) for k in runs[0]["cores"]}
        lines.append(
            f"| {label} | {cores['server']:.2f} | {cores['simulators']:.2f} |"
            f" {cores['client']:.2f} | {cores['postgres']:.2f} |"
            f" {100 * _med([r['busy'] for r in runs]):.0f} % |"
            f" {_med([r['batch'][0] for r in runs]):.0f} |"
            f" {_med([r['batch'][1] for r in runs]):.1f} |"
        )
    lines += [
        "",
        "| system | " + " | ".join(STAGES) + " |",
        "|---|" + "---|" * len(STAGES),
    ]
    for layout, label in LAYOUTS.items():
        if layout not in engine:
            continue
        runs = engine[layout]
        cells = []
        for stage in STAGES:
            got = [r["stages"][stage] for r in runs if stage in r["stages"]]
            cells.append(
                f"{_med([g[0] for g in got]):.1f} ({_med([g[1] for g in got]):.2f})"
                if got
                else "n/a"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    names: collections.Counter[str] = collections.Counter()
    for runs in engine.values():
        for r in runs:
            names.update(r["threads_us"])
    shown = [n for n, _ in names.most_common(8)]
    lines += [
        "",
        "The server's CPU by thread, µs per settled payment (threads grouped by name,"
        " digits stripped; medians):",
        "",
        "| system | " + " | ".join(f"`{n}`" for n in shown) + " | all threads |",
        "|---|" + "---|" * (len(shown) + 1),
    ]
    for layout, label in LAYOUTS.items():
        if layout not in engine:
            continue
        runs = engine[layout]
        cells = [f"{_med([r['threads_us'].get(n, 0.0) for r in runs]):.1f}" for n in shown]
        total = _med([sum(r["threads_us"].values()) for r in runs])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {total:.1f} |")
    lines += [
        "",
        *log.details(),
        BATCH_END,
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
