"""Admission by time: a payment that would wait too long is refused before any work.

A queue bounded only by count lets every caller in and makes all of them slow: at four
times what saturates the engine, every admitted payment waited seconds, and callers
gave up (CANCELLED) on payments the engine then settled for nobody. Here a payment is
admitted only when the wait it can expect in the settlement queue is within a bound
(``--queue-wait-max-ms``, 250 ms by default) and within what is left of its caller's
deadline; otherwise the caller hears RESOURCE_EXHAUSTED at once, with a hint of when to
retry, and nothing of the payment is journalled, held or sent (its idempotency key is
free for the retry).

The expected wait is the payments queued ahead divided by the rate at which the
batcher takes payments off the queue while it is busy. That rate is measured per batch,
never per payment: each time the consumer comes back for a batch and finds payments
already waiting (it did not idle), the previous batch's size over the time since the
previous take is a sample of what the engine drains at saturation. Samples taken while
the queue runs empty would measure the callers' arrival rate, not the engine's, and are
not taken. The sizes and the intervals are smoothed separately (their ratio is the
rate), so one slow or fast batch moves the estimate by a fraction only.

Until a first busy sample exists nothing is refused by time (the count bound of the
queue still holds): an engine that has never been busy has nothing queued to wait for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from quickpay_engine.errors import Overloaded

# The default bound on the expected wait in the settlement queue. The engine's own
# latency at nominal load is around 100 ms (benches/RESULTS.md); a quarter of a second
# more is what a caller sees before it is told to come back.
QUEUE_WAIT_MAX_MS = 250.0
# The largest bound `quickpay serve` takes: past a minute the bound no longer sheds
# anything a caller would still be waiting for.
QUEUE_WAIT_MAX_MS_LIMIT = 60_000.0
# Weight of each new busy batch in the smoothed batch size and interval: the estimate
# follows a change of the engine's speed within about 1/SMOOTHING batches.
SMOOTHING = 0.2
# A refusal's retry hint is at least this long, so a hint never invites a retry storm.
RETRY_AFTER_MIN_S = 0.01


class Admission:
    """Decides whether work that would queue behind ``ahead`` payments may be admitted.

    ``wait_max_s`` bounds the expected wait; 0 turns admission by time off (only the
    queue's count bound refuses). ``clock`` is monotonic seconds, the clock deadlines are
    on (``time.monotonic``); a test passes its own.
    """

    def __init__(
        self,
        wait_max_s: float = QUEUE_WAIT_MAX_MS / 1_000,
        clock: Callable[[], float] = time.monotonic,
        smoothing: float = SMOOTHING,
    ) -> None:
        assert wait_max_s >= 0 and 0 < smoothing <= 1
        self.wait_max_s = wait_max_s
        self.clock = clock
        self._smoothing = smoothing
        # The smoothed size of a busy batch and time between busy takes (None: no busy
        # sample yet), and the previous take: when and how many payments it took.
        self._batch_items: float | None = None
        self._batch_interval_s = 0.0
        self._last_take_s: float | None = None
        self._last_items = 0

    @property
    def rate_per_s(self) -> float | None:
        """Payments the engine takes off the queue per second while busy (None: not
        measured yet)."""
        if self._batch_items is None:
            return None
        return self._batch_items / self._batch_interval_s

    def taken(self, items: int, taken_s: float, backlogged: bool) -> None:
        """The batcher took a batch of ``items``, its first at ``taken_s`` (on the
        clock); ``backlogged``: payments were already waiting when it came back for it,
        so the time since the previous take was all spent on that batch."""
        assert items >= 1
        last_s, last_items = self._last_take_s, self._last_items
        self._last_take_s, self._last_items = taken_s, items
        if not backlogged or last_s is None or taken_s <= last_s:
            return
        interval_s = taken_s - last_s
        if self._batch_items is None:
            self._batch_items, self._batch_interval_s = float(last_items), interval_s
            return
        a = self._smoothing
        self._batch_items += a * (last_items - self._batch_items)
        self._batch_interval_s += a * (interval_s - self._batch_interval_s)

    def expected_wait_s(self, ahead: int) -> float:
        """How long a payment queued behind ``ahead`` others can expect to wait before
        the batcher takes it (0 before the rate is measured)."""
        rate = self.rate_per_s
        return 0.0 if rate is None or ahead <= 0 else ahead / rate

    def check(self, ahead: int, deadline_s: float | None = None) -> None:
        """Raises ``Overloaded`` (with ``retry_after_s``) when work queued behind
        ``ahead`` payments would wait past the bound, or past ``deadline_s`` (the
        caller's deadline on the clock; None: none)."""
        if self.wait_max_s <= 0:
            return
        wait_s = self.expected_wait_s(ahead)
        if wait_s <= 0:
            return
        # The refusal's text is built only for a refusal: this runs for every payment.
        limit_s, by_deadline = self.wait_max_s, False
        if deadline_s is not None:
            left_s = deadline_s - self.clock()
            if left_s < limit_s:
                limit_s, by_deadline = left_s, True
        if wait_s <= limit_s:
            return
        if by_deadline:
            why = f"the {max(limit_s, 0) * 1_000:.0f} ms left of the deadline"
        else:
            why = f"the bound of {self.wait_max_s * 1_000:.0f} ms"
        # The queue drains at the measured rate; by then the wait is back within limit.
        retry_after_s = max(RETRY_AFTER_MIN_S, wait_s - max(limit_s, 0.0))
        raise Overloaded(
            f"the engine is overloaded: {ahead} payments are queued, about"
            f" {wait_s * 1_000:.0f} ms of work, past {why}; nothing was done: retry in"
            f" {math.ceil(retry_after_s * 1_000)} ms with the same idempotency_key",
            retry_after_s=retry_after_s,
        )
