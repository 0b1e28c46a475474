"""The server's pools name their threads for the OS (`top -H`, perf, thread_cpu.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from quickpay_engine.store.executor import StoreThread


def _os_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
async def test_store_thread_has_its_os_name() -> None:
    thread = StoreThread("store-reader")
    try:
        assert await thread.run(_os_name) == "store-reader_0"
    finally:
        thread.close()
    # The caller's own thread keeps its name: only the pool's threads are renamed.
    assert _os_name() != "store-reader_0"


async def test_a_first_call_goes_ahead_of_the_calls_waiting() -> None:
    thread = StoreThread("store-order")
    ran: list[str] = []
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)
        ran.append("under way")

    try:
        running = asyncio.ensure_future(thread.run(hold))
        await asyncio.to_thread(started.wait, 30)
        waiting = [asyncio.ensure_future(thread.run(ran.append, f"asked {n}")) for n in (1, 2)]
        first = asyncio.ensure_future(thread.run_first(ran.append, "journal"))
        cancelled = asyncio.ensure_future(thread.run(ran.append, "cancelled"))
        await asyncio.sleep(0)  # every call above is queued
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled  # and its call with it, before the thread is free
        release.set()
        await asyncio.gather(running, first, *waiting)
        # The call under way finishes; the first call then goes ahead of those waiting;
        # a call cancelled before it started never runs.
        assert ran == ["under way", "journal", "asked 1", "asked 2"]
    finally:
        thread.close()
    with pytest.raises(RuntimeError, match="closed"):
        await thread.run(ran.append, "late")


async def test_an_error_reaches_the_caller_and_the_thread_goes_on() -> None:
    thread = StoreThread("store-error")
    try:
        with pytest.raises(ZeroDivisionError):
            await thread.run(divmod, 1, 0)
        assert await thread.run_first(divmod, 7, 2) == (3, 1)
    finally:
        thread.close()
