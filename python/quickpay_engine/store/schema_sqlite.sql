-- The embedded store's schema, version 7 (PRAGMA user_version). Every table is STRICT:
-- a wrong type is an error, never a silent coercion of an amount.
CREATE TABLE IF NOT EXISTS subscribers (
    account_id       TEXT PRIMARY KEY,
    msisdn           TEXT NOT NULL UNIQUE,
    plan             INTEGER NOT NULL CHECK (plan IN (1, 2)),
    status           INTEGER NOT NULL CHECK (status BETWEEN 1 AND 4),
    currency         TEXT NOT NULL,
    balance_minor    INTEGER NOT NULL,
    -- The balance as last imported, less what settled since: balance_minor always equals
    -- opening_balance_minor plus the sum of the account's billing records' deltas.
    opening_balance_minor INTEGER NOT NULL,
    country          TEXT NOT NULL,
    sim_swapped_at_s INTEGER,
    created_at_s     INTEGER NOT NULL
) STRICT;

-- The carrier's version of each subscriber's record as the last live change left it
-- (UpsertSubscribers, the --subscriber-events feed): a change not newer than this is
-- ignored. A line only ever imported from a file has no row here.
CREATE TABLE IF NOT EXISTS subscriber_versions (
    account_id    TEXT PRIMARY KEY REFERENCES subscribers (account_id),
    version       INTEGER NOT NULL CHECK (version > 0),
    kind          INTEGER NOT NULL,
    changed_at_us INTEGER NOT NULL
) STRICT;

-- Payment history: one row per settled or declined payment, keyed by payment id and
-- by idempotency key, so a redo of the same batch changes nothing.
-- No index by account: nothing looks payments up by account, and one would cost a
-- page written at a random place per payment (version 6 dropped payments_by_account).
CREATE TABLE IF NOT EXISTS payments (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id          TEXT NOT NULL UNIQUE,
    idempotency_key     TEXT NOT NULL UNIQUE,
    fingerprint         TEXT NOT NULL,
    account_id          TEXT NOT NULL,
    msisdn              TEXT NOT NULL,
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    purpose             INTEGER NOT NULL,
    method_kind         INTEGER NOT NULL,
    method_display      TEXT NOT NULL,
    channel             TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    ip                  TEXT NOT NULL,
    status              INTEGER NOT NULL,
    decline_reason      TEXT NOT NULL,
    decline_detail      TEXT NOT NULL,
    confirmation_id     TEXT,
    settled_at_us       INTEGER,
    balance_after_minor INTEGER,
    service_state_after INTEGER,
    gateway             TEXT NOT NULL DEFAULT '',
    gateway_reference   TEXT NOT NULL DEFAULT '',
    refunded_minor      INTEGER NOT NULL DEFAULT 0,
    fraud_score         INTEGER,
    fraud_decision      TEXT NOT NULL DEFAULT '',
    fraud_reasons       TEXT NOT NULL DEFAULT '',
    created_at_us       INTEGER NOT NULL,
    -- The caller that sent it, as the access file names it ('' without one).
    sender              TEXT NOT NULL DEFAULT ''
) STRICT;

