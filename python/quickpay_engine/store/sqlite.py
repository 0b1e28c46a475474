"""The embedded store: one SQLite file (WAL journal, synchronous=FULL) for every domain.

Calls are synchronous and must come from one thread: the async front end runs them on
a single-thread executor (``store.executor.StoreThread``), which makes that thread the
one writer.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
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
from quickpay_engine.store.audit import GENESIS, AuditRow, canonical, chain_hash
from quickpay_engine.store.provisioning import DEFAULT_RULES, ProvisioningRule, state_after

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
    gateway: str = ""
    gateway_reference: str = ""


@dataclass(frozen=True, slots=True)
class SettledState:
    """An account's balance and line status after a batch, for the engine's table."""

    account_id: str
    balance_minor: int
    status: LineStatus


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
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO provisioning_rules (rule_id, priority, plan, from_status,"
                " to_status, owed_max_minor, credit_min_minor) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.rule_id,
                        n,
                        int(r.plan),
                        int(r.from_status),
                        int(r.to_status),
                        r.owed_max_minor,
                        r.credit_min_minor,
                    )
                    for n, r in enumerate(DEFAULT_RULES)
                ],
            )
        self.rules = self._load_rules()

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
            trail = _Trail(self._db)
            for decision in decisions:
                self._db.execute("SAVEPOINT payment")
                mark = trail.mark()
                try:
                    outcome = self._apply(decision, now_us, states, trail)
                except sqlite3.IntegrityError as err:
                    self._db.execute("ROLLBACK TO payment")
                    trail.reset(mark)
                    outcome = self._replay_or_fail(decision, str(err))
                self._db.execute("RELEASE payment")
                outcomes.append(outcome)
        return outcomes, list(states.values())

    def _apply(
        self, decision: Decision, now_us: int, states: dict[str, SettledState], trail: _Trail
    ) -> Outcome:
        intent = decision.intent
        if decision.decline_reason:
            self._insert_payment(decision, PaymentStatus.DECLINED, now_us, None)
            trail.append(
                "payment.declined",
                payment_id=decision.payment_id,
                account_id=intent.account_id,
                amount_minor=intent.amount_minor,
                currency=intent.currency,
                decline_reason=decision.decline_reason,
            )
            self._event("decline", decision, now_us, decline_reason=decision.decline_reason)
            return Outcome(
                payment_id=decision.payment_id,
                idempotency_key=intent.idempotency_key,
                status=PaymentStatus.DECLINED,
                decline_reason=decision.decline_reason,
                decline_detail=decision.decline_detail,
            )
        # A bill payment lowers what is owed; a top-up raises the credit.
        bill = intent.purpose is Purpose.BILL_PAYMENT
        delta = -intent.amount_minor if bill else intent.amount_minor
        balance, plan, status, msisdn = self._db.execute(
            "UPDATE subscribers SET balance_minor = balance_minor + ? WHERE account_id = ?"
            " RETURNING balance_minor, plan, status, msisdn",
            (delta, intent.account_id),
        ).fetchone()
        before = LineStatus(status)
        after, rule_id = state_after(self.rules, Plan(plan), before, balance)
        confirmation = Confirmation(
            confirmation_id="cnf_" + decision.payment_id.removeprefix("pay_"),
            ledger_sequence=0,
            settled_at_us=now_us,
            gateway=decision.gateway,
            gateway_reference=decision.gateway_reference,
            balance_after_minor=balance,
            currency=intent.currency,
            service_state_after=after,
        )
        seq = self._insert_payment(decision, PaymentStatus.SETTLED, now_us, confirmation)
        self._db.execute(
            "INSERT INTO billing_records (payment_id, account_id, kind, amount_minor, currency,"
            " balance_after_minor, created_at_us) VALUES (?, ?, 'PAYMENT', ?, ?, ?, ?)",
            (decision.payment_id, intent.account_id, intent.amount_minor, intent.currency,
             balance, now_us),
        )  # fmt: skip
        # Money came in through the gateway's clearing account and pays down what the
        # subscriber owes (a bill) or becomes credit the carrier owes them (a top-up).
        clearing = f"gateway_clearing:{decision.gateway or 'direct'}"
        credited = f"{'receivable' if bill else 'prepaid_liability'}:{intent.account_id}"
        self._db.executemany(
            "INSERT INTO ar_entries (payment_id, leg, ar_account, debit_minor, credit_minor,"
            " currency, created_at_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (decision.payment_id, 1, clearing, intent.amount_minor, 0, intent.currency, now_us),
                (decision.payment_id, 2, credited, 0, intent.amount_minor, intent.currency, now_us),
            ],
        )
        if after is not before:
            self._db.execute(
                "UPDATE subscribers SET status = ? WHERE account_id = ?",
                (int(after), intent.account_id),
            )
            self._db.execute(
                "INSERT INTO provisioning_changes (payment_id, account_id, msisdn, state_before,"
                " state_after, rule_id, changed_at_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (decision.payment_id, intent.account_id, msisdn, int(before), int(after),
                 rule_id, now_us),
            )  # fmt: skip
            self._event(
                "service_state", decision, now_us, msisdn=msisdn,
                state_before=before.name, state_after=after.name,
            )  # fmt: skip
        trail.append(
            "payment.settled",
            payment_id=decision.payment_id,
            account_id=intent.account_id,
            amount_minor=intent.amount_minor,
            currency=intent.currency,
            balance_after_minor=balance,
            state_before=before.name,
            state_after=after.name,
            gateway=decision.gateway,
            gateway_reference=decision.gateway_reference,
        )
        self._event(
            "settlement",
            decision,
            now_us,
            amount_minor=intent.amount_minor,
            currency=intent.currency,
            balance_after_minor=balance,
            confirmation_id=confirmation.confirmation_id,
        )
        states[intent.account_id] = SettledState(intent.account_id, balance, after)
        return Outcome(
            payment_id=decision.payment_id,
            idempotency_key=intent.idempotency_key,
            status=PaymentStatus.SETTLED,
            confirmation=dataclasses.replace(confirmation, ledger_sequence=seq),
        )

    def _event(self, kind: str, decision: Decision, now_us: int, **payload: object) -> None:
        """Writes an outbox event in the same transaction as the change it describes.
        The id is derived from the payment, so a redo of the batch adds no duplicate."""
        self._db.execute(
            "INSERT INTO outbox (event_id, kind, payment_id, account_id, payload, created_at_us)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (f"evt_{kind}_{decision.payment_id}", kind, decision.payment_id,
             decision.intent.account_id, canonical(payload), now_us),
        )  # fmt: skip

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

    # -- provisioning and audit ---------------------------------------------------------

    def _load_rules(self) -> list[ProvisioningRule]:
        cursor = self._db.execute(
            "SELECT rule_id, plan, from_status, to_status, owed_max_minor, credit_min_minor"
            " FROM provisioning_rules ORDER BY priority, rule_id"
        )
        return [
            ProvisioningRule(r, Plan(p), LineStatus(f), LineStatus(t), o, c)
            for r, p, f, t, o, c in cursor
        ]

    def audit_rows(self) -> Iterator[AuditRow]:
        """The audit trail in sequence order, for `quickpay audit verify`."""
        cursor = self._db.execute(
            "SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq"
        )
        return (AuditRow(*row) for row in cursor)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Trail:
    """Appends hash-chained audit rows inside the current transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        head = db.execute(
            "SELECT seq, row_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        self._seq, self._hash = head if head else (0, GENESIS)

    def mark(self) -> tuple[int, str]:
        return self._seq, self._hash

    def reset(self, mark: tuple[int, str]) -> None:
        """Forgets rows rolled back with their savepoint."""
        self._seq, self._hash = mark

    def append(self, kind: str, **content: object) -> None:
        encoded = canonical({"kind": kind, **content})
        seq = self._seq + 1
        row_hash = chain_hash(self._hash, seq, encoded)
        self._db.execute(
            "INSERT INTO audit_log (seq, prev_hash, content, row_hash) VALUES (?, ?, ?, ?)",
            (seq, self._hash, encoded, row_hash),
        )
        self._seq, self._hash = seq, row_hash


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
