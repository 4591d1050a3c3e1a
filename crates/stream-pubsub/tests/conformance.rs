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
    broker::resume_at_the_newest_event_is_not_a_gap(&redis, &redis, &redis).await;
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
    broker::resume_at_the_newest_event_is_not_a_gap(&redis, &redis, &redis).await;
}

/// A worker's broker and a web app's broker are different processes in production: publish
/// through one broker, subscribe through another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_suite_across_two_brokers() {
    let publisher = Arc::new(common::standalone(ChannelConfig::default()).await);
    let subscriber = Arc::new(common::standalone(ChannelConfig::default()).await);
    broker::run(publisher, subscriber).await;
}

fn short_history() -> ChannelConfig {
    ChannelConfig {
        history_max_len: 10,
        ..ChannelConfig::default()
    }
}

fn quick_producer_checks() -> ChannelConfig {
    ChannelConfig {
        heartbeat_interval: Some(std::time::Duration::from_millis(50)),
        ..ChannelConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_announced_on_standalone_redis() {
    let redis = common::standalone(short_history()).await;
    broker::resume_older_than_history_starts_with_gap(&redis, &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_announced_on_redis_cluster() {
    let redis = common::cluster(short_history()).await;
    broker::resume_older_than_history_starts_with_gap(&redis, &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_are_watched_on_standalone_redis() {
    let redis = Arc::new(common::standalone(quick_producer_checks()).await);
    // A second broker watches too: only one of them may end the channel.
    let other = common::standalone(quick_producer_checks()).await;
    broker::producer_liveness(redis.clone(), &*redis).await;
    broker::producer_liveness(redis, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_are_watched_on_redis_cluster() {
    let redis = Arc::new(common::cluster(quick_producer_checks()).await);
    broker::producer_liveness(redis.clone(), &*redis).await;
}
