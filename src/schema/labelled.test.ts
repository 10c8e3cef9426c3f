/**
 * Producers label their values with schema ids, and every reader takes both wire formats: the
 * api's messages, the db-worker's results, and what the db-worker, log-worker and the api's
 * results reader decode. Hand-built messages, no broker.
 */
import { describe, expect, test } from "bun:test";
import { buildMessages, PAYLOAD_SCHEMA_ID_HEADER, type EventSchemas } from "../api/events.ts";
import { SAMPLE_COMMANDS } from "../../test/fakes.ts";
import { ResultWaiters } from "../api/results.ts";
import type { CommandResult } from "../contracts.ts";
import { resultMessage } from "../db/results.ts";
import type { Message, OutgoingMessage } from "../kafka/types.ts";
import { decodeLogMessage } from "../log/ship.ts";
import { decodeBatch } from "../db/batch.ts";
import { SCHEMA_ID_HEADER, valueSchema, wireSchemaId, type WireFormat } from "./wire.ts";

const def = SAMPLE_COMMANDS[0]!;
const topics = { events: "db-events", logs: "app-logs" };
const input = {
  id: "0190c0de-0000-7000-8000-000000000001",
  request: { command: def.command, payload: { name: "a", email: "b@c" } } as never,
  def,
  payload: { name: "a", email: "b@c" },
  idempotencyKey: "k1",
  now: new Date(0),
};

const schemas = (wire: WireFormat): EventSchemas => ({
  events: valueSchema(11, wire),
  logs: valueSchema(12, wire),
  payloads: new Map([[def, "5"]]),
});

/** What a consumer would hand out for a produced message. */
function received(m: OutgoingMessage, offset = 0): Message {
  const value = typeof m.value === "string" ? new TextEncoder().encode(m.value) : (m.value as Uint8Array);
  return { topic: m.topic, partition: 0, offset, key: null, value, headers: m.headers ?? {}, timestamp: 0 };
}

describe("the api's events", () => {
  test("without a schema registry: exactly as before, no schema header", () => {
    const [cmd, log] = buildMessages(input, topics);
    expect(typeof cmd!.value).toBe("string");
    expect(cmd!.headers![SCHEMA_ID_HEADER]).toBeUndefined();
    expect(log!.headers).toBe(cmd!.headers);
  });

  for (const wire of ["json", "confluent"] as const) {
    test(`${wire}: each message carries its own schema id, and the readers decode it`, () => {
      const [cmd, log] = buildMessages(input, topics, schemas(wire));
      expect(cmd!.headers).toMatchObject({ [SCHEMA_ID_HEADER]: "11", [PAYLOAD_SCHEMA_ID_HEADER]: "5", "kitsune-id": input.id });
      expect(log!.headers![SCHEMA_ID_HEADER]).toBe("12");
      expect(log!.headers![PAYLOAD_SCHEMA_ID_HEADER]).toBeUndefined();
      const cmdIn = received(cmd!);
      const logIn = received(log!, 1);
      expect(wireSchemaId(cmdIn.value!)).toBe(wire === "confluent" ? 11 : undefined);
      expect(wireSchemaId(logIn.value!)).toBe(wire === "confluent" ? 12 : undefined);

      const decoded = decodeBatch([cmdIn], "db-events.dlq");
      expect(decoded.deadLetters).toEqual([]);
      expect(decoded.events[0]).toMatchObject({ id: input.id, command: "create_user", payload: input.payload });

      const entry = decodeLogMessage(logIn);
      expect(entry.ok).toBe(true);
    });
  }
});

describe("the db-worker's results", () => {
  const result: CommandResult = { id: input.id, idempotency_key: "k1", command: "create_user", version: "1", status: "applied", rows_affected: 1, finished_at: "t" };

  for (const wire of ["json", "confluent"] as const) {
    test(`${wire}: labelled, and the api's results reader takes them`, async () => {
      const m = resultMessage(result, null, "db-results", valueSchema(13, wire));
      expect(m.headers![SCHEMA_ID_HEADER]).toBe("13");
      const waiters = new ResultWaiters();
      const waiting = waiters.expect(input.id)!;
      expect(waiters.handleBatch([received(m)])).toBe(1);
      expect(await waiting.wait(1000)).toEqual(result);
    });
  }

  test("without a schema registry: no header, plain JSON", () => {
    const m = resultMessage(result, null, "db-results");
    expect(m.headers![SCHEMA_ID_HEADER]).toBeUndefined();
    expect(JSON.parse(m.value as string)).toEqual(result);
  });
});
