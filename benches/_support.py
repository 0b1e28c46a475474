"""Shared by this area's micro-benchmarks: sizes, subscribers and payment intents.

``QUICKPAY_BENCH_SIZE=smoke`` shrinks every size so that `make test` can run each
benchmark once (with ``--benchmark-disable``) in seconds; the default sizes are the
ones whose figures go in RESULTS.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from quickpay_engine.api.convert import intent_of
from quickpay_engine.bench.scenario import Mix, RequestSource
from quickpay_engine.domain import PaymentIntent, SubscriberRow
from quickpay_engine.subscribers import generate

SMOKE = os.environ.get("QUICKPAY_BENCH_SIZE") == "smoke"
# A fixed key: fingerprints cost the same whatever the key.
FINGERPRINT_KEY = b"k" * 32


def size(full: int, smoke: int) -> int:
    """``full`` for a measured run, ``smoke`` for the smoke run in `make test`."""
    return smoke if SMOKE else full


def subscribers(count: int) -> list[SubscriberRow]:
    """``count`` synthetic subscribers, the same every run."""
    return list(generate(count, seed=7))


def intents(rows: Sequence[SubscriberRow], count: int, run_id: str) -> list[PaymentIntent]:
    """``count`` good payments for ``rows``, keys unique per ``run_id``."""
    source = RequestSource(rows, seed=11, mix=Mix(invalid=0, declined=0), run_id=run_id)
    return [intent_of(r, FINGERPRINT_KEY) for r in source.take(count)]
