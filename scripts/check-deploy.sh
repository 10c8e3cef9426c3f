#!/usr/bin/env bash
# Validates the deployment files without a Docker engine, for CI and before a commit:
#
#   scripts/check-deploy.sh
#
#   docker-compose.yml   `docker compose config -q` (Compose v2 parses and validates without an
#                        engine), then structural checks on the resolved model (deploy/check-deploy.ts)
#   Dockerfile           dockerfile-utils lint (npm; hadolint is in neither Debian nor npm) and
#                        structural checks: pinned FROM tags, Bun version = packageManager, USER,
#                        HEALTHCHECK, ENTRYPOINT, librdkafka.so.1, COPY sources vs .dockerignore
#   Prometheus           promtool check config, scrape jobs vs compose services
#   Grafana              provisioning YAML and dashboard JSON structure; dashboard PromQL through
#                        promtool check rules; the metric names the code must emit
#   Loki, Redpanda       config structure; topic partition counts vs DESIGN.md
#   shell scripts        bash -n and shellcheck
#
# Tools that are missing are installed first (CI runs as root on Debian): Compose v2 and promtool
# are unpacked from Debian packages into $KITSUNE_CACHE/deploy-tools (default ~/.cache/kitsune),
# without installing or starting anything system-wide; shellcheck comes from apt.
# Needs bun (installed from npm at package.json's packageManager version when missing).
# Exits non-zero if any check fails; the last line is "check-deploy: N passed, M failed".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
TOOLS=${KITSUNE_CACHE:-$HOME/.cache/kitsune}/deploy-tools
DOCKERFILE_UTILS=dockerfile-utils@0.16.3
# Debian release whose docker-compose package is Compose v2 (bookworm's is the old Python v1).
COMPOSE_SUITE=trixie
export DEBIAN_FRONTEND=noninteractive

passed=0
failed=0
log() { printf 'check-deploy: %s\n' "$*" >&2; }
section() { printf '\n== %s\n' "$*"; }
ok() { passed=$((passed + 1)); printf '  ok    %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf '  FAIL  %s\n' "$1"; [ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/        /'; return 0; }
# run "what" cmd args...: one check, the command's output shown only when it fails.
run() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$what"; else fail "$what" "$out"; fi
}

# ---- tools ---------------------------------------------------------------------------------------
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"
    return 1
  fi
}

apt_updated=
apt_update_once() {
  [ -n "$apt_updated" ] && return 0
  log "apt-get update"
  as_root apt-get update -qq >/dev/null && apt_updated=1
}

# Downloads Debian package $1 (optionally from suite $2) and unpacks it into $TOOLS/$1.
# Nothing is installed system-wide: no dpkg state, no service started.
unpack_deb() {
  local pkg=$1 suite=${2:-} dest=$TOOLS/$1 work
  work=$(mktemp -d)
  local -a apt_opts=()
  if [ -n "$suite" ]; then
    # A private apt state holding only $suite's package list.
    local state=$TOOLS/apt-$suite
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\n' \
      "$suite" >"$state/sources.list"
    apt_opts=(-o "Dir::Etc::sourcelist=$state/sources.list" -o "Dir::Etc::sourceparts=-"
      -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o "APT::Get::List-Cleanup=0")
    log "fetching the $suite package list (once)"
    apt-get "${apt_opts[@]}" update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; rm -rf "$work"; return 1; }
  else
    local policy
    policy=$(apt-cache policy "$pkg" 2>/dev/null || true)
    [[ "$policy" == *"Candidate: "[0-9]* ]] || apt_update_once || return 1
  fi
  log "downloading Debian package $pkg${suite:+ ($suite)} into $dest"
  (cd "$work" && apt-get "${apt_opts[@]}" download "$pkg" >apt.log 2>&1) || { cat "$work/apt.log" >&2; rm -rf "$work"; return 1; }
  rm -rf "$dest"
  mkdir -p "$dest"
  dpkg-deb -x "$work"/"$pkg"_*.deb "$dest" && rm -rf "$work"
}

ensure_bun() {
  command -v bun >/dev/null && return 0
  local version
  version=$(sed -n 's/.*"packageManager": *"bun@\([^"]*\)".*/\1/p' package.json)
  if ! command -v npm >/dev/null; then
    apt_update_once && as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || return 1
  fi
  log "installing bun@${version:-latest} from npm"
  as_root npm install -g --silent "bun@${version:-latest}" >/dev/null
}

