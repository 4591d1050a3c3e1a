#![doc = include_str!("../README.md")]

mod error;
mod limiter;
pub mod scripts;

pub use error::{LimiterError, RuntimeUnavailable};
pub use limiter::{StreamLeaseLimiter, StreamLeaseLimiterBuilder};
/// Where the limiter finds Redis (shared with `stream-pubsub`).
pub use stream_redis::RedisSource;

/// Re-exported so that users can build the pools that [`StreamLeaseLimiter::builder`] takes (and
/// reach `deadpool_redis::redis`).
pub use deadpool_redis;
/// Re-exported so that users can name the `redis::RedisError` behind [`LeaseError::Backend`].
pub use redis;

/// The guard and the trait live in `stream-core`; they are re-exported here so that a Redis user
/// needs one import.
pub use stream_core::{
    AcquireError, LeaseError, LeaseId, LeaseInfo, LeaseStore, StreamLease, StreamLeaseConfig, StreamLimitExceeded,
    UserId,
};

/// The Python module's lease names: [`init_lease_limiter`](compat::init_lease_limiter) and the
/// free functions of `stream_core::compat`, re-exported.
pub mod compat {
    use std::sync::Arc;

    use stream_redis::RedisSource;

    use crate::{LimiterError, StreamLeaseConfig, StreamLeaseLimiter};

    pub use stream_core::compat::{
        can_start_stream, get_active_streams, init_lease_store, stream_lease, stream_lease_sync,
    };

    /// Builds a [`StreamLeaseLimiter`] and installs it as the process-wide lease store (the
    /// seed's `init_lease_limiter(redis_config, config)`), so that [`stream_lease`],
    /// [`stream_lease_sync`], [`get_active_streams`] and [`can_start_stream`] called with `None`
    /// use Redis. The main API passes the limiter to `Streaming::builder().leases(..)` instead.
    ///
    /// `source` is a Redis URL, a [`RedisSource::cluster`], or a deadpool-redis pool. Call it once
    /// at start-up inside the tokio runtime that runs the app; it connects and loads the scripts
    /// (a missing Redis is an error here). A second call fails with
    /// [`LimiterError::AlreadyInstalled`] and installs nothing. The returned limiter is the
    /// installed one.
    pub async fn init_lease_limiter(
        source: impl Into<RedisSource>,
        config: StreamLeaseConfig,
    ) -> Result<StreamLeaseLimiter, LimiterError> {
        let limiter = StreamLeaseLimiter::connect(source, config).await?;
        init_lease_store(Arc::new(limiter.clone())).map_err(LimiterError::AlreadyInstalled)?;
        Ok(limiter)
    }
}
