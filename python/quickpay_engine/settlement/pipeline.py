"""The settlement pipeline: one batch of payment intents in, one outcome each out.

Per batch: one store read for replays, one engine call (validation, GIL released), one
database transaction, one engine call to record the settled states.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence

import numpy as np

from quickpay_engine._engine import Engine, reject_codes
from quickpay_engine.domain import Outcome, PaymentIntent, PaymentStatus, SubscriberRow
from quickpay_engine.errors import IdempotencyConflict, InvalidArgument
from quickpay_engine.settlement.fraud_gate import FRAUD_REVIEW, FraudGate
from quickpay_engine.settlement.validation import record_settled, validate_batch, wall_clock_s
from quickpay_engine.store import Decision, SqliteStore
from quickpay_engine.store.executor import StoreThread
from quickpay_engine.store.sqlite import IDEMPOTENCY_CONFLICT

# The engine's reject codes by number: (name, field, text). Field empty: a decline.
REJECTS: dict[int, tuple[str, str, str]] = {
    number: (name, field, text) for number, name, field, text in reject_codes()
}


def new_payment_id() -> str:
    """A fresh payment id: "pay_" and 32 hex digits."""
    return "pay_" + uuid.uuid4().hex


def load_engine(engine: Engine, rows: Sequence[SubscriberRow]) -> None:
    """Loads the billing system's subscribers into the engine's table, in one call."""
    no_time = np.iinfo(np.int64).min
    engine.upsert_subscribers(
        [r.account_id for r in rows],
        [r.msisdn for r in rows],
        np.fromiter((r.plan for r in rows), np.uint8, len(rows)),
        np.fromiter((r.status for r in rows), np.uint8, len(rows)),
        [r.currency for r in rows],
        np.fromiter((r.balance_minor for r in rows), np.int64, len(rows)),
        [r.country for r in rows],
        np.fromiter(
            (no_time if r.sim_swapped_at_s is None else r.sim_swapped_at_s for r in rows),
            np.int64,
            len(rows),
        ),
        np.fromiter((r.created_at_s for r in rows), np.int64, len(rows)),
    )


class Pipeline:
    """Validates, decides and commits batches of payments."""

    def __init__(
        self,
        engine: Engine,
        store: SqliteStore,
        thread: StoreThread,
        payment_ids: Callable[[], str] = new_payment_id,
        on_commit: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        fraud: FraudGate | None = None,
    ) -> None:
        self._engine = engine
        self._store = store
        self._thread = thread
        self._payment_ids = payment_ids
        self._on_commit = on_commit
        self._clock = clock
        self._fraud = fraud

    async def process(self, intents: Sequence[PaymentIntent]) -> list[Outcome | BaseException]:
        """Settles a batch; each result is an outcome or that payment's own error."""
        results: list[Outcome | BaseException | None] = [None] * len(intents)
        stored = await self._thread.run(
            self._store.find_by_keys, [i.idempotency_key for i in intents]
        )
        fresh: list[int] = []
        for index, intent in enumerate(intents):
            record = stored.get(intent.idempotency_key)
            if record is None:
                fresh.append(index)
            else:
                results[index] = replay(record.outcome, record.intent, intent)
        decisions: list[Decision] = []
        positions: list[int] = []
        if fresh:
            now_s = wall_clock_s(self._clock)
            codes = validate_batch(self._engine, [intents[i] for i in fresh], now_s)
            for index, code in zip(fresh, codes.tolist(), strict=True):
                decision = self._decide(intents[index], code)
                if isinstance(decision, BaseException):
                    results[index] = decision
                else:
                    decisions.append(decision)
                    positions.append(index)
            decisions, scored = self._score(decisions, now_s)
        if decisions:
            outcomes, states = await self._thread.run(self._store.commit_batch, decisions)
            self._on_commit()
            for index, outcome in zip(positions, outcomes, strict=True):
                if outcome.decline_reason == IDEMPOTENCY_CONFLICT:
                    results[index] = IdempotencyConflict(outcome.decline_detail)
                else:
                    results[index] = outcome
            if states:
                self._engine.set_states(
                    [s.account_id for s in states],
                    np.fromiter((s.balance_minor for s in states), np.int64, len(states)),
                    np.fromiter((s.status for s in states), np.uint8, len(states)),
                )
            record_settled(self._engine, decisions, outcomes)
            if self._fraud is not None and scored:
                settled = {o.payment_id for o in outcomes if o.status is PaymentStatus.SETTLED}
                self._fraud.observe(
                    [decisions[k].intent for k in scored],
                    [decisions[k].payment_id in settled for k in scored],
                    now_s,
                )
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _score(self, decisions: list[Decision], now_s: int) -> tuple[list[Decision], list[int]]:
        """Fraud-scores the payments validation passed; returns the decisions with their
        assessments (and fraud declines), and the positions of those scored."""
        if self._fraud is None:
            return decisions, []
        scored = [k for k, d in enumerate(decisions) if not d.decline_reason]
        verdicts = self._fraud.score([decisions[k].intent for k in scored], now_s)
        out = list(decisions)
        for k, verdict in zip(scored, verdicts, strict=True):
            out[k] = dataclasses.replace(
                decisions[k],
                fraud=verdict.assessment,
                decline_reason=verdict.decline_reason,
                decline_detail=verdict.decline_detail,
                review=verdict.decline_reason == FRAUD_REVIEW,
            )
        return out, scored

    def _decide(self, intent: PaymentIntent, code: int) -> Decision | InvalidArgument:
        payment_id = self._payment_ids()
        if code == 0:
            return Decision(payment_id, intent)
        name, field, text = REJECTS[code]
        if field:
            return InvalidArgument(field, text)
        return Decision(payment_id, intent, decline_reason=name, decline_detail=text)


def replay(
    stored: Outcome, stored_intent: PaymentIntent, intent: PaymentIntent
) -> Outcome | IdempotencyConflict:
    """The stored outcome for a retried key, or a conflict when the payload differs."""
    if stored_intent.fingerprint != intent.fingerprint:
        return IdempotencyConflict(
            f"idempotency_key {intent.idempotency_key!r} was used for another payment"
            f" ({stored.payment_id})"
        )
    return dataclasses.replace(stored, replayed=True)
