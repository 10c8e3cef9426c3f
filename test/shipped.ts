/**
 * @module test/shipped
 * What `sql/migrations/` ships, as the tests expect to find it: one list for the loader's test and
 * the migrator's, so a new migration is written down once.
 */

/** `[version, name]` of every shipped migration, in order. */
export const SHIPPED_MIGRATIONS: [number, string][] = [
  [1, "init"],
  [2, "users_display_name"],
  [3, "idempotency_log_event_id"],
  [4, "idempotency_log_processed_at_brin"],
  [5, "idempotency_duplicates"],
  [6, "idempotency_log_event_id_hash"],
];
