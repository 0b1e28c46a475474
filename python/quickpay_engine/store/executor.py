"""Runs a synchronous store on one dedicated thread, so the event loop never blocks on I/O.

SQLite has one writer at a time anyway; one thread makes that explicit and keeps the
connection on the thread that uses it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from quickpay_engine.threads import name_os_thread

P = ParamSpec("P")
R = TypeVar("R")


class StoreThread:
    """One worker thread; ``run`` awaits a call made on it."""

    def __init__(self, name: str = "store") -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=name_os_thread
        )

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
