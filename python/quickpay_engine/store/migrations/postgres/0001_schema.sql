-- The PostgreSQL store's schema, version 1: the same tables, columns and meaning as
-- schema_sqlite.sql. Every database the engine writes (billing, AR ledger,
-- provisioning; one or several) gets the whole schema, so any of them can hold any
-- domain and `quickpay db migrate` treats them alike; each domain writes only its own
-- tables (see store/postgres.py).
CREATE TABLE subscribers (
    account_id       TEXT PRIMARY KEY,
    msisdn           TEXT NOT NULL UNIQUE,
    plan             SMALLINT NOT NULL CHECK (plan IN (1, 2)),
    status           SMALLINT NOT NULL CHECK (status BETWEEN 1 AND 4),
    currency         TEXT NOT NULL,
    balance_minor    BIGINT NOT NULL,
    -- The balance as last imported, less what settled since: balance_minor always equals
    -- opening_balance_minor plus the sum of the account's billing records' deltas.
    opening_balance_minor BIGINT NOT NULL,
    country          TEXT NOT NULL,
    sim_swapped_at_s BIGINT,
    created_at_s     BIGINT NOT NULL
);

-- Payment history: one row per settled or declined payment, keyed by payment id and
-- by idempotency key, so a redo of the same batch changes nothing. seq is given by the
-- store (the confirmation's ledger sequence), not by a sequence object.
CREATE TABLE payments (
    seq                 BIGINT PRIMARY KEY,
    payment_id          TEXT NOT NULL UNIQUE,
    idempotency_key     TEXT NOT NULL UNIQUE,
    fingerprint         TEXT NOT NULL,
    account_id          TEXT NOT NULL,
    msisdn              TEXT NOT NULL,
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    purpose             SMALLINT NOT NULL,
    method_kind         SMALLINT NOT NULL,
    method_display      TEXT NOT NULL,
    channel             TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    ip                  TEXT NOT NULL,
    status              SMALLINT NOT NULL,
    decline_reason      TEXT NOT NULL,
    decline_detail      TEXT NOT NULL,
    confirmation_id     TEXT,
    settled_at_us       BIGINT,
    balance_after_minor BIGINT,
    service_state_after SMALLINT,
    gateway             TEXT NOT NULL DEFAULT '',
    gateway_reference   TEXT NOT NULL DEFAULT '',
    refunded_minor      BIGINT NOT NULL DEFAULT 0,
    fraud_score         INTEGER,
    fraud_decision      TEXT NOT NULL DEFAULT '',
    fraud_reasons       TEXT NOT NULL DEFAULT '',
    created_at_us       BIGINT NOT NULL
);

CREATE INDEX payments_by_account ON payments (account_id, seq);
CREATE INDEX payments_by_gateway ON payments (gateway, settled_at_us);

-- Billing: one record per settled payment and one per refund, keyed by the payment or
-- refund id (record_id), so a redo changes nothing.
CREATE TABLE billing_records (
    record_id           TEXT PRIMARY KEY,
    payment_id          TEXT NOT NULL,
    account_id          TEXT NOT NULL REFERENCES subscribers (account_id),
    kind                TEXT NOT NULL CHECK (kind IN ('PAYMENT', 'REFUND')),
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    -- What the record did to the account's balance: a bill payment lowers what is owed
    -- (negative), a top-up raises the credit (positive); a refund undoes its share.
    balance_delta_minor BIGINT NOT NULL,
    balance_after_minor BIGINT NOT NULL,
    created_at_us       BIGINT NOT NULL
);

CREATE INDEX billing_by_account ON billing_records (account_id);
CREATE INDEX billing_by_payment ON billing_records (payment_id);

-- Accounts-receivable ledger: double entry, every document's legs balance per currency.
-- A document is a payment (document_id = payment_id) or one of its refunds
-- (document_id = the refund id).
CREATE TABLE ar_entries (
    entry_id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id   TEXT NOT NULL,
    payment_id    TEXT NOT NULL,
    leg           SMALLINT NOT NULL,
    ar_account    TEXT NOT NULL,
    debit_minor   BIGINT NOT NULL CHECK (debit_minor >= 0),
    credit_minor  BIGINT NOT NULL CHECK (credit_minor >= 0),
    currency      TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    UNIQUE (document_id, leg)
);

CREATE INDEX ar_by_payment ON ar_entries (payment_id);

-- Provisioning: the rules that restore a line, and every change they made.
CREATE TABLE provisioning_rules (
    rule_id          TEXT PRIMARY KEY,
    priority         INTEGER NOT NULL,
    plan             SMALLINT NOT NULL CHECK (plan IN (1, 2)),
    from_status      SMALLINT NOT NULL CHECK (from_status BETWEEN 1 AND 4),
    to_status        SMALLINT NOT NULL CHECK (to_status BETWEEN 1 AND 4),
    owed_max_minor   BIGINT NOT NULL,
    credit_min_minor BIGINT NOT NULL
);

-- One change per document (a payment, or a refund: document_id is its id).
CREATE TABLE provisioning_changes (
    document_id   TEXT PRIMARY KEY,
    payment_id    TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    msisdn        TEXT NOT NULL,
    state_before  SMALLINT NOT NULL,
    state_after   SMALLINT NOT NULL,
    rule_id       TEXT NOT NULL,
    changed_at_us BIGINT NOT NULL
);

-- The audit trail: append-only, hash-chained (see store/audit.py).
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    prev_hash TEXT NOT NULL,
    content   TEXT NOT NULL,
    row_hash  TEXT NOT NULL
);

