-- processed_at only grows with the table, so a BRIN index serves the pruning query
-- (DELETE … WHERE processed_at < now() - interval '30 days') at a fraction of a B-tree's upkeep:
-- one less B-tree insert for every command the db-worker applies.
DROP INDEX IF EXISTS idempotency_log_processed_at;
CREATE INDEX idempotency_log_processed_at ON idempotency_log USING brin (processed_at);
