-- Balance adjustments decided by other systems (AdjustBalance, store/adjustments.py):
-- PENDING from before the ledger's transfer (the journal recovery finishes), APPLIED in
-- the transaction that writes its AR legs, audit row and the balance's move, or
-- DECLINED. amount_minor is signed, in the subscriber's favour; balance_delta_minor is
-- what it did to subscribers.balance_minor. The table lives in the billing database.
CREATE TABLE balance_adjustments (
    adjustment_id       TEXT PRIMARY KEY,
    idempotency_key     TEXT NOT NULL UNIQUE,
    account_id          TEXT NOT NULL REFERENCES subscribers (account_id),
    amount_minor        BIGINT NOT NULL CHECK (amount_minor != 0),
    currency            TEXT NOT NULL,
    reason              TEXT NOT NULL,
    source_system       TEXT NOT NULL,
    allow_negative      SMALLINT NOT NULL CHECK (allow_negative IN (0, 1)),
    status              TEXT NOT NULL CHECK (status IN ('PENDING', 'APPLIED', 'DECLINED')),
    balance_delta_minor BIGINT NOT NULL DEFAULT 0,
    balance_after_minor BIGINT NOT NULL DEFAULT 0,
    decline_reason      TEXT NOT NULL DEFAULT '',
    decline_detail      TEXT NOT NULL DEFAULT '',
    created_at_us       BIGINT NOT NULL,
    finished_at_us      BIGINT
);

CREATE INDEX adjustments_by_account ON balance_adjustments (account_id);
