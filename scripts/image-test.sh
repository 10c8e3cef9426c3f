#!/usr/bin/env bash
# Builds the image and proves it the way a user runs it: the three roles as containers (host
# network) against a real Kafka, PostgreSQL and a Loki receiver, the README example end to end.
#
#   scripts/image-test.sh
#
# Checks, each with a message saying what failed (exit 1 on the first failure, 0 when all pass):
#   `kitsune version` in the image reports the native fetch loop compiled ahead of time;
#   api, db-worker and log-worker containers start, run as uid 10001 and pass their HEALTHCHECK;
#   the README example gets 202, its row lands in PostgreSQL, `GET /commands/:id` says applied,
#   its log line reaches Loki; SIGTERM stops every role with exit code 0.
#
# Environment:
#   KAFKA_BROKERS   default 127.0.0.1:9092
#   POSTGRES_DSN    default postgres://kitsune:kitsune@127.0.0.1:5432/kitsune (psql must reach it)
#   LOKI_URL        a Loki to push to and query; unset: a small push receiver run here (needs bun)
#   LOKI_TENANT     passed to the log-worker and used for the query (real Loki only)
#   ENGINE          docker or podman; default: docker if its daemon answers, else podman
#   BUILD_FLAGS, RUN_FLAGS   extra flags for `ENGINE build` / `ENGINE run`; default: the
#                   PODMAN_BUILD_FLAGS / PODMAN_RUN_FLAGS that ../shared/tools/container-bases.sh prints
#   IMAGE           tag to build and test (default kitsune:image-test); IMAGE_BUILD=0 tests it unbuilt
#
# Everything it makes is named after one run id: topics, consumer groups, a PostgreSQL schema, the
# idempotency key and the containers, so it never collides with other users of the broker and the
# database; all of it is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
POSTGRES_DSN=${POSTGRES_DSN:-postgres://kitsune:kitsune@127.0.0.1:5432/kitsune}
IMAGE=${IMAGE:-kitsune:image-test}
RUN_ID=imgtest-$(date +%s)-$$
SCHEMA=${RUN_ID//-/_}
TOKEN=image-test-token
KEY=$RUN_ID-signup-sahil
NATIVE_LIB=/usr/local/lib/kitsune/native.so

say() { printf 'image-test: %s\n' "$*" >&2; }
ok() { printf 'image-test: ok    %s\n' "$*" >&2; }

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else say "neither a docker daemon nor podman is available"; exit 1; fi
fi
read -r -a BUILD_FLAGS <<<"${BUILD_FLAGS:-${PODMAN_BUILD_FLAGS:-}}"
read -r -a RUN_FLAGS <<<"${RUN_FLAGS:-${PODMAN_RUN_FLAGS:-}}"
[ "$ENGINE" = podman ] || { BUILD_FLAGS=(); RUN_FLAGS=(); }
case " ${RUN_FLAGS[*]} " in *" --network host "* | *" --network=host "*) ;; *) RUN_FLAGS+=(--network host) ;; esac
command -v psql >/dev/null || { say "psql is needed to check the row in PostgreSQL"; exit 1; }

work=$(mktemp -d)
roles=(db-worker log-worker api)
containers=()
loki_pid=
cleanup() {
  local rc=$?
  for c in "${containers[@]}"; do "$ENGINE" rm -f "$c" >/dev/null 2>&1 || true; done
  [ -n "$loki_pid" ] && kill "$loki_pid" 2>/dev/null
  psql "$POSTGRES_DSN" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  # The run's topics, through the binding (no npm packages needed; librdkafka as the binding finds it).
  if command -v bun >/dev/null; then
    # shellcheck disable=SC2016 # TypeScript, not shell
    RUN_ID=$RUN_ID KAFKA_BROKERS=$KAFKA_BROKERS timeout 60 bun -e '
      const { Admin } = await import("./src/kafka/admin.ts");
      const a = new Admin({ "bootstrap.servers": process.env.KAFKA_BROKERS });
      const t = ["events", "logs", "results"].map((n) => `${process.env.RUN_ID}-${n}`);
      const gone = (e) => (e.codeName === "UNKNOWN_TOPIC_OR_PART" ? undefined : Promise.reject(e));
      await Promise.all([...t, `${t[0]}.dlq`, `${t[1]}.dlq`].map((n) => a.deleteTopics([n]).catch(gone)));
      a.close();' >/dev/null 2>&1 || say "could not delete the topics $RUN_ID-* (delete them by hand)"
  fi
  rm -rf "$work"
  if [ $rc -eq 0 ]; then say "passed ($RUN_ID)"; else say "FAILED ($RUN_ID)"; fi
}
trap cleanup EXIT

