"""The server's pools name their threads for the OS (`top -H`, perf, thread_cpu.py)."""

from __future__ import annotations

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
