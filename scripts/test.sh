#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine that has git, Node/npm and apt,
# exactly as CI does: it is .ci/run, which installs everything (apt packages, Bun, the packages,
# librdkafka, Kafka's jars, Chromium), starts PostgreSQL and two Kafka brokers on ports of their
# own (19092, 19094; stopped at the end), type-checks, builds dist/kitsune and runs `bun test`
# against real Kafka and PostgreSQL. Root is needed for apt and PostgreSQL: sudo unless root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then exec bash .ci/run "$@"; fi
exec sudo bash .ci/run "$@"
