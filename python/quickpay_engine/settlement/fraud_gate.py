"""The fraud step of the saga: score validated payments, turn decisions into declines,
and feed outcomes back so the velocity state learns from what really happened.

DECLINE is ``DECLINED`` with ``FRAUD_DECLINED``. REVIEW is ``DECLINED`` with
``FRAUD_REVIEW`` (and a review-queue row), unless the request carried a subscriber
assertion, which validation has already verified by then, and the score is below the
decline threshold: step-up authentication lets it proceed.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quickpay_engine._engine import Engine, FraudBatch, FraudScorer
from quickpay_engine.domain import FraudAssessment, PaymentIntent
from quickpay_engine.fraud import default_model_json, default_rules
from quickpay_engine.settlement.validation import build_validation_columns

FRAUD_DECLINED = "FRAUD_DECLINED"
FRAUD_REVIEW = "FRAUD_REVIEW"
# What a verdict does to its payment (``Scored.verdicts``): proceed, FRAUD_DECLINED,
# FRAUD_REVIEW; the decline reason and detail of each, by that number.
PROCEED, DECLINED, HELD = 0, 1, 2
DECLINE_REASONS = ("", FRAUD_DECLINED, FRAUD_REVIEW)
DECLINE_DETAILS = (
    "",
    "declined by fraud scoring",
    "held for fraud review; a signed subscriber assertion lets it through",
)
# What a scored payment's outcome tells the scorer (FraudScorer.observe).
OBSERVE_SETTLED, OBSERVE_FAILED = 1, 2


@dataclass(frozen=True, slots=True)
class Verdict:
    """The assessment for one payment and the decline it leads to ("" to proceed)."""

    assessment: FraudAssessment
    decline_reason: str = ""
    decline_detail: str = ""


@dataclass(frozen=True, slots=True)
class Scored:
    """A batch scored by the core: per payment (in the order of the rows scored) its
    assessment and what the verdict does (``PROCEED``, ``DECLINED``, ``HELD``); and the
    core's copy of the rows, which ``observe`` takes back."""

    assessments: list[FraudAssessment]
    verdicts: list[int]
    batch: FraudBatch


def card_fingerprint(key: bytes, pan: str) -> int:
    """A keyed 64-bit fingerprint of a card number (0 for no card): the scorer tracks
    cards by it, and it cannot be turned back into the number without the key. The
    definition; the core computes it (``FraudScorer.score_validated``), and a test
    holds the two equal, since fingerprints persist in the fraud state."""
    if not pan:
        return 0
    digest = hmac.digest(key, pan.encode(), "sha256")
    return int.from_bytes(digest[:8], "big") or 1


class FraudGate:
    """Scores batches with the engine's FraudScorer and records their outcomes."""

    def __init__(
        self,
        engine: Engine,
        card_key: bytes,
        scorer: FraudScorer | None = None,
        enforce: bool = True,
    ) -> None:
        """``engine`` holds the subscribers, whose profiles (plan, country, SIM swap
        and creation times) are features; ``enforce`` False is shadow mode:
        assessments, never fraud declines."""
        self._scorer = scorer or FraudScorer(default_model_json(), default_rules())
        self._enforce = enforce
        self._engine = engine
        self._card_key = card_key
        self.review_threshold, self.decline_threshold = self._scorer.thresholds

    def score_validated(
        self, columns: Mapping[str, np.ndarray], rows: npt.NDArray[np.int64], now_s: int
    ) -> Scored:
        """Scores the payments at ``rows`` of a batch's validation columns (what
        ``Engine.validate`` took), each counted as an attempt: the core reads their
        fields, fingerprints their cards and looks up their subscribers, and returns
        the verdicts as columns, so nothing here walks the payments."""
        batch, _, _, _, verdicts, assessments = self._scorer.score_validated(
            self._engine,
            columns,
            rows,
            card_key=self._card_key,
            now_s=now_s,
            enforce=self._enforce,
            assessment_type=FraudAssessment,
        )
        return Scored(assessments, verdicts.tolist(), batch)

    def score(self, intents: Sequence[PaymentIntent], now_s: int) -> list[Verdict]:
        """One verdict per intent, in order; each payment counts as an attempt."""
        if not intents:
            return []
        columns = build_validation_columns(intents)
        scored = self.score_validated(columns, np.arange(len(intents), dtype=np.int64), now_s)
        return [
            Verdict(a, DECLINE_REASONS[v], DECLINE_DETAILS[v])
            for a, v in zip(scored.assessments, scored.verdicts, strict=True)
        ]

    def observe(self, batch: FraudBatch, settled: npt.NDArray[np.bool_], now_s: int) -> None:
        """Feeds back what became of a scored batch's payments (``Scored.batch``):
        ``settled`` True for each that settled, in its order; the others failed."""
        if not len(batch):
            return
        outcomes = np.where(settled, OBSERVE_SETTLED, OBSERVE_FAILED).astype(np.uint8)
        self._scorer.observe_batch(batch, outcomes, now_s=now_s)
