"""Latency histograms: HDR histograms in microseconds, mergeable across processes.

An HDR histogram keeps every recorded value to a fixed relative precision in constant
memory, so p99.9 and max are exact to that precision however long the run; a list of
samples would grow without bound and a fixed-bucket histogram would blur the tail.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

# The smallest and largest latency recorded, in microseconds. The largest is above the
# client's call timeout (30 s) with room to spare; a larger value is clamped to it, so a
# stuck call shows up as the maximum instead of being dropped.
LATENCY_US_MIN = 1
LATENCY_US_MAX = 120_000_000
# Three significant digits: a value is kept to within 0.1 %.
SIGNIFICANT_DIGITS = 3


class Latency:
    """A latency histogram in microseconds, with percentiles in milliseconds."""

    __slots__ = ("_h",)

    def __init__(self, h: HdrHistogram | None = None) -> None:
        self._h = h or HdrHistogram(LATENCY_US_MIN, LATENCY_US_MAX, SIGNIFICANT_DIGITS)

    def record_s(self, seconds: float) -> None:
        """Records one latency given in seconds, clamped to the histogram's range."""
        us = int(seconds * 1_000_000)
        self._h.record_value(min(max(us, LATENCY_US_MIN), LATENCY_US_MAX))

    @property
    def count(self) -> int:
        """How many latencies were recorded."""
        return int(self._h.get_total_count())

    def percentile_ms(self, q: float) -> float:
        """The latency at percentile ``q`` (0..100) in milliseconds; 0 when empty."""
        if self.count == 0:
            return 0.0
        return self._h.get_value_at_percentile(q) / 1_000

    def max_ms(self) -> float:
        """The largest latency recorded, in milliseconds; 0 when empty."""
        return self._h.get_max_value() / 1_000 if self.count else 0.0

    def add(self, other: Latency) -> None:
        """Adds every value of ``other`` to this histogram."""
        self._h.add(other._h)

    def reset(self) -> None:
        """Forgets every value."""
        self._h.reset()

    def encode(self) -> bytes:
        """The compressed HdrHistogram encoding, to send to another process."""
        return bytes(self._h.encode())

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        # Pickled as its encoding, so a worker process can send it back to the parent.
        return (Latency.decode, (self.encode(),))

    @classmethod
    def decode(cls, data: bytes) -> Latency:
        """The histogram ``encode`` wrote."""
        return cls(HdrHistogram.decode(data))

    def summary_ms(self) -> dict[str, float]:
        """p50, p90, p99, p99.9 and max in milliseconds, as the report prints them."""
        return {
            "p50": self.percentile_ms(50),
            "p90": self.percentile_ms(90),
            "p99": self.percentile_ms(99),
            "p99.9": self.percentile_ms(99.9),
            "max": self.max_ms(),
        }
