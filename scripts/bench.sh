#!/usr/bin/env bash
# The benchmark suite (issue 11): the project's bench server (axum and actix, Redis broker), Nchan
# and Centrifugo v6 under the same load client, plus the bare baselines (a)-(d), all against one
# Redis on 127.0.0.1:6480 that this script starts. Writes docs/benchmarks.md and docs/benchmarks/*.svg.
#
#   scripts/bench.sh          # the whole suite, 3 runs per scenario (`just bench`, < 15 min)
#   scripts/bench.sh quick    # a 1-minute subset, 1 run each, into .bench/quick/ (`just bench-quick`)
#   BENCH_BEFORE=<rev> scripts/bench.sh [quick]   # also measures <rev>'s crates and bench server in
#                             # the same run (as stream-axum@<rev>, stream-emit@<rev>): before and after
#
# It installs what it needs (redis-server, nginx + libnginx-mod-nchan from Debian, Centrifugo v6.9.1
# with `go install`); a peer that cannot be installed or started is left out and the report says
# so. OpenSearch (baseline (d)) is used at OPENSEARCH_URL (default http://127.0.0.1:9250) if it is
# up, else started with scripts/opensearch.sh and stopped again at the end.
# Every server runs alone during its runs; each is stopped before the next starts, and the runs go
# round the servers (run 1 of each, then run 2 of each, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
MODE="${1:-full}"
case "$MODE" in full | quick) ;; *) echo "usage: $0 [full|quick]" >&2; exit 2 ;; esac

REDIS_PORT=6480     # bench/peers/*/ use this port too
SERVER_PORT=8090
NCHAN_PORT=8091     # bench/peers/nchan/nginx.conf
CENTRIFUGO_PORT=8092 # bench/peers/centrifugo/config.json
OPENSEARCH_URL="${OPENSEARCH_URL:-http://127.0.0.1:9250}"
WORK="$ROOT/.bench/$MODE"
RESULTS="$WORK/results"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
BIN="$TARGET_DIR/release"

if [ "$MODE" = full ]; then
  RUNS=3 DURATION=2 DRAIN=3
  REPORT="$ROOT/docs/benchmarks.md" CHARTS="$ROOT/docs/benchmarks" CHART_LINK=benchmarks
  FANOUT_SIZES=(100 1000 5000) IDLE_STREAMS=10000 UNICAST=1000
  SERVERS=(stream-axum stream-actix nchan centrifugo)
else
  RUNS=1 DURATION=1 DRAIN=2
  REPORT="$WORK/benchmarks.md" CHARTS="$WORK/benchmarks" CHART_LINK=benchmarks
  FANOUT_SIZES=(100 1000) IDLE_STREAMS=1000 UNICAST=100
  SERVERS=(stream-axum)
fi
FIXED_RATE=20 # msg/s for the fixed-rate fan-out: 20 × M deliveries/s offered

notes=()
note() { notes+=("$1"); echo "NOTE: $1" >&2; }
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
started_at=$(date +%s)
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

rm -rf "$RESULTS" && mkdir -p "$RESULTS" "$WORK"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
[ "$(ulimit -n)" -ge $((IDLE_STREAMS + 2000)) ] || note "open-file limit is only $(ulimit -n): large scenarios may fail to connect"

# --- installs -------------------------------------------------------------------------------
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then "${sudo[@]}" apt-get update -qq && apt_updated=1; fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
step "install what is missing"
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || apt_install redis-server redis-tools
have_nchan=0
if [ "$MODE" = full ]; then
  if ! { command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; }; then
    apt_install nginx libnginx-mod-nchan || true
  fi
  if command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    have_nchan=1
  else
    note "Nchan was NOT measured: nginx + libnginx-mod-nchan could not be installed from Debian."
  fi
  GOBIN_DIR="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
  CENTRIFUGO="$GOBIN_DIR/centrifugo"
  if [ ! -x "$CENTRIFUGO" ] && command -v go >/dev/null; then
    go install github.com/centrifugal/centrifugo/v6@v6.9.1 || true
  fi
  have_centrifugo=0
  [ -x "$CENTRIFUGO" ] && have_centrifugo=1 ||
    note "Centrifugo was NOT measured: \`go install github.com/centrifugal/centrifugo/v6@v6.9.1\` failed or Go is missing."
else
  have_centrifugo=0
fi

step "build (release)"
cargo build --release -p bench-server -p stream-bench
cargo build --release -p stream-store-opensearch --example bulk_throughput

