"""The event loop's CPU time the watch hub spends per commit beside idle watchers (issue
#20, item 6), without the server, the network or the machine's load in the figure.

    .venv/bin/python benches/watch_hub_cpu.py [--watchers 1000] [--commits 2000]
    .venv/bin/python benches/watch_hub_cpu.py --hub DIR/python   # another tree's hub

A WatchHub over an outbox in memory; WATCHERS streams wait on an account no event is
for (idle), and COMMITS commits of EVENTS events each (other accounts) are handed to
the hub one at a time, each followed by the poller's look. The figure is the event
loop thread's CPU time (``time.thread_time``, not the wall clock: other processes on
a shared machine do not count) per commit, with 1 and with WATCHERS idle streams; the
difference is what the idle streams cost. ``--hub`` loads settlement/watch.py from
another checkout (the figures before a change), in the same process and run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

from quickpay_engine.domain import OutboxEvent
from quickpay_engine.store.executor import StoreThread


class Outbox:
    def __init__(self) -> None:
        self.events: list[OutboxEvent] = []

    def add(self, kind: str, account_id: str) -> None:
        n = len(self.events) + 1
        self.events.append(OutboxEvent(n, f"e{n}", kind, f"p{n}", account_id, {}, 0))

    def outbox_head(self) -> int:
        return self.events[-1].cursor if self.events else 0

    def outbox_after(self, cursor, kinds=(), account_id="", limit=256) -> list[OutboxEvent]:
        # Cursors are 1..n: the events after `cursor` are a slice.
        found = [
            e
            for e in self.events[cursor:]
            if (not kinds or e.kind in kinds) and (not account_id or e.account_id == account_id)
        ]
        return found[:limit]


def load_hub(tree: Path | None) -> ModuleType:
    if tree is None:
        from quickpay_engine.settlement import watch

        return watch
    path = tree / "quickpay_engine" / "settlement" / "watch.py"
    spec = importlib.util.spec_from_file_location(f"watch_{abs(hash(path))}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up
    spec.loader.exec_module(module)
    return module


async def cpu_per_commit(watch: ModuleType, watchers: int, commits: int, events: int) -> float:
    """The loop thread's CPU microseconds per commit, ``watchers`` idle streams open."""
    outbox, thread = Outbox(), StoreThread("bench-reader")
    hub = watch.WatchHub(outbox, thread)
    streams = [hub.watch(0, account_id="idle-nobody") for _ in range(watchers)]
    firsts = [asyncio.ensure_future(anext(s)) for s in streams]
    looked = asyncio.Event()
    real = hub._look

    async def look() -> None:
        await real()
        looked.set()

    hub._look = look
    await asyncio.sleep(0.05)  # every stream started and waiting
    assert hub.watchers == watchers
    started = time.thread_time()
    for c in range(commits):
        for k in range(events):
            outbox.add("settlement", f"acc-{c}-{k}")
        looked.clear()
        hub.committed()
        while hub.head < outbox.events[-1].cursor:
            await looked.wait()
            looked.clear()
    spent = time.thread_time() - started
    assert not any(f.done() for f in firsts), "an idle stream was woken"
    hub.close()
    for f in firsts:
        f.cancel()
    await asyncio.gather(*firsts, return_exceptions=True)
    for s in streams:
        await s.aclose()
    thread.close()
    return spent / commits * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=1_000)
    parser.add_argument("--commits", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=4, help="events a commit")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hub", type=Path, default=None, help="another tree's python/")
    args = parser.parse_args()
    watch = load_hub(args.hub)
    print(f"hub: {watch.__file__}")
    for n in (1, args.watchers):
        figures = [
            asyncio.run(cpu_per_commit(watch, n, args.commits, args.events))
            for _ in range(args.repeats)
        ]
        print(
            f"{n:>5} idle watchers: {statistics.median(figures):7.1f} us of loop CPU a commit"
            f" (median of {args.repeats}, {min(figures):.1f}..{max(figures):.1f})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
