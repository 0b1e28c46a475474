"""Fraud scoring: the Rust scorer, its shipped model and rules, and the tools that
train and evaluate it on labelled synthetic traffic.

The scorer itself is ``quickpay_engine._engine.FraudScorer``; this package adds the
files it is built from (``default_model.json``, ``default_rules.txt``) and batch
helpers. Decisions and reason codes have stable numbers; ``DECISIONS`` and
``REASON_CODES`` map them to their names.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from quickpay_engine._engine import (
    BATCH_MAX,
    FRAUD_FEATURE_COUNT,
    FraudScorer,
    fraud_decisions,
    fraud_feature_names,
    fraud_reason_codes,
)

DECISIONS: dict[int, str] = dict(fraud_decisions())
REASON_CODES: dict[int, str] = dict(fraud_reason_codes())
FEATURE_NAMES: list[str] = fraud_feature_names()
APPROVE, REVIEW, DECLINE = 0, 1, 2


def default_model_json() -> str:
    """The trained model shipped with the package."""
    return resources.files(__package__).joinpath("default_model.json").read_text("utf-8")


def default_rules() -> str:
    """The rules shipped with the package."""
    return resources.files(__package__).joinpath("default_rules.txt").read_text("utf-8")


def replay(
    scorer: FraudScorer, traffic: dict[str, np.ndarray], *, with_features: bool = False
) -> tuple[
    npt.NDArray[np.uint16],
    npt.NDArray[np.uint8],
    npt.NDArray[np.uint16],
    npt.NDArray[np.float64] | None,
]:
    """Replays simulated traffic through `scorer` in BATCH_MAX chunks, in order."""
    from quickpay_engine.fraud.simulate import COLUMNS, STRING_COLUMNS

    n = len(traffic["at_s"])
    parts = []
    for start in range(0, n, BATCH_MAX):
        end = min(n, start + BATCH_MAX)
        cols = {
            c: traffic[c][start:end].tolist() if c in STRING_COLUMNS else traffic[c][start:end]
            for c in COLUMNS
        }
        # The columns are checked by the engine (names, dtype, length); the stub's
        # FraudColumns cannot see that a comprehension fills every key, hence the cast.
        parts.append(
            scorer.replay(
                cast(Any, cols),
                traffic["at_s"][start:end],
                traffic["outcomes"][start:end],
                with_features=with_features,
            )
        )
    scores = np.concatenate([p[0] for p in parts])
    decisions = np.concatenate([p[1] for p in parts])
    reasons = np.concatenate([p[2] for p in parts])
    features = (
        np.concatenate([p[3] for p in parts if p[3] is not None]).reshape(-1, FRAUD_FEATURE_COUNT)
        if with_features
        else None
    )
    return scores, decisions, reasons, features


__all__ = [
    "APPROVE",
    "DECISIONS",
    "DECLINE",
    "FEATURE_NAMES",
    "REASON_CODES",
    "REVIEW",
    "FraudScorer",
    "default_model_json",
    "default_rules",
    "replay",
]
