#!/usr/bin/env bash
# The soak run (issue 14): SOAK_STREAMS concurrent SSE streams (default 10,000), each on its own
# channel and held by its own user, against one axum-app in Redis mode, with one event per stream
# every SOAK_PERIOD seconds (default 5) for SOAK_DURATION seconds (default 300). The harness is
# `stream-bench soak` (crates/stream-bench/src/soak.rs): it registers the channels, opens the
# streams (GET /streams/{channel}, X-User-Id), publishes through Redis with the library, and
# prints the app's RSS, open fds and Redis connections at the SOAK_SAMPLES marks (default 60 180
# 300 s after publishing began) and after the clients closed, and the events delivered against
# those expected. It exits non-zero if any stream did not get exactly its channel's events.
#
#   scripts/soak.sh                                       # `just soak`: the full run (~6 min)
#   SOAK_STREAMS=2000 SOAK_DURATION=60 SOAK_SAMPLES="20 60" scripts/soak.sh   # a short one
#
# Redis: REDIS_URL (default redis://127.0.0.1:6399/); on the default port, scripts/redis.sh starts
# it when it does not answer. The app runs with the default per-user caps (one user per stream).
# The report (JSON) is also written to .soak/report.json, the app's log to .soak/app.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
STREAMS="${SOAK_STREAMS:-10000}"
PERIOD="${SOAK_PERIOD:-5}"
DURATION="${SOAK_DURATION:-300}"
SAMPLES="${SOAK_SAMPLES:-60 180 300}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6399/}"
WORK="$ROOT/.soak"
mkdir -p "$WORK"

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

# One socket per stream in the harness and one in the app; both inherit this limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
need=$((STREAMS + 1024))
if [ "$(ulimit -n)" -lt "$need" ]; then
  echo "soak: the open-file limit is $(ulimit -n) (hard: $(ulimit -Hn)); $STREAMS streams need $need." >&2
  echo "soak: raise the hard limit (ulimit -Hn, limits.conf or the container's nofile), or set SOAK_STREAMS lower." >&2
  exit 1
fi

step "cargo build --release -p axum-app -p stream-bench"
cargo build --release -p axum-app -p stream-bench
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
BIN="$TARGET_DIR/release"

step "Redis at $REDIS_URL"
redis_port=$(printf '%s' "$REDIS_URL" | sed -n 's#^redis://[^/]*:\([0-9]*\).*#\1#p')
if ! redis-cli -p "${redis_port:-6379}" ping >/dev/null 2>&1; then
  if [ "$REDIS_URL" = "redis://127.0.0.1:6399/" ]; then
    scripts/redis.sh start
  else
    echo "soak: Redis at $REDIS_URL does not answer" >&2
    exit 1
  fi
fi

step "start axum-app (Redis mode)"
app_pid=""
cleanup() { [ -z "$app_pid" ] || kill "$app_pid" 2>/dev/null || true; }
trap cleanup EXIT
# No worker: the harness publishes. A queue of its own, so no other app's jobs are involved.
HOST=127.0.0.1 PORT=0 REDIS_URL="$REDIS_URL" RUST_LOG="${RUST_LOG:-warn}" \
  DEMO_JOB_QUEUE="soak-jobs-$$" STREAM_TOKEN_SECRET="soak-token-secret-of-at-least-32-bytes" \
  "$BIN/axum-app" >"$WORK/app.log" 2>&1 &
app_pid=$!
for _ in $(seq 1 300); do grep -q "listening on" "$WORK/app.log" && break; sleep 0.1; done
grep -q "listening on" "$WORK/app.log" || { cat "$WORK/app.log" >&2; exit 1; }
url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/app.log" | head -n1)
echo "axum-app $app_pid on $url"

step "soak: $STREAMS streams, one event each every $PERIOD s, for $DURATION s"
sample_args=()
for s in $SAMPLES; do sample_args+=(--sample "$s"); done
status=0
"$BIN/stream-bench" soak --url "$url" --redis "$REDIS_URL" --app-pid "$app_pid" \
  --streams "$STREAMS" --period "$PERIOD" --duration "$DURATION" "${sample_args[@]}" \
  --out "$WORK/report.json" || status=$?
if grep -q -E "WARN|ERROR" "$WORK/app.log"; then
  echo "the app logged warnings or errors (.soak/app.log):"
  grep -E "WARN|ERROR" "$WORK/app.log" | head -n 20
fi
exit $status
