-- A command whose idempotency key was processed before has an id of its own (the api answered it
-- with one), but no idempotency_log row. Its id is recorded here, in the same transaction as the
-- batch, so GET /commands/:id can answer `duplicate` and point at the original. Pruned with the log.
CREATE TABLE idempotency_duplicates (
  event_id     text        PRIMARY KEY,
  key          text        NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now()
);
