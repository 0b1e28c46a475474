"""The rows one settlement batch writes, built without touching a database.

Every domain's rows (payment history, billing, AR ledger, provisioning, audit, outbox)
come from one pure function, so the SQLite store and the PostgreSQL store write the same
thing and a test can check the rows without a server. All keys derive from the payment
id, which is what makes a redo of the same batch change nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from quickpay_engine.domain import (
    Confirmation,
    FraudAssessment,
    LineStatus,
    Method,
    MethodKind,
    Outcome,
    PaymentIntent,
    PaymentStatus,
    Plan,
    Purpose,
)
from quickpay_engine.store.audit import AuditRow, canonical, chain_hash, continue_from
from quickpay_engine.store.provisioning import ProvisioningRule, state_after


@dataclass(slots=True)
class Decision:
    """What the pipeline decided for one payment; the store makes it durable.

    Not frozen: the pipeline completes a payment's decision in place once its gateway
    has answered (gateway, reference, or the decline), where building a second frozen
    one per payment cost a microsecond and a half each.

    ``decline_reason`` empty means settle: apply the amount to the account. Otherwise the
    payment is recorded as declined and nothing else changes.
    """

    payment_id: str
    intent: PaymentIntent
    decline_reason: str = ""
    decline_detail: str = ""
    gateway: str = ""
    gateway_reference: str = ""
    fraud: FraudAssessment | None = None
    review: bool = False  # held for fraud review: queued for an analyst
    failed: bool = False  # a technical failure (no gateway answered): FAILED, not DECLINED


@dataclass(slots=True)
class Account:
    """An account's billing balance and line state, as the batch moves them."""

    account_id: str
    msisdn: str
    plan: Plan
    status: LineStatus
    balance_minor: int


class MissingAccount(Exception):
    """A settlement names an account the billing database no longer has."""


