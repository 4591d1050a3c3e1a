# Convenience wrappers. The README's two commands work without `just`.

# Run the demo on the embedded in-memory default (nothing installed).
demo:
    cargo run -p axum-app

# Run the actix demo app (same HTTP API).
demo-actix:
    cargo run -p actix-app

# Run every test, real services included (installs and starts Redis, Redis Cluster, OpenSearch).
test:
    scripts/test.sh

# Start the test services and leave them running.
services-up:
    scripts/redis.sh start
    scripts/opensearch.sh start

# Stop the test services.
services-down:
    -scripts/opensearch.sh stop
    -scripts/redis.sh stop

# Lint and format checks.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The benchmark suite: the project's server, Nchan, Centrifugo and the bare baselines (< 15 min).
# Writes docs/benchmarks.md and docs/benchmarks/*.svg.
bench:
    scripts/bench.sh

# A 1-minute subset of the benchmark (the project's server and baselines, 1 run each), into .bench/quick/.
bench-quick:
    scripts/bench.sh quick

# Fuzz each target (fuzz/fuzz_targets) for `seconds` (60 by default): `just fuzz 600` runs longer.
# Needs nightly; installs cargo-fuzz when missing. Crashes land in fuzz/artifacts/; docs/fuzzing.md.
fuzz seconds="60":
    #!/usr/bin/env bash
    set -euo pipefail
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz
    for t in sse_frame event_from_json context_from_json token_verify last_event_id; do
        echo "== fuzz $t for {{seconds}} s"
        mkdir -p "work/$t"
        cargo +nightly fuzz run "$t" "work/$t" "corpus/$t" -- -max_total_time={{seconds}}
    done

# The soak run: 10,000 SSE streams on one axum-app in Redis mode, one event per stream every 5 s,
# for 5 minutes; RSS, fds and Redis connections over time, and exact delivery (~6 min + build).
# Shorter: SOAK_STREAMS=2000 SOAK_DURATION=60 SOAK_SAMPLES="20 60" just soak
soak:
    scripts/soak.sh
