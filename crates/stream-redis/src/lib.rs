#![doc = include_str!("../README.md")]

mod connection;
mod runtime;
mod source;

pub use connection::{Conn, DEFAULT_RESPONSE_TIMEOUT, SharedConnection, evalsha};
pub use runtime::on_runtime;
pub use source::{RedisSource, redact};

/// Re-exported: the pools that [`RedisSource`] takes.
pub use deadpool_redis;
/// Re-exported: the client the connections come from.
pub use redis;

/// A boxed error that crosses threads: what pool checkouts fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
