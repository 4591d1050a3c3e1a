//! The shared stream-core conformance suites on a standalone Redis and on the Redis Cluster.

mod common;

use std::sync::Arc;

use stream_core::ChannelConfig;
use stream_core::conformance::{broker, registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_suite_on_standalone_redis() {
    let redis = Arc::new(common::standalone(ChannelConfig::default()).await);
    broker::run(redis.clone(), redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_suite_on_standalone_redis() {
    let redis = common::standalone(ChannelConfig::default()).await;
    registry::run(&redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_suite_on_redis_cluster() {
    let redis = Arc::new(common::cluster(ChannelConfig::default()).await);
    assert!(redis.is_cluster());
    broker::run(redis.clone(), redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_suite_on_redis_cluster() {
    let redis = common::cluster(ChannelConfig::default()).await;
    registry::run(&redis).await;
}

/// A worker's broker and a web app's broker are different processes in production: publish
/// through one broker, subscribe through another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_suite_across_two_brokers() {
    let publisher = Arc::new(common::standalone(ChannelConfig::default()).await);
    let subscriber = Arc::new(common::standalone(ChannelConfig::default()).await);
    broker::run(publisher, subscriber).await;
}
