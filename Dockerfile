# Kitsune: one executable, three roles (ROLE=api|log-worker|db-worker|all).
#
#   docker build -t kitsune:local .
#   docker run --rm -e ROLE=api -e API_TOKENS=dev-token -e KAFKA_BROKERS=host:9092 -p 8080:8080 kitsune:local
#
# Stage `build` compiles the TypeScript into one self-contained executable with
# `bun build --compile` (package.json "build"). Stage `native` compiles the C parts with Debian
# bookworm's gcc, for the runtime's glibc:
#   - librdkafka 2.15 from the source vendored in the pinned @confluentinc/kafka-javascript
#     package (scripts/build-librdkafka.sh), the version the project tests against;
#   - the consumer's fetch loop, src/kafka/native.c, with -O2 into a shared object: the runtime
#     has no C headers or libc.so for Bun's TinyCC, so the executable loads
#     /usr/local/lib/kitsune/native.so instead (see src/kafka/native.ts).
# The runtime is a slim bookworm with only what runs: glibc (the Bun runtime inside the executable
# needs glibc >= 2.17), librdkafka.so.1 (opened through bun:ffi) and the libraries it links, CA
# certificates, and curl for the HEALTHCHECK.
#
# No `# syntax=` line and no BuildKit-only flags: a Docker host without access to Docker Hub's
# frontend images, the legacy builder and `podman build` all build this file as it is.

# ---- build ----------------------------------------------------------------------------------
# Same Bun as package.json "packageManager" (scripts/check-deploy.sh checks they agree).
FROM oven/bun:1.4.5 AS build
WORKDIR /src

# Dependencies first, so source edits do not invalidate the install layer.
COPY package.json bun.lock bunfig.toml ./
# patches/: the postgres.js fix that bun install applies (package.json patchedDependencies).
COPY patches ./patches
RUN bun install --frozen-lockfile

COPY tsconfig.json ./
COPY src ./src
# `bun run build` compiles src/main.ts together with the second entrypoint src/kafka/txn-worker.ts
# (a Worker embedded in the same executable) into dist/kitsune.
RUN bun run build

# ---- native ---------------------------------------------------------------------------------
FROM debian:bookworm-slim AS native
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential python3 libssl-dev zlib1g-dev \
         libsasl2-dev libzstd-dev liblz4-dev libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/build-librdkafka.sh scripts/
# Only librdkafka's source out of node_modules: a change to the TypeScript keeps this layer and
# the (few minutes') librdkafka build below cached.
COPY --from=build /src/node_modules/@confluentinc/kafka-javascript/deps/librdkafka \
     node_modules/@confluentinc/kafka-javascript/deps/librdkafka
RUN LIBRDKAFKA_PREFIX=/opt/librdkafka scripts/build-librdkafka.sh
COPY src/kafka/native.c native.c
# native.c calls librdkafka through a table of function pointers the executable passes in
# (kitsune_init), so the object links against nothing but libc. It carries the source's SHA-256:
# the executable uses only an object built from the native.c it was built with.
RUN gcc -O2 -shared -fPIC -s -Wall -Werror -Wno-unused-parameter \
      -DKITSUNE_SOURCE_SHA256="\"$(sha256sum native.c | cut -c1-64)\"" -o native.so native.c

# ---- runtime --------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# What librdkafka.so.1 links (built in `native` against the -dev packages of the same names):
# libssl3, libsasl2-2, libzstd1, liblz4-1, libcurl4, zlib1g.
# ca-certificates: TLS to brokers/Loki outside the compose network.
# curl: the HEALTHCHECK below (the kitsune executable has no HTTP client sub-command).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 libsasl2-2 libzstd1 liblz4-1 libcurl4 \
         zlib1g ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old \
    && groupadd --system --gid 10001 kitsune \
    && useradd --system --uid 10001 --gid kitsune --home-dir /app --no-create-home \
         --shell /usr/sbin/nologin kitsune

WORKDIR /app
COPY --from=build /src/dist/kitsune /usr/local/bin/kitsune
COPY --from=native /opt/librdkafka/lib/librdkafka.so.1 /usr/local/lib/librdkafka.so.1
COPY --from=native /src/native.so /usr/local/lib/kitsune/native.so
COPY sql /app/sql
# Smoke test on the runtime's own glibc (no network): the build fails unless librdkafka.so.1 finds
# every library it links and the executable loads the ahead-of-time compiled fetch loop.
RUN ldconfig \
    && if ldd /usr/local/lib/librdkafka.so.1 | grep 'not found'; then exit 1; fi \
    && v=$(kitsune version) && echo "$v" \
    && case "$v" in *"native fetch loop: AOT /usr/local/lib/kitsune/native.so)"*) ;; \
         *) echo "kitsune does not use /usr/local/lib/kitsune/native.so" >&2; exit 1 ;; esac

ENV SQL_DIR=/app/sql \
    HTTP_PORT=8080 \
    LOG_LEVEL=info
# ROLE has no default on purpose: the process refuses to start without it (see DESIGN.md).

USER 10001:10001
EXPOSE 8080

# Liveness only: /healthz answers 200 while the process runs. Compose and orchestrators that want
# readiness (broker, PostgreSQL, registry) probe /readyz themselves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:${HTTP_PORT}/healthz" || exit 1

# SIGTERM drains in-flight work, flushes the producer and commits offsets within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["kitsune"]
