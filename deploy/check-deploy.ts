/**
 * Structural checks of the deployment files, run by scripts/check-deploy.sh (which first installs
 * the tools and runs the parsers that exist: `docker compose config`, promtool, dockerfile-utils).
 *
 *   bun deploy/check-deploy.ts <compose-config.json>
 *
 * <compose-config.json> is `docker compose -f docker-compose.yml config --format json`: the file
 * as Compose itself resolved it (anchors merged, ${VAR:-default} substituted, paths absolute).
 * Environment: PROMTOOL (path to promtool) enables the PromQL syntax check of the dashboard.
 * Prints one line per check; exits with the number of failed checks (0 = all passed).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
let passed = 0;
let failed = 0;
let warned = 0;

function check(ok: boolean, what: string, detail?: string): boolean {
  if (ok) {
    passed++;
    console.log(`  ok    ${what}`);
  } else {
    failed++;
    console.log(`  FAIL  ${what}${detail ? `\n        ${detail.replaceAll("\n", "\n        ")}` : ""}`);
  }
  return ok;
}
function warn(what: string): void {
  warned++;
  console.log(`  WARN  ${what}`);
}
function section(title: string): void {
  console.log(`\n== ${title}`);
}
function read(rel: string): string | undefined {
  const p = join(ROOT, rel);
  return existsSync(p) ? readFileSync(p, "utf8") : undefined;
}
function parseYaml(rel: string): any {
  const text = read(rel);
  if (!check(text !== undefined, `${rel} exists`)) return undefined;
  try {
    const doc = Bun.YAML.parse(text!);
    check(doc !== null && typeof doc === "object", `${rel} parses as YAML`);
    return doc;
  } catch (err) {
    check(false, `${rel} parses as YAML`, String((err as Error).message));
    return undefined;
  }
}
function parseJson(rel: string): any {
  const text = read(rel);
  if (!check(text !== undefined, `${rel} exists`)) return undefined;
  try {
    const doc = JSON.parse(text!);
    check(true, `${rel} parses as JSON`);
    return doc;
  } catch (err) {
    check(false, `${rel} parses as JSON`, String((err as Error).message));
    return undefined;
  }
}
const eq = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const show = (v: unknown) => JSON.stringify(v);

// ---- contracts these files implement (DESIGN.md) ----------------------------------------------
const ROLES = ["api", "log-worker", "db-worker"] as const;
const KITSUNE_IMAGE = "kitsune:local";
const HTTP_PORT = 8080;
const EXPECTED_TOPICS: Record<string, number> = {
  "db-events": 6,
  "app-logs": 3,
  "db-results": 6,
  "db-events.dlq": 1,
  "app-logs.dlq": 1,
};
/** Metric names the dashboard reads; the code must emit exactly these. */
const METRICS = [
  "kitsune_http_requests_total",
  "kitsune_http_request_duration_seconds_bucket",
  "kitsune_consumer_lag",
  "kitsune_db_commands_total",
  "kitsune_db_dead_letters_total",
  "kitsune_db_breaker_open",
  "kitsune_log_lines_total",
];
const LOKI_SELECTOR = '{service="kitsune"}';

const composePath = process.argv[2];
if (!composePath) {
  console.error("usage: bun deploy/check-deploy.ts <compose-config.json>");
  process.exit(100);
}
const compose = JSON.parse(readFileSync(composePath, "utf8"));
const services: Record<string, any> = compose.services ?? {};

/** The repository-relative source of the bind mount of `service` at container path `target`. */
function bindSource(service: string, target: string): string | undefined {
  const v = (services[service]?.volumes ?? []).find((m: any) => m.type === "bind" && m.target === target);
  return v ? relative(ROOT, v.source) : undefined;
}
/** Bind mount of `service` whose container path contains `containerPath`. */
function mountFor(service: string, containerPath: string): { source: string; target: string } | undefined {
  for (const m of services[service]?.volumes ?? []) {
    if (m.type !== "bind") continue;
    if (containerPath === m.target || containerPath.startsWith(`${m.target}/`)) {
      return { source: join(m.source, containerPath.slice(m.target.length)), target: m.target };
    }
  }
  return undefined;
}

