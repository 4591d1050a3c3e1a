#![doc = include_str!("../README.md")]

mod connection;
mod runtime;
mod source;

pub use connection::{DEFAULT_RESPONSE_TIMEOUT, DEFAULT_RETRY_WINDOW, RetriesExhausted};
// For the sibling crates (stream-pubsub, stream-lease, the demo's job queue), not for users.
#[doc(hidden)]
pub use connection::{Conn, SharedConnection, evalsha};
#[doc(hidden)]
pub use runtime::on_runtime;
pub use source::{RedisSource, redact};

/// Re-exported: the pools that [`RedisSource`] takes.
pub use deadpool_redis;
/// Re-exported: the client the connections come from.
pub use redis;

/// Re-exported: stream-core's boxed error, what pool checkouts fail with.
pub use stream_core::BoxError;
