"""Overload at three times the measured capacity (issue #19 item 6, issue #20 item 8):
what the callers the server admits wait, what it refuses, its RSS, and how it recovers.
Writes its section of benches/RESULTS.md.

    .venv/bin/python benches/overload.py [--seconds 10] [--processes 3] [--out benches/RESULTS.md]

`quickpay serve` (SQLite, bundled simulators, fraud observe) in a process of its own;
`quickpay bench` (Pay, open loop, Poisson arrivals) from ``--processes`` client
processes. Two configurations: the simulators at 0 ms with the default batching, where
the server's CPU is the limit, and the simulators at 50 ms with small batches, few at
once, where the settlement pipeline is the limit (and three times its capacity is a
load the clients can send on a small machine). For each, first the capacity: a closed
loop of 256 callers. Then, against a fresh server for each mode, the same phases at
rates fixed by that capacity:

1. nominal: half the capacity;
2. overload: three times the capacity;
3. recovery: half the capacity again, started as soon as the overload's last call
   has its answer.

Each mode is one value of ``--queue-wait-max-ms``: 0 (admission by count only, the
engine before admission by time) and the default 250 ms, in the same run so that the
machine's load hits both alike. The server's RSS is sampled every half second. The
figure the issue bounds is the p99 of the calls answered without an error (the admitted
ones) under overload, against the p99 at nominal load: at most five times.

Two refusals are counted apart: RESOURCE_EXHAUSTED from admission (Python, in the
handler) and CANCELLED from grpc-core, the transport's bound on calls not yet taken by
the event loop (`--pending-calls-max`, `--pending-call-wait-max-s`; grpc-core ends such
a call CANCELLED). The client never cancels a Pay call itself (it waits for every one),
so every CANCELLED it hears is the server's. The capacity is the payments answered (not
refused) a second in the closed loop.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Log, Server, bench_once, gateways_file, machine, seeded_data, write_section

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- section: overload (issue 19 item 6, issue 20 item 8) -->"
END = "<!-- end section: overload -->"
CAPACITY_CALLERS = 256
NOMINAL_SHARE = 0.5
OVERLOAD_FACTOR = 3.0
# The issue's bound: the admitted calls' p99 under overload over the nominal p99.
P99_RATIO_MAX = 5.0
# The modes: (name, --queue-wait-max-ms).
MODES = (("count only (0)", "0"), ("by time (250 ms)", "250"))
# The configurations: (name, simulator latency in ms, extra `quickpay serve` flags).
CONFIGS = (
    ("CPU-bound: simulators at 0 ms, default batching", 0, []),
    (
        "pipeline-bound: simulators at 50 ms, --batch-max 4 --batches-in-flight 2",
        50,
        ["--batch-max", "4", "--batches-in-flight", "2"],
    ),
)
RSS_EVERY_S = 0.5
# The answers that are refusals: admission's, and grpc-core's (the transport's bound on
# calls not yet taken, which it ends CANCELLED).
REFUSALS = ("RESOURCE_EXHAUSTED", "CANCELLED")


def rss_mib(pid: int) -> float:
    """A process's resident set, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class RssSampler:
    """Samples a process's RSS in a thread, labelled by the phase running."""

    pid: int
    phase: str = "start"
    samples: dict[str, list[float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            try:
                self.samples.setdefault(self.phase, []).append(rss_mib(self.pid))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def phase_figures(report: dict) -> dict:
    """What a phase's JSON report says, reduced to the table's figures."""
    statuses = report["statuses"]
    errors = report["errors"]
    answered = sum(statuses.values())
    elapsed = report["elapsed_s"] or 1e-9
    timeline = report["timeline"]
    first = timeline[0] if timeline else {}
    return {
        "sent": report["sent"],
        "answered": answered,
        "answered_per_s": answered / elapsed,
        "refused": errors.get("RESOURCE_EXHAUSTED", 0),
        "refused_in_core": errors.get("CANCELLED", 0),
        "other_errors": {k: v for k, v in errors.items() if k not in REFUSALS},
        "answered_p50_ms": report["answered_ms"]["p50"],
        "answered_p99_ms": report["answered_ms"]["p99"],
        "all_p99_ms": report["latency_ms"]["p99"],
        "first_s_p99_ms": first.get("p99_ms", float("nan")),
        "first_s_errors": first.get("errors_per_s", 0.0) * 1.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase (10)")
    parser.add_argument("--processes", type=int, default=3, help="client processes (3)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-overload")
    args = parser.parse_args()

    log, work = Log(), args.work
    work.mkdir(parents=True, exist_ok=True)
    before = machine()
    tables = [run_config(args, log, work, *config) for config in CONFIGS]
    after = machine()
    section = render(args, log, before, after, tables)
    print(section)
    if args.out:
        write_section(args.out, section, BEGIN, END)
    return 0


def run_config(args, log: Log, work: Path, name: str, latency_ms: int, flags: list[str]) -> dict:
    """Capacity, then nominal, overload and recovery in each mode, for one configuration."""
    quickpay = str(Path(sys.executable).parent / "quickpay")
    gateways = gateways_file(work, latency_ms)
    seconds = str(args.seconds)
    processes = ["--processes", str(args.processes)]
    results: dict[str, dict] = {}
    rss: dict[str, dict[str, list[float]]] = {}
    capacity = 0.0
    for index, (mode, wait_ms) in enumerate(MODES):
        common = seeded_data(log, work, 10_000)  # a fresh store for each mode
        argv = [quickpay, "serve", "--listen", "127.0.0.1:0", *common, "--gateways",
                str(gateways), "--fraud-mode", "observe", *flags, "--queue-wait-max-ms", wait_ms]  # fmt: skip
        server = Server(log, argv, work / f"serve-{latency_ms}-{index}.log")
        sampler = RssSampler(server.proc.pid)
        figures: dict[str, dict] = {}
        try:
            if index == 0:
                sampler.phase = "capacity"
                out = work / f"capacity-{latency_ms}.json"
                report = bench_once(log, out, common, server.target, [
                    "--rpc", "unary", "--concurrency", str(CAPACITY_CALLERS), *processes,
                    "--duration", seconds, "--warmup", "2"])  # fmt: skip
                capacity = sum(report["statuses"].values()) / (report["elapsed_s"] or 1e-9)
                print(f"{name}: capacity {capacity:,.0f} payments/s", flush=True)
            nominal = NOMINAL_SHARE * capacity
            for phase, rate in (
                ("nominal", nominal),
                ("overload", OVERLOAD_FACTOR * capacity),
                ("recovery", nominal),
            ):
                sampler.phase = phase
                out = work / f"{phase}-{latency_ms}-{index}.json"
                warmup = ["--warmup", "1"] if phase == "nominal" else []
                report = bench_once(log, out, common, server.target, [
                    "--rpc", "unary", "--rate", f"{rate:.0f}", "--arrival", "poisson",
                    "--concurrency", str(args.processes), *processes,
                    "--duration", seconds, *warmup])  # fmt: skip
                figures[phase] = phase_figures(report)
                print(f"{mode} {phase}: {figures[phase]}", flush=True)
        finally:
            sampler.stop()
            server.stop()
        results[mode] = figures
        rss[mode] = sampler.samples
    return {"name": name, "capacity": capacity, "results": results, "rss": rss}


def _rss(samples: list[float]) -> str:
    if not samples:
        return "-"
    return f"{samples[-1]:.0f} (max {max(samples):.0f})"


def render(args, log: Log, before, after, tables: list[dict]) -> str:
    lines = [
        BEGIN,
        "## Overload at three times the capacity (issue 19 item 6, issue 20 item 8)",
        "",
        f"Machine: {before['cpu']}, {before['cores']}, kernel {before['kernel']}; commit"
        f" {before['commit']}; load average before {before['load before']}, after"
        f" {after['load before']}. Client processes, server and simulators share the"
        " machine's cores.",
        "",
    ]
    for table in tables:
        lines += render_table(args, table)
    lines += [
        "Commands:",
        "",
        *(f"    {c}" for c in dict.fromkeys(_shape(c) for c in log.commands)),
        "",
        "Reproduce with:",
        "",
        f"    .venv/bin/python benches/overload.py --seconds {args.seconds:g} --processes"
        f" {args.processes} --out benches/RESULTS.md",
        END,
    ]
    return "\n".join(lines) + "\n"


def render_table(args, table: dict) -> list[str]:
    """One configuration's table."""
    capacity, results, rss = table["capacity"], table["results"], table["rss"]
    modes = list(results)
    header = "| | " + " | ".join(modes) + " |"
    rule = "|---|" + "---|" * len(modes)

    def row(name: str, cell) -> str:
        return f"| {name} | " + " | ".join(cell(m) for m in modes) + " |"

    def ratio(m: str) -> str:
        f = results[m]
        value = f["overload"]["answered_p99_ms"] / f["nominal"]["answered_p99_ms"]
        verdict = "within" if value <= P99_RATIO_MAX else "**past**"
        return f"{value:.1f} ({verdict} {P99_RATIO_MAX:g}x)"

    def errors(m: str, phase: str) -> str:
        other = results[m][phase]["other_errors"]
        return ", ".join(f"{k} {v:,}" for k, v in other.items()) or "none"

    return [
        f"### {table['name']}",
        "",
        f"Capacity (closed loop, {CAPACITY_CALLERS} callers, {args.processes} client"
        f" processes, {args.seconds:g} s): **{capacity:,.0f} payments/s**. Nominal load"
        f" {NOMINAL_SHARE * capacity:,.0f}/s, overload {OVERLOAD_FACTOR * capacity:,.0f}/s"
        f" (open loop, Poisson arrivals, {args.processes} client processes,"
        f" {args.seconds:g} s a phase; latency from each call's intended send time).",
        "",
        header,
        rule,
        row("nominal: p50 / p99 (ms)", lambda m: "{answered_p50_ms:.0f} / {answered_p99_ms:.0f}".format(**results[m]["nominal"])),
        row("overload: answered/s", lambda m: f"{results[m]['overload']['answered_per_s']:,.0f}"),
        row("overload: refused RESOURCE_EXHAUSTED (admission)", lambda m: "{refused:,} of {sent:,}".format(**results[m]["overload"])),
        row("overload: refused CANCELLED (grpc-core)", lambda m: "{refused_in_core:,} of {sent:,}".format(**results[m]["overload"])),
        row("overload: other errors", lambda m: errors(m, "overload")),
        row("overload: admitted p50 / p99 (ms)", lambda m: "{answered_p50_ms:.0f} / **{answered_p99_ms:.0f}**".format(**results[m]["overload"])),
        row("admitted p99 overload / nominal", ratio),
        row("recovery: first second p99 (ms)", lambda m: f"{results[m]['recovery']['first_s_p99_ms']:.0f}"),
        row("recovery: p99 (ms), errors", lambda m: "{answered_p99_ms:.0f}".format(**results[m]["recovery"]) + f", {results[m]['recovery']['refused'] + results[m]['recovery']['refused_in_core'] + sum(results[m]['recovery']['other_errors'].values()):,}"),
        *(
            row(f"server RSS MiB, end of {phase} (max)", lambda m, p=phase: _rss(rss[m].get(p, [])))
            for phase in ("nominal", "overload", "recovery")
        ),
        "",
    ]  # fmt: skip


def _shape(command: str) -> str:
    """A command with its run number and port left out, so each shape is listed once."""
    command = re.sub(r"-\d+\.json", "-N.json", command)
    command = re.sub(r"--rate \d+", "--rate RATE", command)
    return re.sub(r"127\.0\.0\.1:\d{2,}", "127.0.0.1:PORT", command)


if __name__ == "__main__":
    raise SystemExit(main())