// ================================================================================================
section("docker-compose.yml (as resolved by docker compose config)");
{
  const want = ["redpanda", "topics", "postgres", "loki", "prometheus", "grafana", ...ROLES];
  const missing = want.filter((s) => !services[s]);
  check(missing.length === 0, `services present: ${want.join(", ")}`, `missing: ${missing.join(", ")}`);

  // Pinned images.
  for (const [name, svc] of Object.entries(services)) {
    const image: string | undefined = svc.image;
    if (!image) {
      check(false, `${name}: has an image`);
      continue;
    }
    if (image === KITSUNE_IMAGE) continue;
    const pinned = /@sha256:[0-9a-f]{64}$/.test(image) || /:[\w][\w.-]{0,127}$/.test(image.split("/").pop() ?? "");
    const tag = image.split("/").pop()!.split(":")[1] ?? "";
    check(pinned && tag !== "latest" && !/^\d+$/.test(tag) , `${name}: image pinned to a version (${image})`);
  }

  // One build, three roles.
  const builders = Object.entries(services).filter(([, s]) => s.build);
  check(
    builders.length === 1 && builders[0]![0] === "api",
    "only the api service builds (the workers reuse its image)",
    `services with build: ${builders.map(([n]) => n).join(", ") || "none"}`,
  );
  const build = services.api?.build ?? {};
  check(
    build.context && resolve(build.context) === ROOT && (build.dockerfile ?? "Dockerfile") === "Dockerfile",
    "api builds ./Dockerfile with the repository as context",
    show(build),
  );
  const envs: Record<string, Record<string, string>> = {};
  for (const role of ROLES) {
    const svc = services[role] ?? {};
    const env: Record<string, string> = (envs[role] = svc.environment ?? {});
    check(svc.image === KITSUNE_IMAGE, `${role}: image ${KITSUNE_IMAGE}`, `image: ${svc.image}`);
    check(env.ROLE === role, `${role}: ROLE=${role}`, `ROLE=${env.ROLE}`);
    check(env.KAFKA_BROKERS === "redpanda:29092", `${role}: KAFKA_BROKERS=redpanda:29092`, `KAFKA_BROKERS=${env.KAFKA_BROKERS}`);
    check(
      (env.HTTP_PORT ?? String(HTTP_PORT)) === String(HTTP_PORT),
      `${role}: serves HTTP on ${HTTP_PORT}`,
      `HTTP_PORT=${env.HTTP_PORT}`,
    );
    check(!svc.container_name, `${role}: no container_name`);
    const dep = svc.depends_on ?? {};
    check(
      dep.topics?.condition === "service_completed_successfully",
      `${role}: waits for the topics step (service_completed_successfully)`,
      show(dep.topics),
    );
    const hc = svc.healthcheck?.test ?? [];
    check(
      Array.isArray(hc) && hc.join(" ").includes(`:${HTTP_PORT}/readyz`),
      `${role}: healthcheck probes /readyz on ${HTTP_PORT}`,
      show(hc),
    );
    if (role !== "api") check(svc.pull_policy === "never", `${role}: pull_policy never (image comes from the api build)`);
  }
  // Scalable workers: no host ports, no fixed names.
  for (const role of ["log-worker", "db-worker"]) {
    check(!(services[role]?.ports?.length), `${role}: no host ports (so --scale ${role}=N works)`, show(services[role]?.ports));
  }
  // Only ROLE and the role's own settings differ between the three.
  {
    const common = Object.keys(envs.api ?? {}).filter((k) => ROLES.every((r) => k in (envs[r] ?? {})));
    const differing = common.filter((k) => k !== "ROLE" && !ROLES.every((r) => envs[r]![k] === envs.api![k]));
    check(differing.length === 0, "the three roles share every common setting except ROLE", `differ: ${differing.join(", ")}`);
    const own: Record<string, string[]> = { api: ["API_TOKENS"], "log-worker": ["LOKI_URL"], "db-worker": ["POSTGRES_DSN"] };
    for (const r of ROLES) {
      const keys = Object.keys(envs[r] ?? {});
      const lacking = own[r]!.filter((k) => !keys.includes(k));
      check(lacking.length === 0, `${r}: has its own settings (${own[r]!.join(", ")})`, `missing: ${lacking.join(", ")}`);
    }
  }
  check(envs.api?.API_TOKENS === "dev-token", "api: API_TOKENS defaults to dev-token", `API_TOKENS=${envs.api?.API_TOKENS}`);
  check(envs.api?.AUTH_DISABLED === undefined, "api: auth stays on (no AUTH_DISABLED)");
  const apiPorts = services.api?.ports ?? [];
  check(
    apiPorts.some((p: any) => String(p.published) === "8080" && Number(p.target) === HTTP_PORT),
    "api: host port 8080 -> container 8080",
    show(apiPorts),
  );
  check(
    envs["log-worker"]?.LOKI_URL === "http://loki:3100",
    "log-worker: LOKI_URL=http://loki:3100",
    `LOKI_URL=${envs["log-worker"]?.LOKI_URL}`,
  );
  check(
    /^postgres(ql)?:\/\/kitsune:[^@]+@postgres:5432\/kitsune$/.test(envs["db-worker"]?.POSTGRES_DSN ?? ""),
    "db-worker: POSTGRES_DSN points at the postgres service, database kitsune",
  );

  // Healthchecks and dependency conditions.
  for (const [name, svc] of Object.entries(services)) {
    if (name === "topics") {
      check(svc.restart === "no" || svc.restart === undefined, "topics: one-shot (restart: no)", `restart: ${svc.restart}`);
      continue;
    }
    const test = svc.healthcheck?.test;
    check(
      Array.isArray(test) && test.length > 1 && test[0] !== "NONE" && !svc.healthcheck?.disable,
      `${name}: has a healthcheck`,
    );
  }
  for (const [name, svc] of Object.entries(services)) {
    for (const [dep, spec] of Object.entries<any>(svc.depends_on ?? {})) {
      const target = services[dep];
      if (!target) {
        check(false, `${name} -> ${dep}: no such service`);
        continue;
      }
      if (dep === "topics") {
        check(spec.condition === "service_completed_successfully", `${name} -> topics: service_completed_successfully`);
      } else {
        check(
          spec.condition === "service_healthy" && Boolean(target.healthcheck?.test),
          `${name} -> ${dep}: service_healthy (and ${dep} has a healthcheck)`,
          `condition: ${spec.condition}`,
        );
      }
    }
  }
  check(
    services.topics?.depends_on?.redpanda?.condition === "service_healthy",
    "topics: waits for a healthy redpanda",
  );

  // Redpanda listeners.
  const rp = services.redpanda ?? {};
  const cmd = (rp.command ?? []).join(" ");
  check(/--mode[= ]dev-container/.test(cmd), "redpanda: --mode dev-container");
  check(/--kafka-addr[= ]\S*0\.0\.0\.0:29092/.test(cmd) && /--kafka-addr[= ]\S*0\.0\.0\.0:9092/.test(cmd), "redpanda: listens on 29092 (containers) and 9092 (host)");
  check(
    /--advertise-kafka-addr[= ]\S*redpanda:29092/.test(cmd) && /--advertise-kafka-addr[= ]\S*localhost:9092/.test(cmd),
    "redpanda: advertises redpanda:29092 and localhost:9092",
  );
  check(
    (rp.ports ?? []).some((p: any) => Number(p.target) === 9092 && String(p.published) === "9092"),
    "redpanda: host port 9092 -> 9092 (the address it advertises to the host)",
  );
  const bootstrap = bindSource("redpanda", "/etc/redpanda/.bootstrap.yaml");
  check(bootstrap === "deploy/redpanda/bootstrap.yaml", "redpanda: mounts deploy/redpanda/bootstrap.yaml as .bootstrap.yaml", String(bootstrap));

  // PostgreSQL.
  const pg = services.postgres ?? {};
  check(/^postgres:17(\.|-|$)/.test(pg.image ?? ""), "postgres: PostgreSQL 17", pg.image);
  check(
    pg.environment?.POSTGRES_USER === "kitsune" && pg.environment?.POSTGRES_PASSWORD === "kitsune" && pg.environment?.POSTGRES_DB === "kitsune",
    "postgres: user, password and database kitsune",
  );

  // Every bind-mounted file or folder exists in the repository.
  for (const [name, svc] of Object.entries(services)) {
    for (const m of svc.volumes ?? []) {
      if (m.type !== "bind") continue;
      const rel = relative(ROOT, m.source);
      check(existsSync(m.source) && !rel.startsWith(".."), `${name}: mount source ${rel} exists in the repository`);
    }
  }
  // Topic step runs the script it mounts.
  const ep = (services.topics?.entrypoint ?? []).join(" ");
  const script = (services.topics?.volumes ?? []).find((m: any) => ep.includes(m.target));
  check(
    Boolean(script) && relative(ROOT, script.source) === "deploy/redpanda/create-topics.sh",
    "topics: runs deploy/redpanda/create-topics.sh",
    ep,
  );
  check(
    services.topics?.image === services.redpanda?.image,
    "topics: uses the redpanda image (same rpk as the broker)",
  );
}

