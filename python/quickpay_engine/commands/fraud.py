"""`quickpay fraud simulate | train | eval`: labelled traffic, model fitting, metrics.

Traffic files are NumPy .npz (format in quickpay_engine.fraud.simulate). Training and
evaluation take either a traffic file or a seed to simulate one; evaluate on a seed
other than the training one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quickpay_engine.commands import add_command, add_group
from quickpay_engine.errors import ConfigError, FraudConfigError


def _traffic_flags(parser: argparse.ArgumentParser, default_seed: int) -> None:
    parser.add_argument("--seed", type=int, default=default_seed, help="simulation seed")
    parser.add_argument("--subscribers", type=int, default=3_000, help="simulated lines")
    parser.add_argument("--days", type=int, default=21, help="simulated days")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `fraud` and its three subcommands."""
    sub = add_group(subparsers, "fraud", "fraud model: simulate traffic, train, evaluate")

    sim = add_command(sub, "simulate", "write labelled synthetic traffic (.npz)")
    _traffic_flags(sim, default_seed=1)
    sim.add_argument("--out", type=Path, required=True, help="traffic file to write (.npz)")
    sim.set_defaults(run=run_simulate)

    train = add_command(sub, "train", "fit a model to labelled traffic")
    train.add_argument("--traffic", type=Path, help="traffic file (default: simulate)")
    _traffic_flags(train, default_seed=1)
    train.add_argument("--out", type=Path, required=True, help="model file to write (.json)")
    train.add_argument("--model-id", default=None, help="model_id (default: from the seed)")
    train.set_defaults(run=run_train)

    ev = add_command(sub, "eval", "metrics and a ROC plot on held-out traffic")
    ev.add_argument("--traffic", type=Path, help="traffic file (default: simulate)")
    _traffic_flags(ev, default_seed=2)
    ev.add_argument("--model", type=Path, help="model file (default: the shipped model)")
    ev.add_argument("--rules", type=Path, help="rules file (default: the shipped rules)")
    ev.add_argument("--no-rules", action="store_true", help="score with the model alone")
    ev.add_argument("--png", type=Path, default=Path("fraud-roc.png"), help="ROC plot to write")
    ev.add_argument("--json", type=Path, help="also write the report as JSON here")
    ev.set_defaults(run=run_eval)


def _traffic(args: argparse.Namespace) -> tuple[dict, dict[str, object]]:
    from quickpay_engine.fraud import simulate

    if getattr(args, "traffic", None) is not None:
        try:
            return simulate.load(args.traffic), {"traffic": str(args.traffic)}
        except (OSError, ValueError) as err:
            raise ConfigError(f"--traffic {args.traffic}: {err}") from err
    try:
        traffic = simulate.simulate(args.seed, args.subscribers, args.days)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return traffic, {"seed": args.seed, "subscribers": args.subscribers, "days": args.days}


def run_simulate(args: argparse.Namespace) -> int:
    """Writes a traffic file and prints its size."""
    from quickpay_engine.fraud import simulate

    traffic, _ = _traffic(args)
    simulate.save(traffic, args.out)
    print(f"{args.out}: {len(traffic['at_s'])} payments, {int(traffic['labels'].sum())} fraudulent")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Fits a model and writes its file."""
    from quickpay_engine.fraud import train

    traffic, facts = _traffic(args)
    model_id = args.model_id or f"fraud-lr-seed{facts.get('seed', 'file')}"
    try:
        text = train.train(traffic, model_id=model_id, facts=facts)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    args.out.write_text(text + "\n", encoding="utf-8")
    thresholds = json.loads(text)["thresholds"]
    print(f"{args.out}: model {model_id}, thresholds {thresholds}")
    return 0


def _read(path: Path, flag: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{flag} {path}: {err}") from err


def run_eval(args: argparse.Namespace) -> int:
    """Prints the metrics, writes the ROC plot (and the JSON report if asked)."""
    from quickpay_engine import fraud
    from quickpay_engine.fraud import eval as fraud_eval

    model = _read(args.model, "--model") if args.model else fraud.default_model_json()
    if args.no_rules:
        rules = ""
    else:
        rules = _read(args.rules, "--rules") if args.rules else fraud.default_rules()
    traffic, facts = _traffic(args)
    try:
        report, (fpr, tpr) = fraud_eval.evaluate(model, rules, traffic)
    except FraudConfigError as err:
        raise ConfigError(str(err)) from err
    report["traffic"] = facts
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    try:
        fraud_eval.plot_roc(fpr, tpr, report["roc_auc"], args.png)
    except RuntimeError as err:
        raise ConfigError(str(err)) from err
    print(f"ROC plot: {args.png}")
    return 0


def format_report(report: dict) -> str:
    """The report as a few readable lines."""
    at_fpr = report["recall_at_fpr_1pct"]
    lines = [
        f"model {report['model_id']}: {report['payments']} payments, {report['fraud']} fraudulent",
        f"ROC AUC {report['roc_auc']:.4f}; recall {at_fpr['recall']:.3f} at FPR "
        f"{at_fpr['fpr']:.4f} (score >= {at_fpr['threshold']})",
    ]
    for level in ("review", "decline"):
        m = report[f"at_{level}"]
        c = m["confusion"]
        lines.append(
            f"at {level.upper()} (score >= {report['thresholds'][level]} or a rule): "
            f"precision {m['precision']:.3f} recall {m['recall']:.3f} FPR {m['fpr']:.4f}  "
            f"confusion tn={c['tn']} fp={c['fp']} fn={c['fn']} tp={c['tp']}"
        )
    for name, m in report["per_attack"].items():
        lines.append(
            f"  {name:<24} {m['payments']:>5} payments  recall {m['recall_at_review']:.3f} "
            f"(decline {m['recall_at_decline']:.3f})"
        )
    return "\n".join(lines)
