"""A circuit breaker per gateway: closed, open, half-open; the clock is passed in.

Closed: calls go through; ``failure_threshold`` consecutive failures open it. Open:
calls are refused at once (the router fails over without waiting on a dead gateway)
until ``open_ms`` has passed. Half-open: up to ``half_open_max_calls`` probes go
through; a success closes the breaker, a failure opens it again for another period.

A failure is a transport failure (refused connection, timeout, dropped connection,
5xx); a decline is a success, since the gateway answered.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from quickpay_engine.gateways.config import BreakerSettings


class BreakerState(enum.IntEnum):
    """The breaker's state; numbers are stable (exported as a metric)."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """One gateway's breaker. Not thread-safe: used from the event loop only."""

    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probes = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker turns half-open when its period is over)."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self._settings.open_ms / 1000:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allow(self) -> bool:
        """Whether a call may go through now; a half-open probe takes a slot."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._probes >= self._settings.half_open_max_calls:
            return False
        self._probes += 1
        return True

    def allow_many(self, n: int) -> int:
        """How many of ``n`` calls may go through now, the first ones: ``allow`` for
        each in turn (a half-open breaker gives out its probe slots)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return n
        if state is BreakerState.OPEN:
            return 0
        allowed = max(0, min(n, self._settings.half_open_max_calls - self._probes))
        self._probes += allowed
        return allowed

    def record_success(self) -> None:
        """The gateway answered: close the breaker."""
        self._failures = 0
        self._opened_at = None
        self._probes = 0

    def release(self) -> None:
        """A call let through ended with neither verdict (it was cancelled): free its
        half-open probe slot, so a cancelled probe cannot wedge the breaker."""
        if self._probes:
            self._probes -= 1

    def record_failure(self) -> None:
        """A transport failure: count it, and open on the threshold or a failed probe."""
        if self._opened_at is not None:
            # A failed half-open probe (or a late failure of a call let through
            # before the breaker opened) starts a fresh open period.
            self._opened_at = self._clock()
            self._probes = 0
            return
        self._failures += 1
        if self._failures >= self._settings.failure_threshold:
            self._opened_at = self._clock()
            self._probes = 0
