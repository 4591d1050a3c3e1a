#!/usr/bin/env bash
# Installs (if needed) and starts, or stops, the Redis servers the tests use, all on loopback:
#   - a standalone Redis on 127.0.0.1:6399
#   - a Redis Cluster of 3 primaries on 127.0.0.1:7101-7103, each with one replica on 7104-7106
#     (the layout a failover needs). REDIS_CLUSTER_REPLICAS=0 gives the former layout instead:
#     3 primaries, no replicas.
# The tests read the three primaries from REDIS_CLUSTER_NODES (any node will do to discover the
# rest); `start` prints the value.
#
# Usage: scripts/redis.sh start|stop|status
#
# Environment (defaults in brackets), e.g. for a second set beside the usual one:
#   REDIS_STANDALONE_PORT   [6399]  the standalone server's port
#   REDIS_CLUSTER_BASE_PORT [7101]  the first primary's port; the primaries take the next ones, then
#                                   the replicas (so 7101-7103 and 7104-7106); each node's cluster
#                                   bus takes port + 10000
#   REDIS_CLUSTER_REPLICAS  [1]     replicas per primary: 1, or 0 for 3 primaries alone
#   REDIS_DATA_DIR          [.services/redis]  where the nodes keep their files and logs
# `stop` and `status` need the same settings as `start`: they address the ports they name.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${REDIS_DATA_DIR:-$PWD/.services/redis}"
STANDALONE_PORT="${REDIS_STANDALONE_PORT:-6399}"
BASE_PORT="${REDIS_CLUSTER_BASE_PORT:-7101}"
REPLICAS="${REDIS_CLUSTER_REPLICAS:-1}"
case "$REPLICAS" in
  0 | 1) ;;
  *) echo "REDIS_CLUSTER_REPLICAS must be 0 or 1, not $REPLICAS" >&2; exit 2 ;;
esac
PRIMARY_PORTS=("$BASE_PORT" $((BASE_PORT + 1)) $((BASE_PORT + 2)))
REPLICA_PORTS=()
[ "$REPLICAS" -eq 0 ] || REPLICA_PORTS=($((BASE_PORT + 3)) $((BASE_PORT + 4)) $((BASE_PORT + 5)))
CLUSTER_PORTS=("${PRIMARY_PORTS[@]}" "${REPLICA_PORTS[@]}")
# How long a node may be unreachable before the others fail it over to its replica.
NODE_TIMEOUT=2000

install() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "installing redis-server from Debian's packages"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
}

wait_ping() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis on port $1 did not start" >&2
  return 1
}

start_node() { # port, extra args...
  local port=$1; shift
  mkdir -p "$ROOT/$port"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$ROOT/$port" --logfile "$ROOT/$port/redis.log" --pidfile "$ROOT/$port/redis.pid" "$@"
  wait_ping "$port"
}

# One field of `redis-cli -p <port> <command…>`'s `name:value` lines.
field() { # port, name, command...
  local port=$1 name=$2; shift 2
  redis-cli -p "$port" "$@" 2>/dev/null | tr -d '\r' | sed -n "s/^$name://p"
}

# Whether every node is ready: each sees the cluster ok and knows every node; each primary serves
# slots and has its replicas attached; each replica is a replica with its link to the primary up
# (the initial sync done).
cluster_ready() {
  local p
  for p in "${CLUSTER_PORTS[@]}"; do
    [ "$(field "$p" cluster_state cluster info)" = ok ] || return 1
    [ "$(field "$p" cluster_known_nodes cluster info)" = "${#CLUSTER_PORTS[@]}" ] || return 1
  done
  for p in "${PRIMARY_PORTS[@]}"; do
    [ "$(field "$p" role info replication)" = master ] || return 1
    [ "$(field "$p" connected_slaves info replication)" = "$REPLICAS" ] || return 1
  done
  for p in "${REPLICA_PORTS[@]}"; do
    [ "$(field "$p" role info replication)" = slave ] || return 1
    [ "$(field "$p" master_link_status info replication)" = up ] || return 1
  done
  # Every node also sees the replicas as replicas (the role spreads by gossip).
  for p in "${CLUSTER_PORTS[@]}"; do
    [ "$(redis-cli -p "$p" cluster nodes 2>/dev/null | grep -cE '[ ,]slave ')" = "${#REPLICA_PORTS[@]}" ] || return 1
  done
}

start() {
  install
  stop >/dev/null 2>&1 || true
  rm -rf "$ROOT"
  start_node "$STANDALONE_PORT"
  for p in "${CLUSTER_PORTS[@]}"; do
    start_node "$p" --cluster-enabled yes --cluster-config-file "$ROOT/$p/nodes.conf" \
      --cluster-node-timeout "$NODE_TIMEOUT"
  done
  # With --cluster-replicas 1, redis-cli makes the first three nodes listed the primaries and the
  # other three their replicas.
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
    --cluster-replicas "$REPLICAS" --cluster-yes >/dev/null
  for _ in $(seq 1 300); do
    if cluster_ready; then
      local nodes
      nodes=$(printf 'redis://127.0.0.1:%s,' "${PRIMARY_PORTS[@]}")
      local replicas=""
      [ "$REPLICAS" -eq 0 ] || replicas=", their replicas on ${REPLICA_PORTS[*]}"
      echo "redis: standalone on $STANDALONE_PORT, cluster primaries on ${PRIMARY_PORTS[*]}$replicas"
      echo "REDIS_CLUSTER_NODES=${nodes%,}"
      return 0
    fi
    sleep 0.1
  done
  echo "the redis cluster did not get ready (cluster_state:ok, replicas in sync) in 30 s" >&2
  for p in "${CLUSTER_PORTS[@]}"; do
    echo "-- $p: $(field "$p" cluster_state cluster info)" \
      "$(field "$p" role info replication) $(field "$p" master_link_status info replication)" >&2
  done
  return 1
}

stop() {
  # Both layouts' ports, whichever was started.
  for p in "$STANDALONE_PORT" $(seq "$BASE_PORT" $((BASE_PORT + 5))); do
    redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
  done
}

status() {
  for p in "$STANDALONE_PORT" "${CLUSTER_PORTS[@]}"; do
    printf '%s: ' "$p"
    if redis-cli -p "$p" ping >/dev/null 2>&1; then
      role=$(field "$p" role info replication)
      if [ "$p" = "$STANDALONE_PORT" ]; then echo "up (standalone)"; else echo "up ($role)"; fi
    else
      echo down
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
