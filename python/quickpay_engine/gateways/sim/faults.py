"""The simulator's seeded fault model: latency, declines by reason and transport faults.

This is the model and its checks (for the gateways file's [gateway.simulator] tables,
`quickpay gateway-sim --faults`, and PUT /sim/faults). The dice are rolled by the
simulator's server in Rust (engine/src/python/sim/faults.rs): every draw is derived
from (seed, operation, merchant reference, attempt number), not from one shared random
stream, so a run's faults do not depend on the order in which concurrent requests
happen to arrive: the same seed and the same requests give the same declines and the
same lost responses.

The transport faults, each with its rate (the six add up to at most one):

- ``server_error_rate``: a 503 at once; nothing was processed.
- ``timeout_rate``: the request held for hang_ms, then processed: the caller times out
  first.
- ``lost_response_rate``: processed and recorded, held for hang_ms, then the connection
  closed (FIN) without an answer.
- ``slow_body_rate``: processed and recorded, then answered 200 with the status line,
  the headers (Content-Length of the whole body) and half the body at once, the rest
  trickled a byte at a time over hang_ms: the caller's deadline passes mid-body, with
  bytes still arriving, so only a deadline on the whole exchange ends its wait.
- ``reset_before_rate``: the request read, then the connection reset (a TCP RST:
  SO_LINGER zero, then close) with nothing processed.
- ``reset_after_rate``: processed and recorded, then the connection reset (RST) instead
  of an answer.

The faults after processing (lost response, slow body, reset after) spare a replayed
request: one the books already hold is always answered, so a retry learns its fate.
Every one of them leaves the caller not knowing whether the request was processed: it
must look the reference up (lookups and voids never fault) before anything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from quickpay_engine.gateways.types import DECLINE_REASONS

# The server keeps seeds and times as 64-bit integers; a hang above an hour is a typo.
SEED_MAX = 2**63 - 1
HANG_MS_MAX = 3_600_000
RATES = (
    "server_error_rate",
    "timeout_rate",
    "lost_response_rate",
    "slow_body_rate",
    "reset_before_rate",
    "reset_after_rate",
)


@dataclass(frozen=True)
class FaultModel:
    """The knobs; probabilities are per request, latencies in milliseconds.

    ``declines`` maps a decline reason to its probability; their sum must not exceed
    one. The transport faults apply to sale, authorize, capture and refund; status
    lookups and voids only get latency, so an unknown outcome can always be resolved.
    """

    seed: int = 0
    latency_ms_median: float = 0.0
    latency_ms_p99: float = 0.0
    server_error_rate: float = 0.0
    timeout_rate: float = 0.0
    lost_response_rate: float = 0.0
    slow_body_rate: float = 0.0
    reset_before_rate: float = 0.0
    reset_after_rate: float = 0.0
    hang_ms: int = 30_000
    declines: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("seed", "hang_ms"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"{name} must be an integer")
        if not -SEED_MAX <= self.seed <= SEED_MAX:
            raise ValueError("seed must fit in 64 bits")
        for name in (*RATES, "latency_ms_median", "latency_ms_p99"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        for name in RATES:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} {rate} is not a probability")
        if math.fsum(getattr(self, name) for name in RATES) > 1.0:
            raise ValueError("transport fault rates add up to more than one")
        unknown = set(self.declines) - set(DECLINE_REASONS)
        if unknown:
            raise ValueError(f"unknown decline reasons {sorted(unknown)}; use {DECLINE_REASONS}")
        if any(not 0.0 <= p <= 1.0 for p in self.declines.values()):
            raise ValueError("decline rates must be probabilities")
        if sum(self.declines.values()) > 1.0:
            raise ValueError("decline rates add up to more than one")
        if self.latency_ms_median < 0 or self.latency_ms_p99 < self.latency_ms_median:
            raise ValueError("latency needs 0 <= latency_ms_median <= latency_ms_p99")
        if not 0 < self.hang_ms <= HANG_MS_MAX:
            raise ValueError(f"hang_ms must be 1 to {HANG_MS_MAX}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultModel:
        """Builds a model from a JSON or TOML table; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault model keys {sorted(unknown)}")
        values = dict(data)
        if "declines" in values:
            values["declines"] = {str(k): float(v) for k, v in values["declines"].items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as from_dict reads it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
