"""Balance adjustments decided by other systems (AdjustBalance), as both stores keep them.

An adjustment is a document of its own, never a rewrite of the subscriber's billing row:
the row in ``balance_adjustments`` (PENDING from before the ledger's transfer, the
journal; APPLIED in the transaction that records it; DECLINED when refused), two AR legs
and one audit row. The subscriber's balance moves by the adjustment's recorded delta, so
``verify`` still finds the balance equal to the opening balance plus every document's
delta, the AR accounts equal to billing's movements plus adjustments, and the engine's
ledger account equal to both.

The amount is signed and in the subscriber's favour: positive credits the account (more
prepaid credit, less owed on a postpaid one), negative debits it. In the ledger it is a
transfer between the currency's adjustment account and the subscriber's; in AR, a leg
on the subscriber's AR account (``prepaid_liability:`` or ``receivable:`` by plan) and
one on ``adjustments:SOURCE``. Each applied adjustment also writes an outbox event
(kind ``adjustment``), and a credit that pays up a barred or suspended line restores it
by the provisioning rules, as a payment does (``build_adjustment``).

The stores run the same statements (``Statements``) and write the rows ``applied_rows``
builds with their batch writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quickpay_engine.domain import LineStatus, Plan
from quickpay_engine.errors import StoreError
from quickpay_engine.store.audit import AuditRow, canonical, chain_hash, continue_from
from quickpay_engine.store.provisioning import ProvisioningRule, state_after
from quickpay_engine.store.rows import Account, BatchRows

PENDING, APPLIED, DECLINED = "PENDING", "APPLIED", "DECLINED"

# The audit row's kind of an applied adjustment.
AUDIT_KIND = "balance.adjusted"
# Its outbox event's kind (NATS subject quickpay.settlement.adjustment), and that of the
# line state it changed, as a payment's (docs/contract.md, Events).
EVENT_KIND = "adjustment"
STATE_EVENT = "service_state"
# The AR account prefix of the other leg (the source system's); verify's per-account
# check skips it, as it skips the gateways' clearing accounts.
AR_PREFIX = "adjustments:"

# The reason of an adjustment refused because it would take a prepaid balance below
# zero: Pay's decline code for a balance that does not cover a payment.
INSUFFICIENT_CREDIT = "INSUFFICIENT_CREDIT"

# What a caller is told when an adjustment key is reused for another payload.
ADJUSTMENT_KEY_CONFLICT = (
    "idempotency_key was used for another adjustment (another account, amount, currency,"
    " reason, source or flag); a new adjustment needs a new key"
)

COLUMNS = (
    "adjustment_id, idempotency_key, account_id, amount_minor, currency, reason,"
    " source_system, allow_negative, status, balance_delta_minor, balance_after_minor,"
    " decline_reason, decline_detail, created_at_us, finished_at_us"
)


@dataclass(frozen=True, slots=True)
class AdjustmentRow:
    """One adjustment as the store keeps it."""

    adjustment_id: str
    idempotency_key: str
    account_id: str
    amount_minor: int  # signed, in the subscriber's favour
    currency: str
    reason: str
    source_system: str
    allow_negative: bool
    status: str = PENDING
    balance_delta_minor: int = 0  # what it did to billing's balance (by plan)
    balance_after_minor: int = 0
    decline_reason: str = ""
    decline_detail: str = ""
    created_at_us: int = 0
    finished_at_us: int | None = None

    @property
    def payload(self) -> tuple[str, int, str, str, str, bool]:
        """What a key is bound to: a retry must send the same."""
        return (
            self.account_id, self.amount_minor, self.currency, self.reason,
            self.source_system, self.allow_negative,
        )  # fmt: skip

    def values(self) -> tuple[object, ...]:
        """The row's values in ``COLUMNS`` order."""
        return (
            self.adjustment_id, self.idempotency_key, self.account_id, self.amount_minor,
            self.currency, self.reason, self.source_system, int(self.allow_negative),
            self.status, self.balance_delta_minor, self.balance_after_minor,
            self.decline_reason, self.decline_detail, self.created_at_us, self.finished_at_us,
        )  # fmt: skip


def adjustment_of(row: tuple[object, ...]) -> AdjustmentRow:
    """A row read in ``COLUMNS`` order."""
    values = list(row)
    values[7] = bool(values[7])
    return AdjustmentRow(*values)  # type: ignore[arg-type]


def balance_delta(plan: Plan, amount_minor: int) -> int:
    """What an adjustment in the subscriber's favour does to billing's balance: a prepaid
    balance is credit (up), a postpaid one is what is owed (down)."""
    return amount_minor if plan is Plan.PREPAID else -amount_minor


def subscriber_ar_account(plan: Plan, account_id: str) -> str:
    return f"{'prepaid_liability' if plan is Plan.PREPAID else 'receivable'}:{account_id}"


