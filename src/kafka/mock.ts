/**
 * @module kafka/mock
 * librdkafka's built-in mock cluster, for fault injection in tests: brokers that can be taken
 * down and brought back, and request errors pushed onto a given API. Not a stand-in for a real
 * broker in tests of behaviour users rely on. `kitsune dev` runs on it when KAFKA_BROKERS is unset.
 */
import { cstr, ptr, rdk, RD_KAFKA_PRODUCER, type Pointer } from "./ffi.ts";
import { buildConf } from "./client.ts";

/** Kafka protocol API keys for `pushRequestErrors`. */
export const ApiKey = { Produce: 0, Fetch: 1, Metadata: 3, OffsetCommit: 8, FindCoordinator: 10, InitProducerId: 22, AddPartitionsToTxn: 24, EndTxn: 26 } as const;

export class MockCluster {
  private readonly rk: Pointer;
  private readonly mc: Pointer;
  readonly bootstrapServers: string;
  private destroyed = false;

  constructor(brokers = 1) {
    const lib = rdk();
    // NOTE: this handle only hosts the cluster; without log_level 4 it warns that it has no bootstrap.servers.
    const conf = buildConf({ log_level: 4 }, 0);
    const errstr = new Uint8Array(256);
    this.rk = lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, ptr(errstr), errstr.length)!;
    this.mc = lib.rd_kafka_mock_cluster_new(this.rk, brokers)!;
    this.bootstrapServers = String(lib.rd_kafka_mock_cluster_bootstraps(this.mc));
  }

  createTopic(name: string, partitions = 1): void {
    rdk().rd_kafka_mock_topic_create(this.mc, ptr(cstr(name)), partitions, 1);
  }

  brokerDown(id = 1): void {
    rdk().rd_kafka_mock_broker_set_down(this.mc, id);
  }

  brokerUp(id = 1): void {
    rdk().rd_kafka_mock_broker_set_up(this.mc, id);
  }

  /** The next `errors.length` requests of `apiKey` fail with these codes, in order. */
  pushRequestErrors(apiKey: number, errors: number[]): void {
    rdk().rd_kafka_mock_push_request_errors_array(this.mc, apiKey, errors.length, ptr(new Int32Array(errors)));
  }

  close(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    rdk().rd_kafka_mock_cluster_destroy(this.mc);
    rdk().rd_kafka_destroy(this.rk);
  }
}
