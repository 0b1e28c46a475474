"""Fits the fraud model: features from the Rust scorer, logistic regression in numpy.

The features come from replaying labelled traffic through a scorer (so training sees
exactly what production computes); the model is an L2-regularized logistic regression
on standardized features, fitted by Newton's method (a few dozen features, so each
step is one small linear solve). Thresholds are chosen on the training traffic:
REVIEW where at most 1% of honest payments score as high, DECLINE at 0.2%.
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from quickpay_engine.fraud import FEATURE_NAMES, FraudScorer, replay
from quickpay_engine.fraud.simulate import SIM_BIN_TABLE

MODEL_FORMAT = "quickpay-fraud-model"
MODEL_FORMAT_VERSION = 1
# False-positive rates the thresholds are set at, on the training traffic.
REVIEW_FPR = 0.01
DECLINE_FPR = 0.002
# Newton's method stops after this many steps or when a step moves no weight by more
# than STEP_TOL; the problem is convex, so it converges in about ten.
NEWTON_STEPS_MAX = 50
STEP_TOL = 1e-8
L2 = 1.0


def model_json(
    *,
    model_id: str,
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    bias: float,
    review: int,
    decline: int,
    trained: dict[str, object] | None = None,
) -> str:
    """A model file in the engine's format (engine/src/fraud/model.rs)."""
    return json.dumps(
        {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "model_id": model_id,
            "features": FEATURE_NAMES,
            "mean": [float(x) for x in mean],
            "scale": [float(x) for x in scale],
            "weights": [float(x) for x in weights],
            "bias": float(bias),
            "thresholds": {"review": int(review), "decline": int(decline)},
            "trained": trained or {},
        },
        indent=1,
    )


def neutral_model_json() -> str:
    """A model that weighs nothing: for computing features only."""
    n = len(FEATURE_NAMES)
    zeros, ones = np.zeros(n), np.ones(n)
    return model_json(
        model_id="neutral",
        mean=zeros,
        scale=ones,
        weights=zeros,
        bias=0.0,
        review=1001,
        decline=1001,
    )


def features(traffic: dict[str, np.ndarray], bin_table: str = SIM_BIN_TABLE) -> np.ndarray:
    """The feature rows of `traffic`, computed by the Rust scorer in payment order."""
    scorer = FraudScorer(neutral_model_json(), "", bin_table)
    rows = replay(scorer, traffic, with_features=True)[3]
    assert rows is not None
    return rows


def fit_logistic(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], l2: float = L2
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    """(mean, scale, weights, bias) of an L2 logistic regression on standardized x."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # A constant feature: any scale, its weight stays ~0.
    xs = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(xs.shape[1])
    penalty = np.full(xs.shape[1], l2)
    penalty[-1] = 0.0  # The bias is not shrunk.
    for _ in range(NEWTON_STEPS_MAX):
        p = 1.0 / (1.0 + np.exp(-(xs @ w)))
        grad = xs.T @ (p - y) + penalty * w
        hess = (xs * (p * (1 - p))[:, None]).T @ xs + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < STEP_TOL:
            break
    return mean, scale, w[:-1], float(w[-1])


def scores_of(
    x: npt.NDArray[np.float64],
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    bias: float,
) -> npt.NDArray[np.int64]:
    """Scores 0..1000 as the engine computes them from feature rows."""
    z = bias + ((x - mean) * (weights / scale)).sum(axis=1)
    return np.round(1000.0 / (1.0 + np.exp(-z))).astype(np.int64)


def threshold_at_fpr(honest_scores: npt.NDArray[np.int64], fpr: float) -> int:
    """The lowest score threshold at which at most `fpr` of honest payments are flagged."""
    for t in range(0, 1002):
        if np.mean(honest_scores >= t) <= fpr:
            return t
    return 1001


def train(traffic: dict[str, np.ndarray], *, model_id: str, facts: dict[str, object]) -> str:
    """Fits a model to labelled traffic; returns the model file text."""
    x = features(traffic)
    y = traffic["labels"].astype(np.float64)
    if y.min() == y.max():
        raise ValueError("training traffic needs both honest and fraudulent payments")
    mean, scale, weights, bias = fit_logistic(x, y)
    scores = scores_of(x, mean, scale, weights, bias)
    honest = scores[y == 0]
    review = threshold_at_fpr(honest, REVIEW_FPR)
    decline = max(review, threshold_at_fpr(honest, DECLINE_FPR))
    trained = {**facts, "payments": len(y), "fraud": int(y.sum()), "l2": L2}
    return model_json(
        model_id=model_id,
        mean=mean,
        scale=scale,
        weights=weights,
        bias=bias,
        review=review,
        decline=decline,
        trained=trained,
    )
