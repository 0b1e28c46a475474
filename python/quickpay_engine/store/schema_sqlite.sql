-- The embedded store's schema. Every table is STRICT: a wrong type is an error, never a
-- silent coercion of an amount.
CREATE TABLE IF NOT EXISTS subscribers (
    account_id       TEXT PRIMARY KEY,
    msisdn           TEXT NOT NULL UNIQUE,
    plan             INTEGER NOT NULL CHECK (plan IN (1, 2)),
    status           INTEGER NOT NULL CHECK (status BETWEEN 1 AND 4),
    currency         TEXT NOT NULL,
    balance_minor    INTEGER NOT NULL,
    country          TEXT NOT NULL,
    sim_swapped_at_s INTEGER,
    created_at_s     INTEGER NOT NULL
) STRICT;

-- Payment history: one row per settled or declined payment, keyed by payment id and
-- by idempotency key, so a redo of the same batch changes nothing.
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
    created_at_us       INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS payments_by_account ON payments (account_id, seq);
