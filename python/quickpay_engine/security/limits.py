"""Per-caller rate limits: a token bucket per identity and RPC, as the access file sets.

A call takes one token; an empty bucket answers how long until the next token, and the
call is refused before any work (RESOURCE_EXHAUSTED with that wait). The clock is passed
in, so tests decide when time passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from quickpay_engine.security.access import Caller, RateLimit


class TokenBucket:
    """``limit.burst`` tokens at most, refilled at ``limit.per_s`` a second."""

    __slots__ = ("_clock", "_limit", "_tokens", "_updated")

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._updated = clock()

    def take(self) -> float:
        """Takes a token: 0.0 when one was there, else the seconds until one will be."""
        now = self._clock()
        limit = self._limit
        self._tokens = min(limit.burst, self._tokens + (now - self._updated) * limit.per_s)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / limit.per_s


class RateLimiter:
    """The buckets of every caller and RPC with a limit; a bucket is made at its first
    call. Bounded by the access file: at most one bucket per (caller, RPC) it names."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def wait_s(self, caller: Caller, rpc: str) -> float:
        """0.0 when ``caller`` may call ``rpc`` now (a token is taken), else how long to
        wait. Called on the event loop only, so no lock."""
        limit = caller.limits.get(rpc)
        if limit is None:
            return 0.0
        bucket = self._buckets.get((caller.name, rpc))
        if bucket is None:
            bucket = self._buckets[(caller.name, rpc)] = TokenBucket(limit, self._clock)
        return bucket.take()
