#!/usr/bin/env bash
# Local services for machines without Docker: Apache Kafka (KRaft, one node) and PostgreSQL.
#
#   scripts/services.sh up       start what is missing, reuse what already answers
#   scripts/services.sh down     stop only what `up` started
#   scripts/services.sh status   say what runs
#   scripts/services.sh registry-up|registry-down|registry-url   the schema registry alone (see REGISTRY)
#
# For a private broker on other ports (bench/lib/broker.ts runs one for the chaos scenarios):
#   scripts/services.sh kafka-home                      where the cached jars are (libs/; fetched if missing)
#   scripts/services.sh kafka-config DIR PORT CPORT     this broker configuration, written into DIR
#
# Environment:
#   KAFKA_VERSION          4.4.0 (default) or 3.9.2; 4.x needs librdkafka 2.10+ for idempotence
#                          (KIP-896, librdkafka#4948), which scripts/build-librdkafka.sh provides
#   KAFKA_PORT             9092; KAFKA_CONTROLLER_PORT 9093 (KRaft controller)
#   KITSUNE_CACHE          ~/.cache/kitsune: jars in kafka-<version>/, the broker's data, log and
#                          pid in run/kafka-<version>-<port>/, so brokers of two versions or on two
#                          ports run side by side, and `down` stops only the one it is asked about
#   REGISTRY=1             `up` also starts a schema registry: Apicurio Registry $REGISTRY_VERSION
#                          (3.3.3), in memory, on 127.0.0.1:$REGISTRY_PORT (8085, management port
#                          REGISTRY_MANAGEMENT_PORT 8086); its Confluent API is
#                          http://127.0.0.1:8085/apis/ccompat/v7 (SCHEMA_REGISTRY_URL). It needs Java 21+:
#                          REGISTRY_JAVA, else the newest under /usr/lib/jvm. `down` stops it whatever REGISTRY says.
# The jars come from Maven Central (mvn), so only the first `up` of a version downloads them.
set -euo pipefail

KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
SCALA_VERSION=2.13
CACHE=${KITSUNE_CACHE:-$HOME/.cache/kitsune}
KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
STATE=$CACHE/run
KAFKA_HOST=127.0.0.1
KAFKA_PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_STATE=$STATE/kafka-$KAFKA_VERSION-$KAFKA_PORT
# Kafka logs through slf4j 1.7: bound to reload4j up to 3.x, to log4j2 (which 4.x brings) from 4.0.
case $KAFKA_VERSION in
  3.*) SLF4J_BINDING="<groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version>" ;;
  *) SLF4J_BINDING="<groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.25.5</version>" ;;
esac
PG_HOST=127.0.0.1
PG_PORT=5432
REGISTRY_VERSION=${REGISTRY_VERSION:-3.3.3}
REGISTRY_HOME=$CACHE/apicurio-registry-$REGISTRY_VERSION
REGISTRY_PORT=${REGISTRY_PORT:-8085}
REGISTRY_MANAGEMENT_PORT=${REGISTRY_MANAGEMENT_PORT:-8086}
REGISTRY_STATE=$STATE/registry-$REGISTRY_PORT

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# --- Kafka -----------------------------------------------------------------------------------

fetch_kafka() {
  [ -f "$KAFKA_HOME/libs/.complete" ] && return 0
  command -v mvn >/dev/null || { log "mvn is needed once to fetch Kafka's jars from Maven Central"; exit 1; }
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME/libs (once)"
  local work
  work=$(mktemp -d)
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kitsune</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_$SCALA_VERSION</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency>$SLF4J_BINDING</dependency>
  </dependencies>
</project>
EOF
  rm -rf "$KAFKA_HOME/libs"
  mkdir -p "$KAFKA_HOME/libs"
  mvn -B -q -f "$work/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >"$work/mvn.log" 2>&1 || {
    cat "$work/mvn.log" >&2
    log "could not fetch Kafka's jars"
    exit 1
  }
  touch "$KAFKA_HOME/libs/.complete"
  rm -rf "$work"
}

# Writes kafka.properties, log4j.properties (Kafka 3.x) and log4j2.properties (4.x) into $1
# (data in $1/kafka-data, log in $1/kafka.log).
kafka_config() {
  local dir=$1
  local data=$dir/kafka-data
  mkdir -p "$data"
  cat >"$dir/kafka.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24
log.segment.bytes=268435456
EOF
  cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/kafka.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
EOF
  cat >"$dir/log4j2.properties" <<EOF
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/kafka.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
logger.broker.name=kafka.server.BrokerServer
logger.broker.level=INFO
logger.raft.name=kafka.server.KafkaRaftServer
logger.raft.level=INFO
EOF
}

