#![doc = include_str!("../README.md")]

mod error;
mod limiter;
pub mod scripts;

use std::sync::Arc;

pub use error::{LimiterError, RuntimeUnavailable};
pub use limiter::StreamLeaseLimiter;
/// Where the limiter finds Redis (shared with `stream-pubsub`).
pub use stream_redis::RedisSource;

/// Re-exported so that users can build the pools that [`StreamLeaseLimiter::from_pool`] and
/// [`StreamLeaseLimiter::from_cluster_pool`] take (and reach `deadpool_redis::redis`).
pub use deadpool_redis;
/// Re-exported so that users can name the `redis::RedisError` behind [`LeaseError::Backend`].
pub use redis;

/// The guard, the trait and the process-wide helpers live in `stream-core`; they are re-exported
/// here so that a Redis user needs one import.
pub use stream_core::{
    AcquireError, LeaseError, LeaseId, LeaseInfo, LeaseStore, StreamLease, StreamLeaseConfig, StreamLimitExceeded,
    UserId, can_start_stream, get_active_streams, init_lease_store, stream_lease, stream_lease_sync,
};

/// Builds a [`StreamLeaseLimiter`] and installs it as the process-wide lease store (the seed's
/// `init_lease_limiter(redis_config, config)`), so that [`stream_lease`], [`stream_lease_sync`],
/// [`get_active_streams`] and [`can_start_stream`] called with `None` use Redis.
///
/// `source` is a Redis URL, a [`RedisSource::cluster`], or a deadpool-redis pool. Call it once at
/// start-up inside the tokio runtime that runs the app; it connects and loads the scripts (a
/// missing Redis is an error here). The returned limiter is the installed one, for code that
/// prefers to pass it explicitly.
pub async fn init_lease_limiter(
    source: impl Into<RedisSource>,
    config: StreamLeaseConfig,
) -> Result<StreamLeaseLimiter, LimiterError> {
    let limiter = StreamLeaseLimiter::new(source, config).await?;
    init_lease_store(Arc::new(limiter.clone()));
    Ok(limiter)
}