// ================================================================================================
section("topics (deploy/redpanda/create-topics.sh)");
{
  const text = read("deploy/redpanda/create-topics.sh") ?? "";
  const found: Record<string, number> = {};
  const block = text.match(/TOPICS=\(([\s\S]*?)\)/)?.[1] ?? "";
  for (const m of block.matchAll(/^\s*([A-Za-z0-9._-]+):(\d+)\s*$/gm)) found[m[1]!] = Number(m[2]);
  check(eq(found, EXPECTED_TOPICS), "partition counts: db-events 6, app-logs 3, db-results 6, db-events.dlq 1, app-logs.dlq 1", `script has ${show(found)}`);
  check(/rpk_? topic create/.test(text), "creates topics with rpk topic create");
  // DESIGN.md (shared/ beside the repository) is the source of these numbers; compare when present.
  const design = [join(ROOT, "../shared/DESIGN.md"), join(ROOT, "shared/DESIGN.md"), join(ROOT, "DESIGN.md")].find(existsSync);
  if (design) {
    const fromDesign: Record<string, number> = {};
    const table = readFileSync(design, "utf8").split("## Topics")[1]?.split("\n## ")[0] ?? "";
    for (const line of table.split("\n")) {
      const cells = line.split("|").map((c) => c.trim());
      if (cells.length < 4 || !/^\d+$/.test(cells[2] ?? "")) continue;
      for (const t of cells[1]!.matchAll(/`([^`]+)`/g)) fromDesign[t[1]!] = Number(cells[2]);
    }
    check(eq(found, fromDesign), `partition counts match ${relative(ROOT, design)}`, `DESIGN.md has ${show(fromDesign)}`);
  } else {
    warn("DESIGN.md not found beside the repository; partition counts checked against the built-in list only");
  }
  const boot = parseYaml("deploy/redpanda/bootstrap.yaml");
  if (boot) {
    check(boot.enable_transactions === true, "redpanda bootstrap: enable_transactions: true");
    check(boot.enable_idempotence === true, "redpanda bootstrap: enable_idempotence: true");
    check(boot.auto_create_topics_enabled === true, "redpanda bootstrap: auto_create_topics_enabled: true");
  }
}

// ================================================================================================
section("Dockerfile and .dockerignore");
{
  const text = read("Dockerfile");
  if (check(text !== undefined, "Dockerfile exists")) {
    // Instructions with continuation lines joined; comments dropped.
    const lines: string[] = [];
    let cur = "";
    for (const raw of text!.split("\n")) {
      if (/^\s*#/.test(raw) && cur === "") continue;
      if (/^\s*#/.test(raw)) continue;
      const line = raw.replace(/\s+$/, "");
      if (line.endsWith("\\")) {
        cur += `${line.slice(0, -1)} `;
        continue;
      }
      cur += line;
      if (cur.trim()) lines.push(cur.trim());
      cur = "";
    }
    const stages: { from: string; name?: string; body: string[] }[] = [];
    for (const l of lines) {
      const m = l.match(/^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/i);
      if (m) stages.push({ from: m[1]!, name: m[2], body: [] });
      else stages.at(-1)?.body.push(l);
    }
    check(stages.length >= 2, "multi-stage build", `${stages.length} stage(s)`);
    for (const s of stages) {
      const tag = s.from.includes("@sha256:") ? "digest" : (s.from.split("/").pop()!.split(":")[1] ?? "");
      check(tag !== "" && tag !== "latest" && !s.from.includes("$"), `FROM ${s.from}: pinned tag`);
    }
    const pkg = JSON.parse(read("package.json") ?? "{}");
    const bunVersion = String(pkg.packageManager ?? "").replace(/^bun@/, "");
    const first = stages[0];
    const last = stages.at(-1);
    check(first?.from === `oven/bun:${bunVersion}`, `build stage is oven/bun:${bunVersion} (package.json packageManager)`, `FROM ${first?.from}`);
    check(
      /^debian:bookworm(-\d{8})?-slim(@sha256:[0-9a-f]{64})?$/.test(last?.from ?? ""),
      "runtime stage is debian bookworm-slim",
      `FROM ${last?.from}`,
    );
    const buildBody = first?.body.join("\n") ?? "";
    check(/bun install --frozen-lockfile/.test(buildBody), "build stage: bun install --frozen-lockfile");
    check(/bun run build/.test(buildBody), "build stage: bun run build");
    const buildScript: string = pkg.scripts?.build ?? "";
    check(/--compile/.test(buildScript) && /--outfile dist\/kitsune(\s|$)/.test(buildScript), "package.json build makes dist/kitsune with bun build --compile", buildScript);
    const entries = buildScript.split(/\s+/).filter((w) => /^src\/.*\.ts$/.test(w));
    for (const e of entries) {
      if (existsSync(join(ROOT, e))) check(true, `build entrypoint ${e} exists`);
      else warn(`build entrypoint ${e} does not exist yet: \`bun run build\` (and so the image build) fails until it does`);
    }
    const rt = last?.body ?? [];
    const rtText = rt.join("\n");
    const apt = rt.filter((l) => /^RUN\b/.test(l) && /apt-get install/.test(l)).join(" ");
    check(
      /\blibrdkafka1\b/.test(apt) || rt.some((l) => /^COPY\s+(--\S+\s+)*--from=\S+\s+\S*librdkafka\.so\.1\s+\S+/.test(l)),
      "runtime: librdkafka.so.1 (apt-get install librdkafka1, or COPY --from a build stage)",
    );
    check(/\bca-certificates\b/.test(apt), "runtime: apt-get install ca-certificates");
    check(/--no-install-recommends/.test(apt) && /rm -rf \/var\/lib\/apt\/lists/.test(rtText), "runtime: apt without recommends, lists removed");
    check(
      rt.some((l) => /^COPY\s+(--\S+\s+)*--from=build\s+(--\S+\s+)*\S*dist\/kitsune\s+\/usr\/local\/bin\/kitsune$/.test(l)),
      "runtime: COPY --from=build dist/kitsune /usr/local/bin/kitsune",
    );
    check(rt.some((l) => /^COPY\s+(--\S+\s+)*sql\/?\s+\/app\/sql\/?$/.test(l)), "runtime: COPY sql /app/sql");
    check(rt.some((l) => /^ENV\b.*\bSQL_DIR=\/app\/sql\b/.test(l)), "runtime: ENV SQL_DIR=/app/sql");
    const users = rt.filter((l) => /^USER\b/.test(l));
    const user = users.at(-1)?.split(/\s+/)[1] ?? "";
    check(user !== "" && !/^(root|0)(:|$)/.test(user), "runtime: runs as a non-root USER", `USER ${user || "(none)"}`);
    const hc = rt.find((l) => /^HEALTHCHECK\b/.test(l)) ?? "";
    check(/\/healthz/.test(hc), "runtime: HEALTHCHECK probes /healthz", hc);
    const tool = /\bcurl\b/.test(hc) ? "curl" : /\bwget\b/.test(hc) ? "wget" : /\/dev\/tcp/.test(hc) ? "bash" : "";
    check(
      tool === "bash" || (tool !== "" && new RegExp(`\\b${tool}\\b`).test(apt)),
      `runtime: the HEALTHCHECK's tool (${tool || "unknown"}) is installed in the image`,
    );
    check(rt.some((l) => /^ENTRYPOINT\s+\[\s*"kitsune"\s*\]$/.test(l)), 'runtime: ENTRYPOINT ["kitsune"]');
    check(!rt.some((l) => /^ENV\b.*\bROLE=/.test(l)), "runtime: no baked-in ROLE (taken from the environment)");

    // COPY sources exist and are not ignored.
    const ignore = (read(".dockerignore") ?? "").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    for (const want of ["node_modules", "dist", ".git", "bench/results"]) {
      check(ignore.some((l) => l.replace(/^\/|\/$/g, "") === want), `.dockerignore: ${want}`);
    }
    const sources = new Set<string>();
    for (const s of stages) {
      for (const l of s.body) {
        if (!/^(COPY|ADD)\b/.test(l) || /--from=/.test(l)) continue;
        const words = l.split(/\s+/).slice(1).filter((w) => !w.startsWith("--"));
        for (const w of words.slice(0, -1)) sources.add(w.replace(/\/$/, ""));
      }
    }
    const matches = (pat: string, src: string) => {
      const p = pat.replace(/^\/|\/$/g, "");
      return p === src || src.startsWith(`${p}/`) || (p.includes("*") && new RegExp(`^${p.replaceAll(".", "\\.").replaceAll("*", "[^/]*")}$`).test(src));
    };
    for (const src of sources) {
      // The last matching line decides; `!pattern` lets a path back in.
      let ignored = false;
      for (const pat of ignore) {
        if (pat.startsWith("!")) ignored &&= !matches(pat.slice(1), src);
        else ignored ||= matches(pat, src);
      }
      check(existsSync(join(ROOT, src)) && !ignored, `COPY source ${src} exists and is not in .dockerignore`);
    }
  }
}

