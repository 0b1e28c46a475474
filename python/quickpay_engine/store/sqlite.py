"""The embedded store: one SQLite file (WAL journal, synchronous=FULL) for every domain.

Calls are synchronous and must come from one thread: the async front end runs them on
a single-thread executor (see ``AsyncStore``), which makes that thread the one writer.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from quickpay_engine.domain import (
    Confirmation,
    LineStatus,
    Method,
    MethodKind,
    Outcome,
    PaymentIntent,
    PaymentRecord,
    PaymentStatus,
    Plan,
    Purpose,
    SubscriberRow,
)

# SQLite waits this long for a lock held by another process before failing the call.
BUSY_TIMEOUT_MS = 5_000


@dataclass(frozen=True, slots=True)
class Decision:
    """What the pipeline decided for one payment; the store makes it durable.

    ``decline_reason`` empty means settle: apply the amount to the account. Otherwise the
    payment is recorded as declined and nothing else changes.
    """

    payment_id: str
    intent: PaymentIntent
    decline_reason: str = ""
    decline_detail: str = ""


@dataclass(frozen=True, slots=True)
class SettledState:
    """An account's balance and line status after a batch, for the engine's table."""

    account_id: str
    balance_minor: int
    status: LineStatus


def restored_status(plan: Plan, status: LineStatus, balance_minor: int) -> LineStatus:
    """The line state after a payment: a barred or suspended line paid up is restored.

    A postpaid line owes ``balance_minor``; once nothing is owed it is active again. A
    prepaid line barred at zero credit is active again once it has credit. A closed line
    stays closed.
    """
    if status in (LineStatus.ACTIVE, LineStatus.CLOSED):
        return status
    paid_up = balance_minor <= 0 if plan is Plan.POSTPAID else balance_minor > 0
    return LineStatus.ACTIVE if paid_up else status


class SqliteStore:
    """Billing, payment history and provisioning state in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implied.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"{path}: could not enable WAL journal (got {mode})")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        schema = resources.files("quickpay_engine.store").joinpath("schema_sqlite.sql")
        self._db.executescript(schema.read_text())

    def close(self) -> None:
        self._db.close()

    # -- subscribers -----------------------------------------------------------------

    def import_subscribers(self, rows: Sequence[SubscriberRow]) -> int:
        """Inserts or replaces every row in one transaction: all of them or none."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO subscribers (account_id, msisdn, plan, status, currency,"
                " balance_minor, country, sim_swapped_at_s, created_at_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (account_id) DO UPDATE SET msisdn = excluded.msisdn,"
                " plan = excluded.plan, status = excluded.status, currency = excluded.currency,"
                " balance_minor = excluded.balance_minor, country = excluded.country,"
                " sim_swapped_at_s = excluded.sim_swapped_at_s,"
                " created_at_s = excluded.created_at_s",
                (
                    (
                        r.account_id,
                        r.msisdn,
                        int(r.plan),
                        int(r.status),
                        r.currency,
                        r.balance_minor,
                        r.country,
                        r.sim_swapped_at_s,
                        r.created_at_s,
                    )
                    for r in rows
                ),
            )
        return len(rows)

    def load_subscribers(self) -> list[SubscriberRow]:
        """Every subscriber, for the engine's table at start."""
        cursor = self._db.execute(
            "SELECT account_id, msisdn, plan, status, currency, balance_minor, country,"
            " sim_swapped_at_s, created_at_s FROM subscribers"
        )
        return [
            SubscriberRow(a, m, Plan(p), LineStatus(s), c, b, co, sw, cr)
            for a, m, p, s, c, b, co, sw, cr in cursor
        ]

    def subscriber(self, account_id: str) -> SubscriberRow | None:
        """One subscriber by account id."""
        row = self._db.execute(
            "SELECT account_id, msisdn, plan, status, currency, balance_minor, country,"
            " sim_swapped_at_s, created_at_s FROM subscribers WHERE account_id = ?",
            (account_id,),
        ).fetchone()
        if row is None:
            return None
        a, m, p, s, c, b, co, sw, cr = row
        return SubscriberRow(a, m, Plan(p), LineStatus(s), c, b, co, sw, cr)

    # -- payments --------------------------------------------------------------------

    def find_by_keys(self, keys: Iterable[str]) -> dict[str, PaymentRecord]:
        """Stored payments by idempotency key, for replays."""
        keys = list(keys)
        found: dict[str, PaymentRecord] = {}
        # SQLite's default bound on host parameters is 32,766; stay well below it.
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for record in self._records(f"idempotency_key IN ({marks})", chunk):
                found[record.intent.idempotency_key] = record
        return found

    def get_payment(
        self, *, payment_id: str = "", idempotency_key: str = ""
    ) -> PaymentRecord | None:
        """One payment by id or by idempotency key."""
        if payment_id:
            records = self._records("payment_id = ?", [payment_id])
        else:
            records = self._records("idempotency_key = ?", [idempotency_key])
        return records[0] if records else None

    def commit_batch(
        self, decisions: Sequence[Decision], now_us: int | None = None
    ) -> tuple[list[Outcome], list[SettledState]]:
        """Makes a batch of decisions durable in one transaction.

        Each payment runs in its own savepoint, so one that fails (its key was taken by a
        concurrent writer, say) is reported as FAILED and does not sink the others. A key
        already stored comes back as that stored outcome, marked replayed.
        """
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        outcomes: list[Outcome] = []
        states: dict[str, SettledState] = {}
        with self._transaction():
            for decision in decisions:
                self._db.execute("SAVEPOINT payment")
                try:
                    outcome = self._apply(decision, now_us, states)
                except sqlite3.IntegrityError as err:
                    self._db.execute("ROLLBACK TO payment")
                    outcome = self._replay_or_fail(decision, str(err))
                self._db.execute("RELEASE payment")
                outcomes.append(outcome)
        return outcomes, list(states.values())

    def _apply(self, decision: Decision, now_us: int, states: dict[str, SettledState]) -> Outcome:
        intent = decision.intent
        if decision.decline_reason:
            self._insert_payment(decision, PaymentStatus.DECLINED, now_us, None)
            return Outcome(
                payment_id=decision.payment_id,
                idempotency_key=intent.idempotency_key,
                status=PaymentStatus.DECLINED,
                decline_reason=decision.decline_reason,
                decline_detail=decision.decline_detail,
            )
        # A bill payment lowers what is owed; a top-up raises the credit.
        delta = (
            -intent.amount_minor if intent.purpose is Purpose.BILL_PAYMENT else intent.amount_minor
        )
        balance, plan, status = self._db.execute(
            "UPDATE subscribers SET balance_minor = balance_minor + ? WHERE account_id = ?"
            " RETURNING balance_minor, plan, status",
            (delta, intent.account_id),
        ).fetchone()
        after = restored_status(Plan(plan), LineStatus(status), balance)
        if after != status:
            self._db.execute(
                "UPDATE subscribers SET status = ? WHERE account_id = ?",
                (int(after), intent.account_id),
            )
        confirmation = Confirmation(
            confirmation_id="cnf_" + decision.payment_id.removeprefix("pay_"),
            ledger_sequence=0,
            settled_at_us=now_us,
            gateway="",
            gateway_reference="",
            balance_after_minor=balance,
            currency=intent.currency,
            service_state_after=after,
        )
        seq = self._insert_payment(decision, PaymentStatus.SETTLED, now_us, confirmation)
        states[intent.account_id] = SettledState(intent.account_id, balance, after)
        return Outcome(
            payment_id=decision.payment_id,
            idempotency_key=intent.idempotency_key,
            status=PaymentStatus.SETTLED,
            confirmation=dataclasses.replace(confirmation, ledger_sequence=seq),
        )

    def _replay_or_fail(self, decision: Decision, error: str) -> Outcome:
        stored = self.find_by_keys([decision.intent.idempotency_key]).get(
            decision.intent.idempotency_key
        )
        if stored is not None:
            return dataclasses.replace(stored.outcome, replayed=True)
        return Outcome(
            payment_id=decision.payment_id,
            idempotency_key=decision.intent.idempotency_key,
            status=PaymentStatus.FAILED,
            decline_reason="STORE_REJECTED",
            decline_detail=error,
        )

    def _insert_payment(
        self,
        decision: Decision,
        status: PaymentStatus,
        now_us: int,
        confirmation: Confirmation | None,
    ) -> int:
        i = decision.intent
        c = confirmation
        cursor = self._db.execute(
            "INSERT INTO payments (payment_id, idempotency_key, fingerprint, account_id, msisdn,"
            " amount_minor, currency, purpose, method_kind, method_display, channel, device_id,"
            " ip, status, decline_reason, decline_detail, confirmation_id, settled_at_us,"
            " balance_after_minor, service_state_after, gateway, gateway_reference,"
            " created_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?)",
            (
                decision.payment_id,
                i.idempotency_key,
                i.fingerprint,
                i.account_id,
                i.msisdn,
                i.amount_minor,
                i.currency,
                int(i.purpose),
                int(i.method.kind),
                i.method.display,
                i.channel,
                i.device_id,
                i.ip,
                int(status),
                decision.decline_reason,
                decision.decline_detail,
                c.confirmation_id if c else None,
                c.settled_at_us if c else None,
                c.balance_after_minor if c else None,
                int(c.service_state_after) if c else None,
                c.gateway if c else "",
                c.gateway_reference if c else "",
                now_us,
            ),
        )
        seq = cursor.lastrowid
        assert seq is not None
        return seq

    def _records(self, where: str, params: Sequence[object]) -> list[PaymentRecord]:
        # `where` is one of this module's literals; values always go in `params`.
        cursor = self._db.execute(
            "SELECT seq, payment_id, idempotency_key, fingerprint, account_id, msisdn,"  # noqa: S608
            " amount_minor, currency, purpose, method_kind, method_display, channel, device_id,"
            " ip, status, decline_reason, decline_detail, confirmation_id, settled_at_us,"
            " balance_after_minor, service_state_after, gateway, gateway_reference,"
            f" refunded_minor, created_at_us FROM payments WHERE {where}",
            params,
        )
        return [_record(row) for row in cursor]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _record(row: tuple) -> PaymentRecord:  # type: ignore[type-arg]
    (
        seq, payment_id, key, fingerprint, account_id, msisdn, amount, currency, purpose,
        method_kind, method_display, channel, device_id, ip, status, reason, detail,
        confirmation_id, settled_at_us, balance_after, state_after, gateway, gateway_ref,
        refunded, created_at_us,
    ) = row  # fmt: skip
    intent = PaymentIntent(
        idempotency_key=key,
        fingerprint=fingerprint,
        account_id=account_id,
        msisdn=msisdn,
        amount_minor=amount,
        currency=currency,
        purpose=Purpose(purpose),
        method=Method(MethodKind(method_kind), method_display),
        channel=channel,
        device_id=device_id,
        ip=ip,
    )
    confirmation = None
    if confirmation_id is not None:
        confirmation = Confirmation(
            confirmation_id,
            seq,
            settled_at_us,
            gateway,
            gateway_ref,
            balance_after,
            currency,
            LineStatus(state_after),
        )
    outcome = Outcome(payment_id, key, PaymentStatus(status), reason, detail, confirmation)
    return PaymentRecord(intent, outcome, created_at_us, refunded)