-- Billing: one record per settled payment and one per refund, keyed by the payment or
-- refund id (record_id), so a redo changes nothing.
CREATE TABLE IF NOT EXISTS billing_records (
    record_id           TEXT PRIMARY KEY,
    payment_id          TEXT NOT NULL,
    account_id          TEXT NOT NULL REFERENCES subscribers (account_id),
    kind                TEXT NOT NULL CHECK (kind IN ('PAYMENT', 'REFUND')),
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    -- What the record did to the account's balance: a bill payment lowers what is owed
    -- (negative), a top-up raises the credit (positive); a refund undoes its share.
    balance_delta_minor INTEGER NOT NULL,
    balance_after_minor INTEGER NOT NULL,
    created_at_us       INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS billing_by_payment ON billing_records (payment_id);
-- No index by account: the subscriber upsert takes what settled since the opening
-- balance from the subscriber's own row (balance less opening), and one would cost a
-- page written at a random place per payment (version 7 dropped billing_by_account).

-- Accounts-receivable ledger: double entry, every document's legs balance per currency.
-- A document is a payment (document_id = payment_id) or one of its refunds
-- (document_id = the refund id).
CREATE TABLE IF NOT EXISTS ar_entries (
    entry_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id   TEXT NOT NULL,
    payment_id    TEXT NOT NULL,
    leg           INTEGER NOT NULL,
    ar_account    TEXT NOT NULL,
    debit_minor   INTEGER NOT NULL CHECK (debit_minor >= 0),
    credit_minor  INTEGER NOT NULL CHECK (credit_minor >= 0),
    currency      TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    UNIQUE (document_id, leg)
) STRICT;

-- Provisioning: the rules that restore a line, and every change they made.
CREATE TABLE IF NOT EXISTS provisioning_rules (
    rule_id          TEXT PRIMARY KEY,
    priority         INTEGER NOT NULL,
    plan             INTEGER NOT NULL CHECK (plan IN (1, 2)),
    from_status      INTEGER NOT NULL CHECK (from_status BETWEEN 1 AND 4),
    to_status        INTEGER NOT NULL CHECK (to_status BETWEEN 1 AND 4),
    owed_max_minor   INTEGER NOT NULL,
    credit_min_minor INTEGER NOT NULL
) STRICT;

-- One change per document (a payment, or a refund: document_id is its id).
CREATE TABLE IF NOT EXISTS provisioning_changes (
    document_id   TEXT PRIMARY KEY,
    payment_id    TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    msisdn        TEXT NOT NULL,
    state_before  INTEGER NOT NULL,
    state_after   INTEGER NOT NULL,
    rule_id       TEXT NOT NULL,
    changed_at_us INTEGER NOT NULL
) STRICT;

-- The audit trail: append-only, hash-chained (see store/audit.py).
CREATE TABLE IF NOT EXISTS audit_log (
    seq       INTEGER PRIMARY KEY,
    prev_hash TEXT NOT NULL,
    content   TEXT NOT NULL,
    row_hash  TEXT NOT NULL
) STRICT;

-- Transactional outbox: events written with the change they describe; the cursor
-- orders them for WatchSettlements and the broker relay.
CREATE TABLE IF NOT EXISTS outbox (
    cursor          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    payment_id      TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at_us   INTEGER NOT NULL,
    published_at_us INTEGER
) STRICT;

CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (cursor) WHERE published_at_us IS NULL;

CREATE INDEX IF NOT EXISTS payments_by_gateway ON payments (gateway, settled_at_us);

-- Reconciliation: what a settlement report did not agree on, kept with an investigation
-- status so the work survives restarts; the id is stable, so re-running a report adds
-- nothing.
CREATE TABLE IF NOT EXISTS discrepancies (
    discrepancy_id       TEXT PRIMARY KEY,
    gateway              TEXT NOT NULL,
    business_day         TEXT NOT NULL,
    category             TEXT NOT NULL,
    payment_id           TEXT NOT NULL,
    gateway_reference    TEXT NOT NULL,
    gateway_amount_minor INTEGER,
    billing_amount_minor INTEGER,
    currency             TEXT NOT NULL,
    detail               TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'OPEN'
                         CHECK (status IN ('OPEN', 'INVESTIGATING', 'RESOLVED')),
    note                 TEXT NOT NULL DEFAULT '',
    first_seen_at_us     INTEGER NOT NULL,
    last_seen_at_us      INTEGER NOT NULL
) STRICT;

-- Payments fraud scoring held for review (FRAUD_REVIEW), for an analyst to work through.
CREATE TABLE IF NOT EXISTS review_queue (
    payment_id    TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    score         INTEGER NOT NULL,
    reasons       TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLEARED', 'CONFIRMED')),
    created_at_us INTEGER NOT NULL
) STRICT;

-- The saga's journal: a payment about to be sent to a gateway, written (with its
-- request, never a card number) before the gateway is called and removed in the
-- transaction that records how it ended. After a crash, recovery reads what it needs
-- to finish each unfinished payment from here.
CREATE TABLE IF NOT EXISTS settlement_attempts (
    payment_id      TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    intent          TEXT NOT NULL,
    created_at_us   INTEGER NOT NULL
) STRICT;

-- Refunds: one row per refund request, PENDING from before the gateway is called until
-- the gateway's answer is recorded, so recovery can finish it (the gateway is
-- idempotent on refund_id).
CREATE TABLE IF NOT EXISTS refunds (
    refund_id         TEXT PRIMARY KEY,
    idempotency_key   TEXT NOT NULL UNIQUE,
    payment_id        TEXT NOT NULL REFERENCES payments (payment_id),
    amount_minor      INTEGER NOT NULL CHECK (amount_minor > 0),
    currency          TEXT NOT NULL,
    reason            TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('PENDING', 'DONE', 'DECLINED')),
    gateway_reference TEXT NOT NULL DEFAULT '',
    decline_reason    TEXT NOT NULL DEFAULT '',
    decline_detail    TEXT NOT NULL DEFAULT '',
    created_at_us     INTEGER NOT NULL,
    finished_at_us    INTEGER
) STRICT;

CREATE INDEX IF NOT EXISTS refunds_by_payment ON refunds (payment_id);

-- Balance adjustments decided by other systems (AdjustBalance, store/adjustments.py):
-- PENDING from before the ledger's transfer (the journal recovery finishes), APPLIED in
-- the transaction that writes its AR legs, audit row and the balance's move, or
-- DECLINED. amount_minor is signed, in the subscriber's favour; balance_delta_minor is
-- what it did to subscribers.balance_minor.
CREATE TABLE IF NOT EXISTS balance_adjustments (
    adjustment_id       TEXT PRIMARY KEY,
    idempotency_key     TEXT NOT NULL UNIQUE,
    account_id          TEXT NOT NULL REFERENCES subscribers (account_id),
    amount_minor        INTEGER NOT NULL CHECK (amount_minor != 0),
    currency            TEXT NOT NULL,
    reason              TEXT NOT NULL,
    source_system       TEXT NOT NULL,
    allow_negative      INTEGER NOT NULL CHECK (allow_negative IN (0, 1)),
    status              TEXT NOT NULL CHECK (status IN ('PENDING', 'APPLIED', 'DECLINED')),
    balance_delta_minor INTEGER NOT NULL DEFAULT 0,
    balance_after_minor INTEGER NOT NULL DEFAULT 0,
    decline_reason      TEXT NOT NULL DEFAULT '',
    decline_detail      TEXT NOT NULL DEFAULT '',
    created_at_us       INTEGER NOT NULL,
    finished_at_us      INTEGER
) STRICT;

CREATE INDEX IF NOT EXISTS adjustments_by_account ON balance_adjustments (account_id);
