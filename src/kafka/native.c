/*
 * The consumer's hot loop in C, compiled at start-up by Bun's built-in TinyCC (bun:ffi `cc`).
 *
 * kitsune_fetch takes fetched messages from a librdkafka queue in bulk
 * (`rd_kafka_consume_batch_queue`, about half the cost of one event per message) and copies them
 * into one JS-owned buffer, so a batch costs one FFI call instead of ~8 per message.
 * librdkafka's functions are not linked: their addresses come from the binding's own dlopen,
 * through kitsune_init.
 *
 * The batch call serves rebalances through a rebalance callback instead of returning them as
 * events; kitsune_rebalance_cb only records them in the consumer's state, and the binding handles
 * them after the call, as it would the events (librdkafka waits for its assign call either way).
 *
 * Each record, 8-byte aligned, little-endian:
 *   u32 size (whole record, padding included)   i32 partition
 *   i64 offset                                  i64 timestamp (ms, -1 when none)
 *   u64 rkt (topic handle)
 *   i32 key length (-1: null)                   i32 value length (-1: null)
 *   i32 header count                            u32 header bytes
 *   key, value, then per header: u32 name length, i32 value length (-1: null), name, value
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  int err;
  void *rkt;
  int32_t partition;
  void *payload;
  size_t len;
  void *key;
  size_t key_len;
  int64_t offset;
  void *_private;
} message_t;

#define HEAD 48
#define BATCH 1000
#define REBALANCES 16

/*
 * One consumer's state, in memory the binding owns (and keeps alive as long as the handle).
 * Out: records, left, empty. Messages taken from librdkafka but not yet written
 * are msgs[start..count); kitsune_fetch writes them out before it takes more.
 */
typedef struct {
  int64_t records;
  /* A message left to the caller (an error, or one that does not fit); the caller destroys it. */
  int64_t left;
  /* 1 when the queue was found empty and nothing is pending. */
  int64_t empty;
  int32_t start;
  int32_t count;
  /* Rebalances recorded by kitsune_rebalance_cb since the binding last took them. */
  int32_t rebalances;
  /* Rebalances that did not fit in the table (a bug if ever non-zero). */
  int32_t overflow;
  int64_t rebalance_err[REBALANCES];
  void *rebalance_list[REBALANCES];
  void *msgs[BATCH];
} state_t;

static long (*consume_batch_queue)(void *q, int timeout_ms, void **msgs, size_t size);
static void (*message_destroy)(void *m);
static void *(*partition_list_copy)(const void *list);
static int64_t (*message_timestamp)(const void *m, int *type);
static int (*message_headers)(const void *m, void **hdrs);
static int (*header_get_all)(const void *hdrs, size_t idx, const char **name, const void **value, size_t *size);

void kitsune_init(void **fns) {
  consume_batch_queue = fns[0];
  message_destroy = fns[1];
  partition_list_copy = fns[2];
  message_timestamp = fns[3];
  message_headers = fns[4];
  header_get_all = fns[5];
}

/* Set as the consumer's rebalance_cb, with its state as the opaque: keeps a copy of the list. */
static void kitsune_rebalance_cb(void *rk, int err, void *partitions, void *opaque) {
  state_t *st = opaque;
  if (st->rebalances >= REBALANCES) {
    st->overflow++;
    return;
  }
  st->rebalance_err[st->rebalances] = err;
  st->rebalance_list[st->rebalances] = partitions ? partition_list_copy(partitions) : NULL;
  st->rebalances++;
}

void *kitsune_rebalance_cb_addr(void) { return (void *)kitsune_rebalance_cb; }

/*
 * The SHA-256 (hex) of the native.c a shared object was compiled from, given by the ahead-of-time
 * build (-DKITSUNE_SOURCE_SHA256="..."): native.ts refuses an object built from another version,
 * whose layouts may differ. Empty under TinyCC, which compiles the very source native.ts holds.
 */
#ifndef KITSUNE_SOURCE_SHA256
#define KITSUNE_SOURCE_SHA256 ""
#endif
const char *kitsune_source_sha256(void) { return KITSUNE_SOURCE_SHA256; }

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/*
 * Writes up to `max` fetched messages of `queue` (never waiting) as records into out[0..cap).
 * Stops early at a message it does not handle: one with an error, or one bigger than `cap`. That
 * message is left to the caller (st->left), which must destroy it. Messages it took from
 * librdkafka but did not write (out is full) stay pending in `st` for the next call.
 */
void kitsune_fetch(void *queue, uint8_t *out, int64_t cap, int32_t max, state_t *st) {
  size_t used = 0;
  int64_t count = 0;
  st->left = 0;
  st->empty = 0;
  while (count < max) {
    if (st->start >= st->count) {
      long n = consume_batch_queue(queue, 0, st->msgs, BATCH);
      st->start = 0;
      st->count = n > 0 ? (int32_t)n : 0;
      if (st->count == 0) {
        st->empty = 1;
        break;
      }
    }
    message_t *m = st->msgs[st->start];
    void *hdrs = NULL;
    size_t nh = 0, hbytes = 0;
    const char *name;
    const void *value;
    size_t vsize;
    if (m->err == 0 && message_headers(m, &hdrs) == 0) {
      while (header_get_all(hdrs, nh, &name, &value, &vsize) == 0) {
        hbytes += 8 + strlen(name) + (value ? vsize : 0);
        nh++;
      }
    }
    size_t klen = m->key ? m->key_len : 0;
    size_t vlen = m->payload ? m->len : 0;
    size_t size = pad8(HEAD + klen + vlen + hbytes);
    if (m->err != 0 || size > (size_t)cap || size > 0x7fffffff) {
      st->left = (int64_t)(intptr_t)m;
      st->start++;
      break;
    }
    if (used + size > (size_t)cap) break; /* the next call writes it */
    uint8_t *r = out + used;
    *(uint32_t *)(r + 0) = (uint32_t)size;
    *(int32_t *)(r + 4) = m->partition;
    *(int64_t *)(r + 8) = m->offset;
    *(int64_t *)(r + 16) = message_timestamp(m, NULL);
    *(uint64_t *)(r + 24) = (uint64_t)(uintptr_t)m->rkt;
    *(int32_t *)(r + 32) = m->key ? (int32_t)klen : -1;
    *(int32_t *)(r + 36) = m->payload ? (int32_t)vlen : -1;
    *(int32_t *)(r + 40) = (int32_t)nh;
    *(uint32_t *)(r + 44) = (uint32_t)hbytes;
    uint8_t *p = r + HEAD;
    if (klen) memcpy(p, m->key, klen);
    p += klen;
    if (vlen) memcpy(p, m->payload, vlen);
    p += vlen;
    for (size_t i = 0; i < nh; i++) {
      header_get_all(hdrs, i, &name, &value, &vsize);
      size_t nlen = strlen(name);
      *(uint32_t *)p = (uint32_t)nlen;
      *(int32_t *)(p + 4) = value ? (int32_t)vsize : -1;
      p += 8;
      memcpy(p, name, nlen);
      p += nlen;
      if (value && vsize) memcpy(p, value, vsize);
      if (value) p += vsize;
    }
    message_destroy(m);
    st->start++;
    used += size;
    count++;
  }
  st->records = count;
}

/* Destroys the messages still pending (the consumer is going away). */
void kitsune_release(state_t *st) {
  while (st->start < st->count) message_destroy(st->msgs[st->start++]);
}
