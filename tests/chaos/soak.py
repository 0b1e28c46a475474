"""The soak's gauges: the engine process's resident memory, open file descriptors and
write-ahead log size, sampled from /proc and the data dir; the trend check and the plot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    t_s: float
    rss_bytes: int
    fds: int  # every open descriptor
    wal_bytes: int
    sockets: int = 0  # of which sockets: gRPC callers, gateway connections, the broker


def sample(pid: int, ledger_dir: Path, t_s: float) -> Sample:
    """One reading of the running engine (``pid``) and its write-ahead log."""
    rss_kib = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    fds = sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        with contextlib.suppress(OSError):  # closed meanwhile
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    wal = sum(p.stat().st_size for p in ledger_dir.glob("wal-*.log"))
    return Sample(t_s, rss_kib * 1024, fds, wal, sockets)


# How much a gauge may sit above where it started before it counts as trending up: the
# allocator and the caches settle in the first minutes, and a log grows between its
# snapshots. Value bounds, not times: a slow machine takes the same path, slower.
RSS_SLACK = 0.20  # of the first third's median
# Files (log segments, the database, its journal): a leak of these is a bug at any size.
FILES_SLACK = 4
# Sockets come and go with the load: under gateway faults each gateway's pool grows
# towards its bound (pool_max 64 plus 8 for lookups, gateways/client.py) as timed-out
# connections are replaced, so their number is judged against that bound, not against
# where it started; a leak passes any bound.
GATEWAY_SOCKETS_MAX = 64 + 8
# gRPC callers (the load's channels), the broker, the database: a generous allowance.
OTHER_SOCKETS_MAX = 64


def trends(samples: list[Sample], gateways: int, settled_s: float = 0.0) -> list[str]:
    """Gauges whose last third sits above their first third (after the first snapshot,
    the baseline taken once the load runs) by more than the slack: the medians of the
    thirds are compared, so one spike decides nothing. RSS is judged only on the samples
    from ``settled_s`` on: until then the ledger's retention window is still filling, and
    its memory grows with every payment by design (finished payments are kept for one
    window, then forgotten). Sockets are held to the bound of
    ``gateways`` connection pools instead."""
    if len(samples) < 6:
        return [f"only {len(samples)} samples: too few to see a trend"]
    third = len(samples) // 3
    head, tail = samples[:third], samples[-third:]
    problems = []
    steady = [s for s in samples if s.t_s >= settled_s]
    if len(steady) < 6:
        return [f"only {len(steady)} samples after {settled_s:g} s: too few to see a trend"]
    rss0 = statistics.median(s.rss_bytes for s in steady[: len(steady) // 3])
    rss1 = statistics.median(s.rss_bytes for s in steady[-(len(steady) // 3) :])
    if rss1 > rss0 * (1 + RSS_SLACK):
        problems.append(f"RSS trends up: {rss0 / 2**20:.0f} MiB -> {rss1 / 2**20:.0f} MiB")
    files0 = statistics.median(s.fds - s.sockets for s in head)
    files1 = statistics.median(s.fds - s.sockets for s in tail)
    if files1 > files0 + FILES_SLACK:
        problems.append(f"open files trend up: {files0:g} -> {files1:g}")
    bound = gateways * GATEWAY_SOCKETS_MAX + OTHER_SOCKETS_MAX
    most = max(s.sockets for s in samples)
    if most > bound:
        problems.append(f"{most} open sockets, above the pools' bound of {bound}")
    # The log grows between the ledger's snapshots and drops at each: only once it has
    # dropped once (a snapshot happened) can it be said to trend; before, it is a log.
    drops = [i for i in range(1, len(samples)) if samples[i].wal_bytes < samples[i - 1].wal_bytes]
    if drops:
        after = samples[drops[0] :]
        half = len(after) // 2
        if half >= 2:
            w0 = max(s.wal_bytes for s in after[:half])
            w1 = max(s.wal_bytes for s in after[half:])
            if w1 > w0 * 1.5:
                problems.append(f"WAL size trends up after the first snapshot: {w0} -> {w1} bytes")
    return problems


def plot(samples: list[Sample], path: Path, title: str) -> None:
    """RSS, open descriptors, sockets and WAL size against time, a panel each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    t = [s.t_s for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    panels = (
        ([s.rss_bytes / 2**20 for s in samples], "RSS (MiB)"),
        ([s.fds for s in samples], "open descriptors (all)"),
        ([s.sockets for s in samples], "of which sockets"),
        ([s.wal_bytes / 2**20 for s in samples], "write-ahead log (MiB)"),
    )
    for ax, (values, label) in zip(axes, panels, strict=True):
        ax.plot(t, values, marker=".")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("seconds since the first snapshot")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