# Before and after in one run: BENCH_BEFORE=<git revision> builds that revision's crates and
# bench server (with this checkout's load client, so that only the measured code differs) and
# measures it next to this checkout as the server "stream-axum@<rev>" and the emit path
# "stream-emit@<rev>".
BEFORE_NAME=""
if [ -n "${BENCH_BEFORE:-}" ]; then
  before_rev=$(git rev-parse --short "$BENCH_BEFORE")
  BEFORE_NAME="stream-axum@$before_rev" BEFORE_EMIT="stream-emit@$before_rev"
  BEFORE_SRC="$WORK/before-src" BIN_BEFORE="$WORK/before-target/release"
  step "build $before_rev (release), for the before figures"
  git worktree remove --force "$BEFORE_SRC" 2>/dev/null || rm -rf "$BEFORE_SRC"
  git worktree prune
  git worktree add --detach --force "$BEFORE_SRC" "$before_rev" >/dev/null
  rm -rf "$BEFORE_SRC/crates/stream-bench" && cp -r "$ROOT/crates/stream-bench" "$BEFORE_SRC/crates/stream-bench"
  (cd "$BEFORE_SRC" && CARGO_TARGET_DIR="$WORK/before-target" cargo build --release -p bench-server -p stream-bench)
  SERVERS=(stream-axum "$BEFORE_NAME" "${SERVERS[@]:1}")
fi

# --- services -------------------------------------------------------------------------------
pids_to_stop=()
opensearch_started=0
cleanup() {
  for pid in "${pids_to_stop[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/redis/redis.pid" ] && kill "$(cat "$WORK/redis/redis.pid")" 2>/dev/null || true
  [ $opensearch_started -eq 1 ] && scripts/opensearch.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

wait_port() { # port
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

step "start Redis on 127.0.0.1:$REDIS_PORT (one instance for every server and baseline)"
mkdir -p "$WORK/redis"
redis-server --port $REDIS_PORT --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
  --maxclients 30000 --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" --pidfile "$WORK/redis/redis.pid"
for _ in $(seq 1 100); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS_PID=$(cat "$WORK/redis/redis.pid")
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"

# --- one server at a time -------------------------------------------------------------------
SERVER_PIDS="" SERVER_MAIN=""
start_server() { # name
  local log="$WORK/$1.log"
  case "$1" in
    stream-axum | stream-actix | stream-axum@*)
      local flags=() bin="$BIN"
      [ "$1" = stream-actix ] && flags=(--actix)
      [ "$1" = "$BEFORE_NAME" ] && bin="$BIN_BEFORE"
      REDIS_URL="$REDIS_URL" "$bin/bench-server" --listen "127.0.0.1:$SERVER_PORT" "${flags[@]}" >"$log" 2>&1 &
      SERVER_MAIN=$!
      for _ in $(seq 1 300); do grep -q "listening on" "$log" && break; sleep 0.1; done
      grep -q "listening on" "$log" || { cat "$log" >&2; return 1; }
      SERVER_PIDS=$SERVER_MAIN URL="http://127.0.0.1:$SERVER_PORT" TARGET=stream
      ;;
    nchan)
      mkdir -p "$WORK/nchan"
      nginx -p "$WORK/nchan/" -c "$ROOT/bench/peers/nchan/nginx.conf" -g 'daemon off;' >"$log" 2>&1 &
      SERVER_MAIN=$!
      wait_port $NCHAN_PORT || { cat "$log" >&2; return 1; }
      sleep 0.5
      SERVER_PIDS="$SERVER_MAIN,$(pgrep -d, -P "$SERVER_MAIN")" URL="http://127.0.0.1:$NCHAN_PORT" TARGET=nchan
      ;;
    centrifugo)
      "$CENTRIFUGO" -c "$ROOT/bench/peers/centrifugo/config.json" >"$log" 2>&1 &
      SERVER_MAIN=$!
      wait_port $CENTRIFUGO_PORT || { cat "$log" >&2; return 1; }
      SERVER_PIDS=$SERVER_MAIN URL="http://127.0.0.1:$CENTRIFUGO_PORT" TARGET=centrifugo
      ;;
  esac
  pids_to_stop+=("$SERVER_MAIN")
}
stop_server() {
  [ -n "$SERVER_MAIN" ] || return 0
  kill "$SERVER_MAIN" 2>/dev/null || true
  wait "$SERVER_MAIN" 2>/dev/null || true
  SERVER_MAIN=""
  sleep 0.5
}

failures=0
load() { # server scenario run args...
  local server=$1 scenario=$2 run=$3; shift 3
  if ! "$BIN/stream-bench" load --url "$URL" --target "$TARGET" --server "$server" \
    --scenario "$scenario" --run "$run" --pid "server=$SERVER_PIDS" --pid "redis=$REDIS_PID" \
    --redis-port $REDIS_PORT --duration $DURATION --drain "${LOAD_DRAIN:-$DRAIN}" \
    --out "$RESULTS/$scenario-$server-$run.json" "$@" >/dev/null 2>"$WORK/last-error.log"; then
    failures=$((failures + 1))
    note "$server, $scenario run $run failed: $(tail -c 300 "$WORK/last-error.log" | tr '\n' ' ')"
  fi
}
sat_rate() { echo $(((1000000 / $1) > 200 ? 1000000 / $1 : 200)); } # ~1M deliveries/s offered