COMPOSE=()
COMPOSE_FROM=
ensure_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
    COMPOSE_FROM="docker compose (installed)"
    return 0
  fi
  if command -v docker-compose >/dev/null && docker-compose version 2>/dev/null | grep -qE 'version v?2\.'; then
    COMPOSE=(docker-compose)
    COMPOSE_FROM="docker-compose (installed)"
    return 0
  fi
  local plugin=$TOOLS/docker-compose/usr/libexec/docker/cli-plugins/docker-compose
  [ -x "$plugin" ] || unpack_deb docker-compose "$COMPOSE_SUITE" || return 1
  [ -x "$plugin" ] || { log "no docker-compose binary in the package"; return 1; }
  if command -v docker >/dev/null; then
    # The docker client finds CLI plugins under $DOCKER_CONFIG/cli-plugins.
    mkdir -p "$TOOLS/docker-config/cli-plugins"
    ln -sf "$plugin" "$TOOLS/docker-config/cli-plugins/docker-compose"
    COMPOSE=(env "DOCKER_CONFIG=$TOOLS/docker-config" docker compose)
    COMPOSE_FROM="docker compose, plugin from Debian $COMPOSE_SUITE's docker-compose"
  else
    # Without the docker client the plugin binary runs as a standalone `docker-compose`.
    COMPOSE=("$plugin")
    COMPOSE_FROM="docker-compose standalone, from Debian $COMPOSE_SUITE's docker-compose"
  fi
}

PROMTOOL=
ensure_promtool() {
  if command -v promtool >/dev/null; then
    PROMTOOL=$(command -v promtool)
    return 0
  fi
  PROMTOOL=$TOOLS/prometheus/usr/bin/promtool
  [ -x "$PROMTOOL" ] || unpack_deb prometheus || return 1
  [ -x "$PROMTOOL" ]
}

ensure_shellcheck() {
  command -v shellcheck >/dev/null && return 0
  apt_update_once && as_root apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
}

section "tools"
if ensure_bun; then ok "bun $(bun --version)"; else fail "bun (needed for the structural checks)"; fi
if ensure_compose; then ok "compose $("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'): $COMPOSE_FROM"; else fail "docker compose v2"; fi
if ensure_promtool; then ok "promtool: $("$PROMTOOL" --version 2>&1 | head -n1)"; else fail "promtool"; PROMTOOL=; fi
if ensure_shellcheck; then ok "shellcheck $(shellcheck --version | sed -n 's/^version: //p')"; else fail "shellcheck"; fi

# ---- docker-compose.yml ------------------------------------------------------------------------
section "docker-compose.yml"
resolved=$(mktemp)
trap 'rm -f "$resolved"' EXIT
if [ ${#COMPOSE[@]} -gt 0 ]; then
  # Resolve with the documented defaults, not with whatever the caller's shell exports.
  clean_env=(env -u API_TOKENS -u LOG_LEVEL -u API_PORT -u REDPANDA_PORT -u POSTGRES_PORT -u GRAFANA_ADMIN_USER -u GRAFANA_ADMIN_PASSWORD)
  run "docker compose -f docker-compose.yml config -q (no engine needed)" \
    "${clean_env[@]}" "${COMPOSE[@]}" -f docker-compose.yml config -q
  if ! "${clean_env[@]}" "${COMPOSE[@]}" -f docker-compose.yml config --format json >"$resolved" 2>/dev/null; then
    fail "docker compose config --format json" "$("${COMPOSE[@]}" -f docker-compose.yml config --format json 2>&1 >/dev/null)"
    : >"$resolved"
  fi
fi

# ---- Dockerfile lint ---------------------------------------------------------------------------
section "Dockerfile (dockerfile-utils lint)"
if command -v bun >/dev/null; then
  run "bunx $DOCKERFILE_UTILS lint Dockerfile" bun x "$DOCKERFILE_UTILS" lint Dockerfile
fi

# ---- Prometheus ----------------------------------------------------------------------------------
section "Prometheus (promtool)"
if [ -n "$PROMTOOL" ]; then
  run "promtool check config deploy/prometheus/prometheus.yml" \
    "$PROMTOOL" check config deploy/prometheus/prometheus.yml
fi

# ---- shell scripts -------------------------------------------------------------------------------
section "shell scripts"
for f in deploy/redpanda/create-topics.sh scripts/check-deploy.sh; do
  run "bash -n $f" bash -n "$f"
  if command -v shellcheck >/dev/null; then run "shellcheck $f" shellcheck -x "$f"; fi
done

# ---- structural checks ---------------------------------------------------------------------------
if command -v bun >/dev/null && [ -s "$resolved" ]; then
  out=$(PROMTOOL="$PROMTOOL" bun deploy/check-deploy.ts "$resolved")
  status=$?
  printf '%s\n' "$out" | grep -v '^check-deploy.ts: '
  tally=$(printf '%s\n' "$out" | sed -n 's/^check-deploy.ts: \([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p')
  if [ -n "$tally" ]; then
    passed=$((passed + ${tally% *}))
    failed=$((failed + ${tally#* }))
    warnings=$(printf '%s\n' "$out" | grep -c '^  WARN' || true)
  else
    fail "deploy/check-deploy.ts ran to the end (exit $status)"
  fi
  [ "$status" -ne 0 ] && [ -n "$tally" ] && [ "${tally#* }" = 0 ] && fail "deploy/check-deploy.ts exit status $status"
else
  fail "structural checks (need bun and the resolved compose file)"
fi

[ "${warnings:-0}" -gt 0 ] && printf 'check-deploy: %s warning(s) above (WARN)\n' "$warnings"
printf 'check-deploy: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
