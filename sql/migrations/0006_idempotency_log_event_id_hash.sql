-- GET /commands/:id only ever looks an event id up by equality: a hash index serves it and costs
-- the db-worker less per applied command than the B-tree of 0003 (random UUIDs, long keys).
DROP INDEX IF EXISTS idempotency_log_event_id;
CREATE INDEX idempotency_log_event_id ON idempotency_log USING hash (event_id);
