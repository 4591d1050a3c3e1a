#!/usr/bin/env bash
# Installs (if needed) and starts, or stops, the Redis servers the tests use, all on loopback:
#   - a standalone Redis on 127.0.0.1:6399
#   - a 3-node Redis Cluster (3 primaries, no replicas) on 127.0.0.1:7101-7103
# Usage: scripts/redis.sh start|stop|status
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD/.services/redis"
STANDALONE_PORT=6399
CLUSTER_PORTS=(7101 7102 7103)

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

start() {
  install
  stop >/dev/null 2>&1 || true
  rm -rf "$ROOT"
  start_node "$STANDALONE_PORT"
  for p in "${CLUSTER_PORTS[@]}"; do
    start_node "$p" --cluster-enabled yes --cluster-config-file "$ROOT/$p/nodes.conf" --cluster-node-timeout 2000
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
  for _ in $(seq 1 100); do
    if redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep -q 'cluster_state:ok'; then
      echo "redis: standalone on $STANDALONE_PORT, cluster on ${CLUSTER_PORTS[*]}"
      return 0
    fi
    sleep 0.1
  done
  echo "redis cluster did not reach cluster_state:ok" >&2
  return 1
}

stop() {
  for p in "$STANDALONE_PORT" "${CLUSTER_PORTS[@]}"; do
    redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
  done
}

status() {
  for p in "$STANDALONE_PORT" "${CLUSTER_PORTS[@]}"; do
    printf '%s: ' "$p"; redis-cli -p "$p" ping 2>&1 || true
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