// ================================================================================================
section("deploy/prometheus/prometheus.yml");
{
  const prom = parseYaml("deploy/prometheus/prometheus.yml");
  const mounted = bindSource("prometheus", "/etc/prometheus/prometheus.yml");
  check(mounted === "deploy/prometheus/prometheus.yml", "compose mounts it at /etc/prometheus/prometheus.yml", String(mounted));
  if (prom) {
    const jobs: any[] = prom.scrape_configs ?? [];
    for (const role of ROLES) {
      const job = jobs.find((j) => (j.dns_sd_configs ?? []).some((d: any) => (d.names ?? []).includes(role)));
      if (!check(Boolean(job), `${role}: scraped through dns_sd_configs (names: [${role}])`)) continue;
      const sd = job.dns_sd_configs.find((d: any) => d.names.includes(role));
      check((sd.type ?? "SRV") === "A" && sd.port === HTTP_PORT, `${role}: DNS A records, port ${HTTP_PORT}`, show(sd));
      check((job.metrics_path ?? "/metrics") === "/metrics", `${role}: metrics_path /metrics`);
    }
    for (const job of jobs) {
      for (const sd of job.dns_sd_configs ?? []) {
        for (const n of sd.names ?? []) check(Boolean(services[n]), `job ${job.job_name}: DNS name ${n} is a compose service`);
      }
      for (const sc of job.static_configs ?? []) {
        for (const t of sc.targets ?? []) {
          const host = String(t).split(":")[0]!;
          check(host === "localhost" || Boolean(services[host]), `job ${job.job_name}: target ${t} is a compose service`);
        }
      }
    }
  }
}

