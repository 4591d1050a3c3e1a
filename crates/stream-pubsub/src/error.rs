//! The broker's own error: building it. Publish, subscribe and registry calls return the
//! stream-core trait errors, with the Redis error as their source.

use stream_core::BoxError;

/// Why a [`RedisBroker`](crate::RedisBroker) could not be built. The variants are named as
/// `stream_lease::LimiterError`'s are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The settings are unusable (a key prefix with a brace, an empty node list, a URL that does
    /// not parse, a pool without URLs, ...).
    #[error("invalid redis broker settings: {0}")]
    InvalidConfig(String),
    /// `connect` was called outside a tokio runtime: the broker keeps a handle to the runtime it
    /// was built on, to run its connections and to serve publishes from plain threads.
    #[error("a RedisBroker must be built inside a tokio runtime")]
    NoRuntime,
    /// Redis could not be reached, or refused the connection or the pool could not hand one out.
    /// The source is the `redis::RedisError` or the deadpool error.
    #[error("cannot connect the redis broker to {target}")]
    Connect {
        /// The Redis URL(s), without passwords.
        target: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
}
