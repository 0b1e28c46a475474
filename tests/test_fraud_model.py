"""Simulation, training and evaluation of the fraud model, and `quickpay fraud`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quickpay_engine import fraud
from quickpay_engine.cli import main
from quickpay_engine.fraud import eval as fraud_eval
from quickpay_engine.fraud import simulate, train

SUBSCRIBERS, DAYS = 1_500, 14


@pytest.fixture(scope="module")
def held_out() -> dict[str, np.ndarray]:
    return simulate.simulate(seed=102, subscribers=SUBSCRIBERS, days=DAYS)


def test_simulation_is_a_function_of_its_seed(tmp_path: Path) -> None:
    a = simulate.simulate(seed=7, subscribers=200, days=7)
    b = simulate.simulate(seed=7, subscribers=200, days=7)
    c = simulate.simulate(seed=8, subscribers=200, days=7)
    assert all((a[k] == b[k]).all() for k in a)
    assert len(a["at_s"]) != len(c["at_s"]) or (a["amounts_minor"] != c["amounts_minor"]).any()
    assert (np.diff(a["at_s"]) >= 0).all(), "traffic is in time order"
    assert set(np.unique(a["attacks"])) == set(simulate.ATTACKS), "every attack kind occurs"
    assert ((a["labels"] == 1) == (a["attacks"] != 0)).all()
    assert a["amounts_minor"].dtype == np.int64 and (a["amounts_minor"] > 0).all()
    path = tmp_path / "t.npz"
    simulate.save(a, path)
    loaded = simulate.load(path)
    assert all((loaded[k] == a[k]).all() for k in a)
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in a.items() if k != "labels"})
    with pytest.raises(ValueError, match="labels"):
        simulate.load(tmp_path / "bad.npz")


def test_roc_auc_matches_pairwise_counting() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 20, 300)
    labels = (rng.random(300) < 0.3).astype(np.int64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    expected = pairs / (len(pos) * len(neg))
    assert fraud_eval.roc_auc(scores, labels) == pytest.approx(expected)
    assert fraud_eval.roc_auc(-scores, labels) == pytest.approx(1 - expected)


def test_a_model_trained_on_one_seed_detects_fraud_on_another(
    held_out: dict[str, np.ndarray],
) -> None:
    traffic = simulate.simulate(seed=101, subscribers=SUBSCRIBERS, days=DAYS)
    model = train.train(traffic, model_id="test", facts={"seed": 101})
    report, (fpr, tpr) = fraud_eval.evaluate(model, "", held_out)
    assert report["roc_auc"] >= 0.95, report
    assert report["recall_at_fpr_1pct"]["recall"] >= 0.8, report
    assert report["recall_at_fpr_1pct"]["fpr"] <= 0.01
    assert report["at_review"]["fpr"] <= 0.03, report
    assert set(report["per_attack"]) == set(simulate.ATTACKS.values()) - {"NONE"}
    assert fpr[0] == 0.0 and tpr[-1] == 1.0
    # A model that learned nothing ranks at chance: the floor above can fail.
    blind = fraud_eval.evaluate(train.neutral_model_json(), "", held_out)[0]
    assert blind["roc_auc"] == 0.5


def test_the_shipped_model_meets_the_targets_on_unseen_traffic(
    held_out: dict[str, np.ndarray],
) -> None:
    report, _ = fraud_eval.evaluate(fraud.default_model_json(), fraud.default_rules(), held_out)
    assert report["roc_auc"] >= 0.97, report
    assert report["recall_at_fpr_1pct"]["recall"] >= 0.9, report
    assert json.loads(fraud.default_model_json())["trained"]["seed"] != 102


def _run(*argv: str) -> int:
    return main(["fraud", *argv])


def test_the_commands_simulate_train_and_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic, model = tmp_path / "t.npz", tmp_path / "m.json"
    small = ["--subscribers", "400", "--days", "10"]
    assert _run("simulate", "--seed", "5", *small, "--out", str(traffic)) == 0
    assert _run("train", "--traffic", str(traffic), "--out", str(model)) == 0
    assert json.loads(model.read_text())["format"] == "quickpay-fraud-model"
    png, report = tmp_path / "roc.png", tmp_path / "r.json"
    args = ["--seed", "6", *small, "--model", str(model), "--png", str(png), "--json", str(report)]
    assert _run("eval", *args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(report.read_text())["traffic"]["seed"] == 6
    out = capsys.readouterr().out
    assert "ROC AUC" in out and "SLOW_LAUNDERING" in out
    capsys.readouterr()
    model.write_text(model.read_text().replace('"format_version": 1', '"format_version": 2'))
    assert _run("eval", *args) == 2
    assert "format" in capsys.readouterr().err
    assert _run("train", "--traffic", str(tmp_path / "missing.npz"), "--out", str(model)) == 2
    assert "--traffic" in capsys.readouterr().err
