"""The audit trail against the rest of the store: the chain (store/audit.py), the
ledger's anchor, and every audit row against the payment, refund and AR legs it speaks
of. A payment whose amount was edited in history and in both its AR legs keeps its
billing records and ledger untouched, so only its audit row, which cannot be re-hashed
without the key, still tells what was settled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Protocol

from quickpay_engine.domain import PaymentStatus
from quickpay_engine.store import adjustments
from quickpay_engine.store.adjustments import AdjustmentRow
from quickpay_engine.store.audit import (
    ACCESS_RECONCILE,
    ACCESS_REFUND,
    AuditRow,
    ChainReport,
    verify,
)
from quickpay_engine.subscriber_changes import AUDIT_KIND as SUBSCRIBER_CHANGED

# Audit rows checked per round of lookups.
CHUNK_ROWS = 500
# At most this many mismatches are listed.
EXAMPLES_MAX = 20

_SETTLED = {PaymentStatus.SETTLED, PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED}
_DECLINED = {PaymentStatus.DECLINED, PaymentStatus.FAILED}

Legs = list[tuple[int, str, int, int, str]]


class AuditedStore(Protocol):
    def audit_rows(self) -> Iterator[AuditRow]: ...
    def audit_payments(
        self, payment_ids: Sequence[str]
    ) -> dict[str, tuple[str, int, str, int]]: ...
    def audit_refunds(self, refund_ids: Sequence[str]) -> dict[str, tuple[str, int, str, str]]: ...
    def audit_ar_legs(self, document_ids: Sequence[str]) -> dict[str, Legs]: ...
    def audit_adjustments(self, adjustment_ids: Sequence[str]) -> dict[str, AdjustmentRow]: ...
    def payment_count(self) -> int: ...
    def applied_adjustment_count(self) -> int: ...


def check_trail(
    store: AuditedStore, key: bytes, anchor: tuple[int, str] | None = None
) -> tuple[ChainReport, list[str]]:
    """The chain's report, and the rows that disagree with the store (at most
    ``EXAMPLES_MAX`` of them, then a count of the rest)."""
    report = verify(store.audit_rows(), key, anchor)
    return report, cross_check(store)


def audit_problems(
    store: AuditedStore, key: bytes, anchor: tuple[int, str] | None = None
) -> list[str]:
    """One line per break, for `quickpay verify`."""
    report, mismatches = check_trail(store, key, anchor)
    problems = [f"audit trail disagrees with the store: {m}" for m in mismatches]
    if report.broken is not None:
        b = report.broken
        problems.insert(0, f"audit trail broken at row {b.seq}: {b.problem}")
    return problems


def cross_check(store: AuditedStore) -> list[str]:
    """Every audit row of a payment or refund against what history and AR hold for it,
    and the number of payments against the number of their audit rows."""
    found: list[str] = []
    audited = adjusted = 0
    chunk: list[AuditRow] = []
    for row in store.audit_rows():
        chunk.append(row)
        if len(chunk) == CHUNK_ROWS:
            counts = _check_chunk(store, chunk, found)
            audited, adjusted = audited + counts[0], adjusted + counts[1]
            chunk = []
    if chunk:
        counts = _check_chunk(store, chunk, found)
        audited, adjusted = audited + counts[0], adjusted + counts[1]
    payments = store.payment_count()
    if payments != audited:
        found.append(
            f"{payments} payments in history, {audited} audit rows of payments (a payment"
            " was added or removed without its audit row)"
        )
    applied = store.applied_adjustment_count()
    if applied != adjusted:
        found.append(
            f"{applied} balance adjustments applied, {adjusted} audit rows of adjustments (an"
            " adjustment was added or removed without its audit row)"
        )
    if len(found) > EXAMPLES_MAX:
        return [*found[:EXAMPLES_MAX], f"... and {len(found) - EXAMPLES_MAX} more"]
    return found


def _check_chunk(store: AuditedStore, rows: list[AuditRow], found: list[str]) -> tuple[int, int]:
    """Checks one chunk; appends what disagrees; returns its audit rows of payments and
    of adjustments."""
    contents: list[tuple[int, dict[str, object]]] = []
    for row in rows:
        try:
            content = json.loads(row.content)
        except ValueError:
            found.append(f"row {row.seq}: content is not JSON")
            continue
        if isinstance(content, dict):
            contents.append((row.seq, content))
    kinds = ("payment.settled", "payment.declined")
    payment_ids = [str(c["payment_id"]) for _, c in contents if c.get("kind") in kinds]
    refund_ids = [str(c["refund_id"]) for _, c in contents if c.get("kind") == "payment.refunded"]
    adjustment_ids = [
        str(c.get("adjustment_id")) for _, c in contents if c.get("kind") == adjustments.AUDIT_KIND
    ]
    payments = store.audit_payments(payment_ids)
    refunds = store.audit_refunds(refund_ids)
    adjusted = store.audit_adjustments(adjustment_ids) if adjustment_ids else {}
    legs = store.audit_ar_legs(payment_ids + refund_ids + adjustment_ids)
    for seq, c in contents:
        kind = c.get("kind")
        if kind in kinds:
            problem = _payment_problem(c, payments.get(str(c["payment_id"])), legs)
        elif kind == "payment.refunded":
            problem = _refund_problem(c, refunds.get(str(c["refund_id"])), legs)
        elif kind == adjustments.AUDIT_KIND:
            aid = str(c.get("adjustment_id"))
            problem = adjustments.audit_problem(c, adjusted.get(aid), legs.get(aid, []))
        elif kind in ACCESS_FIELDS:
            problem = _access_problem(c)
        else:
            continue
        if problem:
            found.append(f"row {seq}: {problem}")
    return len(payment_ids), len(adjustment_ids)


# The fields each access row (who asked for a refund or a reconciliation) must carry,
# and each row of a subscriber change (subscriber_changes.py).
ACCESS_FIELDS = {
    ACCESS_REFUND: ("caller", "refund_key", "payment_id", "at_us"),
    ACCESS_RECONCILE: ("caller", "gateway", "report_sha256", "report_bytes", "at_us"),
    SUBSCRIBER_CHANGED: ("account_id", "version", "change", "msisdn", "status", "at_us"),
}


def _access_problem(c: dict[str, object]) -> str:
    """An access row that does not say who asked for what."""
    kind = str(c["kind"])
    missing = [f for f in ACCESS_FIELDS[kind] if c.get(f) in (None, "")]
    return f"{kind} row without {', '.join(missing)}" if missing else ""


def _payment_problem(
    c: dict[str, object], stored: tuple[str, int, str, int] | None, legs: dict[str, Legs]
) -> str:
    pid = str(c["payment_id"])
    audited = (c["account_id"], c["amount_minor"], c["currency"])
    if stored is None:
        return f"payment {pid} is not in history"
    settled = c["kind"] == "payment.settled"
    status = PaymentStatus(stored[3])
    if stored[:3] != audited or status not in (_SETTLED if settled else _DECLINED):
        return (
            f"payment {pid} is {_said(stored[:3])} {status.name} in history,"
            f" {_said(audited)} {'settled' if settled else 'declined'} in the audit trail"
        )
    amount, currency = c["amount_minor"], c["currency"]
    account = c["account_id"]
    got = legs.get(pid, [])
    if not settled:
        return f"declined payment {pid} has AR legs" if got else ""
    clearing = f"gateway_clearing:{c['gateway'] or 'direct'}"
    credited = {f"receivable:{account}", f"prepaid_liability:{account}"}
    ok = (
        len(got) == 2
        and got[0] == (1, clearing, amount, 0, currency)
        and got[1][0] == 2
        and got[1][1] in credited
        and got[1][2:] == (0, amount, currency)
    )
    return "" if ok else f"payment {pid}: AR legs {got} do not move {amount} {currency}"


def _refund_problem(
    c: dict[str, object], stored: tuple[str, int, str, str] | None, legs: dict[str, Legs]
) -> str:
    rid = str(c["refund_id"])
    audited = (c["payment_id"], c["amount_minor"], c["currency"])
    if stored is None:
        return f"refund {rid} is not in the store"
    if stored[:3] != audited or stored[3] != "DONE":
        return (
            f"refund {rid} is {_said(stored[:3])} {stored[3]} in the store,"
            f" {_said(audited)} in the audit trail"
        )
    amount, currency = c["amount_minor"], c["currency"]
    clearing = f"gateway_clearing:{c['gateway'] or 'direct'}"
    got = legs.get(rid, [])
    ok = (
        len(got) == 2
        and got[0][0] == 1
        and got[0][2:] == (amount, 0, currency)
        and got[1] == (2, clearing, 0, amount, currency)
    )
    return "" if ok else f"refund {rid}: AR legs {got} do not move {amount} {currency}"


def _said(values: Sequence[object]) -> str:
    return "(" + ", ".join(map(str, values)) + ")"
