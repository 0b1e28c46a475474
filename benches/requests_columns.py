"""The saga's per-stage columns, per payment: built by the core from one read of the
intents (``_engine.Requests``) against the Python builders they replaced, at a unary
batch's size and a PayBatch call's.

    .venv/bin/python benches/requests_columns.py [--sizes 8,500,10000] [--repeat 300]

Prints, for each batch size, the best of ``--repeat`` timings in ns per payment of:
reading the intents (``Requests(intents)``), the validation columns, the request
columns of the journal or the commit (one of each per batch), against
``build_validation_columns`` and ``rows._intent_columns``. The intents are
benches/bench_validate.py's 10,000 (every method, generated the same each run).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench_validate import _world

from quickpay_engine._engine import Requests
from quickpay_engine.settlement.validation import build_validation_columns
from quickpay_engine.store.rows import _intent_columns


def best_ns(fn: Callable[[], object], per: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e9 / per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,500,10000")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    _, intents = _world()
    print(
        "| batch | Requests() | validation columns | request columns | core total (one"
        " validation, two request) | Python validation | Python request | Python total |"
    )
    print("|---|---|---|---|---|---|---|---|")  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        part = intents[:size]
        rows = list(range(size))
        requests = Requests(part)
        read = best_ns(lambda: Requests(part), size, args.repeat)  # noqa: B023
        valid = best_ns(requests.validation_columns, size, args.repeat)
        cut = best_ns(lambda: requests.intent_columns(rows), size, args.repeat)  # noqa: B023
        py_valid = best_ns(lambda: build_validation_columns(part), size, args.repeat)  # noqa: B023
        py_cut = best_ns(lambda: _intent_columns(part), size, args.repeat)  # noqa: B023
        print(
            f"| {size:,} | {read:,.0f} | {valid:,.0f} | {cut:,.0f} |"
            f" {read + valid + 2 * cut:,.0f} | {py_valid:,.0f} | {py_cut:,.0f} |"
            f" {py_valid + 2 * py_cut:,.0f} |"
        )


if __name__ == "__main__":
    main()
