#!/usr/bin/env bash
# Runs Kitsune on a fresh Debian/Ubuntu machine that has git, Node/npm and apt: installs what it
# needs, then starts `kitsune dev` — the api, db-worker and log-worker in one process, on embedded
# parts (librdkafka's mock cluster, PGlite, log lines on stdout) wherever KAFKA_BROKERS,
# POSTGRES_DSN or LOKI_URL are unset. Arguments go to `kitsune dev` (e.g. --memory).
#
# What it installs, each only when missing: librdkafka's Debian build dependencies (apt, through
# sudo unless root), Bun at package.json's packageManager version (npm install -g), the packages
# (bun install --frozen-lockfile), librdkafka built once from the pinned source into
# ~/.cache/kitsune (scripts/build-librdkafka.sh, a few minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'dev.sh: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for pkg in build-essential libssl-dev zlib1g-dev libsasl2-dev libzstd-dev liblz4-dev libcurl4-openssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (librdkafka's build dependencies)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

BUN_VERSION=$(sed -n 's/.*"packageManager": *"bun@\([^"]*\)".*/\1/p' package.json)
if [ "$(bun --version 2>/dev/null || true)" != "$BUN_VERSION" ]; then
  say "installing bun $BUN_VERSION"
  if [ -w "$(npm config get prefix)/lib" ]; then npm install -g --silent "bun@$BUN_VERSION"; else as_root npm install -g --silent "bun@$BUN_VERSION"; fi
  hash -r
fi

bun install --frozen-lockfile >&2
scripts/build-librdkafka.sh >/dev/null
exec bun src/main.ts dev "$@"
