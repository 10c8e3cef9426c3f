/*
 * The C side of `bun run bench kafka`: librdkafka used directly, linked against the library the
 * binding loads (bench/kafka.ts compiles this against the project build's headers and runs it with
 * that library first on the search path). Everything is timed and counted in-process, the way the
 * binding's side is: the producer from rd_kafka_new to the end of rd_kafka_destroy (all delivery
 * reports in), the consumer from rd_kafka_new and from its first message to its N-th, payload
 * bytes counted in memory. CPU is this process's (all threads) over the same window.
 *
 *   rdkafka-bench produce TOPIC COUNT SIZE [-X key=value ...]
 *   rdkafka-bench consume TOPIC COUNT SIZE [-X key=value ...]
 *
 * Prints one JSON line: {"version", "msgs", "bytes", "seconds", "firstSeconds", "cpu"}
 * (consume: "seconds" is first message to the N-th, "firstSeconds" start to the first message).
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "rdkafka-bench: %s: %s\n", what, why);
  exit(1);
}

static long delivered, failed;
static rd_kafka_resp_err_t first_failure;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  (void)opaque;
  if (m->err) {
    if (!failed++) first_failure = m->err;
  } else {
    delivered++;
  }
}

int main(int argc, char **argv) {
  if (argc < 5) die("usage", "rdkafka-bench produce|consume TOPIC COUNT SIZE [-X key=value ...]");
  const char *mode = argv[1], *topic = argv[2];
  long count = atol(argv[3]), size = atol(argv[4]);
  int producing = strcmp(mode, "produce") == 0;
  char errstr[512];

  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  for (int i = 5; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "-X") != 0) die("usage", "expected -X key=value");
    char *kv = argv[i + 1], *eq = strchr(kv, '=');
    if (!eq) die(kv, "expected key=value");
    *eq = 0;
    if (rd_kafka_conf_set(conf, kv, eq + 1, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) die(kv, errstr);
  }
  if (producing) rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);

  double c0 = cpu(), t0 = now(), first = 0, end;
  long n = 0, bytes = 0;
  rd_kafka_t *rk = rd_kafka_new(producing ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (!rk) die("rd_kafka_new", errstr);

  if (producing) {
    char *value = malloc(size);
    memset(value, 'a', size);
    while (n < count) {
      rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(value, (size_t)size),
                                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(rk, 10);
        continue;
      }
      if (err) die("produce", rd_kafka_err2str(err));
      bytes += size;
      if (++n % 1000 == 0) rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 120000)) die("flush", "timed out");
    rd_kafka_destroy(rk);
    end = now();
    if (failed) die("delivery", rd_kafka_err2str(first_failure));
    if (delivered != count) die("delivery", "fewer reports than messages");
    first = t0;
  } else {
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) die("subscribe", rd_kafka_err2str(err));
    rd_kafka_queue_t *queue = rd_kafka_queue_get_consumer(rk);
    rd_kafka_message_t *batch[10000];
    while (n < count) {
      ssize_t got = rd_kafka_consume_batch_queue(queue, 1000, batch, 10000);
      if (got < 0) die("consume", rd_kafka_err2str(rd_kafka_last_error()));
      for (ssize_t i = 0; i < got; i++) {
        rd_kafka_message_t *m = batch[i];
        if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) die("consume", rd_kafka_message_errstr(m));
        if (!m->err) {
          if (!first) first = now();
          n++;
          bytes += (long)m->len;
        }
        rd_kafka_message_destroy(m);
      }
    }
    end = now();
    double used = cpu() - c0;
    rd_kafka_queue_destroy(queue);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    printf("{\"version\":\"%s\",\"msgs\":%ld,\"bytes\":%ld,\"seconds\":%.6f,\"firstSeconds\":%.6f,\"cpu\":%.6f}\n",
           rd_kafka_version_str(), n, bytes, end - first, first - t0, used);
    return 0;
  }
  printf("{\"version\":\"%s\",\"msgs\":%ld,\"bytes\":%ld,\"seconds\":%.6f,\"firstSeconds\":0,\"cpu\":%.6f}\n",
         rd_kafka_version_str(), n, bytes, end - t0, cpu() - c0);
  return 0;
}
