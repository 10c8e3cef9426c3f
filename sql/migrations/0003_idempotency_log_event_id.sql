-- GET /commands/:id looks a command up by its event id.
CREATE INDEX IF NOT EXISTS idempotency_log_event_id ON idempotency_log (event_id);
