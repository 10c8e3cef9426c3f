/**
 * @module kafka/errors
 * One error type for everything the binding reports: librdkafka's code and name, and whether
 * retrying can help (`retriable`) or the client is unusable (`fatal`).
 */
import { errName, errString, rdk, type Pointer } from "./ffi.ts";

export class KafkaError extends Error {
  readonly code: number;
  /** librdkafka's name, e.g. `_MSG_TIMED_OUT`, `TOPIC_ALREADY_EXISTS`. */
  readonly codeName: string;
  readonly retriable: boolean;
  readonly fatal: boolean;
  /** Transactional producer: the transaction must be aborted. */
  readonly txnRequiresAbort: boolean;

  constructor(
    code: number,
    message: string,
    opts: { codeName?: string; retriable?: boolean; fatal?: boolean; txnRequiresAbort?: boolean } = {},
  ) {
    const codeName = opts.codeName ?? errName(code);
    super(`${codeName}: ${message}`);
    this.name = "KafkaError";
    this.code = code;
    this.codeName = codeName;
    this.retriable = opts.retriable ?? RETRIABLE.has(code);
    this.fatal = opts.fatal ?? false;
    this.txnRequiresAbort = opts.txnRequiresAbort ?? false;
  }

  /** From a bare `rd_kafka_resp_err_t`. */
  static fromCode(code: number, context?: string): KafkaError {
    const text = errString(code);
    return new KafkaError(code, context ? `${context}: ${text}` : text);
  }

  /** From an `rd_kafka_error_t *`, which it destroys. */
  static fromErrorPtr(error: Pointer, context?: string): KafkaError {
    const lib = rdk();
    try {
      const text = String(lib.rd_kafka_error_string(error));
      return new KafkaError(lib.rd_kafka_error_code(error), context ? `${context}: ${text}` : text, {
        codeName: String(lib.rd_kafka_error_name(error)),
        retriable: lib.rd_kafka_error_is_retriable(error) === 1,
        fatal: lib.rd_kafka_error_is_fatal(error) === 1,
        txnRequiresAbort: lib.rd_kafka_error_txn_requires_abort(error) === 1,
      });
    } finally {
      lib.rd_kafka_error_destroy(error);
    }
  }
}

/** Codes where the same request may succeed later (broker down, timeouts, leader moves). */
const RETRIABLE = new Set<number>([
  -195, // _TRANSPORT
  -187, // _ALL_BROKERS_DOWN
  -192, // _MSG_TIMED_OUT
  -185, // _TIMED_OUT
  -184, // _QUEUE_FULL
  -188, // _UNKNOWN_TOPIC (transient while metadata refreshes)
  -180, // _WAIT_COORD
  -166, // _TIMED_OUT_QUEUE
  3, // UNKNOWN_TOPIC_OR_PART
  5, // LEADER_NOT_AVAILABLE
  6, // NOT_LEADER_FOR_PARTITION
  7, // REQUEST_TIMED_OUT
  13, // NETWORK_EXCEPTION
  14, // COORDINATOR_LOAD_IN_PROGRESS
  15, // COORDINATOR_NOT_AVAILABLE
  16, // NOT_COORDINATOR
  19, // NOT_ENOUGH_REPLICAS
  20, // NOT_ENOUGH_REPLICAS_AFTER_APPEND
  51, // CONCURRENT_TRANSACTIONS
]);