@dataclass
class BatchRows:
    """Parameter tuples per table, in the order the statements in the store expect."""

    payments: list[tuple[object, ...]] = field(default_factory=list)
    billing: list[tuple[object, ...]] = field(default_factory=list)
    ar: list[tuple[object, ...]] = field(default_factory=list)
    provisioning: list[tuple[object, ...]] = field(default_factory=list)
    audit: list[tuple[object, ...]] = field(default_factory=list)
    outbox: list[tuple[object, ...]] = field(default_factory=list)
    reviews: list[tuple[object, ...]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    touched: dict[str, Account] = field(default_factory=dict)


def build(
    decisions: Sequence[Decision],
    accounts: dict[str, Account],
    rules: Sequence[ProvisioningRule],
    audit_head: AuditRow | None,
    first_payment_seq: int,
    now_us: int,
    audit_key: bytes,
) -> BatchRows:
    """The rows for a batch. ``accounts`` is updated in place as payments apply, in order;
    ``audit_head`` is the last row of the trail (None: none yet), continued with rows
    keyed by ``audit_key``; payment rows are numbered from ``first_payment_seq`` (the
    confirmation's ledger sequence)."""
    rows = BatchRows()
    rows.audit, (audit_seq, audit_hash) = continue_from(audit_head, audit_key)
    for offset, d in enumerate(decisions):
        seq = first_payment_seq + offset
        i = d.intent
        if d.decline_reason:
            outcome = Outcome(
                d.payment_id,
                i.idempotency_key,
                PaymentStatus.FAILED if d.failed else PaymentStatus.DECLINED,
                d.decline_reason,
                d.decline_detail,
            )
            content = {
                "kind": "payment.declined",
                "payment_id": d.payment_id,
                "account_id": i.account_id,
                "amount_minor": i.amount_minor,
                "currency": i.currency,
                "decline_reason": d.decline_reason,
            }
            rows.outbox.append(
                _event(
                    "decline",
                    d,
                    now_us,
                    amount_minor=i.amount_minor,
                    currency=i.currency,
                    decline_reason=d.decline_reason,
                    decline_detail=d.decline_detail,
                )
            )
        else:
            account = accounts.get(i.account_id)
            if account is None:
                raise MissingAccount(i.account_id)
            # A bill payment lowers what is owed; a top-up raises the credit.
            bill = i.purpose is Purpose.BILL_PAYMENT
            delta = -i.amount_minor if bill else i.amount_minor
            account.balance_minor += delta
            before = account.status
            after, rule_id = state_after(rules, account.plan, before, account.balance_minor)
            account.status = after
            rows.touched[account.account_id] = account
            confirmation = Confirmation(
                confirmation_id="cnf_" + d.payment_id.removeprefix("pay_"),
                ledger_sequence=seq,
                settled_at_us=now_us,
                gateway=d.gateway,
                gateway_reference=d.gateway_reference,
                balance_after_minor=account.balance_minor,
                currency=i.currency,
                service_state_after=after,
            )
            outcome = Outcome(
                d.payment_id, i.idempotency_key, PaymentStatus.SETTLED, confirmation=confirmation
            )
            rows.billing.append(
                (
                    d.payment_id,
                    d.payment_id,
                    i.account_id,
                    "PAYMENT",
                    i.amount_minor,
                    i.currency,
                    delta,
                    account.balance_minor,
                    now_us,
                )
            )
            # Money came in through the gateway's clearing account and pays down what the
            # subscriber owes (a bill) or becomes credit the carrier owes them (a top-up).
            clearing = f"gateway_clearing:{d.gateway or 'direct'}"
            credited = f"{'receivable' if bill else 'prepaid_liability'}:{i.account_id}"
            pid = d.payment_id
            rows.ar.append((pid, pid, 1, clearing, i.amount_minor, 0, i.currency, now_us))
            rows.ar.append((pid, pid, 2, credited, 0, i.amount_minor, i.currency, now_us))
            if after is not before:
                rows.provisioning.append(
                    (
                        d.payment_id,
                        d.payment_id,
                        i.account_id,
                        account.msisdn,
                        int(before),
                        int(after),
                        rule_id,
                        now_us,
                    )
                )
                rows.outbox.append(
                    _event(
                        "service_state",
                        d,
                        now_us,
                        msisdn=account.msisdn,
                        state_before=before.name,
                        state_after=after.name,
                    )
                )
            content = {
                "kind": "payment.settled",
                "payment_id": d.payment_id,
                "account_id": i.account_id,
                "amount_minor": i.amount_minor,
                "currency": i.currency,
                "balance_after_minor": account.balance_minor,
                "state_before": before.name,
                "state_after": after.name,
                "gateway": d.gateway,
                "gateway_reference": d.gateway_reference,
            }
            rows.outbox.append(
                _event(
                    "settlement",
                    d,
                    now_us,
                    amount_minor=i.amount_minor,
                    currency=i.currency,
                    purpose=int(i.purpose),
                    confirmation_id=confirmation.confirmation_id,
                    ledger_sequence=seq,
                    gateway=d.gateway,
                    gateway_reference=d.gateway_reference,
                    balance_after_minor=account.balance_minor,
                    service_state_after=after.name,
                )
            )
        if d.fraud is not None:
            outcome = dataclasses.replace(outcome, fraud=d.fraud)
        if d.review:
            score = d.fraud.score if d.fraud else 0
            reasons = ",".join(d.fraud.reasons) if d.fraud else ""
            rows.reviews.append((d.payment_id, i.account_id, score, reasons, now_us))
        rows.payments.append(_payment_row(seq, d, outcome, now_us))
        audit_seq += 1
        encoded = canonical(content)
        row_hash = chain_hash(audit_key, audit_hash, audit_seq, encoded)
        rows.audit.append((audit_seq, audit_hash, encoded, row_hash))
        audit_hash = row_hash
        rows.outcomes.append(outcome)
    return rows


@dataclass(frozen=True, slots=True)
class CommitColumns:
    """A batch of decisions as one list per field: what the core's SQLite writer reads
    (engine/src/store/), so that no Python step per row builds or writes anything."""

    payment_id: list[str]
    idempotency_key: list[str]
    fingerprint: list[str]
    account_id: list[str]
    msisdn: list[str]
    amount_minor: list[int]
    currency: list[str]
    purpose: list[int]
    method_kind: list[int]
    method_display: list[str]
    channel: list[str]
    device_id: list[str]
    ip: list[str]
    sender: list[str]
    decline_reason: list[str]
    decline_detail: list[str]
    gateway: list[str]
    gateway_reference: list[str]
    fraud_score: list[int | None]
    fraud_decision: list[str]
    fraud_reasons: list[str]
    review: list[bool]
    failed: list[bool]
    # Each decision's assessment itself (the three fraud columns are read from it): the
    # core puts it on the outcomes it builds.
    fraud: list[FraudAssessment | None]


def commit_columns(
    decisions: Sequence[Decision], requests: dict[str, list[Any]] | None = None
) -> CommitColumns:
    """The columns of ``decisions``, in order. ``requests``: their requests' columns as
    the core cut them (``_engine.Requests.intent_columns``); else read from the intents."""
    frauds = [d.fraud for d in decisions]
    if requests is None:
        requests = _intent_columns([d.intent for d in decisions])
    return CommitColumns(
        payment_id=[d.payment_id for d in decisions],
        **requests,
        decline_reason=[d.decline_reason for d in decisions],
        decline_detail=[d.decline_detail for d in decisions],
        gateway=[d.gateway for d in decisions],
        gateway_reference=[d.gateway_reference for d in decisions],
        fraud_score=[f.score if f else None for f in frauds],
        fraud_decision=[f.decision if f else "" for f in frauds],
        fraud_reasons=[",".join(f.reasons) if f else "" for f in frauds],
        review=[d.review for d in decisions],
        failed=[d.failed for d in decisions],
        fraud=frauds,
    )


def journal_columns(attempts: Sequence[tuple[str, PaymentIntent]]) -> CommitColumns:
    """The columns of (payment id, request) pairs about to be journalled: the requests'
    fields, the decision's left empty (the journal reads only the request's). As
    ``commit_columns`` of a ``Decision`` per pair, without building the decisions."""
    return journal_columns_of([p for p, _ in attempts], _intent_columns([i for _, i in attempts]))


def journal_columns_of(payment_ids: list[str], requests: dict[str, list[Any]]) -> CommitColumns:
    """``journal_columns`` of the payments ``payment_ids``, whose requests' columns the
    core cut (``_engine.Requests.intent_columns``)."""
    n = len(payment_ids)
    empty = [""] * n
    return CommitColumns(
        payment_id=payment_ids,
        **requests,
        decline_reason=empty,
        decline_detail=empty,
        gateway=empty,
        gateway_reference=empty,
        fraud_score=[None] * n,
        fraud_decision=empty,
        fraud_reasons=empty,
        review=[False] * n,
        failed=[False] * n,
        fraud=[None] * n,
    )


def _intent_columns(intents: Sequence[PaymentIntent]) -> dict[str, list[Any]]:
    return {
        "idempotency_key": [i.idempotency_key for i in intents],
        "fingerprint": [i.fingerprint for i in intents],
        "account_id": [i.account_id for i in intents],
        "msisdn": [i.msisdn for i in intents],
        "amount_minor": [i.amount_minor for i in intents],
        "currency": [i.currency for i in intents],
        "purpose": [int(i.purpose) for i in intents],
        "method_kind": [int(i.method.kind) for i in intents],
        "method_display": [i.method.display for i in intents],
        "channel": [i.channel for i in intents],
        "device_id": [i.device_id for i in intents],
        "ip": [i.ip for i in intents],
        "sender": [i.sender for i in intents],
    }


# Line states by number, for each settled payment's outcome and each account's state
# after a batch (an enum's call costs ten times a dict's lookup).
LINE_STATUS = {int(s): s for s in LineStatus}
_SETTLED = int(PaymentStatus.SETTLED)


def outcome_of(
    d: Decision, status: int, ledger_sequence: int, balance_after_minor: int, state_after: int,
    now_us: int,
) -> Outcome:  # fmt: skip
    """The outcome ``build`` gives ``d``, from what the core's writer returned for it."""
    # Positional arguments, in the dataclasses' field order: this runs once per payment
    # of every batch, and keyword arguments cost about twice as much per call.
    i = d.intent
    if status != _SETTLED:
        return Outcome(
            d.payment_id, i.idempotency_key, PaymentStatus(status), d.decline_reason,
            d.decline_detail, None, False, d.fraud,
        )  # fmt: skip
    confirmation = Confirmation(
        "cnf_" + d.payment_id.removeprefix("pay_"), ledger_sequence, now_us, d.gateway,
        d.gateway_reference, balance_after_minor, i.currency,
        LINE_STATUS.get(state_after) or LineStatus(state_after),
    )  # fmt: skip
    return Outcome(
        d.payment_id, i.idempotency_key, PaymentStatus.SETTLED, "", "", confirmation, False,
        d.fraud,
    )  # fmt: skip


def failed_outcome(d: Decision, reason: str, error: str) -> Outcome:
    """FAILED for ``d``, which the store refused (``reason``, ``error``): nothing of it
    was written."""
    return Outcome(
        payment_id=d.payment_id,
        idempotency_key=d.intent.idempotency_key,
        status=PaymentStatus.FAILED,
        decline_reason=reason,
        decline_detail=error,
    )


def _event(kind: str, d: Decision, now_us: int, **payload: object) -> tuple[object, ...]:
    # The id derives from the payment, so a redo of the batch adds no duplicate event.
    return (
        f"evt_{kind}_{d.payment_id}",
        kind,
        d.payment_id,
        d.intent.account_id,
        canonical(payload),
        now_us,
    )


def _payment_row(seq: int, d: Decision, o: Outcome, now_us: int) -> tuple[object, ...]:
    i, c = d.intent, o.confirmation
    return (
        seq,
        d.payment_id,
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
        int(o.status),
        d.decline_reason,
        d.decline_detail,
        c.confirmation_id if c else None,
        c.settled_at_us if c else None,
        c.balance_after_minor if c else None,
        int(c.service_state_after) if c else None,
        d.gateway,
        d.gateway_reference,
        d.fraud.score if d.fraud else None,
        d.fraud.decision if d.fraud else "",
        ",".join(d.fraud.reasons) if d.fraud else "",
        now_us,
        i.sender,
    )


def intent_json(intent: PaymentIntent) -> str:
    """The request as the saga's journal keeps it: every field but the method detail,
    so no card number is ever written (invariant 7)."""
    return canonical(
        {
            "idempotency_key": intent.idempotency_key,
            "fingerprint": intent.fingerprint,
            "account_id": intent.account_id,
            "msisdn": intent.msisdn,
            "amount_minor": intent.amount_minor,
            "currency": intent.currency,
            "purpose": int(intent.purpose),
            "method_kind": int(intent.method.kind),
            "method_display": intent.method.display,
            "channel": intent.channel,
            "device_id": intent.device_id,
            "ip": intent.ip,
            "sender": intent.sender,
        }
    )


def intent_from_json(text: str) -> PaymentIntent:
    """The inverse of ``intent_json``."""
    data = json.loads(text)
    return PaymentIntent(
        idempotency_key=data["idempotency_key"],
        fingerprint=data["fingerprint"],
        account_id=data["account_id"],
        msisdn=data["msisdn"],
        amount_minor=data["amount_minor"],
        currency=data["currency"],
        purpose=Purpose(data["purpose"]),
        method=Method(MethodKind(data["method_kind"]), data["method_display"]),
        channel=data["channel"],
        device_id=data["device_id"],
        ip=data["ip"],
        sender=data.get("sender", ""),  # journalled before senders were recorded: none
    )


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A refund the gateway has accepted, to be recorded in billing, AR and history."""

    refund_id: str
    payment_id: str
    account_id: str
    purpose: Purpose
    amount_minor: int
    currency: str
    gateway: str
    gateway_reference: str


def build_refund(
    r: RefundRequest,
    account: Account,
    amount_captured_minor: int,
    refunded_before_minor: int,
    rules: Sequence[ProvisioningRule],
    audit_head: AuditRow | None,
    now_us: int,
    audit_key: bytes,
) -> tuple[BatchRows, PaymentStatus, int]:
    """The rows that record one refund, the payment's status after it and the total
    refunded. ``account`` is updated in place. The caller has checked the amount."""
    refunded = refunded_before_minor + r.amount_minor
    assert 0 < refunded <= amount_captured_minor, "refund above the captured amount"
    status = (
        PaymentStatus.REFUNDED if refunded == amount_captured_minor
        else PaymentStatus.PARTIALLY_REFUNDED
    )  # fmt: skip
    rows = BatchRows()
    # A refunded bill payment is owed again; a refunded top-up takes the credit back.
    bill = r.purpose is Purpose.BILL_PAYMENT
    delta = r.amount_minor if bill else -r.amount_minor
    account.balance_minor += delta
    before = account.status
    after, rule_id = state_after(rules, account.plan, before, account.balance_minor)
    account.status = after
    rows.touched[account.account_id] = account
    rows.billing.append(
        (r.refund_id, r.payment_id, r.account_id, "REFUND", r.amount_minor, r.currency, delta,
         account.balance_minor, now_us)
    )  # fmt: skip
    clearing = f"gateway_clearing:{r.gateway or 'direct'}"
    debited = f"{'receivable' if bill else 'prepaid_liability'}:{r.account_id}"
    rows.ar.append((r.refund_id, r.payment_id, 1, debited, r.amount_minor, 0, r.currency, now_us))
    rows.ar.append((r.refund_id, r.payment_id, 2, clearing, 0, r.amount_minor, r.currency, now_us))
    if after is not before:
        rows.provisioning.append(
            (r.refund_id, r.payment_id, r.account_id, account.msisdn, int(before), int(after),
             rule_id, now_us)
        )  # fmt: skip
        state = {"msisdn": account.msisdn, "state_before": before.name, "state_after": after.name}
        rows.outbox.append(
            (f"evt_service_state_{r.refund_id}", "service_state", r.payment_id, r.account_id,
             canonical(state), now_us)
        )  # fmt: skip
    payload = {
        "refund_id": r.refund_id,
        "amount_minor": r.amount_minor,
        "currency": r.currency,
        "refunded_total_minor": refunded,
        "payment_status": status.name,
        "gateway": r.gateway,
        "gateway_reference": r.gateway_reference,
        "balance_after_minor": account.balance_minor,
        "service_state_after": after.name,
    }
    rows.outbox.append(
        (f"evt_refund_{r.refund_id}", "refund", r.payment_id, r.account_id, canonical(payload),
         now_us)
    )  # fmt: skip
    rows.audit, (seq, head) = continue_from(audit_head, audit_key)
    encoded = canonical({"kind": "payment.refunded", "payment_id": r.payment_id, **payload})
    row_hash = chain_hash(audit_key, head, seq + 1, encoded)
    rows.audit.append((seq + 1, head, encoded, row_hash))
    return rows, status, refunded
