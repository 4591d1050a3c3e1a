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

/// An SSE body read frame by frame: each item is one whole frame, ending with its blank line.
/// The pipeline hands over the frames that are ready together in one piece of the body
/// ([`COALESCE_BYTES`](crate::sse::COALESCE_BYTES)), so a piece is not a frame.
pub fn frames(body: crate::sse::SseBody) -> impl futures_core::Stream<Item = bytes::Bytes> + Send {
    use futures_util::StreamExt;
    futures_util::stream::unfold((body, bytes::BytesMut::new()), |(mut body, mut buf)| async move {
        loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let frame = buf.split_to(end + 2).freeze();
                return Some((frame, (body, buf)));
            }
            match body.next().await {
                Some(Ok(piece)) => buf.extend_from_slice(&piece),
                // A body that ends mid-frame: what is left, if anything.
                None if !buf.is_empty() => {
                    let rest = buf.split().freeze();
                    return Some((rest, (body, buf)));
                }
                None => return None,
                Some(Err(never)) => match never {},
            }
        }
    })
}
