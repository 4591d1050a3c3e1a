//! Shared helpers: server addresses, limiters, raw connections for checking what is in Redis.

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use stream_lease::{RedisSource, StreamLeaseConfig, StreamLeaseLimiter, redis};

pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

pub(crate) fn cluster_nodes() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_NODES")
        .unwrap_or_else(|_| "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

pub(crate) fn cfg(limit: usize, ttl_seconds: u64) -> StreamLeaseConfig {
    StreamLeaseConfig {
        limit,
        ttl_seconds,
        ..StreamLeaseConfig::default()
    }
}

pub(crate) async fn limiter(config: StreamLeaseConfig) -> StreamLeaseLimiter {
    let url = redis_url();
    StreamLeaseLimiter::connect(&url, config)
        .await
        .unwrap_or_else(|e| panic!("no Redis at {url} (scripts/redis.sh start): {e:?}"))
}

pub(crate) async fn cluster_limiter(config: StreamLeaseConfig) -> StreamLeaseLimiter {
    let nodes = cluster_nodes();
    StreamLeaseLimiter::connect(RedisSource::cluster(nodes.clone()), config)
        .await
        .unwrap_or_else(|e| panic!("no Redis Cluster at {nodes:?} (scripts/redis.sh start): {e:?}"))
}

/// A connection of the test's own, to look at the keys.
pub(crate) async fn raw() -> MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .expect("raw Redis connection")
}

pub(crate) async fn raw_cluster() -> ClusterConnection {
    redis::cluster::ClusterClient::new(cluster_nodes())
        .expect("REDIS_CLUSTER_NODES")
        .get_async_connection()
        .await
        .expect("raw Redis Cluster connection")
}

pub(crate) async fn zcard(conn: &mut (impl redis::aio::ConnectionLike + Send), key: &str) -> usize {
    redis::cmd("ZCARD").arg(key).query_async(conn).await.expect("ZCARD")
}
