/**
 * @module kafka/admin
 * Topic administration and cluster metadata. CreateTopics/DeleteTopics are asynchronous (their
 * results arrive as events); metadata and watermark queries block for at most their timeout, so
 * use them from tools and start-up, not from request handlers.
 */
import { NativeClient } from "./client.ts";
import {
  ADMIN_OP,
  cstr,
  ERR,
  EVENT,
  METADATA,
  METADATA_BROKER,
  METADATA_PARTITION,
  METADATA_TOPIC,
  ptr,
  rdk,
  read,
  readCString,
  RD_KAFKA_PRODUCER,
  type Pointer,
} from "./ffi.ts";
import { KafkaError } from "./errors.ts";
import type { KafkaConfig } from "./types.ts";

export interface TopicSpec {
  name: string;
  partitions: number;
  replicationFactor?: number;
  /** Topic-level configs, e.g. `{ "retention.ms": "604800000" }`. */
  config?: Record<string, string>;
}

export interface ClusterMetadata {
  brokers: { id: number; host: string; port: number }[];
  topics: { name: string; partitions: { id: number; leader: number; error: number }[]; error: number }[];
}

export class Admin {
  private readonly client: NativeClient;
  private readonly results = new Map<number, (ev: Pointer, type: number) => void>();
  private readonly rejecters = new Map<number, (err: KafkaError) => void>();
  private nextId = 1;

  constructor(config: KafkaConfig) {
    this.client = new NativeClient(RD_KAFKA_PRODUCER, config, 0, (ev, type) => {
      const id = rdk().rd_kafka_event_opaque(ev) as unknown as number;
      const done = this.results.get(id);
      if (done) {
        this.results.delete(id);
        this.rejecters.delete(id);
        done(ev, type);
      }
    });
    this.client.startEvents();
  }

  /** Creates the topics that do not exist yet; "already exists" is not an error. */
  createTopics(topics: TopicSpec[], timeoutMs = 15_000): Promise<{ created: string[]; existing: string[] }> {
    const lib = rdk();
    const errstr = new Uint8Array(512);
    const handles: Pointer[] = [];
    try {
      for (const t of topics) {
        const h = lib.rd_kafka_NewTopic_new(ptr(cstr(t.name)), t.partitions, t.replicationFactor ?? -1, ptr(errstr), errstr.length);
        if (!h) throw new KafkaError(-186, `topic ${t.name}: ${new TextDecoder().decode(errstr.subarray(0, errstr.indexOf(0)))}`);
        handles.push(h);
        for (const [k, v] of Object.entries(t.config ?? {})) lib.rd_kafka_NewTopic_set_config(h, ptr(cstr(k)), ptr(cstr(v)));
      }
      return this.request(ADMIN_OP.CREATETOPICS, timeoutMs, (opts) => {
        const arr = new BigUint64Array(handles.map((h) => BigInt(h as unknown as number)));
        lib.rd_kafka_CreateTopics(this.client.rk, ptr(arr), handles.length, opts, this.client.queue);
      }, (ev) => topicResults(ev, "create")).then((results) => {
        const created: string[] = [];
        const existing: string[] = [];
        for (const r of results) {
          if (r.error === ERR.NO_ERROR) created.push(r.name);
          else if (r.error === ERR.TOPIC_ALREADY_EXISTS) existing.push(r.name);
          else throw new KafkaError(r.error, `cannot create topic ${r.name}: ${r.message}`);
        }
        return { created, existing };
      });
    } finally {
      for (const h of handles) lib.rd_kafka_NewTopic_destroy(h);
    }
  }

  /** Deletes topics; missing ones are ignored. */
  deleteTopics(names: string[], timeoutMs = 15_000): Promise<void> {
    const lib = rdk();
    const handles = names.map((n) => lib.rd_kafka_DeleteTopic_new(ptr(cstr(n)))!);
    try {
      return this.request(ADMIN_OP.DELETETOPICS, timeoutMs, (opts) => {
        const arr = new BigUint64Array(handles.map((h) => BigInt(h as unknown as number)));
        lib.rd_kafka_DeleteTopics(this.client.rk, ptr(arr), handles.length, opts, this.client.queue);
      }, (ev) => topicResults(ev, "delete")).then((results) => {
        for (const r of results) {
          if (r.error !== ERR.NO_ERROR && r.error !== ERR.UNKNOWN_TOPIC_OR_PART) {
            throw new KafkaError(r.error, `cannot delete topic ${r.name}: ${r.message}`);
          }
        }
      });
    } finally {
      for (const h of handles) lib.rd_kafka_DeleteTopic_destroy(h);
    }
  }