kafka_java() {
  exec java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$KAFKA_STATE/log4j.properties" \
    -Dlog4j2.configurationFile="$KAFKA_STATE/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

kafka_up() {
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "Kafka already answers on $KAFKA_HOST:$KAFKA_PORT; reusing it"
    return 0
  fi
  command -v java >/dev/null || { log "java (17+) is needed to run Kafka"; exit 1; }
  fetch_kafka
  mkdir -p "$KAFKA_STATE"
  kafka_config "$KAFKA_STATE"
  if [ ! -f "$KAFKA_STATE/kafka-data/meta.properties" ]; then
    local cluster_id
    cluster_id=$( (kafka_java kafka.tools.StorageTool random-uuid) )
    (kafka_java kafka.tools.StorageTool format --ignore-formatted \
      -t "$cluster_id" -c "$KAFKA_STATE/kafka.properties" >/dev/null)
  fi
  log "starting Kafka $KAFKA_VERSION on $KAFKA_HOST:$KAFKA_PORT (log: $KAFKA_STATE/kafka.log)"
  # The subshell execs java, so $! is the broker's own pid.
  (kafka_java kafka.Kafka "$KAFKA_STATE/kafka.properties") >"$KAFKA_STATE/kafka.out" 2>&1 </dev/null &
  echo $! >"$KAFKA_STATE/kafka.pid"
  local deadline=$((SECONDS + 90))
  until kafka_ready; do
    if ! kill -0 "$(cat "$KAFKA_STATE/kafka.pid")" 2>/dev/null; then
      tail -n 30 "$KAFKA_STATE/kafka.out" "$KAFKA_STATE/kafka.log" >&2 || true
      rm -f "$KAFKA_STATE/kafka.pid"
      log "Kafka exited during start-up"
      exit 1
    fi
    [ $SECONDS -lt $deadline ] || { log "Kafka did not answer within 90 s"; exit 1; }
    sleep 0.5
  done
  log "Kafka is up"
}

# The port opens before the broker serves metadata; ask it the way clients will.
kafka_ready() {
  port_open "$KAFKA_HOST" "$KAFKA_PORT" || return 1
  if command -v kcat >/dev/null; then
    kcat -b "$KAFKA_HOST:$KAFKA_PORT" -L -m 2 >/dev/null 2>&1
  else
    return 0
  fi
}

# stop_pidfile FILE NAME SECONDS: stops the process FILE names (TERM, then KILL after SECONDS), removes FILE.
stop_pidfile() {
  local file=$1 name=$2 seconds=$3 pid
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 $((seconds * 2))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

kafka_down() {
  if [ -f "$KAFKA_STATE/kafka.pid" ]; then
    stop_pidfile "$KAFKA_STATE/kafka.pid" Kafka 30
  else
    log "Kafka was not started by this script; leaving it"
  fi
}

# --- PostgreSQL ------------------------------------------------------------------------------

pg_as_admin() {
  if psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAq "$@"
  else
    su postgres -c "psql -p $PG_PORT -d postgres -v ON_ERROR_STOP=1 -tAq $(printf '%q ' "$@")"
  fi
}

pg_up() {
  if ! port_open "$PG_HOST" "$PG_PORT"; then
    if command -v pg_lsclusters >/dev/null && [ -n "$(pg_lsclusters -h 2>/dev/null)" ]; then
      local version
      version=$(pg_lsclusters -h | awk 'NR==1{print $1}')
      log "starting PostgreSQL cluster $version/main"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start
      mkdir -p "$STATE"
      echo "$version" >"$STATE/postgres.started"
      for _ in $(seq 1 60); do port_open "$PG_HOST" "$PG_PORT" && break; sleep 0.5; done
    else
      log "no PostgreSQL answers on $PG_HOST:$PG_PORT and none is installed (apt-get install postgresql)"
      exit 1
    fi
  else
    log "PostgreSQL already answers on $PG_HOST:$PG_PORT; reusing it"
  fi
  pg_as_admin -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kitsune') THEN
        CREATE ROLE kitsune LOGIN PASSWORD 'kitsune' CREATEDB;
      END IF;
    END \$\$;"
  if [ -z "$(pg_as_admin -c "SELECT 1 FROM pg_database WHERE datname = 'kitsune'")" ]; then
    pg_as_admin -c "CREATE DATABASE kitsune OWNER kitsune"
  fi
  log "PostgreSQL has role and database kitsune"
}

pg_down() {
  if [ -f "$STATE/postgres.started" ]; then
    local version
    version=$(cat "$STATE/postgres.started")
    log "stopping PostgreSQL cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main stop || true
    rm -f "$STATE/postgres.started"
  else
    log "PostgreSQL was not started by this script; leaving it"
  fi
}

# --- Schema registry (Apicurio) --------------------------------------------------------------

java_major() { "$1" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p'; }

# A java of version 21 or newer: REGISTRY_JAVA, the newest JDK under /usr/lib/jvm, or the default one.
registry_java() {
  if [ -n "${REGISTRY_JAVA:-}" ]; then echo "$REGISTRY_JAVA"; return 0; fi
  local candidate best="" best_major=0 major
  for candidate in /usr/lib/jvm/*/bin/java "$(command -v java || true)"; do
    [ -x "$candidate" ] || continue
    major=$(java_major "$candidate")
    if [ -n "$major" ] && [ "$major" -gt "$best_major" ]; then best=$candidate; best_major=$major; fi
  done
  [ "$best_major" -ge 21 ] || { log "Apicurio Registry needs Java 21+; none found (set REGISTRY_JAVA)"; exit 1; }
  echo "$best"
}

fetch_registry() {
  [ -f "$REGISTRY_HOME/.complete" ] && return 0
  command -v mvn >/dev/null || { log "mvn is needed once to fetch Apicurio Registry from Maven Central"; exit 1; }
  log "fetching Apicurio Registry $REGISTRY_VERSION from Maven Central into $REGISTRY_HOME (once, ~160 MB)"
  local work
  work=$(mktemp -d)
  mvn -B -q dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
    -DoutputDirectory="$work" >"$work/mvn.log" 2>&1 || {
    cat "$work/mvn.log" >&2
    log "could not fetch Apicurio Registry"
    exit 1
  }
  rm -rf "$REGISTRY_HOME"
  mkdir -p "$REGISTRY_HOME"
  tar xzf "$work"/apicurio-registry-app-*.tar.gz -C "$REGISTRY_HOME"
  touch "$REGISTRY_HOME/.complete"
  rm -rf "$work"
}

registry_url() { echo "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"; }

# 200 to GET of the Confluent API's subject list (bash's /dev/tcp: no curl needed).
registry_ready() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$REGISTRY_PORT" || exit 1
    printf 'GET /apis/ccompat/v7/subjects HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    IFS= read -r -t 5 line <&3 && [[ $line == *" 200"* ]]
  ) 2>/dev/null
}

registry_up() {
  if port_open 127.0.0.1 "$REGISTRY_PORT"; then
    log "something answers on 127.0.0.1:$REGISTRY_PORT already; reusing it as the schema registry"
    return 0
  fi
  local java
  java=$(registry_java)
  fetch_registry
  mkdir -p "$REGISTRY_STATE"
  log "starting Apicurio Registry $REGISTRY_VERSION on $(registry_url) (log: $REGISTRY_STATE/registry.out)"
  # In-memory storage (H2, the default), both ports on loopback, no access log, no telemetry.
  (cd "$REGISTRY_HOME" && exec "$java" -Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT" \
    -Dquarkus.http.access-log.enabled=false -Dquarkus.otel.sdk.disabled=true \
    -jar quarkus-run.jar) >"$REGISTRY_STATE/registry.out" 2>&1 </dev/null &
  echo $! >"$REGISTRY_STATE/registry.pid"
  local deadline=$((SECONDS + 120))
  until registry_ready; do
    if ! kill -0 "$(cat "$REGISTRY_STATE/registry.pid")" 2>/dev/null; then
      tail -n 30 "$REGISTRY_STATE/registry.out" >&2 || true
      rm -f "$REGISTRY_STATE/registry.pid"
      log "Apicurio Registry exited during start-up"
      exit 1
    fi
    [ $SECONDS -lt $deadline ] || { log "Apicurio Registry did not answer within 120 s"; exit 1; }
    sleep 0.5
  done
  log "schema registry is up: SCHEMA_REGISTRY_URL=$(registry_url)"
}

registry_down() {
  [ -f "$REGISTRY_STATE/registry.pid" ] || return 0
  stop_pidfile "$REGISTRY_STATE/registry.pid" "Apicurio Registry" 20
}

status() {
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    local who="not started by this script"
    [ -f "$KAFKA_STATE/kafka.pid" ] && kill -0 "$(cat "$KAFKA_STATE/kafka.pid")" 2>/dev/null &&
      who="Kafka $KAFKA_VERSION started by this script, pid $(cat "$KAFKA_STATE/kafka.pid")"
    echo "kafka       up   $KAFKA_HOST:$KAFKA_PORT ($who)"
  else
    echo "kafka       down $KAFKA_HOST:$KAFKA_PORT"
  fi
  if port_open "$PG_HOST" "$PG_PORT"; then
    echo "postgresql  up   $PG_HOST:$PG_PORT"
  else
    echo "postgresql  down $PG_HOST:$PG_PORT"
  fi
  if port_open 127.0.0.1 "$REGISTRY_PORT"; then
    echo "registry    up   $(registry_url)"
  else
    echo "registry    down 127.0.0.1:$REGISTRY_PORT"
  fi
}

case "${1:-}" in
  up) pg_up; kafka_up; if [ "${REGISTRY:-0}" = 1 ]; then registry_up; fi ;;
  down) registry_down; kafka_down; pg_down ;;
  registry-up) registry_up ;;
  registry-down) registry_down ;;
  registry-url) registry_url ;;
  status) status ;;
  kafka-home) fetch_kafka; echo "$KAFKA_HOME" ;;
  kafka-config)
    [ $# -eq 4 ] || { echo "usage: $0 kafka-config DIR PORT CONTROLLER_PORT" >&2; exit 2; }
    KAFKA_PORT=$3 CONTROLLER_PORT=$4 kafka_config "$2"
    ;;
  *) echo "usage: $0 up|down|status|registry-up|registry-down|registry-url|kafka-home|kafka-config DIR PORT CONTROLLER_PORT" >&2; exit 2 ;;
esac
