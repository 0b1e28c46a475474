-- The carrier's version of each subscriber's record as the last live change left it
-- (UpsertSubscribers, the --subscriber-events feed): a change not newer than this is
-- ignored. A line only ever imported from a file has no row here.
CREATE TABLE subscriber_versions (
    account_id    TEXT PRIMARY KEY REFERENCES subscribers (account_id),
    version       BIGINT NOT NULL CHECK (version > 0),
    kind          SMALLINT NOT NULL,
    changed_at_us BIGINT NOT NULL
);
