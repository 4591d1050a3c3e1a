//! Tests against a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6399/`) and a real Redis
//! Cluster (`REDIS_CLUSTER_NODES`, default the nodes on 127.0.0.1:7101-7103). Start them with
//! `scripts/redis.sh start`. A missing server fails the tests.

mod blocking;
mod cluster;
mod common;
mod conformance;
mod contention;
mod crash;
mod disconnect;
mod global;
mod limiter;
mod race;
