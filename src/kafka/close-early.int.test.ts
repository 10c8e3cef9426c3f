/**
 * A consumer closed before its first assignment must not take the process down: librdkafka 2.0.x
 * asserted in the cooperative-sticky assignor then, and cooperative-sticky is now the default of
 * every consumer (consumer.ts `CLASSIC_GROUP_DEFAULTS`). Runs in a child process, since the failure
 * is an abort().
 */
import { expect, setDefaultTimeout, test } from "bun:test";
import { Admin } from "./admin.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

const brokers = process.env.KAFKA_BROKERS ?? "127.0.0.1:9092";

test("closing consumers right after subscribe, 40 times, leaves the process alive", async () => {
  // The assertion needs a topic that exists, so the group has something to assign.
  const topic = `close-early-${crypto.randomUUID().slice(0, 8)}`;
  const admin = new Admin({ "bootstrap.servers": brokers });
  await admin.createTopics([{ name: topic, partitions: 3 }]);
  const script = `
    import { Consumer } from "./src/kafka/index.ts";
    for (let i = 0; i < 40; i++) {
      const c = new Consumer({ "bootstrap.servers": "${brokers}", "group.id": "${topic}-" + i, "log_level": 0 });
      c.subscribe(["${topic}"]);
      await Bun.sleep(Math.random() * 30);
      console.error("closing " + i);
      await c.close(2000);
    }
    console.log("alive");
    process.exit(0);
  `;
  // NOTE: killed before the test's own timeout, so a hang shows which close it was in (stderr).
  const proc = Bun.spawn(["bun", "-e", script], { stdout: "pipe", stderr: "pipe", timeout: 90_000 });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  await admin.deleteTopics([topic]).finally(() => admin.close());
  if (code !== 0) console.error(`the child exited ${code}; its last words:\n${err.slice(-2000)}`);
  expect(err).not.toContain("Assertion");
  expect(out.trim()).toBe("alive");
  expect(code).toBe(0);
}, 120_000);
