/**
 * @module kafka/client
 * One librdkafka handle and its event queue. librdkafka writes a byte to a pipe whenever the
 * queue goes from empty to non-empty (`rd_kafka_queue_io_event_enable`); the read end is an async
 * stream on Bun's event loop, and each wake-up drains the queues. No C callbacks, no busy polling.
 *
 * NOTE: one pipe serves every client of the process, read through `Bun.file(fd).stream()`.
 * A pipe per client read with `fs.createReadStream` exhausted Bun's thread pool (a third
 * client's wake-ups stalled for seconds), and a destroyed fs stream went on swallowing wake-ups
 * meant for its successor. The stream is cancelled when the last client goes, so the process can
 * exit, and the pipe itself is kept for the next client.
 */
import { CONF_OK, cstr, EVENT, libc, ptr, rdk, type Pointer } from "./ffi.ts";
import { KafkaError } from "./errors.ts";
import type { KafkaConfig } from "./types.ts";

const O_CLOEXEC = 0o2000000;

/** Turns a config object into `rd_kafka_conf_t *`, reporting the first key librdkafka rejects. */
export function buildConf(config: KafkaConfig, eventMask: number): Pointer {
  const lib = rdk();
  const conf = lib.rd_kafka_conf_new()!;
  const errstr = new Uint8Array(512);
  for (const [key, raw] of Object.entries(config)) {
    if (raw === undefined) continue;
    const value = String(raw);
    if (lib.rd_kafka_conf_set(conf, ptr(cstr(key)), ptr(cstr(value)), ptr(errstr), errstr.length) !== CONF_OK) {
      lib.rd_kafka_conf_destroy(conf);
      const reason = new TextDecoder().decode(errstr.subarray(0, errstr.indexOf(0)));
      throw new KafkaError(-186, `librdkafka rejected ${key}=${JSON.stringify(value)}: ${reason}`, {
        codeName: "_INVALID_ARG",
        retriable: false,
      });
    }
  }
  lib.rd_kafka_conf_set_events(conf, eventMask);
  return conf;
}

export type EventHandler = (event: Pointer, type: number) => void;

/**
 * A client's own way to poll its event queue: it may serve some events itself (the consumer
 * takes fetched messages in bulk) and return the next one for the generic handler, `"empty"`
 * when the queue is, or `"yield"` when it did a turn's worth of work.
 */
export type Poller = (queue: Pointer) => Pointer | "empty" | "yield";

/** Events (or fetched messages) served in one turn before drain() yields to the event loop. */
export const EVENTS_PER_TURN = 5000;

/** The process-wide wake-up pipe and the clients it wakes. */
const wakeup = {
  readFd: -1,
  writeFd: -1,
  reader: undefined as { read(): Promise<{ done: boolean }>; cancel(): Promise<void> } | undefined,
  timer: undefined as ReturnType<typeof setInterval> | undefined,
  clients: new Set<NativeClient>(),
};

function drainAll(): void {
  for (const c of wakeup.clients) c.drain();
}

function register(client: NativeClient): number {
  if (wakeup.writeFd < 0) {
    const fds = new Int32Array(2);
    if (libc.pipe2(ptr(fds), O_CLOEXEC) !== 0) throw new Error("pipe2() failed");
    wakeup.readFd = fds[0]!;
    wakeup.writeFd = fds[1]!;
  }
  wakeup.clients.add(client);
  if (!wakeup.reader) {
    const reader = Bun.file(wakeup.readFd).stream().getReader();
    wakeup.reader = reader;
    void (async () => {
      for (;;) {
        const { done } = await reader.read();
        if (done) return;
        drainAll();
      }
    })().catch(() => {});
    // A slow safety net, not the mechanism: the pipe wakes us for every new event.
    wakeup.timer = setInterval(drainAll, 1000);
  }
  return wakeup.writeFd;
}

/** The last client gone: stop reading so the process can exit; the pipe stays for the next one. */
function unregister(client: NativeClient): void {
  wakeup.clients.delete(client);
  if (wakeup.clients.size > 0 || !wakeup.reader) return;
  void wakeup.reader.cancel().catch(() => {});
  wakeup.reader = undefined;
  clearInterval(wakeup.timer);
}

/**
 * Owns `rd_kafka_t *`, its main event queue and the wake-up pipe; frees each exactly once.
 */
export class NativeClient {
  readonly rk: Pointer;
  readonly queue: Pointer;
  /** Latest statistics (librdkafka's JSON), when `statistics.interval.ms` is set. */
  stats: Record<string, any> | undefined;
  lastError: KafkaError | undefined;
  private destroyed = false;
  private draining = false;
  private eventQueue: Pointer = null as unknown as Pointer;
  /** More queues served by drain(), owned and freed by this client. */
  private readonly sideQueues: Pointer[] = [];
  /** Set by the owner to poll the event queue itself (see `Poller`). */
  poller: Poller | undefined;