# One run of every load scenario against server $1 (started), then its idle-memory run on a fresh
# server.
run_server_scenarios() { # server run
  local s=$1 run=$2
  if [ "$MODE" = full ] || [ "$s" = stream-axum ] || [ "$s" = "$BEFORE_NAME" ]; then
    load "$s" unloaded "$run" --subscribers 1 --rate 100 --publishers 1
  fi
  [ "$MODE" = full ] && load "$s" single-stream "$run" --subscribers 1 --rate 30000 --publishers 32
  for m in "${FANOUT_SIZES[@]}"; do
    [ "$s" = stream-actix ] && [ "$m" != 1000 ] && continue # actix: the 1,000 point only
    load "$s" "fanout-$m-fixed" "$run" --subscribers "$m" --rate $FIXED_RATE --publishers 4
    # At saturation the server runs seconds behind: a longer drain, so that "lost" counts events
    # that never came, not events still on their way.
    LOAD_DRAIN=10 load "$s" "fanout-$m-sat" "$run" --subscribers "$m" --rate "$(sat_rate "$m")" --publishers 16
  done
  [ "$s" = stream-actix ] && return 0
  # The p99 row of the fast-path issue: 100 subscribers at 1,000 msg/s (100k deliveries/s).
  load "$s" fanout-100-r1000 "$run" --subscribers 100 --rate 1000 --publishers 4
  load "$s" "unicast-$UNICAST" "$run" --subscribers $UNICAST --channels $UNICAST --rate 5000 --publishers 16
  # Idle memory: a fresh server, so RSS growth is the streams' alone.
  stop_server && start_server "$s" || { note "$s could not be restarted for idle run $run"; return 0; }
  load "$s" "idle-$IDLE_STREAMS" "$run" --idle --subscribers $IDLE_STREAMS --channels $IDLE_STREAMS \
    --connect-concurrency 512
  # The floor: the same server's bare event-stream route (no broker, no pipeline), fresh too.
  [ "$s" = stream-axum ] || return 0
  stop_server && start_server "$s" || { note "$s could not be restarted for the floor, run $run"; return 0; }
  URL="$URL/bare" load bare-axum "idle-$IDLE_STREAMS" "$run" --idle --subscribers $IDLE_STREAMS \
    --channels $IDLE_STREAMS --connect-concurrency 512
}

# The runs go round the servers (run 1 of each, then run 2 of each, ...), each on a fresh server,
# and the order changes from round to round (each round starts half the list further on, and every
# second round goes backwards): the machine is shared, and a noisy minute then falls on one run of
# several servers, which the medians absorb, rather than on every run of one server; nor does one
# server always run first, or always right after another.
round_order() { # run: the servers in that round's order
  local run=$1 n=${#SERVERS[@]} i k
  for i in $(seq 0 $((n - 1))); do
    k=$(((i + (run - 1) * (n / 2)) % n))
    [ $((run % 2)) -eq 0 ] && k=$(((n - 1 - i + (run - 1) * (n / 2)) % n))
    echo "${SERVERS[$k]}"
  done
}
for run in $(seq 1 $RUNS); do
  for s in $(round_order "$run"); do
    case "$s" in
      nchan) [ $have_nchan -eq 1 ] || continue ;;
      centrifugo) [ $have_centrifugo -eq 1 ] || continue ;;
    esac
    step "server $s, run $run"
    if start_server "$s"; then
      run_server_scenarios "$s" "$run"
      stop_server
    else
      note "$s was NOT measured in run $run: it did not start (see .bench/$MODE/$s.log)."
    fi
  done
done

