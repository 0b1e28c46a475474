-- Payments are never looked up by account (the store, the core, `quickpay verify` and
-- the commands find them by payment id, idempotency key or gateway), and this index
-- cost a page written at a random place per payment: about 0.8 KB of WAL per payment
-- at 200,000 payments of history (benches/RESULTS.md, time-ordered ids).
DROP INDEX IF EXISTS payments_by_account;
