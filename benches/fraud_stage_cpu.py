"""Thread CPU per payment of the pipeline's fraud stage, in one process, for one build.

    PYTHONPATH=/tmp/base/python .venv/bin/python benches/fraud_stage_cpu.py   # a base tree
    .venv/bin/python benches/fraud_stage_cpu.py                                 # this tree

What the pipeline does per batch between validation and the reservation, for batches
of 500 card payments that all passed validation, and the observe after the commit:

- builds before the core scored from the validation columns (``FraudGate`` has no
  ``score_validated``): a Decision per payment (``_decide``), ``score_columns`` (the
  fraud columns built from the intents, an HMAC per card, a FraudAssessment and a
  Verdict per payment), a Decision per payment again with its assessment, and
  ``observe`` on the columns with the outcome column built from the settled ids;
- builds after: ``score_validated`` on the validation columns (rows where the codes
  are 0), a Decision per payment with its assessment, and ``observe`` on the core's
  batch.

The validation columns are built outside the timed part (both builds build them for
validation). CPU is ``time.thread_time`` over ``--batches`` batches, the best of
``--rounds`` rounds (the least disturbed by other work on the host), divided by the
payments. Run the two builds one after the other, alternating, on the same load.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from quickpay_engine._engine import Engine, FraudScorer
from quickpay_engine.domain import (
    LineStatus,
    Method,
    MethodDetail,
    MethodKind,
    PaymentIntent,
    Plan,
    Purpose,
    SubscriberRow,
)
from quickpay_engine.fraud import default_model_json, default_rules
from quickpay_engine.settlement import fraud_gate
from quickpay_engine.settlement.validation import build_validation_columns
from quickpay_engine.store import Decision
from quickpay_engine.subscribers import load_rows

BATCH = 500
NOW = 1_790_000_000


def luhn_pan(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def setup(accounts: int, seed: int) -> tuple[Engine, list[list[PaymentIntent]], list[str]]:
    rng = random.Random(seed)
    engine = Engine()
    postpaid, active = Plan.POSTPAID, LineStatus.ACTIVE
    rows = [
        SubscriberRow(f"acc-{k}", f"+3069{k:08d}", postpaid, active, "EUR", 5_000, "GR", None, 0)
        for k in range(accounts)
    ]
    load_rows(engine, rows)
    pans = [luhn_pan(rng) for _ in range(accounts)]
    batches = []
    for b in range(8):
        batch = []
        for i in range(BATCH):
            k = rng.randrange(accounts)
            detail = MethodDetail(card_pan=pans[k], card_expiry_month=12, card_expiry_year=2030)
            intent = PaymentIntent(
                f"key-{b}-{i}", "fp", f"acc-{k}", f"+3069{k:08d}", rng.randrange(100, 50_000),
                "EUR", Purpose.BILL_PAYMENT, Method(MethodKind.CARD, "card"), "app", f"dev-{k}",
                f"198.51.{k % 256}.{rng.randrange(256)}", detail=detail,
            )  # fmt: skip
            batch.append(intent)
        batches.append(batch)
    return engine, batches, [f"pay_{i:032x}" for i in range(BATCH)]


def stage_old(gate, intents, columns, codes, ids) -> None:
    decisions = [Decision(p, i) for p, i in zip(ids, intents, strict=True)]  # _decide
    scored = [k for k, d in enumerate(decisions) if not d.decline_reason]
    verdicts, fraud_columns = gate.score_columns([decisions[k].intent for k in scored], NOW)
    out = list(decisions)
    for k, verdict in zip(scored, verdicts, strict=True):
        d = decisions[k]
        out[k] = Decision(
            d.payment_id, d.intent, verdict.decline_reason, verdict.decline_detail,
            fraud=verdict.assessment, review=verdict.decline_reason == fraud_gate.FRAUD_REVIEW,
        )  # fmt: skip
    done = {d.payment_id for d in out[::2]}  # half settled
    gate.observe(
        [out[k].intent for k in scored], [out[k].payment_id in done for k in scored], NOW,
        fraud_columns,
    )  # fmt: skip


def stage_new(gate, intents, columns, codes, ids) -> None:
    scored = gate.score_validated(columns, np.flatnonzero(codes == 0), NOW)
    assessments, verdicts = iter(scored.assessments), iter(scored.verdicts)
    decisions = []
    for intent, code, payment_id in zip(intents, codes.tolist(), ids, strict=True):
        if code == 0:
            v = next(verdicts)
            decisions.append(
                Decision(
                    payment_id, intent, fraud_gate.DECLINE_REASONS[v],
                    fraud_gate.DECLINE_DETAILS[v], fraud=next(assessments),
                    review=v == fraud_gate.HELD,
                )
            )  # fmt: skip
    settled = np.zeros(len(decisions), dtype=bool)
    settled[::2] = True  # half settled
    gate.observe(scored.batch, settled, NOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accounts", type=int, default=5_000)
    args = parser.parse_args()
    engine, batches, ids = setup(args.accounts, 7)
    scorer = FraudScorer(default_model_json(), default_rules())
    new = hasattr(fraud_gate.FraudGate, "score_validated")
    if new:
        gate = fraud_gate.FraudGate(engine, b"k" * 32, scorer)
        stage = stage_new
    else:
        gate = fraud_gate.FraudGate(engine.subscriber_profiles, b"k" * 32, scorer)
        stage = stage_old
    prepared = []
    for intents in batches:
        columns = build_validation_columns(intents)
        codes = np.zeros(len(intents), dtype=np.uint16)  # all passed validation
        prepared.append((intents, columns, codes))
    per_round = []
    for _ in range(args.rounds):
        start = time.thread_time()
        for b in range(args.batches):
            intents, columns, codes = prepared[b % len(prepared)]
            stage(gate, intents, columns, codes, ids)
        per_round.append((time.thread_time() - start) / (args.batches * BATCH) * 1e6)
    print(
        f"{'score_validated' if new else 'score_columns'}: fraud stage {min(per_round):.2f} us"
        f" a payment (best of {args.rounds}; rounds {', '.join(f'{r:.2f}' for r in per_round)})"
    )


if __name__ == "__main__":
    main()
