"""Runs a synchronous store on one dedicated thread, so the event loop never blocks on I/O.

SQLite has one writer at a time anyway; one thread makes that explicit and keeps the
connection on the thread that uses it.

Calls run in the order they were asked, with one exception: ``run_first`` puts a call
ahead of every call still waiting. The replay lookup and (PostgreSQL) the settlement
journal use it; SQLite's journal and commits are written on a core thread instead
(``SqliteWriter.journal_into``), which needs no Python thread at all.
Both are waited for by the saga's first stage, which runs one batch at a time, so a
millisecond either spends queued behind other calls (earlier batches' commits, a
GetPayment) is a millisecond no batch can start. A call already running is never
interrupted: most of the journal's wait under PayBatch is the commit under way
(benches/RESULTS.md, "Stage 1's waits, the linger and the checkpoint").
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from quickpay_engine.threads import name_os_thread

P = ParamSpec("P")
R = TypeVar("R")

_Call = tuple["concurrent.futures.Future[Any]", Callable[[], Any]]


class StoreThread:
    """One worker thread, named ``{name}_0``; ``run`` and ``run_first`` await a call
    made on it. ``close`` lets every call asked before it finish."""

    def __init__(self, name: str = "store") -> None:
        self._ready = threading.Condition()
        self._first: collections.deque[_Call] = collections.deque()
        self._rest: collections.deque[_Call] = collections.deque()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"{name}_0", daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` on the thread, after the calls asked before it."""
        return await self._ask(self._rest, functools.partial(fn, *args, **kwargs))

    async def run_first(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` on the thread, ahead of every ``run`` call waiting
        (after the call under way and earlier ``run_first`` calls)."""
        return await self._ask(self._first, functools.partial(fn, *args, **kwargs))

    async def _ask(self, lane: collections.deque[_Call], call: Callable[[], R]) -> R:
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the store thread is closed")
            lane.append((future, call))
            self._ready.notify()
        # Cancelling the awaiting task cancels a call not yet started: it never runs.
        return await asyncio.wrap_future(future)

    def _work(self) -> None:
        name_os_thread()
        while True:
            with self._ready:
                while not (self._first or self._rest or self._closed):
                    self._ready.wait()
                lane = self._first or self._rest
                if not lane:
                    return  # closed, and everything asked has run
                future, call = lane.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as err:  # handed to the caller, as an executor does
                future.set_exception(err)
            else:
                future.set_result(result)

    def close(self) -> None:
        """Refuses new calls, waits for the ones asked to run, and ends the thread."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()
