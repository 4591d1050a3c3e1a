#![doc = include_str!("../README.md")]

mod broker;
mod builder;
mod error;
mod fanout;
mod history;
mod hub;
mod keys;
mod scripts;
mod wire;

pub use broker::RedisBroker;
pub use builder::{DEFAULT_CLIENT_NAME, RedisBrokerBuilder};
pub use error::ConnectError;

/// Re-exported on purpose: [`RedisBrokerBuilder::pool`] and [`RedisBrokerBuilder::cluster_pool`]
/// take its pool types.
pub use deadpool_redis;
/// Re-exported on purpose: the source of a [`ConnectError::Connect`] is often its `RedisError`.
pub use redis;
/// The Redis plumbing this broker is built on (sources, the kept connection, script calls), for
/// the workspace's own crates (the demo worker's job queue), not for users.
#[doc(hidden)]
pub use stream_redis;
/// Where the broker finds Redis (shared with `stream-lease`).
pub use stream_redis::RedisSource;
