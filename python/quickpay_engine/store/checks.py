"""The database invariants `verify` checks, as SQL both stores run unchanged.

Each check selects the rows that break one invariant (the SQL is the common subset of
SQLite and PostgreSQL); a store appends its LIMIT and reports what comes back.
"""

from __future__ import annotations

# AR rows that are not a gateway clearing account nor a source system's adjustment
# account (those are the other leg of each document); substr, not LIKE, since "_" is a
# LIKE wildcard.
_NOT_CLEARING = (
    "substr(ar_account, 1, 17) != 'gateway_clearing:'"
    " AND substr(ar_account, 1, 12) != 'adjustments:'"
)

# Applied balance adjustments per subscriber AR account (store/adjustments.py: the
# account's plan names it), their signed amounts, in the subscriber's favour.
_ADJUSTED_BY_AR_ACCOUNT = (
    "SELECT CASE s.plan WHEN 1 THEN 'prepaid_liability:' ELSE 'receivable:' END"
    " || j.account_id AS ar_account, j.amount_minor AS net"
    " FROM balance_adjustments j JOIN subscribers s ON s.account_id = j.account_id"
    " WHERE j.status = 'APPLIED'"
)

# Billing's movements per subscriber AR account: the account a payment's purpose posts
# to (rows.build), payments in less refunds out, plus applied adjustments.
# Every part is one of this module's literals.
_BILLING_BY_AR_ACCOUNT = (
    "SELECT ar_account, sum(net) AS net FROM ("  # noqa: S608
    "SELECT CASE p.purpose WHEN 1 THEN 'receivable:' ELSE 'prepaid_liability:' END"
    " || b.account_id AS ar_account,"
    " CASE b.kind WHEN 'PAYMENT' THEN b.amount_minor ELSE -b.amount_minor END AS net"
    " FROM billing_records b JOIN payments p ON p.payment_id = b.payment_id"
    f" UNION ALL {_ADJUSTED_BY_AR_ACCOUNT}) moves GROUP BY ar_account"
)

