/** Which librdkafka the binding loads, and which it refuses (no broker needed). */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { BUILT_VERSION, builtLibraryPath, chooseLibrary, MIN_VERSION, versionRefusal } from "./ffi.ts";

const none = () => false;
const all = () => true;

describe("finding librdkafka", () => {
  test("LIBRDKAFKA_PATH wins, even over a project build", () => {
    expect(chooseLibrary({ LIBRDKAFKA_PATH: "/opt/rdk/librdkafka.so.1", HOME: "/home/u" }, all)).toEqual({
      path: "/opt/rdk/librdkafka.so.1",
      source: "LIBRDKAFKA_PATH",
    });
  });

  test("then the project build, in KITSUNE_CACHE or ~/.cache/kitsune", () => {
    const lib = `librdkafka-${BUILT_VERSION}/lib/librdkafka.so.1`;
    expect(builtLibraryPath({ HOME: "/home/u" })).toBe(`/home/u/.cache/kitsune/${lib}`);
    expect(builtLibraryPath({ HOME: "/home/u", KITSUNE_CACHE: "/tmp/k" })).toBe(`/tmp/k/${lib}`);
    const seen: string[] = [];
    const choice = chooseLibrary({ KITSUNE_CACHE: "/tmp/k" }, (p) => (seen.push(String(p)), true));
    expect(choice).toEqual({ path: `/tmp/k/${lib}`, source: "project build" });
    expect(seen).toEqual([`/tmp/k/${lib}`]);
  });

  test("then the system's librdkafka.so.1", () => {
    expect(chooseLibrary({ HOME: "/home/u" }, none)).toEqual({ path: "librdkafka.so.1", source: "system" });
  });

  test("BUILT_VERSION is the version of the source the pinned package carries", () => {
    const header = new URL("../../node_modules/@confluentinc/kafka-javascript/deps/librdkafka/src/rdkafka.h", import.meta.url);
    const hex = /#define RD_KAFKA_VERSION\s+0x([0-9a-f]{8})/i.exec(readFileSync(header, "utf8"))?.[1];
    expect(hex).toBeDefined();
    const [major, minor, revision] = [0, 2, 4].map((i) => parseInt(hex!.slice(i, i + 2), 16));
    expect(`${major}.${minor}.${revision}`).toBe(BUILT_VERSION);
  });
});

describe("refusing an old librdkafka", () => {
  const system = { path: "librdkafka.so.1", source: "system" } as const;

  test("2.0.2 (Debian 12's) is refused with how to build the right one", () => {
    const message = versionRefusal(0x020002ff, "2.0.2", system);
    expect(message).toContain('librdkafka 2.0.2 found at "librdkafka.so.1" (system)');
    expect(message).toContain("2.10 or newer");
    expect(message).toContain("scripts/build-librdkafka.sh");
    expect(message).toContain("LIBRDKAFKA_PATH");
    expect(versionRefusal(0x0209ffff, "2.9.255", system)).not.toBeNull();
  });

  test("2.10 and newer load", () => {
    expect(MIN_VERSION).toBe(0x020a0000);
    expect(versionRefusal(0x020a00ff, "2.10.0", system)).toBeNull();
    expect(versionRefusal(0x020f01ff, "2.15.1", system)).toBeNull();
  });

  // Debian's librdkafka1 (2.0.2) is there wherever kcat is installed, as in CI.
  const debian = "/usr/lib/x86_64-linux-gnu/librdkafka.so.1";
  test.skipIf(!existsSync(debian))("a client made with an old library fails with that message", () => {
    // The library is loaded once per process, so this runs in a fresh one.
    const script = `
      const { Producer } = await import(${JSON.stringify(new URL("./index.ts", import.meta.url).pathname)});
      try { new Producer({}); console.log("loaded"); } catch (e) { console.log(e.message); process.exit(3); }
    `;
    const run = Bun.spawnSync([process.execPath, "-e", script], { env: { ...process.env, LIBRDKAFKA_PATH: debian } });
    expect(run.stdout.toString()).toContain("needs librdkafka 2.10 or newer");
    expect(run.exitCode).toBe(3);
  });
});
