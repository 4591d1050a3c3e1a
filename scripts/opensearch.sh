#!/usr/bin/env bash
# Builds (if needed) and starts, or stops, a real single-node OpenSearch 2.19 for the tests, from
# Maven Central jars (no Docker): HTTP on 127.0.0.1:9250, transport on 127.0.0.1:9350, 512 MiB heap.
#   - the launcher lives in integration-tests/opensearch-node (pom.xml + one Java class); Maven
#     compiles it and copies the runtime jars to its target/lib, offline first, online if needed;
#   - the node runs in the background; its pid, log and data live in .services/opensearch/
#     (wiped on each start, so every run begins with an empty cluster, unless
#     OPENSEARCH_KEEP_DATA=1: then a restarted node keeps its indices, as a real one does);
#   - start returns once /_cluster/health answers green or yellow.
# Usage: scripts/opensearch.sh start|stop|status
# Env: OPENSEARCH_HTTP_PORT (9250), OPENSEARCH_TRANSPORT_PORT (9350), OPENSEARCH_START_TIMEOUT (120 s),
#      JAVA_HOME (else Debian's Java 17, else `java` on PATH; needs Java 17 to 23),
#      OPENSEARCH_INSTANCE (a name for a second node with its own ports: its files live in
#      .services/opensearch-<name>/; the outage test stops and restarts one),
#      OPENSEARCH_KEEP_DATA (1: start on the data of the last run).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
LAUNCHER="$REPO/integration-tests/opensearch-node"
INSTANCE="${OPENSEARCH_INSTANCE:-}"
ROOT="$REPO/.services/opensearch${INSTANCE:+-$INSTANCE}"
PIDFILE="$ROOT/node.pid"
LOG="$ROOT/node.log"
HTTP_PORT="${OPENSEARCH_HTTP_PORT:-9250}"
TRANSPORT_PORT="${OPENSEARCH_TRANSPORT_PORT:-9350}"
START_TIMEOUT="${OPENSEARCH_START_TIMEOUT:-120}"
URL="http://127.0.0.1:$HTTP_PORT"
# OpenSearch 2.19 needs Java 17 to 23 (24 dropped the security manager it still references):
# JAVA_HOME if set, else Debian's Java 17 if present, else `java` on PATH.
if [ -n "${JAVA_HOME:-}" ]; then
  JAVA="$JAVA_HOME/bin/java"
elif [ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]; then
  JAVA=/usr/lib/jvm/java-17-openjdk-amd64/bin/java
else
  JAVA=java
fi
MAIN_CLASS=streamrs.opensearch.TestNode

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Whether the launcher's classes and jars are newer than its pom and sources.
built() {
  local stamp="$LAUNCHER/target/classes/streamrs/opensearch/TestNode.class"
  [ -f "$stamp" ] && [ -d "$LAUNCHER/target/lib" ] && ls "$LAUNCHER"/target/lib/opensearch-2.*.jar >/dev/null 2>&1 || return 1
  [ -z "$(find "$LAUNCHER/pom.xml" "$LAUNCHER/src" -newer "$stamp" -type f -print -quit)" ]
}

build() {
  if built; then
    return 0
  fi
  command -v mvn >/dev/null || { echo "opensearch: mvn not found (install Maven 3.8+)" >&2; return 1; }
  local t0 mvn_args=(-q -B -Dstyle.color=never -f "$LAUNCHER/pom.xml" package)
  t0=$(now)
  # Offline first (quick when ~/.m2 already has everything), online otherwise.
  if ! mvn -o "${mvn_args[@]}" >"$ROOT/mvn-offline.log" 2>&1; then
    if ! mvn "${mvn_args[@]}" >"$ROOT/mvn.log" 2>&1; then
      tail -40 "$ROOT/mvn.log" >&2
      echo "opensearch: Maven build of $LAUNCHER failed (log: $ROOT/mvn.log)" >&2
      return 1
    fi
  fi
  echo "opensearch: launcher built with Maven in $(elapsed "$t0") s"
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

healthy() {
  curl -fsS -m 2 "$URL/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null | grep -Eq '"status":"(green|yellow)"'
}

start() {
  mkdir -p "$ROOT"
  if pid=$(running_pid) && healthy; then
    echo "opensearch: already running (pid $pid) at $URL"
    return 0
  fi
  stop >/dev/null 2>&1 || true
  if curl -s -m 2 -o /dev/null "$URL/"; then
    echo "opensearch: something else already listens on $URL; not starting" >&2
    return 1
  fi
  build
  if [ "${OPENSEARCH_KEEP_DATA:-}" != 1 ]; then
    rm -rf "$ROOT/home"
  fi
  rm -f "$LOG"
  local t0 pid
  t0=$(now)
  # setsid: its own process group, so that `stop` and the caller's job control don't mix.
  setsid "$JAVA" -Xms512m -Xmx512m -XX:+UseG1GC \
    -Dlog4j2.disable.jmx=true -Djava.locale.providers=SPI,COMPAT \
    -Dfile.encoding=UTF-8 -Djava.io.tmpdir="$ROOT" \
    -cp "$LAUNCHER/target/classes:$LAUNCHER/target/lib/*" "$MAIN_CLASS" \
    "$ROOT/home" "$HTTP_PORT" "$TRANSPORT_PORT" </dev/null >"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -40 "$LOG" >&2
      echo "opensearch: the node exited during start-up (log: $LOG)" >&2
      rm -f "$PIDFILE"
      return 1
    fi
    if healthy; then
      echo "opensearch: node ready at $URL (pid $pid) in $(elapsed "$t0") s; log: $LOG"
      return 0
    fi
    sleep 0.5
  done
  tail -40 "$LOG" >&2
  echo "opensearch: not healthy after ${START_TIMEOUT} s (log: $LOG)" >&2
  stop >/dev/null 2>&1 || true
  return 1
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    echo "opensearch: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "opensearch: pid $pid ignored SIGTERM for 20 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  echo "opensearch: stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(running_pid); then
    if healthy; then
      echo "opensearch: running (pid $pid) at $URL"
      curl -fsS -m 2 "$URL/_cluster/health"
      echo
      return 0
    fi
    echo "opensearch: pid $pid alive but $URL is not healthy"
    return 1
  fi
  echo "opensearch: not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  build) mkdir -p "$ROOT" && build ;;
  *) echo "usage: $0 start|stop|status|build" >&2; exit 2 ;;
esac
