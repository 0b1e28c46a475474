"""Evaluates a fraud model on labelled traffic: ROC AUC, precision and recall at the
thresholds, the confusion matrix, recall per attack, and a ROC plot (PNG).

Evaluation replays the traffic through a scorer built from the model and rules under
test, so it measures the engine's own scores and decisions (rules included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from quickpay_engine.fraud import REVIEW, FraudScorer, replay
from quickpay_engine.fraud.simulate import ATTACKS, SIM_BIN_TABLE

TARGET_FPR = 0.01


def roc_auc(scores: npt.NDArray[Any], labels: npt.NDArray[Any]) -> float:
    """Area under the ROC curve (Mann-Whitney U; tied scores count one half)."""
    pos, neg = int(labels.sum()), int(len(labels) - labels.sum())
    if pos == 0 or neg == 0:
        raise ValueError("ROC AUC needs both classes")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Mid-ranks: every member of a run of equal scores gets the run's mean rank.
    _, starts, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = starts + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[labels == 1].sum() - pos * (pos + 1) / 2.0
    return float(u / (pos * neg))


def roc_curve(
    scores: npt.NDArray[Any], labels: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[Any]]:
    """(fpr, tpr, thresholds) of the rule "flag when score >= threshold"."""
    thresholds = np.unique(scores)[::-1]
    pos, neg = labels.sum(), len(labels) - labels.sum()
    fpr = np.array([((scores >= t) & (labels == 0)).sum() / neg for t in thresholds])
    tpr = np.array([((scores >= t) & (labels == 1)).sum() / pos for t in thresholds])
    return np.r_[0.0, fpr], np.r_[0.0, tpr], thresholds


def _at(flagged: npt.NDArray[np.bool_], labels: npt.NDArray[Any]) -> dict[str, Any]:
    tp = int((flagged & (labels == 1)).sum())
    fp = int((flagged & (labels == 0)).sum())
    fn = int((~flagged & (labels == 1)).sum())
    tn = int((~flagged & (labels == 0)).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def evaluate(
    model_json: str, rules: str, traffic: dict[str, np.ndarray], bin_table: str = SIM_BIN_TABLE
) -> tuple[dict[str, Any], tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """The metrics report, and the ROC curve (fpr, tpr) for plotting."""
    scorer = FraudScorer(model_json, rules, bin_table)
    scores, decisions, _, _ = replay(scorer, traffic)
    labels = traffic["labels"].astype(np.int64)
    attacks = traffic["attacks"]
    fpr, tpr, thresholds = roc_curve(scores, labels)
    ok = fpr[1:] <= TARGET_FPR
    best = int(np.argmax(np.where(ok, tpr[1:], -1.0)))
    flagged = decisions >= REVIEW
    per_attack = {}
    for code, name in ATTACKS.items():
        mask = attacks == code
        if code == 0 or not mask.any():
            continue
        per_attack[name] = {
            "payments": int(mask.sum()),
            "recall_at_review": float(flagged[mask].mean()),
            "recall_at_decline": float((decisions[mask] == 2).mean()),
        }
    review, decline = scorer.thresholds
    report = {
        "model_id": scorer.model_id,
        "payments": len(labels),
        "fraud": int(labels.sum()),
        "roc_auc": roc_auc(scores, labels),
        "thresholds": {"review": review, "decline": decline},
        "recall_at_fpr_1pct": {
            "threshold": int(thresholds[best]),
            "recall": float(tpr[1:][best]),
            "fpr": float(fpr[1:][best]),
        },
        "at_review": _at(flagged, labels),
        "at_decline": _at(decisions == 2, labels),
        "per_attack": per_attack,
    }
    return report, (fpr, tpr)


def plot_roc(fpr: npt.NDArray[Any], tpr: npt.NDArray[Any], auc: float, path: Path) -> None:
    """Writes the ROC curve as a PNG (needs matplotlib: `pip install quickpay-engine[fraud]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError(
            "the ROC plot needs matplotlib: pip install 'quickpay-engine[fraud]'"
        ) from err
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, xmax in ((full, 1.0), (zoom, 0.05)):
        ax.plot(fpr, tpr, drawstyle="steps-post", label=f"model (AUC {auc:.4f})")
        ax.plot([0, xmax], [0, xmax], linestyle=":", color="grey", label="chance")
        ax.axvline(TARGET_FPR, linestyle="--", color="red", linewidth=0.8, label="FPR 1%")
        ax.set_xlim(0, xmax)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("recall (true-positive rate)")
        ax.legend(loc="lower right")
    full.set_title("ROC")
    zoom.set_title("ROC, FPR up to 5%")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
