/**
 * @module kafka/txn-worker
 * A Bun Worker that makes librdkafka's blocking transaction calls (init, commit, abort) so they
 * never block the thread that serves HTTP. The producer handle is created and served by the main
 * thread; librdkafka's API is thread-safe, so only the pointer crosses over.
 *
 * NOTE: the worker's code is self-contained and started from a Blob URL rather than a file, so
 * the same code runs from source and inside the `bun build --compile` executable.
 */
import { symbols } from "./ffi.ts";

/**
 * Each op but "begin" is followed, when it succeeds, by `rd_kafka_begin_transaction`, so the
 * lane is already in its next transaction when the reply arrives: begin is a round trip to
 * librdkafka's thread that would otherwise block the main thread before every transaction.
 */
export type TxnOp = "init" | "commit" | "abort" | "begin";

export interface TxnRequest {
  id: number;
  op: TxnOp;
  rk: number;
  timeoutMs: number;
  /** The library the main thread loaded, so both threads use the same librdkafka. */
  libPath: string;
}

export interface TxnError {
  code: number;
  codeName: string;
  message: string;
  retriable: boolean;
  fatal: boolean;
  txnRequiresAbort: boolean;
}

export interface TxnReply {
  id: number;
  /** The op itself failed (no begin was tried). */
  error?: TxnError;
  /** The op succeeded but the following begin failed: the lane is not in a transaction. */
  beginError?: TxnError;
}

/**
 * The worker's source. NOTE: kept as text, not a function, so the bundler cannot rewrite its
 * `bun:ffi` import into a reference the worker does not have.
 */
const WORKER_SYMBOLS = [
  "rd_kafka_init_transactions",
  "rd_kafka_commit_transaction",
  "rd_kafka_abort_transaction",
  "rd_kafka_begin_transaction",
  "rd_kafka_error_code",
  "rd_kafka_error_name",
  "rd_kafka_error_string",
  "rd_kafka_error_is_retriable",
  "rd_kafka_error_is_fatal",
  "rd_kafka_error_txn_requires_abort",
  "rd_kafka_error_destroy",
] as const;

/** The signatures come from ffi.ts's table, serialised into the worker's source. */
const WORKER_SOURCE = `
import { dlopen } from "bun:ffi";
const SYMBOLS = ${JSON.stringify(Object.fromEntries(WORKER_SYMBOLS.map((name) => [name, symbols[name]])))};
let lib;
self.onmessage = (event) => {
  const { id, op, rk, timeoutMs, libPath } = event.data;
  lib ??= dlopen(libPath, SYMBOLS).symbols;
  const describe = (step, error) => {
    const e = {
      code: lib.rd_kafka_error_code(error),
      codeName: String(lib.rd_kafka_error_name(error)),
      message: step + ": " + lib.rd_kafka_error_string(error),
      retriable: lib.rd_kafka_error_is_retriable(error) === 1,
      fatal: lib.rd_kafka_error_is_fatal(error) === 1,
      txnRequiresAbort: lib.rd_kafka_error_txn_requires_abort(error) === 1,
    };
    lib.rd_kafka_error_destroy(error);
    return e;
  };
  const reply = { id };
  if (op !== "begin") {
    const fn = op === "init" ? lib.rd_kafka_init_transactions
      : op === "commit" ? lib.rd_kafka_commit_transaction
      : lib.rd_kafka_abort_transaction;
    const error = fn(rk, timeoutMs);
    if (error) reply.error = describe(op, error);
  }
  if (!reply.error) {
    const error = lib.rd_kafka_begin_transaction(rk);
    if (error) reply.beginError = describe("begin", error);
  }
  self.postMessage(reply);
};
`;

let url: string | undefined;

/** Starts one transaction worker thread. */
export function startTxnWorker(): Worker {
  url ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "application/javascript" }));
  return new Worker(url);
}