  /**
   * Runs one admin request. `parse` reads the result event synchronously: the event is
   * destroyed as soon as the handler returns.
   */
  private request<R>(op: number, timeoutMs: number, send: (opts: Pointer) => void, parse: (ev: Pointer) => R): Promise<R> {
    const lib = rdk();
    const id = this.nextId++;
    const opts = lib.rd_kafka_AdminOptions_new(this.client.rk, op)!;
    const errstr = new Uint8Array(256);
    lib.rd_kafka_AdminOptions_set_operation_timeout(opts, timeoutMs, ptr(errstr), errstr.length);
    // The opaque identifies the result event; AdminOptions_set_opaque is the only way to set it.
    lib.rd_kafka_AdminOptions_set_opaque(opts, id);
    return new Promise<R>((resolve, reject) => {
      this.rejecters.set(id, reject);
      this.results.set(id, (ev) => {
        const err = lib.rd_kafka_event_error(ev);
        if (err) return reject(new KafkaError(err, String(lib.rd_kafka_event_error_string(ev))));
        try {
          resolve(parse(ev));
        } catch (e) {
          reject(e);
        }
      });
      try {
        send(opts);
      } finally {
        lib.rd_kafka_AdminOptions_destroy(opts);
      }
    });
  }

  /** Brokers and topics as the cluster reports them. Blocks up to `timeoutMs`. */
  metadata(timeoutMs = 5000): ClusterMetadata {
    const lib = rdk();
    const out = new BigUint64Array(1);
    const err = lib.rd_kafka_metadata(this.client.rk, 1, null, ptr(out), timeoutMs);
    if (err) throw KafkaError.fromCode(err, "metadata");
    const md = Number(out[0]) as unknown as Pointer;
    try {
      const brokers: ClusterMetadata["brokers"] = [];
      const bcnt = read.i32(md, METADATA.broker_cnt);
      const bbase = read.ptr(md, METADATA.brokers) as number;
      for (let i = 0; i < bcnt; i++) {
        const b = (bbase + i * METADATA_BROKER.size) as unknown as Pointer;
        brokers.push({
          id: read.i32(b, METADATA_BROKER.id),
          host: readCString(read.ptr(b, METADATA_BROKER.host) as unknown as Pointer) ?? "",
          port: read.i32(b, METADATA_BROKER.port),
        });
      }
      const topics: ClusterMetadata["topics"] = [];
      const tcnt = read.i32(md, METADATA.topic_cnt);
      const tbase = read.ptr(md, METADATA.topics) as number;
      for (let i = 0; i < tcnt; i++) {
        const t = (tbase + i * METADATA_TOPIC.size) as unknown as Pointer;
        const pcnt = read.i32(t, METADATA_TOPIC.partition_cnt);
        const pbase = read.ptr(t, METADATA_TOPIC.partitions) as number;
        const partitions = [];
        for (let j = 0; j < pcnt; j++) {
          const p = (pbase + j * METADATA_PARTITION.size) as unknown as Pointer;
          partitions.push({
            id: read.i32(p, METADATA_PARTITION.id),
            leader: read.i32(p, METADATA_PARTITION.leader),
            error: read.i32(p, METADATA_PARTITION.err),
          });
        }
        topics.push({
          name: readCString(read.ptr(t, METADATA_TOPIC.topic) as unknown as Pointer) ?? "",
          partitions: partitions.sort((a, b) => a.id - b.id),
          error: read.i32(t, METADATA_TOPIC.err),
        });
      }
      return { brokers, topics };
    } finally {
      lib.rd_kafka_metadata_destroy(md);
    }
  }

  /**
   * Low and high watermark of one partition. Blocks up to `timeoutMs`. NOTE: librdkafka answers
   * `_UNKNOWN_PARTITION` for a topic this client's metadata does not list yet (one just created):
   * the metadata is fetched once and the question asked again.
   */
  watermarks(topic: string, partition: number, timeoutMs = 5000): { low: number; high: number } {
    const low = new BigInt64Array(1);
    const high = new BigInt64Array(1);
    const query = () => rdk().rd_kafka_query_watermark_offsets(this.client.rk, ptr(cstr(topic)), partition, ptr(low), ptr(high), timeoutMs);
    let err = query();
    if (err === ERR.UNKNOWN_PARTITION) {
      this.metadata(timeoutMs);
      err = query();
    }
    if (err) throw KafkaError.fromCode(err, `watermarks of ${topic}[${partition}]`);
    return { low: Number(low[0]), high: Number(high[0]) };
  }

  /** Frees the handle; requests still waiting for their result reject with `_DESTROY`. */
  close(): void {
    for (const reject of this.rejecters.values()) reject(new KafkaError(ERR.DESTROY, "admin client closed before the result arrived"));
    this.rejecters.clear();
    this.results.clear();
    this.client.destroy();
  }
}

function topicResults(ev: Pointer, kind: "create" | "delete"): { name: string; error: number; message: string }[] {
  const lib = rdk();
  const res = kind === "create" ? lib.rd_kafka_event_CreateTopics_result(ev) : lib.rd_kafka_event_DeleteTopics_result(ev);
  if (!res) return [];
  const cnt = new BigUint64Array(1);
  const arr = kind === "create" ? lib.rd_kafka_CreateTopics_result_topics(res, ptr(cnt)) : lib.rd_kafka_DeleteTopics_result_topics(res, ptr(cnt));
  const out = [];
  for (let i = 0; i < Number(cnt[0]); i++) {
    const r = read.ptr(arr!, i * 8) as unknown as Pointer;
    out.push({
      name: String(lib.rd_kafka_topic_result_name(r)),
      error: lib.rd_kafka_topic_result_error(r),
      message: String(lib.rd_kafka_topic_result_error_string(r) ?? ""),
    });
  }
  return out;
}
