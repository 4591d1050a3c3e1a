//! Conformance suites: the behaviour every backend must have, written once and run against the
//! in-memory backends here and against Redis and OpenSearch in their crates; and the answers
//! every web adapter must give ([`adapter`]), run by `stream-axum` and `stream-actix`.
//!
//! Each suite panics on the first failure. Every check uses fresh, unique channel and user ids,
//! so the suites can run against a shared server.

pub mod adapter;
pub mod broker;
pub mod lease;
pub mod registry;
pub mod store;

use std::time::Duration;

use crate::ids::{ChannelId, UserId};

/// How long any single wait in a suite may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// A unique channel id starting with `prefix`.
pub fn unique_channel(prefix: &str) -> ChannelId {
    ChannelId::new(format!("{prefix}-{}", ulid::Ulid::new())).expect("valid channel id")
}

/// A unique user id starting with `prefix`.
pub fn unique_user(prefix: &str) -> UserId {
    UserId::new(format!("{prefix}-{}", ulid::Ulid::new())).expect("valid user id")
}