# fail MESSAGE: says what failed, shows the containers' last log lines, exits 1.
fail() {
  say "FAIL  $*"
  for c in "${containers[@]}"; do
    printf -- '--- %s (last 20 lines)\n' "$c" >&2
    "$ENGINE" logs --tail 20 "$c" 2>&1 | grep -v 'unable to get systemd connection' >&2 || true
  done
  exit 1
}

# until_ok SECONDS WHAT CMD...: runs CMD every second until it succeeds; fails after SECONDS.
until_ok() {
  local secs=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$what (waited ${secs} s)"
    sleep 1
  done
}

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  fail "no free port"
}

# ---- build ---------------------------------------------------------------------------------
if [ "${IMAGE_BUILD:-1}" != 0 ]; then
  say "building $IMAGE with $ENGINE"
  "$ENGINE" build "${BUILD_FLAGS[@]}" -t "$IMAGE" . >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    fail "$ENGINE build"
  }
fi
ok "image $IMAGE ($("$ENGINE" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"

version=$("$ENGINE" run --rm "${RUN_FLAGS[@]}" "$IMAGE" version 2>"$work/version.err") ||
  fail "kitsune version: $(cat "$work/version.err")"
case $version in
  *"native fetch loop: AOT $NATIVE_LIB)"*) ok "$version" ;;
  *) fail "kitsune version does not report the native fetch loop from $NATIVE_LIB: $version" ;;
esac

# ---- services --------------------------------------------------------------------------------
psql "$POSTGRES_DSN" -v ON_ERROR_STOP=1 -qc "CREATE SCHEMA $SCHEMA" >/dev/null || fail "cannot create schema $SCHEMA in $POSTGRES_DSN"
case $POSTGRES_DSN in *\?*) role_dsn="$POSTGRES_DSN&search_path=$SCHEMA" ;; *) role_dsn="$POSTGRES_DSN?search_path=$SCHEMA" ;; esac

if [ -z "${LOKI_URL:-}" ]; then
  command -v bun >/dev/null || fail "LOKI_URL is not set and bun (for the local Loki receiver) is missing"
  # A Loki push receiver: every pushed body (gunzipped) is appended to loki.log.
  # shellcheck disable=SC2016 # TypeScript, not shell
  OUT=$work/loki.log bun -e '
    const { appendFileSync } = await import("node:fs");
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", async fetch(req) {
      if (new URL(req.url).pathname === "/ready") return new Response("ready");
      let body = new Uint8Array(await req.arrayBuffer());
      if (req.headers.get("content-encoding") === "gzip") body = Bun.gunzipSync(body);
      appendFileSync(process.env.OUT, new TextDecoder().decode(body) + "\n");
      return new Response(null, { status: 204 });
    } });
    console.log(`http://127.0.0.1:${server.port}`);' >"$work/loki.url" 2>"$work/loki.err" &
  loki_pid=$!
  until_ok 30 "the local Loki receiver starts" test -s "$work/loki.url"
  LOKI_URL=$(cat "$work/loki.url")
  touch "$work/loki.log"
  loki_has() { grep -q -- "$1" "$work/loki.log"; }
else
  loki_has() {
    local q
    q=$(printf '{service="kitsune"} |= "%s"' "$1")
    curl -fsS -G ${LOKI_TENANT:+-H "X-Scope-OrgID: $LOKI_TENANT"} "$LOKI_URL/loki/api/v1/query_range" \
      --data-urlencode "query=$q" --data-urlencode "since=1h" | grep -q -- "$1"
  }
fi
ok "services: Kafka $KAFKA_BROKERS, PostgreSQL schema $SCHEMA, Loki $LOKI_URL"