def build_adjustment(
    a: AdjustmentRow,
    account: Account,
    rules: Sequence[ProvisioningRule],
    audit_head: AuditRow | None,
    now_us: int,
    audit_key: bytes,
) -> BatchRows:
    """The rows that record ``a``: its AR legs, its audit row, its outbox event and, for
    a credit that restores the line, the provisioning change and its event.
    ``account`` (the line before) is moved in place and is ``rows.touched``.

    A credit re-evaluates the provisioning rules on the balance after it, as a payment
    does (``provisioning.state_after``): a line barred for non-payment that the credit
    pays up is restored. A debit never changes the line's state."""
    rows = BatchRows()
    account.balance_minor += balance_delta(account.plan, a.amount_minor)
    before = account.status
    credit = a.amount_minor > 0
    plan, balance = account.plan, account.balance_minor
    account.status, rule_id = state_after(rules, plan, before, balance) if credit else (before, "")
    rows.touched[a.account_id] = account
    size = abs(a.amount_minor)
    mine = subscriber_ar_account(account.plan, a.account_id)
    theirs = AR_PREFIX + a.source_system
    # In the subscriber's favour: their AR account is credited (less owed, more credit
    # held for them); against them, debited.
    credited, debited = (mine, theirs) if credit else (theirs, mine)
    aid = a.adjustment_id
    rows.ar.append((aid, aid, 1, debited, size, 0, a.currency, now_us))
    rows.ar.append((aid, aid, 2, credited, 0, size, a.currency, now_us))
    if account.status is not before:
        # No payment: the document is the adjustment, and its events name no payment.
        rows.provisioning.append(
            (aid, "", a.account_id, account.msisdn, int(before), int(account.status), rule_id,
             now_us)
        )  # fmt: skip
        state: dict[str, object] = {
            "msisdn": account.msisdn,
            "state_before": before.name,
            "state_after": account.status.name,
        }
        rows.outbox.append(_event(STATE_EVENT, a, state, now_us))
    event = {
        "adjustment_id": aid,
        "amount_minor": a.amount_minor,
        "currency": a.currency,
        "reason": a.reason,
        "source_system": a.source_system,
        "balance_after_minor": account.balance_minor,
        "service_state_after": account.status.name,
    }
    rows.outbox.append(_event(EVENT_KIND, a, event, now_us))
    rows.audit, (seq, head) = continue_from(audit_head, audit_key)
    encoded = canonical(
        {
            "kind": AUDIT_KIND,
            "adjustment_id": aid,
            "account_id": a.account_id,
            "amount_minor": a.amount_minor,
            "currency": a.currency,
            "source_system": a.source_system,
            "reason": a.reason,
            "balance_after_minor": account.balance_minor,
        }
    )
    rows.audit.append((seq + 1, head, encoded, chain_hash(audit_key, head, seq + 1, encoded)))
    return rows


def _event(
    kind: str, a: AdjustmentRow, payload: dict[str, object], now_us: int
) -> tuple[object, ...]:
    # The id derives from the adjustment, so a redo adds no second event.
    return (f"evt_{kind}_{a.adjustment_id}", kind, "", a.account_id, canonical(payload), now_us)


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL both stores run on ``balance_adjustments`` and the line, written once
    with the store's parameter mark (``?`` in SQLite, ``%s`` in psycopg)."""

    insert: str  # a new row; a key already taken keeps its row
    select: str  # COLUMNS, with a WHERE clause appended
    line: str  # the adjusted line: msisdn, plan, status, balance_minor
    applied: str  # the row APPLIED, in ``applied_rows``'s parameter order

    @classmethod
    def marked(cls, mark: str) -> Statements:
        marks = ", ".join([mark] * len(COLUMNS.split(",")))
        return cls(
            insert=f"INSERT INTO balance_adjustments ({COLUMNS}) VALUES ({marks})"  # noqa: S608
            " ON CONFLICT DO NOTHING",
            select=f"SELECT {COLUMNS} FROM balance_adjustments WHERE ",  # noqa: S608
            line="SELECT msisdn, plan, status, balance_minor FROM subscribers"  # noqa: S608
            f" WHERE account_id = {mark}",
            applied=f"UPDATE balance_adjustments SET status = {mark}, balance_delta_minor ="  # noqa: S608
            f" {mark}, balance_after_minor = {mark}, finished_at_us = {mark}"
            f" WHERE adjustment_id = {mark}",
        )


def applied_rows(
    a: AdjustmentRow,
    line: tuple[str, int, int, int] | None,
    rules: Sequence[ProvisioningRule],
    audit_head: AuditRow | None,
    now_us: int,
    audit_key: bytes,
) -> tuple[BatchRows, tuple[object, ...]]:
    """What applying the PENDING adjustment ``a`` writes, given its ``line`` as
    ``Statements.line`` read it (locked): the rows (the store's batch writer takes them:
    the line's balance and state are ``rows.touched``) and the parameters of
    ``Statements.applied``."""
    if line is None:
        raise StoreError(f"adjustment {a.adjustment_id}: account {a.account_id} is gone")
    msisdn, plan, status, balance = line
    account = Account(a.account_id, msisdn, Plan(plan), LineStatus(status), balance)
    rows = build_adjustment(a, account, rules, audit_head, now_us, audit_key)
    after = account.balance_minor
    return rows, (APPLIED, after - balance, after, now_us, a.adjustment_id)


def audit_problem(
    c: dict[str, object], stored: AdjustmentRow | None, legs: list[tuple[int, str, int, int, str]]
) -> str:
    """An adjustment's audit row against the adjustment and its AR legs ('' if they agree)."""
    aid = str(c.get("adjustment_id"))
    audited = (c.get("account_id"), c.get("amount_minor"), c.get("currency"))
    if stored is None:
        return f"adjustment {aid} is not in the store"
    held = (stored.account_id, stored.amount_minor, stored.currency)
    if held != audited or stored.status != APPLIED:
        return (
            f"adjustment {aid} is {held} {stored.status} in the store, {audited} applied in"
            " the audit trail"
        )
    size, currency = abs(stored.amount_minor), stored.currency
    theirs = AR_PREFIX + str(c.get("source_system"))
    ends = {leg[1] for leg in legs}
    ok = (
        len(legs) == 2
        and legs[0][0] == 1 and legs[0][2:] == (size, 0, currency)
        and legs[1][0] == 2 and legs[1][2:] == (0, size, currency)
        and theirs in ends
        and (legs[1][1] == theirs) == (stored.amount_minor < 0)
    )  # fmt: skip
    return "" if ok else f"adjustment {aid}: AR legs {legs} do not move {stored.amount_minor}"
