-- Payments record the caller that sent them, as the access file names it ('' for
-- payments made without one): a gateway may read back only the payments it sent.
ALTER TABLE payments ADD COLUMN sender TEXT NOT NULL DEFAULT '';
