#!/usr/bin/env bash
# Runs every test of the workspace, real services included, on a fresh machine:
#   - installs and starts Redis (standalone + a cluster of 3 primaries with one replica each) from
#     Debian's redis-server,
#   - builds and starts a real OpenSearch node from Maven Central jars,
#   - installs Debian's chromium for the browser test,
#   - then checks formatting, lints, API docs and the dependency policy (cargo deny, deny.toml) and
#     runs every test (unit, integration, doc).
# Services are stopped on exit. A missing service fails the tests; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One full build, not an edit loop: incremental caches would only double the target directory.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6399/}"
export REDIS_CLUSTER_NODES="${REDIS_CLUSTER_NODES:-redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103}"
export OPENSEARCH_URL="${OPENSEARCH_URL:-http://127.0.0.1:9250}"

cleanup() {
  scripts/opensearch.sh stop >/dev/null 2>&1 || true
  # The second node the OpenSearch outage test stops and restarts, if a failed test left it up.
  OPENSEARCH_INSTANCE=restart scripts/opensearch.sh stop >/dev/null 2>&1 || true
  scripts/redis.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

# What the services and tests need from Debian, installed only when missing: Redis, Chromium, and
# for the OpenSearch node a Java 17 JDK, Maven and curl.
need_apt=()
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need_apt+=(redis-server redis-tools)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v curl >/dev/null || need_apt+=(curl)
command -v mvn >/dev/null || need_apt+=(maven)
[ -n "${JAVA_HOME:-}" ] || [ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ] || command -v javac >/dev/null ||
  need_apt+=(openjdk-17-jdk-headless)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "apt-get install ${need_apt[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

step "start Redis and Redis Cluster"
scripts/redis.sh start

# OpenSearch (Maven build + JVM start) comes up while cargo compiles.
step "start OpenSearch in the background"
mkdir -p .services
scripts/opensearch.sh start >.services/opensearch-start.log 2>&1 &
opensearch_pid=$!

# cargo-deny is not on a fresh machine; it builds from crates.io while the workspace does.
deny_pid=
if ! command -v cargo-deny >/dev/null; then
  step "install cargo-deny in the background"
  cargo install cargo-deny --locked --quiet >.services/cargo-deny-install.log 2>&1 &
  deny_pid=$!
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (warnings are errors: broken links, missing docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "cargo build"
cargo build --workspace --all-targets

step "cargo deny: licences, bans, sources (advisories need GitHub: see deny.toml)"
if [ -n "$deny_pid" ] && ! wait "$deny_pid"; then
  cat .services/cargo-deny-install.log >&2
  echo "cargo-deny did not install" >&2
  exit 1
fi
cargo deny check licenses bans sources

step "wait for OpenSearch"
if ! wait "$opensearch_pid"; then
  cat .services/opensearch-start.log >&2
  echo "OpenSearch did not start" >&2
  exit 1
fi
cat .services/opensearch-start.log

step "cargo test"
cargo test --workspace --all-targets
cargo test --workspace --doc

step "all tests passed"
