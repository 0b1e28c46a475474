"""The database invariants `verify` checks, as SQL both stores run unchanged.

Each check selects the rows that break one invariant (the SQL is the common subset of
SQLite and PostgreSQL); a store appends its LIMIT and reports what comes back.
"""

from __future__ import annotations

CHECKS = [
    (
        "AR ledger out of balance (currency, debits, credits)",
        "SELECT currency, sum(debit_minor), sum(credit_minor) FROM ar_entries"
        " GROUP BY currency HAVING sum(debit_minor) != sum(credit_minor)",
    ),
    (
        "settled payment without a billing record",
        "SELECT p.payment_id FROM payments p LEFT JOIN billing_records b"
        " ON b.record_id = p.payment_id AND b.kind = 'PAYMENT'"
        " WHERE p.status IN (1, 4, 5) AND b.record_id IS NULL",
    ),
    (
        "billing record without a settled payment",
        "SELECT b.record_id FROM billing_records b LEFT JOIN payments p"
        " ON p.payment_id = b.payment_id AND p.status IN (1, 4, 5) WHERE p.payment_id IS NULL",
    ),
    (
        "settled payment whose AR legs do not carry its amount (payment, debits, credits)",
        "SELECT p.payment_id, coalesce(sum(a.debit_minor), 0), coalesce(sum(a.credit_minor), 0)"
        " FROM payments p LEFT JOIN ar_entries a ON a.document_id = p.payment_id"
        " WHERE p.status IN (1, 4, 5) GROUP BY p.payment_id"
        " HAVING coalesce(sum(a.debit_minor), 0) != max(p.amount_minor)"
        " OR coalesce(sum(a.credit_minor), 0) != max(p.amount_minor)",
    ),
    (
        "refunded amount is not the sum of finished refunds (payment, refunded, refunds)",
        "SELECT p.payment_id, p.refunded_minor, coalesce(r.total, 0) FROM payments p"
        " LEFT JOIN (SELECT payment_id, sum(amount_minor) AS total FROM refunds"
        " WHERE status = 'DONE' GROUP BY payment_id) r USING (payment_id)"
        " WHERE p.refunded_minor != coalesce(r.total, 0)",
    ),
    (
        "refunded more than was captured, or status not matching refunds (payment)",
        "SELECT payment_id FROM payments WHERE refunded_minor > amount_minor"
        " OR (status = 4 AND refunded_minor != amount_minor)"
        " OR (status = 5 AND NOT (refunded_minor BETWEEN 1 AND amount_minor - 1))"
        " OR (status = 1 AND refunded_minor != 0)",
    ),
    (
        "finished refund without its billing record (refund)",
        "SELECT r.refund_id FROM refunds r LEFT JOIN billing_records b"
        " ON b.record_id = r.refund_id AND b.kind = 'REFUND'"
        " WHERE r.status = 'DONE' AND b.record_id IS NULL",
    ),
    (
        "balance is not opening balance plus billing history (account, balance, expected)",
        "SELECT s.account_id, s.balance_minor, s.opening_balance_minor + coalesce(b.delta, 0)"
        " FROM subscribers s LEFT JOIN (SELECT account_id, sum(balance_delta_minor) AS delta"
        " FROM billing_records GROUP BY account_id) b USING (account_id)"
        " WHERE s.balance_minor != s.opening_balance_minor + coalesce(b.delta, 0)",
    ),
    (
        "declined payment that moved money",
        "SELECT p.payment_id FROM payments p JOIN ar_entries a USING (payment_id)"
        " WHERE p.status IN (2, 3)",
    ),
    (
        "settled payment without its settlement event",
        "SELECT p.payment_id FROM payments p LEFT JOIN outbox o"
        " ON o.payment_id = p.payment_id AND o.kind = 'settlement'"
        " WHERE p.status IN (1, 4, 5) AND o.event_id IS NULL",
    ),
]
