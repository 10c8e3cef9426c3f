/*
 * The consumer's hot loop in C, compiled at start-up by Bun's built-in TinyCC (bun:ffi `cc`).
 *
 * kitsune_fetch drains fetched messages from a librdkafka queue into one JS-owned buffer, so a
 * batch of messages costs one FFI call instead of ~8 per message. librdkafka's functions are not
 * linked: their addresses come from the binding's own dlopen, through kitsune_init.
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

#define EVENT_FETCH 0x2
#define HEAD 48

static void *(*queue_poll)(void *q, int timeout_ms);
static int (*event_type)(void *ev);
static void *(*event_message_next)(void *ev);
static void (*event_destroy)(void *ev);
static int64_t (*message_timestamp)(const void *m, int *type);
static int (*message_headers)(const void *m, void **hdrs);
static int (*header_get_all)(const void *hdrs, size_t idx, const char **name, const void **value, size_t *size);

void kitsune_init(void **fns) {
  queue_poll = fns[0];
  event_type = fns[1];
  event_message_next = fns[2];
  event_destroy = fns[3];
  message_timestamp = fns[4];
  message_headers = fns[5];
  header_get_all = fns[6];
}

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/*
 * Serves up to `max` events of `queue` (never waiting), writing each fetched message as a record
 * into out[0..cap). Stops early at an event it does not handle: a non-message event, a message
 * with an error, or one that does not fit. That event (and its message, if any) is left to the
 * caller, which must destroy it.
 *   result[0] = bytes written, result[1] = records, result[2] = event left, result[3] = its message,
 *   result[4] = 1 when the queue was found empty.
 */
void kitsune_fetch(void *queue, uint8_t *out, int64_t cap, int32_t max, int64_t *result) {
  size_t used = 0;
  int64_t count = 0;
  result[2] = 0;
  result[3] = 0;
  result[4] = 0;
  while (count < max) {
    void *ev = queue_poll(queue, 0);
    if (!ev) {
      result[4] = 1;
      break;
    }
    if (event_type(ev) != EVENT_FETCH) {
      result[2] = (int64_t)(intptr_t)ev;
      break;
    }
    message_t *m = event_message_next(ev);
    if (!m) {
      event_destroy(ev);
      continue;
    }
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
    if (m->err != 0 || used + size > (size_t)cap || size > 0x7fffffff) {
      result[2] = (int64_t)(intptr_t)ev;
      result[3] = (int64_t)(intptr_t)m;
      break;
    }
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
    event_destroy(ev);
    used += size;
    count++;
  }
  result[0] = (int64_t)used;
  result[1] = count;
}