# --- baselines, no server running -----------------------------------------------------------
baseline() { # name file args...
  local name=$1 file=$2; shift 2
  if ! "$BIN/stream-bench" "$@" --out "$RESULTS/$file.json" >/dev/null 2>"$WORK/last-error.log"; then
    failures=$((failures + 1))
    note "baseline $name failed: $(tail -c 300 "$WORK/last-error.log" | tr '\n' ' ')"
  fi
}
step "baselines (a) emit, (b) fan-out, (c) lease"
for run in $(seq 1 $RUNS); do
  for tasks in 1 64; do
    baseline "(a) emit, $tasks task(s)" "emit-$tasks-$run" emit --redis "$REDIS_URL" --concurrency $tasks \
      --duration $DURATION --run "$run"
    if [ -n "$BEFORE_NAME" ]; then
      BIN="$BIN_BEFORE" baseline "(a) emit, $tasks task(s), $BEFORE_EMIT" "emit-$tasks-before-$run" emit \
        --redis "$REDIS_URL" --concurrency $tasks --duration $DURATION --label "$BEFORE_EMIT" --run "$run"
    fi
  done
  for m in "${FANOUT_SIZES[@]}"; do
    baseline "(b) fan-out $m fixed" "fanout-$m-fixed-baseline-$run" fanout --redis "$REDIS_URL" --receivers "$m" \
      --rate $FIXED_RATE --publishers 4 --duration $DURATION --drain $DRAIN --scenario "fanout-$m-fixed" --run "$run"
    baseline "(b) fan-out $m saturation" "fanout-$m-sat-baseline-$run" fanout --redis "$REDIS_URL" --receivers "$m" \
      --rate "$(sat_rate "$m")" --publishers 16 --duration $DURATION --drain $DRAIN --scenario "fanout-$m-sat" --run "$run"
  done
  baseline "(c) lease" "lease-$run" lease --redis "$REDIS_URL" --concurrency 50 --duration $DURATION \
    --requests 50000 --run "$run"
done

if [ "$MODE" = full ]; then
  step "baseline (d) archive bulk writes"
  if ! curl -sf "$OPENSEARCH_URL" >/dev/null 2>&1; then
    if OPENSEARCH_URL="$OPENSEARCH_URL" scripts/opensearch.sh start >"$WORK/opensearch.log" 2>&1; then
      opensearch_started=1
    fi
  fi
  if curl -sf "$OPENSEARCH_URL" >/dev/null 2>&1; then
    OPENSEARCH_URL="$OPENSEARCH_URL" "$BIN/examples/bulk_throughput" 20000 1000 --json "$RESULTS/archive-bulk.json" ||
      note "baseline (d) archive bulk failed"
  else
    note "Baseline (d) (archive bulk) was NOT measured: no OpenSearch at $OPENSEARCH_URL and scripts/opensearch.sh could not start one."
  fi
else
  note "Quick mode: 1 run per scenario, the project's axum server and baselines (a)-(c) only; no peers, no archive bulk."
fi

# --- report -------------------------------------------------------------------------------
step "report"
elapsed=$(($(date +%s) - started_at))
git_rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || git_rev="$git_rev (with uncommitted changes)"
meta=(
  --meta "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  --meta "git revision=$git_rev"
  --meta "mode=$MODE: $RUNS run(s) per scenario, ${DURATION}s of publishing per run, up to ${DRAIN}s drain; suite took ${elapsed}s"
  --meta "load average (1, 5, 15 min)=at the start $load_at_start; at the end $(cut -d' ' -f1-3 /proc/loadavg)"
  --meta "rustc=$(rustc -V)"
  --meta "Redis=$(redis-server --version | sed 's/ sha=.*//') on 127.0.0.1:$REDIS_PORT, shared by every server and baseline"
  --meta "load client=stream-bench (reqwest HTTP/1.1, its own SSE parser), on the same machine"
  --meta "fixed fan-out rate=$FIXED_RATE msg/s; saturation offered rate=max(200, 1,000,000 / subscribers) msg/s"
)
[ $have_nchan -eq 1 ] && meta+=(--meta "Nchan=$(nginx -v 2>&1 | sed 's/nginx version: //'), libnginx-mod-nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null), 2 workers (bench/peers/nchan/nginx.conf)")
[ $have_centrifugo -eq 1 ] && meta+=(--meta "Centrifugo=v6.9.1 (go install), $(go version 2>/dev/null | cut -d' ' -f3), Redis engine (bench/peers/centrifugo/config.json)")
if awk -v l="${load_at_start%% *}" 'BEGIN { exit !(l > 1.0) }'; then
  note "Other work was running when the suite started (load average $load_at_start over 1, 5 and 15 minutes, on $(nproc) cores); the \"CPU % other\" column gives, per run, the CPU that processes outside the measurement used. Compare within this run only."
fi
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
note_args+=(--note "The load client, Redis and the server share the machine's cores; each table gives their CPU so that the bottleneck is visible.")
note_args+=(--note "Not measured: a naive one-Redis-connection-per-client axum server (the issue's first impression); the bare baselines (a) and (b) stand for the floor instead.")
"$BIN/stream-bench" report --results "$RESULTS" --out "$REPORT" --charts "$CHARTS" --chart-link "$CHART_LINK" \
  "${meta[@]}" "${note_args[@]}"
echo "wrote $REPORT in ${elapsed}s ($failures failed measurement(s))"