// ================================================================================================
section("Grafana provisioning and dashboard");
const datasourceUids = new Map<string, string>();
{
  const ds = parseYaml("deploy/grafana/provisioning/datasources/datasources.yaml");
  const prov = mountFor("grafana", "/etc/grafana/provisioning/datasources");
  check(
    Boolean(prov) && relative(ROOT, prov!.source) === "deploy/grafana/provisioning/datasources",
    "compose mounts deploy/grafana/provisioning at /etc/grafana/provisioning",
  );
  if (ds) {
    check(ds.apiVersion === 1, "datasources: apiVersion 1");
    const want = [
      { type: "prometheus", url: "http://prometheus:9090" },
      { type: "loki", url: "http://loki:3100" },
    ];
    for (const w of want) {
      const d = (ds.datasources ?? []).find((x: any) => x.type === w.type);
      if (!check(Boolean(d?.uid), `datasource ${w.type} with a fixed uid`)) continue;
      datasourceUids.set(d.uid, d.type);
      check(d.url === w.url, `datasource ${w.type}: url ${w.url}`, `url: ${d.url}`);
      const host = new URL(d.url).hostname;
      check(Boolean(services[host]), `datasource ${w.type}: ${host} is a compose service`);
    }
  }
  const dp = parseYaml("deploy/grafana/provisioning/dashboards/dashboards.yaml");
  if (dp) {
    check(dp.apiVersion === 1, "dashboard providers: apiVersion 1");
    const path = dp.providers?.[0]?.options?.path;
    const m = path ? mountFor("grafana", path) : undefined;
    check(
      Boolean(m) && relative(ROOT, m!.source) === "deploy/grafana/dashboards",
      `dashboard provider path ${path} is the mount of deploy/grafana/dashboards`,
    );
  }
  const home = services.grafana?.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH;
  if (home) {
    const m = mountFor("grafana", home);
    check(Boolean(m) && existsSync(m!.source), `home dashboard ${home} is a mounted file`);
  }

  const dash = parseJson("deploy/grafana/dashboards/kitsune.json");
  if (dash) {
    check(typeof dash.uid === "string" && dash.uid.length > 0 && dash.uid.length <= 40, "dashboard: uid set", dash.uid);
    check(typeof dash.title === "string" && dash.title.length > 0, "dashboard: title set");
    check(typeof dash.schemaVersion === "number", "dashboard: schemaVersion set");
    const panels: any[] = [];
    for (const p of dash.panels ?? []) {
      panels.push(p);
      for (const c of p.panels ?? []) panels.push(c);
    }
    check(panels.length > 0, `dashboard: ${panels.length} panels`);
    const ids = panels.map((p) => p.id);
    check(new Set(ids).size === ids.length && ids.every((i) => Number.isInteger(i)), "dashboard: panel ids unique");
    // Layout: inside 24 columns, no two panels overlap.
    const boxes = panels.map((p) => ({ t: p.title, ...p.gridPos }));
    const bad = boxes.filter((b) => !(b.w > 0 && b.h > 0 && b.x >= 0 && b.x + b.w <= 24 && b.y >= 0));
    check(bad.length === 0, "dashboard: every panel fits the 24-column grid", show(bad.map((b) => b.t)));
    const overlaps: string[] = [];
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i]!;
        const b = boxes[j]!;
        if (a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h) overlaps.push(`${a.t} / ${b.t}`);
      }
    }
    check(overlaps.length === 0, "dashboard: no overlapping panels", overlaps.join("; "));
    // Data sources resolve to provisioned ones.
    const refs: { where: string; uid: string }[] = [];
    for (const p of panels) {
      if (p.type === "row") continue;
      if (p.datasource?.uid) refs.push({ where: p.title, uid: p.datasource.uid });
      for (const t of p.targets ?? []) if (t.datasource?.uid) refs.push({ where: `${p.title} ${t.refId}`, uid: t.datasource.uid });
      check((p.targets ?? []).length > 0, `panel "${p.title}": has queries`);
    }
    for (const v of dash.templating?.list ?? []) if (v.datasource?.uid) refs.push({ where: `variable ${v.name}`, uid: v.datasource.uid });
    const unknown = refs.filter((r) => !datasourceUids.has(r.uid));
    check(unknown.length === 0, "dashboard: every data source uid is provisioned", show(unknown));
    // Queries.
    const prom: { where: string; expr: string }[] = [];
    const loki: string[] = [];
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        const uid = t.datasource?.uid ?? p.datasource?.uid;
        if (datasourceUids.get(uid) === "loki") loki.push(t.expr);
        else if (t.expr) prom.push({ where: `${p.title} ${t.refId}`, expr: t.expr });
      }
    }
    for (const v of dash.templating?.list ?? []) {
      const q = typeof v.query === "string" ? v.query : v.query?.query;
      if (q && !/^label_values\(/.test(q)) prom.push({ where: `variable ${v.name}`, expr: q });
    }
    const allExpr = prom.map((p) => p.expr).join("\n");
    for (const m of METRICS) check(allExpr.includes(m), `dashboard reads ${m}`);
    check(loki.some((e) => e.includes(LOKI_SELECTOR)), `dashboard: Loki logs panel queries ${LOKI_SELECTOR}`);
    const varNames = new Set((dash.templating?.list ?? []).map((v: any) => v.name));
    const undefinedVars = new Set<string>();
    for (const p of prom) {
      for (const m of p.expr.matchAll(/\$\{?(\w+)/g)) if (!m[1]!.startsWith("__") && !varNames.has(m[1]!)) undefinedVars.add(m[1]!);
    }
    check(undefinedVars.size === 0, `dashboard: queries use only defined variables (${[...varNames].join(", ") || "none"})`, [...undefinedVars].join(", "));
    // PromQL syntax: each expression becomes a recording rule that promtool parses.
    const promtool = process.env.PROMTOOL;
    if (promtool) {
      const dir = mkdtempSync(join(tmpdir(), "kitsune-dash-"));
      try {
        const rules = prom.map((p, i) => {
          const expr = p.expr
            .replace(/\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}/g, "1m")
            .replace(/\$__range|\$\{__range\}/g, "1h")
            .replace(/\$\{?\w+\}?/g, ".*");
          return `      - record: kitsune_dashboard:expr_${i}\n        expr: ${JSON.stringify(expr)}`;
        });
        const file = join(dir, "dashboard-rules.yml");
        writeFileSync(file, `groups:\n  - name: kitsune-dashboard\n    rules:\n${rules.join("\n")}\n`);
        const r = Bun.spawnSync([promtool, "check", "rules", file], { stdout: "pipe", stderr: "pipe" });
        const out = `${r.stdout.toString()}${r.stderr.toString()}`.trim();
        check(r.exitCode === 0, `dashboard: ${prom.length} PromQL expressions parse (promtool check rules)`, out);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    } else {
      warn("PROMTOOL not set: PromQL syntax of the dashboard not checked");
    }
  }
}

