"""The fraud step of the saga: score validated payments, turn decisions into declines,
and feed outcomes back so the velocity state learns from what really happened.

DECLINE is ``DECLINED`` with ``FRAUD_DECLINED``. REVIEW is ``DECLINED`` with
``FRAUD_REVIEW`` (and a review-queue row), unless the request carried a subscriber
assertion, which validation has already verified by then, and the score is below the
decline threshold: step-up authentication lets it proceed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quickpay_engine._engine import FraudScorer
from quickpay_engine.domain import FraudAssessment, PaymentIntent
from quickpay_engine.fraud import DECISIONS, REASON_CODES, REVIEW, default_model_json, default_rules

if TYPE_CHECKING:
    from quickpay_engine._engine import FraudColumns

FRAUD_DECLINED = "FRAUD_DECLINED"
FRAUD_REVIEW = "FRAUD_REVIEW"
# What a scored payment's outcome tells the scorer (FraudScorer.observe).
OBSERVE_SETTLED, OBSERVE_FAILED = 1, 2
# A batch's subscriber profiles as columns: plans (uint8, 0 unknown), countries,
# sim_swapped_at_s (int64, NO_TIME for never) and created_at_s (int64).
Profiles = tuple[npt.NDArray[np.uint8], list[str], npt.NDArray[np.int64], npt.NDArray[np.int64]]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The assessment for one payment and the decline it leads to ("" to proceed)."""

    assessment: FraudAssessment
    decline_reason: str = ""
    decline_detail: str = ""


def card_fingerprint(key: bytes, pan: str) -> int:
    """A keyed 64-bit fingerprint of a card number (0 for no card): the scorer tracks
    cards by it, and it cannot be turned back into the number without the key."""
    if not pan:
        return 0
    digest = hmac.digest(key, pan.encode(), "sha256")
    return int.from_bytes(digest[:8], "big") or 1


class FraudGate:
    """Scores batches with the engine's FraudScorer and records their outcomes."""

    def __init__(
        self,
        profiles: Callable[[list[str]], Profiles],
        card_key: bytes,
        scorer: FraudScorer | None = None,
        enforce: bool = True,
    ) -> None:
        """``profiles`` gives the carrier's features of a batch of accounts as columns
        (``Engine.subscriber_profiles``: plans, countries, SIM swap and creation
        times); ``enforce`` False is shadow mode: assessments, never fraud declines."""
        self._scorer = scorer or FraudScorer(default_model_json(), default_rules())
        self._enforce = enforce
        self._profiles = profiles
        self._card_key = card_key
        self.review_threshold, self.decline_threshold = self._scorer.thresholds

    def score(self, intents: Sequence[PaymentIntent], now_s: int) -> list[Verdict]:
        """One verdict per intent, in order; each payment counts as an attempt."""
        return self.score_columns(intents, now_s)[0]

    def score_columns(
        self, intents: Sequence[PaymentIntent], now_s: int
    ) -> tuple[list[Verdict], FraudColumns | None]:
        """``score``, and the columns scored, which ``observe`` takes back for the same
        payments (their features are built once a batch, card fingerprints included)."""
        if not intents:
            return [], None
        columns = self._columns(intents)
        scores, decisions, reasons = self._scorer.score(columns, now_s=now_s)
        verdicts = []
        for intent, score, decision, codes in zip(
            intents, scores.tolist(), decisions.tolist(), reasons.tolist(), strict=True
        ):
            assessment = FraudAssessment(
                score, DECISIONS[decision], tuple(REASON_CODES[c] for c in codes if c)
            )
            if not self._enforce:
                verdicts.append(Verdict(assessment))
            elif DECISIONS[decision] == "DECLINE":
                verdicts.append(Verdict(assessment, FRAUD_DECLINED, "declined by fraud scoring"))
            elif decision == REVIEW and not (
                intent.detail.subscriber_assertion and score < self.decline_threshold
            ):
                detail = "held for fraud review; a signed subscriber assertion lets it through"
                verdicts.append(Verdict(assessment, FRAUD_REVIEW, detail))
            else:
                verdicts.append(Verdict(assessment))
        return verdicts, columns

    def observe(
        self,
        intents: Sequence[PaymentIntent],
        settled: Sequence[bool],
        now_s: int,
        columns: FraudColumns | None = None,
    ) -> None:
        """Feeds back what became of scored payments: settled, or failed. ``columns``:
        those ``score_columns`` returned for these same payments, in this order (else
        they are built again)."""
        if not intents:
            return
        outcomes = np.fromiter(
            (OBSERVE_SETTLED if ok else OBSERVE_FAILED for ok in settled), np.uint8, len(intents)
        )
        if columns is None:
            columns = self._columns(intents)
        self._scorer.observe(columns, outcomes, now_s=now_s)

    def _columns(self, intents: Sequence[PaymentIntent]) -> FraudColumns:
        n = len(intents)
        account_ids = [i.account_id for i in intents]
        plans, countries, swapped, created = self._profiles(account_ids)
        pans = [i.detail.card_pan for i in intents]
        return {
            "account_ids": account_ids,
            "msisdns": [i.msisdn for i in intents],
            "amounts_minor": np.fromiter((i.amount_minor for i in intents), np.int64, n),
            "purposes": np.fromiter((i.purpose for i in intents), np.uint8, n),
            "methods": np.fromiter((i.method.kind for i in intents), np.uint8, n),
            "card_fingerprints": np.fromiter(
                (card_fingerprint(self._card_key, p) for p in pans), np.uint64, n
            ),
            "card_bins": [p[:6] if len(p) >= 12 and p.isdigit() else "" for p in pans],
            "device_ids": [i.device_id for i in intents],
            "ips": [i.ip for i in intents],
            "channels": [i.channel for i in intents],
            "plans": plans,
            "countries": countries,
            "sim_swapped_at_s": swapped,
            "created_at_s": created,
        }