# ---- roles -------------------------------------------------------------------------------------
declare -A port
for role in "${roles[@]}"; do
  port[$role]=$(free_port)
  name=$RUN_ID-$role
  "$ENGINE" run -d --name "$name" "${RUN_FLAGS[@]}" \
    -e ROLE="$role" -e HTTP_PORT="${port[$role]}" -e API_TOKENS="$TOKEN" \
    -e KAFKA_BROKERS="$KAFKA_BROKERS" -e KAFKA_GROUP_ID="$RUN_ID-$role" \
    -e TOPIC_EVENTS="$RUN_ID-events" -e TOPIC_LOGS="$RUN_ID-logs" -e TOPIC_RESULTS="$RUN_ID-results" \
    -e POSTGRES_DSN="$role_dsn" -e LOKI_URL="$LOKI_URL" ${LOKI_TENANT:+-e LOKI_TENANT="$LOKI_TENANT"} \
    "$IMAGE" >/dev/null 2>"$work/run.err" || fail "$ENGINE run $role: $(cat "$work/run.err")"
  containers+=("$name")
done
for role in "${roles[@]}"; do
  until_ok 120 "$role answers 200 on /readyz (port ${port[$role]})" curl -fsS "http://127.0.0.1:${port[$role]}/readyz"
  ok "$role ready on port ${port[$role]}"
done

for role in "${roles[@]}"; do
  name=$RUN_ID-$role
  uid=$("$ENGINE" exec "$name" id -u 2>/dev/null) || fail "$ENGINE exec $name id -u"
  [ "$uid" = 10001 ] || fail "$role runs as uid $uid, not 10001"
  if [ "$ENGINE" = podman ]; then
    # No systemd here to schedule HEALTHCHECKs: run the image's check on demand.
    until_ok 60 "the HEALTHCHECK of $role passes" podman healthcheck run "$name"
  else
    until_ok 90 "$role reports healthy" sh -c "[ \"\$(docker inspect -f '{{.State.Health.Status}}' $name)\" = healthy ]"
  fi
  ok "$role runs as uid 10001, HEALTHCHECK passes"
done

# ---- the README example ------------------------------------------------------------------------
api=http://127.0.0.1:${port[api]}
body=$(printf '{ "command": "create_user", "version": "1",
  "payload": { "name": "Sahil", "email": "sahil@example.com" },
  "log": { "level": "INFO", "message": "User registration triggered" },
  "metadata": { "idempotency_key": "%s", "source": "user-service" } }' "$KEY")
status=$(curl -sS -o "$work/execute.json" -w '%{http_code}' "$api/execute" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d "$body") || fail "POST /execute: no answer"
[ "$status" = 202 ] || fail "POST /execute answered $status: $(cat "$work/execute.json")"
id=$(sed -n 's/.*"id" *: *"\([^"]*\)".*/\1/p' "$work/execute.json")
[ -n "$id" ] || fail "no id in the 202 answer: $(cat "$work/execute.json")"
ok "POST /execute: 202, id $id"

row() {
  [ "$(psql "$POSTGRES_DSN" -tAc "SELECT u.name || ' ' || l.status || ' ' || l.event_id FROM $SCHEMA.users u
      JOIN $SCHEMA.idempotency_log l ON l.key = '$KEY' WHERE u.email = 'sahil@example.com'")" = "Sahil applied $id" ]
}
until_ok 60 "the row of $id in $SCHEMA.users, applied in idempotency_log" row
ok "row in PostgreSQL ($SCHEMA.users), applied"

applied() { curl -sS "$api/commands/$id" -H "Authorization: Bearer $TOKEN" >"$work/status.json" && grep -q '"status":"applied"' "$work/status.json"; }
until_ok 60 "GET /commands/$id says applied" applied || true
applied || fail "GET /commands/$id does not say applied: $(cat "$work/status.json")"
ok "GET /commands/$id: applied"

until_ok 60 "the log line of $id at Loki ($LOKI_URL)" loki_has "$id"
ok "log line at Loki"

# ---- SIGTERM -----------------------------------------------------------------------------------
for role in api db-worker log-worker; do
  name=$RUN_ID-$role
  "$ENGINE" kill --signal TERM "$name" >/dev/null || fail "$ENGINE kill --signal TERM $name"
  code=$(timeout 60 "$ENGINE" wait "$name" 2>/dev/null | tail -n 1) || fail "$role did not stop within 60 s of SIGTERM"
  [ "$code" = 0 ] || fail "$role exited with $code on SIGTERM"
  ok "$role exits 0 on SIGTERM"
done
