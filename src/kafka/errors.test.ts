/** KafkaError's classification, checked against librdkafka's own names for the codes. */
import { describe, expect, test } from "bun:test";
import { KafkaError } from "./errors.ts";

describe("KafkaError.fromCode", () => {
  test.each([
    [-195, "_TRANSPORT", true],
    [-192, "_MSG_TIMED_OUT", true],
    [-188, "_UNKNOWN_TOPIC", true],
    [-184, "_QUEUE_FULL", true],
    [-180, "_WAIT_COORD", true],
    [-166, "_TIMED_OUT_QUEUE", true],
    [-165, "_UNSUPPORTED_FEATURE", false],
    [-186, "_INVALID_ARG", false],
    [6, "NOT_LEADER_FOR_PARTITION", true],
    [7, "REQUEST_TIMED_OUT", true],
    [10, "MSG_SIZE_TOO_LARGE", false],
    [87, "INVALID_RECORD", false],
  ])("%i is %s, retriable: %p", (code, name, retriable) => {
    const err = KafkaError.fromCode(code, "context");
    expect(err.codeName).toBe(name);
    expect(err.retriable).toBe(retriable);
    expect(err.message.startsWith(`${name}: context: `)).toBe(true);
  });
});
