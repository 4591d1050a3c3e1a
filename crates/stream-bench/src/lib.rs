//! The benchmark harness of stream-rs (issue 11). See also the crate README.
//!
//! - [`load`]: the load client. M SSE subscriptions over N channels, an open-loop publisher over
//!   K keep-alive connections, publish-to-receive latency in an HdrHistogram, loss, duplicate
//!   and order checks per subscription, CPU and memory of named processes.
//! - [`baseline`]: the same work with no HTTP, on bare redis-rs and on the project's crates.
//! - [`soak`]: the soak run of issue 14: many long-lived streams against one demo app, with
//!   exact per-stream delivery checks and the app's memory, fds and Redis connections over time.
//! - [`sse`]: the load client's SSE parser.
//! - [`report`]: `docs/benchmarks.md` and its SVG charts from the runs' JSON.
//!
//! `scripts/bench.sh` drives it all; see `docs/benchmarks.md`.

pub mod baseline;
pub mod latency;
pub mod load;
pub mod message;
pub mod procstat;
pub mod record;
pub mod report;
pub mod soak;
pub mod sse;
