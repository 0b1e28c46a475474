"""Shared by this area's micro-benchmarks: sizes, subscribers and payment intents; and
by the py-spy profiles (profile_calls.py, profile_paybatch.py): the recording and the
reader of its raw output.

``QUICKPAY_BENCH_SIZE=smoke`` shrinks every size so that `make test` can run each
benchmark once (with ``--benchmark-disable``) in seconds; the default sizes are the
ones whose figures go in RESULTS.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from quickpay_engine.api.convert import intent_of
from quickpay_engine.bench.scenario import Mix, RequestSource
from quickpay_engine.domain import PaymentIntent, SubscriberRow
from quickpay_engine.subscribers import generate

SMOKE = os.environ.get("QUICKPAY_BENCH_SIZE") == "smoke"
# A fixed key: fingerprints cost the same whatever the key.
FINGERPRINT_KEY = b"k" * 32


def size(full: int, smoke: int) -> int:
    """``full`` for a measured run, ``smoke`` for the smoke run in `make test`."""
    return smoke if SMOKE else full


def subscribers(count: int) -> list[SubscriberRow]:
    """``count`` synthetic subscribers, the same every run."""
    return list(generate(count, seed=7))


def intents(rows: Sequence[SubscriberRow], count: int, run_id: str) -> list[PaymentIntent]:
    """``count`` good payments for ``rows``, keys unique per ``run_id``."""
    source = RequestSource(rows, seed=11, mix=Mix(invalid=0, declined=0), run_id=run_id)
    return [intent_of(r, FINGERPRINT_KEY) for r in source.take(count)]


def record_pyspy(pid: int, out: Path, seconds: float, rate: int, gil: bool = False) -> None:
    """`py-spy record --threads --format raw --nonblocking` of process ``pid`` for
    ``seconds`` at ``rate`` Hz into ``out``: the venv's py-spy, else the one on PATH (it
    is not a dependency: `.venv/bin/pip install py-spy`). ``gil``: only the thread that
    holds the GIL is sampled (`--gil`), so a thread waiting for it counts nothing."""
    pyspy = Path(sys.executable).parent / "py-spy"
    subprocess.run(
        [str(pyspy) if pyspy.exists() else shutil.which("py-spy") or "py-spy", "record",
         "--pid", str(pid), "--threads", "--format", "raw", "--duration", str(int(seconds)),
         "--rate", str(rate), "--nonblocking", "--output", str(out), *(["--gil"] if gil else [])],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@dataclass(frozen=True)
class Stack:
    """One line of py-spy's raw output: a stack and how many samples found it."""

    text: str  # the stack as py-spy wrote it, frames joined by ";", outermost first
    count: int
    # The sampled thread's name (the frame ``thread (0x7f...): NAME``, trailing digits
    # kept), or the first frame where there is none.
    thread: str
    # The code's frames, outermost first (``func (path/to/file.py:12)``), without the
    # thread's and the process's.
    frames: tuple[str, ...]


def pyspy_stacks(out: Path) -> Iterator[Stack]:
    """The stacks of a `py-spy record --threads --format raw` file, one per line that ends
    in its count."""
    for line in out.read_text().splitlines():
        text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = text.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), frames[0])
        code = tuple(f for f in frames if not f.startswith(("thread ", "process ")))
        yield Stack(text, int(count), thread.split(": ", 1)[-1].strip('"'), code)
