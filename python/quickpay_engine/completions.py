"""The event loop's end of the core's completion queue.

Saga steps run on core threads that never take the GIL (engine/src/python/
completions.rs). Each hands its result to a ``Completions`` queue, whose eventfd the
running loop watches: one wake-up drains every step that ended meanwhile and sets its
future, on the loop's thread. There is one queue per event loop, made on first use.
"""

from __future__ import annotations

import asyncio
import weakref

from quickpay_engine._engine import Completions

_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Completions] = (
    weakref.WeakKeyDictionary()
)


def completions() -> tuple[Completions, asyncio.Future[object]]:
    """The running loop's queue, and a new future for a step to set through it."""
    loop = asyncio.get_running_loop()
    queue = _QUEUES.get(loop)
    if queue is None:
        queue = Completions()
        loop.add_reader(queue.fileno(), queue.drain)
        _QUEUES[loop] = queue
    return queue, loop.create_future()
