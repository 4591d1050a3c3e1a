//! The broker's own error: building it. Publish, subscribe and registry calls return the
//! stream-core trait errors, with the Redis error as their source.

use stream_core::BoxError;

/// Why a [`RedisBroker`](crate::RedisBroker) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The settings are unusable (a key prefix with a brace, an empty node list, ...).
    #[error("invalid redis broker settings: {0}")]
    Config(String),
    /// `connect` was called outside a tokio runtime: the broker keeps a handle to the runtime it
    /// was built on, to run its connections and to serve publishes from plain threads.
    #[error("a RedisBroker must be built inside a tokio runtime")]
    NoRuntime,
    /// Redis refused the URL or the connection.
    #[error("redis connection failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// The connection pool could not be created or could not hand out a connection.
    #[error("redis connection pool failed: {0}")]
    Pool(#[source] BoxError),
}
