#!/usr/bin/env bash
# One-shot topic creation for docker-compose.yml (service `topics`), run inside the Redpanda image.
# Partition counts are the ones in DESIGN.md ("Topics"). Safe to run again: an existing topic is
# left as it is, except that one with fewer partitions than wanted is grown (never shrunk).
set -euo pipefail

BROKERS=${RPK_BROKERS:-redpanda:29092}
REPLICAS=${TOPIC_REPLICAS:-1}

# name:partitions
TOPICS=(
  db-events:6
  app-logs:3
  db-results:6
  db-events.dlq:1
  app-logs.dlq:1
)

rpk_() { rpk "$@" -X brokers="$BROKERS"; }

# `rpk topic list` prints a header, then "NAME PARTITIONS REPLICAS" per topic.
existing=$(rpk_ topic list | awk 'NR > 1 && NF >= 2 { print $1, $2 }')

for spec in "${TOPICS[@]}"; do
  topic=${spec%%:*}
  want=${spec##*:}
  have=$(awk -v t="$topic" '$1 == t { print $2 }' <<<"$existing")
  if [ -z "$have" ]; then
    echo "topics: creating $topic ($want partitions, replication $REPLICAS)"
    rpk_ topic create "$topic" --partitions "$want" --replicas "$REPLICAS"
  elif [[ "$have" =~ ^[0-9]+$ ]] && [ "$have" -lt "$want" ]; then
    echo "topics: $topic has $have partitions, growing to $want"
    rpk_ topic add-partitions "$topic" --num "$((want - have))"
  else
    echo "topics: $topic exists ($have partitions)"
  fi
done

rpk_ topic list
