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
        "SELECT p.payment_id FROM payments p LEFT JOIN billing_records b USING (payment_id)"
        " WHERE p.status IN (1, 4, 5) AND b.payment_id IS NULL",
    ),
    (
        "billing record without a settled payment",
        "SELECT b.payment_id FROM billing_records b LEFT JOIN payments p"
        " ON p.payment_id = b.payment_id AND p.status IN (1, 4, 5) WHERE p.payment_id IS NULL",
    ),
    (
        "settled payment whose AR legs do not carry its amount (payment, debits, credits)",
        "SELECT p.payment_id, coalesce(sum(a.debit_minor), 0), coalesce(sum(a.credit_minor), 0)"
        " FROM payments p LEFT JOIN ar_entries a USING (payment_id) WHERE p.status IN (1, 4, 5)"
        " GROUP BY p.payment_id HAVING coalesce(sum(a.debit_minor), 0) != max(p.amount_minor)"
        " OR coalesce(sum(a.credit_minor), 0) != max(p.amount_minor)",
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
        " WHERE p.status = 2",
    ),
    (
        "settled payment without its settlement event",
        "SELECT p.payment_id FROM payments p LEFT JOIN outbox o"
        " ON o.payment_id = p.payment_id AND o.kind = 'settlement'"
        " WHERE p.status IN (1, 4, 5) AND o.event_id IS NULL",
    ),
]
