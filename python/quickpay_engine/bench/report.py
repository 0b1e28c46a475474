"""What a load run reports: the final table, the JSON file and the PNG plot."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
from collections import Counter
from pathlib import Path
from typing import Any

from quickpay_engine.bench.load import LoadPlan, Tally
from quickpay_engine.bench.runner import Timeline
from quickpay_engine.bench.scenario import Mix

# The JSON file's layout; a reader checks it before trusting the keys.
SCHEMA_VERSION = 1


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.most_common())


def rates(tally: Tally) -> tuple[float, float]:
    """(answered, settled) per second of the measured window. Answered counts every
    measured request (settled, declined, refused with an error or timed out), so a load
    the engine declines quickly shows a high rate; settled counts only the answers whose
    status is SETTLED (a replayed retry of a settled payment included, as in the
    table's ``settled`` line), which is what a settlement costs."""
    if not tally.elapsed_s:
        return 0.0, 0.0
    return tally.sent / tally.elapsed_s, tally.statuses.get("SETTLED", 0) / tally.elapsed_s


# Fraud declines and holds past this share of the good payments a load sent are the
# load's doing, not the engine's: worth a line saying so under the figures.
VELOCITY_HINT_SHARE = 0.1


def _velocity_hint(tally: Tally) -> str:
    """A line for an SRE whose load fraud scoring declined in bulk: the load's own
    payments (not its fraud-like share) refused as FRAUD_DECLINED or FRAUD_REVIEW,
    which is what a load that pays the same lines again within minutes looks like to
    the velocity rules. Empty when there is nothing to say."""
    caught = tally.declines.get("FRAUD_DECLINED", 0) + tally.declines.get("FRAUD_REVIEW", 0)
    good = tally.kinds.get("good", 0)
    unexpected = caught - tally.kinds.get("fraud", 0)
    if not good or unexpected <= VELOCITY_HINT_SHARE * good:
        return ""
    return (
        f"note            fraud scoring refused {unexpected} more payments than the load's"
        f" fraud-like share ({100 * unexpected / good:.0f} % of its {good} good ones): a"
        " load that pays the same lines again within minutes trips the velocity rules."
        " Seed more subscribers, or run the server with --fraud-mode observe, to measure"
        " settlements."
    )


def table(tally: Tally, plan: LoadPlan) -> str:
    """The human summary printed at the end of a run."""
    lat = tally.latency.summary_ms()
    loop = (
        f"open loop, {plan.arrival} {plan.rate_per_s:,.0f}/s"
        if plan.open_loop
        else f"closed loop, {plan.concurrency} callers"
    )
    rate, settled_rate = rates(tally)
    settled = tally.statuses.get("SETTLED", 0)
    declined = tally.statuses.get("DECLINED", 0)
    errors = sum(tally.errors.values())
    lines = [
        f"load            {plan.rpc}"
        + (f" ({plan.batch_size} per call)" if plan.rpc == "batch" else "")
        + f" {loop}, {plan.channels} channel(s) per process",
        f"payments sent   {tally.sent}  ({_counts(tally.kinds)};"
        f" warm-up {tally.warmup} not counted)",
        f"settled         {settled}",
        f"declined        {declined}"
        + (f"  ({_counts(tally.declines)})" if tally.declines else ""),
    ]
    other = {k: v for k, v in tally.statuses.items() if k not in ("SETTLED", "DECLINED")}
    if other:
        lines.append(f"other statuses  {_counts(Counter(other))}")
    lines += [
        f"errors          {errors}" + (f"  ({_counts(tally.errors)})" if tally.errors else ""),
        f"replayed        {tally.replayed}",
    ]
    if tally.fraud_decisions:
        lines.append(f"fraud decisions {_counts(tally.fraud_decisions)}")
    if hint := _velocity_hint(tally):
        lines.append(hint)
    lines += [
        f"payments/s      {rate:,.0f}  (every answer, declines and errors included)",
        f"settled/s       {settled_rate:,.0f}",
        f"latency p50     {lat['p50']:.2f} ms",
        f"latency p90     {lat['p90']:.2f} ms",
        f"latency p99     {lat['p99']:.2f} ms",
        f"latency p99.9   {lat['p99.9']:.2f} ms",
        f"latency max     {lat['max']:.2f} ms",
    ]
    if tally.errors and tally.answered.count:
        answered = tally.answered.summary_ms()
        lines.append(
            f"                (answered without an error: p50 {answered['p50']:.2f},"
            f" p99 {answered['p99']:.2f} ms)"
        )
    if plan.open_loop:
        service = tally.service.summary_ms()
        lines.append(
            "                (from the intended send time; service time alone:"
            f" p50 {service['p50']:.2f}, p99 {service['p99']:.2f} ms)"
        )
    return "\n".join(lines)


def to_json(
    tally: Tally, plan: LoadPlan, mix: Mix, timeline: Timeline, processes: int
) -> dict[str, Any]:
    """Everything the run measured, for a file other tools compare."""
    answered_rate, settled_rate = rates(tally)
    plan_dict = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(plan).items()
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "plan": plan_dict,
        "processes": processes,
        "mix": dataclasses.asdict(mix),
        "client": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "node": platform.node(),
        },
        "sent": tally.sent,
        "warmup": tally.warmup,
        "kinds": dict(tally.kinds),
        "statuses": dict(tally.statuses),
        "declines": dict(tally.declines),
        "errors": dict(tally.errors),
        "replayed": tally.replayed,
        "fraud_decisions": dict(tally.fraud_decisions),
        "elapsed_s": tally.elapsed_s,
        # Both per second of elapsed_s: throughput counts every measured request (as
        # `sent`), settled only the SETTLED answers; see rates().
        "throughput_per_s": answered_rate,
        "settled_per_s": settled_rate,
        "latency_ms": tally.latency.summary_ms(),
        "answered_ms": tally.answered.summary_ms(),
        "service_ms": tally.service.summary_ms() if plan.open_loop else tally.latency.summary_ms(),
        "timeline": timeline.points(),
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Writes the report as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def plot(path: Path, report: dict[str, Any]) -> None:
    """A PNG of throughput and latency (p50, p99, max) over time."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    points = report["timeline"]
    t = [p["t_s"] for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6), constrained_layout=True)
    plan = report["plan"]
    warmup = plan["warmup_s"]
    top.plot(t, [p["rate_per_s"] for p in points], ".-", label="answered/s", color="tab:blue")
    top.plot(t, [p["errors_per_s"] for p in points], label="errors/s", color="tab:red")
    top.set_ylabel("per second")
    top.legend(loc="upper right")
    for name, color in (("p50_ms", "tab:green"), ("p99_ms", "tab:orange"), ("max_ms", "tab:gray")):
        bottom.plot(t, [p[name] for p in points], ".-", label=name.removesuffix("_ms"), color=color)
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("time since start (s)")
    bottom.legend(loc="upper right")
    for ax in (top, bottom):
        if warmup:
            ax.axvspan(0, warmup, color="0.9", label="_warm-up")
        ax.grid(True, alpha=0.3)
    loop = "open" if plan["rate_per_s"] else "closed"
    fig.suptitle(f"quickpay bench: {plan['rpc']}, {loop} loop, {plan['target']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
