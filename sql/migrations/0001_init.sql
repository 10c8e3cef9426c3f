-- The users table the example commands work on, and the db-worker's idempotency log.
-- NOTE: no schema names here: migrations run in the first schema of the connection's search_path.

CREATE TABLE users (
  id         bigserial   PRIMARY KEY,
  name       text        NOT NULL,
  email      text        NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per idempotency key the db-worker has processed. The row, the command's effect and the
-- Kafka offset's batch commit in one transaction, so a redelivered event finds its key here.
CREATE TABLE idempotency_log (
  key           text        PRIMARY KEY,
  event_id      text        NOT NULL,
  command       text,
  version       text,
  status        text        NOT NULL CHECK (status IN ('applied', 'failed')),
  rows_affected int,
  error         jsonb,
  processed_at  timestamptz NOT NULL DEFAULT now()
);

-- For pruning old keys (DELETE … WHERE processed_at < now() - interval '30 days').
CREATE INDEX idempotency_log_processed_at ON idempotency_log (processed_at);
