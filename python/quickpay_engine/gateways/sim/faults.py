"""The simulator's seeded fault model: latency, declines by reason and transport faults.

Every draw is derived from (seed, operation, merchant reference, attempt number), not
from one shared random stream, so a run's faults do not depend on the order in which
concurrent requests happen to arrive: the same seed and the same requests give the
same declines and the same lost responses.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any

from quickpay_engine.gateways.types import DECLINE_REASONS

# Attempt counters are kept per (operation, reference) for this many recent keys; at
# the bound the oldest is forgotten, and a later retry of it counts from zero again,
# which only changes which fault it draws.
ATTEMPTS_TRACKED_MAX = 100_000
# The standard normal quantile of 0.99: turns a p99 latency into a log-normal sigma.
Z_P99 = 2.3263478740408408


class Fault(enum.Enum):
    """What goes wrong with one request, if anything."""

    NONE = "none"
    SERVER_ERROR = "server_error"  # 503 at once; nothing was processed
    TIMEOUT = "timeout"  # held for hang_ms before processing: the caller times out first
    LOST_RESPONSE = "lost_response"  # processed and recorded, then the response withheld


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
    hang_ms: int = 30_000
    declines: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("server_error_rate", "timeout_rate", "lost_response_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} {rate} is not a probability")
        if self.server_error_rate + self.timeout_rate + self.lost_response_rate > 1.0:
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
        if self.hang_ms <= 0:
            raise ValueError("hang_ms must be positive")

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


@dataclass(frozen=True, slots=True)
class Draw:
    """The fate of one request."""

    latency_s: float
    fault: Fault
    decline: str  # a reason from DECLINE_REASONS, or "" to approve


class FaultRoller:
    """Draws each request's fate from the model, deterministically per request."""

    def __init__(self, model: FaultModel) -> None:
        self.model = model
        self._attempts: OrderedDict[tuple[str, str], int] = OrderedDict()

    def draw(self, op: str, reference: str, *, transport: bool) -> Draw:
        """The fate of the next ``op`` request for ``reference``.

        ``transport`` says whether transport faults apply to this operation.
        """
        key = (op, reference)
        attempt = self._attempts.pop(key, 0)
        self._attempts[key] = attempt + 1
        if len(self._attempts) > ATTEMPTS_TRACKED_MAX:
            self._attempts.popitem(last=False)
        m = self.model
        # The decline draw ignores the attempt: a retried sale meets the same issuer
        # answer, as it would in life (and the ledger replays it anyway).
        decline = _pick(_rng(m.seed, "decline", reference, 0).random(), m.declines)
        rng = _rng(m.seed, op, reference, attempt)
        latency_s = self._latency_s(rng)
        fault = Fault.NONE
        if transport:
            u = rng.random()
            if u < m.server_error_rate:
                fault = Fault.SERVER_ERROR
            elif u < m.server_error_rate + m.timeout_rate:
                fault = Fault.TIMEOUT
            elif u < m.server_error_rate + m.timeout_rate + m.lost_response_rate:
                fault = Fault.LOST_RESPONSE
        return Draw(latency_s, fault, decline)

    def _latency_s(self, rng: random.Random) -> float:
        median, p99 = self.model.latency_ms_median, self.model.latency_ms_p99
        if median <= 0:
            return 0.0
        sigma = math.log(p99 / median) / Z_P99 if p99 > median else 0.0
        return rng.lognormvariate(math.log(median), sigma) / 1000.0


def _rng(seed: int, op: str, reference: str, attempt: int) -> random.Random:
    digest = hashlib.blake2b(f"{seed}|{op}|{reference}|{attempt}".encode(), digest_size=8)
    return random.Random(int.from_bytes(digest.digest(), "big"))


def _pick(u: float, rates: dict[str, float]) -> str:
    """The reason whose slice of [0, 1) holds ``u``, or "" past all of them."""
    edge = 0.0
    for reason in sorted(rates):
        edge += rates[reason]
        if u < edge:
            return reason
    return ""
