#!/usr/bin/env bash
# Builds librdkafka from the source the pinned @confluentinc/kafka-javascript package carries
# (node_modules/@confluentinc/kafka-javascript/deps/librdkafka; run `bun install` first), linked
# against the system's OpenSSL, zlib, zstd, lz4, Cyrus SASL and curl.
#
#   scripts/build-librdkafka.sh      build once, reuse afterwards; the LAST line on stdout is the
#                                    absolute path of librdkafka.so.1 (progress goes to stderr)
#
# Installs into ${LIBRDKAFKA_PREFIX:-${KITSUNE_CACHE:-~/.cache/kitsune}/librdkafka-<version>}
# (lib/librdkafka.so.1, include/librdkafka/rdkafka.h). A complete build leaves a marker file, so a
# second run only prints the path. The binding (src/kafka/ffi.ts) looks there by itself.
# Debian build dependencies: build-essential libssl-dev zlib1g-dev libsasl2-dev libzstd-dev
# liblz4-dev libcurl4-openssl-dev. About 3 minutes on 2 cores (JOBS, default: the core count).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=$ROOT/node_modules/@confluentinc/kafka-javascript/deps/librdkafka

log() { printf 'build-librdkafka: %s\n' "$*" >&2; }

[ -f "$SRC/src/rdkafka.h" ] || {
  log "no librdkafka source in $SRC: run 'bun install' first"
  exit 1
}

# RD_KAFKA_VERSION is 0xMMmmrrxx (major, minor, revision, pre-release).
hex=$(sed -n 's/^#define RD_KAFKA_VERSION  *0x\([0-9a-fA-F]\{8\}\).*/\1/p' "$SRC/src/rdkafka.h")
[ -n "$hex" ] || { log "cannot read RD_KAFKA_VERSION from $SRC/src/rdkafka.h"; exit 1; }
VERSION=$((16#${hex:0:2})).$((16#${hex:2:2})).$((16#${hex:4:2}))
PREFIX=${LIBRDKAFKA_PREFIX:-${KITSUNE_CACHE:-$HOME/.cache/kitsune}/librdkafka-$VERSION}
case $PREFIX in /*) ;; *) PREFIX=$PWD/$PREFIX ;; esac
LIB=$PREFIX/lib/librdkafka.so.1
MARKER=$PREFIX/.complete

if [ -f "$MARKER" ] && [ -f "$LIB" ]; then
  log "librdkafka $VERSION already built in $PREFIX"
  echo "$LIB"
  exit 0
fi

# Say everything that is missing at once, by Debian package name.
missing=()
command -v cc >/dev/null && command -v make >/dev/null || missing+=(build-essential)
has_header() { printf '#include <%s>\n' "$1" | cc -E -x c - >/dev/null 2>&1; }
for pair in openssl/ssl.h:libssl-dev zlib.h:zlib1g-dev sasl/sasl.h:libsasl2-dev zstd.h:libzstd-dev \
  lz4.h:liblz4-dev curl/curl.h:libcurl4-openssl-dev; do
  command -v cc >/dev/null || break
  has_header "${pair%%:*}" || missing+=("${pair#*:}")
done
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  log "missing build dependencies; on Debian/Ubuntu: apt-get install ${missing[*]}"
  exit 1
fi

mkdir -p "$(dirname "$PREFIX")"
# Two builds into one prefix at once (CI and a developer, say) take turns; the second reuses.
exec 9>"$PREFIX.lock"
flock 9
if [ -f "$MARKER" ] && [ -f "$LIB" ]; then
  log "librdkafka $VERSION was built meanwhile in $PREFIX"
  echo "$LIB"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "building librdkafka $VERSION into $PREFIX (a few minutes; log: $work/build.log while it runs)"
# Build in a copy: node_modules stays as the package manager left it.
cp -a "$SRC" "$work/librdkafka"
cd "$work/librdkafka"
fail() {
  tail -n 40 "$work/build.log" >&2
  log "$1"
  exit 1
}
./configure --prefix="$PREFIX" --enable-ssl --enable-gssapi --enable-zlib --enable-zstd \
  --enable-lz4-ext --enable-curl --disable-debug-symbols >"$work/build.log" 2>&1 ||
  fail "configure failed"
log "configured; compiling"
make -C src -j"${JOBS:-$(nproc)}" lib >>"$work/build.log" 2>&1 || fail "make failed"
rm -rf "$work/stage"
make -C src install DESTDIR="$work/stage" >>"$work/build.log" 2>&1 || fail "make install failed"
[ -f "$work/stage$LIB" ] || fail "the build made no $(basename "$LIB")"

rm -rf "$PREFIX"
mv "$work/stage$PREFIX" "$PREFIX"
echo "$VERSION" >"$MARKER"
log "librdkafka $VERSION built"
echo "$LIB"
