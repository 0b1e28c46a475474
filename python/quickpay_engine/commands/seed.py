"""`quickpay seed`: writes a CSV of realistic synthetic subscribers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quickpay_engine.commands import add_command
from quickpay_engine.config import settings_from
from quickpay_engine.subscribers import generate, write_csv


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "seed", "write a CSV of synthetic subscribers")
    parser.add_argument("--subscribers", type=int, default=10_000, help="how many (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--out", help="file to write, '-' for stdout (default DATA_DIR/subscribers.csv)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.subscribers < 0:
        print("quickpay seed: --subscribers must be zero or more", file=sys.stderr)
        return 2
    rows = generate(args.subscribers, args.seed)
    if args.out == "-":
        write_csv(rows, sys.stdout)
        return 0
    path = Path(args.out) if args.out else settings_from(args).data_dir / "subscribers.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        n = write_csv(rows, out)
    print(f"wrote {n} subscribers to {path}")
    return 0
