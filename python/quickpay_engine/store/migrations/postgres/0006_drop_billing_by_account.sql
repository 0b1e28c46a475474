-- The subscriber upsert takes what settled and was adjusted since the opening balance
-- from the subscriber's own row (balance_minor - opening_balance_minor) instead of
-- summing billing_records by account, so nothing reads this index any more; it cost a
-- page written at a random place per payment (about 0.3 KB of WAL per payment at
-- 200,000 payments of history, benches/RESULTS.md).
DROP INDEX IF EXISTS billing_by_account;