  constructor(
    type: number,
    config: KafkaConfig,
    eventMask: number,
    private readonly onEvent: EventHandler,
    private readonly onError: (err: KafkaError) => void = () => {},
    /** Last changes to the configuration (e.g. a C callback) before the handle is created. */
    configure?: (conf: Pointer) => void,
  ) {
    const lib = rdk();
    const conf = buildConf(config, eventMask | EVENT.ERROR | EVENT.STATS);
    configure?.(conf);
    const errstr = new Uint8Array(512);
    const rk = lib.rd_kafka_new(type, conf, ptr(errstr), errstr.length);
    if (!rk) {
      lib.rd_kafka_conf_destroy(conf);
      const reason = new TextDecoder().decode(errstr.subarray(0, errstr.indexOf(0)));
      throw new KafkaError(-186, `cannot create Kafka client: ${reason}`, { codeName: "_INVALID_ARG", retriable: false });
    }
    this.rk = rk;
    this.queue = lib.rd_kafka_queue_get_main(rk)!;
  }

  /** Starts delivering events of `queue`; call once the owner is ready to handle them. */
  startEvents(queue: Pointer = this.queue): void {
    this.eventQueue = queue;
    const fd = register(this);
    rdk().rd_kafka_queue_io_event_enable(queue, fd, ptr(cstr("1")), 1);
    this.drain();
  }

  /** Also serves `queue` (e.g. commit results apart from fetched messages), and frees it in destroy(). */
  serveQueue(queue: Pointer): void {
    this.sideQueues.push(queue);
    const fd = register(this);
    rdk().rd_kafka_queue_io_event_enable(queue, fd, ptr(cstr("1")), 1);
  }

  /** Serves every event waiting on the queue, yielding to the event loop every few thousand. */
  drain(): void {
    const queue = this.eventQueue;
    if (!queue || this.destroyed || this.draining) return;
    this.draining = true;
    const lib = rdk();
    try {
      for (const side of this.sideQueues) {
        for (let ev = lib.rd_kafka_queue_poll(side, 0); ev; ev = lib.rd_kafka_queue_poll(side, 0)) {
          try {
            this.handle(ev);
          } finally {
            lib.rd_kafka_event_destroy(ev);
          }
          if (this.destroyed) return;
        }
      }
      for (let i = 0; i < EVENTS_PER_TURN; i++) {
        const ev = this.poller ? this.poller(queue) : lib.rd_kafka_queue_poll(queue, 0);
        if (ev === "yield") break;
        if (!ev || ev === "empty") return;
        try {
          this.handle(ev);
        } finally {
          lib.rd_kafka_event_destroy(ev);
        }
        if (this.destroyed) return;
      }
      setImmediate(() => this.drain());
    } finally {
      this.draining = false;
    }
  }

  private handle(ev: Pointer): void {
    const lib = rdk();
    const type = lib.rd_kafka_event_type(ev);
    if (type === EVENT.STATS) {
      const json = String(lib.rd_kafka_event_stats(ev));
      try {
        if (json) this.stats = JSON.parse(json);
      } catch {}
      return;
    }
    if (type === EVENT.ERROR) {
      const code = lib.rd_kafka_event_error(ev);
      const fatal = lib.rd_kafka_event_error_is_fatal(ev) === 1;
      const err = new KafkaError(code, String(lib.rd_kafka_event_error_string(ev)), { fatal });
      this.lastError = err;
      this.onError(err);
      return;
    }
    this.onEvent(ev, type);
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** Frees the queue, the handle and the pipe. Safe to call twice. `flags`: rd_kafka_destroy_flags'. */
  destroy(flags = 0): void {
    if (this.destroyed) return;
    this.destroyed = true;
    const lib = rdk();
    if (this.eventQueue) {
      lib.rd_kafka_queue_io_event_enable(this.eventQueue, -1, null, 0);
      unregister(this);
    }
    for (const side of this.sideQueues) {
      lib.rd_kafka_queue_io_event_enable(side, -1, null, 0);
      lib.rd_kafka_queue_destroy(side);
    }
    if (this.eventQueue && this.eventQueue !== this.queue) lib.rd_kafka_queue_destroy(this.eventQueue);
    lib.rd_kafka_queue_destroy(this.queue);
    lib.rd_kafka_destroy_flags(this.rk, flags);
  }
}
