//! Errors of building a limiter, and of running it after its runtime is gone.

use stream_core::BoxError;

/// A [`StreamLeaseLimiter`](crate::StreamLeaseLimiter) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimiterError {
    /// The [`StreamLeaseConfig`](crate::StreamLeaseConfig) cannot work (zero TTL, a key namespace
    /// with braces, …).
    #[error("invalid stream lease config: {0}")]
    InvalidConfig(String),
    /// An async constructor was polled outside a tokio runtime. The limiter keeps a handle to the
    /// runtime it was built on; use
    /// [`connect_blocking`](crate::StreamLeaseLimiterBuilder::connect_blocking) in programs without one.
    #[error("the Redis lease limiter must be built inside a tokio runtime (or with connect_blocking)")]
    NoRuntime,
    /// The limiter's own runtime (for [`connect_blocking`](crate::StreamLeaseLimiterBuilder::connect_blocking))
    /// could not be started.
    #[error("cannot start the lease limiter's tokio runtime")]
    Runtime(#[source] std::io::Error),
    /// Redis could not be reached, or loading the scripts failed. The source is the
    /// `redis::RedisError` or the deadpool error. (The variants are named as
    /// `stream_pubsub::ConnectError`'s are.)
    #[error("cannot set up the Redis lease limiter on {target}")]
    Connect {
        /// The Redis URL(s), without passwords, or the kind of pool.
        target: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// [`compat::init_lease_limiter`](crate::compat::init_lease_limiter) was called when the
    /// process-wide lease store was already installed.
    #[error(transparent)]
    AlreadyInstalled(stream_core::SetGlobalDefaultError),
}

/// A lease operation was called on a thread without a tokio runtime, and the runtime the limiter
/// was built on has shut down. Reached as the source of
/// [`LeaseError::Backend`](crate::LeaseError::Backend).
#[derive(Debug, thiserror::Error)]
#[error("the tokio runtime the Redis lease limiter was built on has shut down")]
pub struct RuntimeUnavailable;