-- Transactional outbox: events written with the change they describe; the cursor
-- orders them for WatchSettlements and the broker relay. One writer (the store thread)
-- commits in cursor order, so a reader never sees a lower cursor appear later.
CREATE TABLE outbox (
    cursor          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    payment_id      TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    published_at_us BIGINT
);

CREATE INDEX outbox_unpublished ON outbox (cursor) WHERE published_at_us IS NULL;
CREATE INDEX outbox_by_payment ON outbox (payment_id);

-- Reconciliation: what a settlement report did not agree on, with an investigation status.
CREATE TABLE discrepancies (
    discrepancy_id       TEXT PRIMARY KEY,
    gateway              TEXT NOT NULL,
    business_day         TEXT NOT NULL,
    category             TEXT NOT NULL,
    payment_id           TEXT NOT NULL,
    gateway_reference    TEXT NOT NULL,
    gateway_amount_minor BIGINT,
    billing_amount_minor BIGINT,
    currency             TEXT NOT NULL,
    detail               TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'OPEN'
                         CHECK (status IN ('OPEN', 'INVESTIGATING', 'RESOLVED')),
    note                 TEXT NOT NULL DEFAULT '',
    first_seen_at_us     BIGINT NOT NULL,
    last_seen_at_us      BIGINT NOT NULL
);

-- Payments fraud scoring held for review (FRAUD_REVIEW), for an analyst to work through.
CREATE TABLE review_queue (
    payment_id    TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    score         INTEGER NOT NULL,
    reasons       TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLEARED', 'CONFIRMED')),
    created_at_us BIGINT NOT NULL
);

-- The saga's journal: a payment about to be sent to a gateway, written (with its
-- request, never a card number) before the gateway is called and removed in the
-- transaction that records how it ended. After a crash, recovery reads what it needs
-- to finish each unfinished payment from here.
CREATE TABLE settlement_attempts (
    payment_id      TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    intent          TEXT NOT NULL,
    created_at_us   BIGINT NOT NULL
);

-- Refunds: one row per refund request, PENDING from before the gateway is called until
-- the gateway's answer is recorded, so recovery can finish it (the gateway is
-- idempotent on refund_id).
CREATE TABLE refunds (
    refund_id         TEXT PRIMARY KEY,
    idempotency_key   TEXT NOT NULL UNIQUE,
    payment_id        TEXT NOT NULL REFERENCES payments (payment_id),
    amount_minor      BIGINT NOT NULL CHECK (amount_minor > 0),
    currency          TEXT NOT NULL,
    reason            TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('PENDING', 'DONE', 'DECLINED')),
    gateway_reference TEXT NOT NULL DEFAULT '',
    decline_reason    TEXT NOT NULL DEFAULT '',
    decline_detail    TEXT NOT NULL DEFAULT '',
    created_at_us     BIGINT NOT NULL,
    finished_at_us    BIGINT
);

CREATE INDEX refunds_by_payment ON refunds (payment_id);