// ================================================================================================
section("deploy/loki/loki.yaml");
{
  const loki = parseYaml("deploy/loki/loki.yaml");
  const cmd = (services.loki?.command ?? []).join(" ");
  const cfgPath = cmd.match(/-config\.file=(\S+)/)?.[1];
  check(
    Boolean(cfgPath) && bindSource("loki", cfgPath!) === "deploy/loki/loki.yaml",
    "compose runs Loki with -config.file pointing at the mounted deploy/loki/loki.yaml",
    cmd,
  );
  if (loki) {
    check(loki.auth_enabled === false, "auth_enabled: false (single tenant; LOKI_TENANT unset)");
    check(loki.server?.http_listen_port === 3100, "server.http_listen_port: 3100 (LOKI_URL, data source, healthcheck)");
    const schemas: any[] = loki.schema_config?.configs ?? [];
    check(schemas.length > 0 && schemas.every((s) => s.store === "tsdb" && s.schema === "v13"), "schema_config: tsdb, v13");
    const prefix: string = loki.common?.path_prefix ?? "";
    const dataMount = (services.loki?.volumes ?? []).find((m: any) => m.type === "volume" && (prefix === m.target || prefix.startsWith(`${m.target}/`)));
    check(Boolean(dataMount), `common.path_prefix ${prefix} is on a named volume`);
    if (loki.compactor?.retention_enabled) {
      check(Boolean(loki.compactor?.delete_request_store), "compactor: retention needs delete_request_store");
    }
  }
}

console.log(`\ncheck-deploy.ts: ${passed} passed, ${failed} failed${warned ? `, ${warned} warnings` : ""}`);
process.exit(Math.min(failed, 99));