# Per account: billing's movements, payments in less refunds out, plus applied
# adjustments (signed, in the subscriber's favour), with the account's currency; what
# the engine's ledger account of the subscriber must hold (posted).
ACCOUNT_NETS = (
    "SELECT s.account_id, s.currency, coalesce(b.net, 0) + coalesce(j.net, 0)"
    " FROM subscribers s LEFT JOIN"
    " (SELECT account_id, sum(CASE kind WHEN 'PAYMENT' THEN amount_minor"
    " ELSE -amount_minor END) AS net FROM billing_records GROUP BY account_id) b"
    " USING (account_id) LEFT JOIN (SELECT account_id, sum(amount_minor) AS net"
    " FROM balance_adjustments WHERE status = 'APPLIED' GROUP BY account_id) j"
    " USING (account_id) ORDER BY s.account_id"
)

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
        "balance is not opening balance plus billing history and adjustments"
        " (account, balance, expected)",
        "SELECT s.account_id, s.balance_minor,"
        " s.opening_balance_minor + coalesce(b.delta, 0) + coalesce(j.delta, 0)"
        " FROM subscribers s LEFT JOIN (SELECT account_id, sum(balance_delta_minor) AS delta"
        " FROM billing_records GROUP BY account_id) b USING (account_id)"
        " LEFT JOIN (SELECT account_id, sum(balance_delta_minor) AS delta"
        " FROM balance_adjustments WHERE status = 'APPLIED' GROUP BY account_id) j"
        " USING (account_id)"
        " WHERE s.balance_minor != s.opening_balance_minor + coalesce(b.delta, 0)"
        " + coalesce(j.delta, 0)",
    ),
    (
        # An applied adjustment moved the balance by its amount, in the direction its
        # account's plan gives (store/adjustments.balance_delta), and nothing else did.
        "adjustment whose balance move is not its amount (adjustment, amount, delta)",
        "SELECT j.adjustment_id, j.amount_minor, j.balance_delta_minor"
        " FROM balance_adjustments j JOIN subscribers s USING (account_id)"
        " WHERE (j.status = 'APPLIED' AND j.balance_delta_minor"
        " != CASE s.plan WHEN 1 THEN j.amount_minor ELSE -j.amount_minor END)"
        " OR (j.status != 'APPLIED' AND j.balance_delta_minor != 0)",
    ),
    (
        "applied adjustment whose AR legs do not carry its amount (adjustment, debits, credits)",
        "SELECT j.adjustment_id, coalesce(sum(a.debit_minor), 0),"
        " coalesce(sum(a.credit_minor), 0) FROM balance_adjustments j"
        " LEFT JOIN ar_entries a ON a.document_id = j.adjustment_id"
        " WHERE j.status = 'APPLIED' GROUP BY j.adjustment_id"
        " HAVING coalesce(sum(a.debit_minor), 0) != max(abs(j.amount_minor))"
        " OR coalesce(sum(a.credit_minor), 0) != max(abs(j.amount_minor))",
    ),
    (
        "AR entries of an adjustment not applied (document)",
        "SELECT DISTINCT a.document_id FROM ar_entries a"
        " WHERE substr(a.document_id, 1, 4) = 'adj_' AND NOT EXISTS (SELECT 1"
        " FROM balance_adjustments j WHERE j.adjustment_id = a.document_id"
        " AND j.status = 'APPLIED')",
    ),
    (
        # Per subscriber AR account (receivable:ACCOUNT for bill payments,
        # prepaid_liability:ACCOUNT for top-ups): credits less debits, against billing's
        # records of the same payments, payments in less refunds out. AR can balance and
        # carry every payment's amount with a leg on the wrong subscriber; this sees it.
        "AR account does not sum to billing's movements (AR account, AR net, billing net)",
        # Every part is one of this module's literals.
        "SELECT n.ar_account, coalesce(a.net, 0), coalesce(b.net, 0) FROM ("  # noqa: S608
        f"SELECT ar_account FROM ar_entries WHERE {_NOT_CLEARING}"
        f" UNION SELECT ar_account FROM ({_BILLING_BY_AR_ACCOUNT}) names) n"
        " LEFT JOIN (SELECT ar_account, sum(credit_minor) - sum(debit_minor) AS net"
        f" FROM ar_entries WHERE {_NOT_CLEARING} GROUP BY ar_account) a"
        " ON a.ar_account = n.ar_account"
        f" LEFT JOIN ({_BILLING_BY_AR_ACCOUNT}) b ON b.ar_account = n.ar_account"
        " WHERE coalesce(a.net, 0) != coalesce(b.net, 0)",
    ),
    (
        # A refund's billing record is of its own payment, on that payment's account, for
        # the refund's amount, in the payment's currency; a REFUND record has its refund.
        "refund not matching its payment (refund, payment, account, amount, currency)",
        "SELECT b.record_id, b.payment_id, b.account_id, b.amount_minor, b.currency"
        " FROM billing_records b LEFT JOIN refunds r ON r.refund_id = b.record_id"
        " AND r.status = 'DONE' LEFT JOIN payments p ON p.payment_id = r.payment_id"
        " WHERE b.kind = 'REFUND' AND (r.refund_id IS NULL OR p.payment_id IS NULL"
        " OR b.payment_id != r.payment_id OR b.account_id != p.account_id"
        " OR b.amount_minor != r.amount_minor OR b.currency != r.currency"
        " OR r.currency != p.currency)",
    ),
    (
        "refund whose AR legs do not carry its amount (refund, debits, credits)",
        "SELECT r.refund_id, coalesce(sum(a.debit_minor), 0), coalesce(sum(a.credit_minor), 0)"
        " FROM refunds r LEFT JOIN ar_entries a ON a.document_id = r.refund_id"
        " AND a.payment_id = r.payment_id WHERE r.status = 'DONE' GROUP BY r.refund_id"
        " HAVING coalesce(sum(a.debit_minor), 0) != max(r.amount_minor)"
        " OR coalesce(sum(a.credit_minor), 0) != max(r.amount_minor)",
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
