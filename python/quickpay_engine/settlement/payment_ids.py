"""Payment ids: "pay_" and 32 lowercase hex digits (128 bits), time-ordered.

Layout of the 128 bits, most significant first (the layout of a UUIDv7, without its
version and variant bits):

- 48 bits: the Unix time in milliseconds when the id was made;
- 80 bits: random, from the system's random source.

Why time first: every table of the store keys a row of a payment by its id (payments,
billing records, AR legs, provisioning changes, the saga's journal) and indexes it. With
uniformly random ids each of a batch's payments lands on a different page of each of
those indexes, and every page a transaction dirties is a page written to SQLite's WAL
(PostgreSQL's WAL likewise, as a full-page image after a checkpoint) and fsynced. With
ids that grow with time a batch's rows land together at the right edge of each index.

Ids from one source are strictly increasing: the ids of one call are the sorted random
draws under the current millisecond, and an id that would not be above the last one
made (two calls in the same millisecond, the clock stepped back) is the last one plus 1
plus 40 of its random bits instead. Across processes they are ordered only by their
milliseconds. Nothing may rely on an id's bits beyond this: they are not a timestamp
to read back (use the row's times). The 80 random bits keep an id as hard to guess as
before for any practical purpose (40 of them past the id before it, when moved up);
who may read or refund a payment is the access file's decision (docs/operations.md,
"Callers and roles"), never the id's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from quickpay_engine._engine import make_payment_ids

RANDOM_BITS = 80
RANDOM_BYTES = RANDOM_BITS // 8
# The random bits kept when an id has to be moved above the last one made (the core's
# make_payment_ids holds the same three numbers).
STEP_BITS = 40


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PaymentIdSource:
    """Makes payment ids (see the module docs); safe to call from several threads."""

    def __init__(
        self,
        clock_ms: Callable[[], int] = wall_clock_ms,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._clock_ms = clock_ms
        self._random_bytes = random_bytes
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> list[str]:
        """``n`` fresh ids, increasing, from one read of the random source; the draws are
        sorted and formatted in the core (``make_payment_ids``), not one by one here."""
        raw = self._random_bytes(RANDOM_BYTES * n)
        with self._lock:
            ids, self._last = make_payment_ids(self._clock_ms(), raw, self._last)
        return ids


# The process's source: the pipeline's default.
new_payment_ids = PaymentIdSource()
