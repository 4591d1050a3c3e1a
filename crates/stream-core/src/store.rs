//! The event archive: [`EventStore`] and its queries.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::BoxError;
use crate::event::{Event, EventType};
use crate::ids::ChannelId;

/// Why an append was refused. Appends never wait, so these are immediate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The write queue is full; the event was dropped and counted.
    #[error("event store queue is full; event dropped")]
    QueueFull,
    /// The store was shut down.
    #[error("event store is closed")]
    Closed,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The query was malformed (a bad cursor, say).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A flush did not finish in time.
    #[error("flush timed out with {pending} events still queued")]
    FlushTimeout {
        /// Events not yet written.
        pending: usize,
    },
    /// The backend failed.
    #[error("event store backend failed: {0}")]
    Backend(#[source] BoxError),
}

/// Sort order by time (then id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Oldest first (the default).
    #[default]
    Ascending,
    /// Newest first.
    Descending,
}

/// A query over stored events. Every filter is optional; an empty query returns the first
/// `limit` events of all channels.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    /// Only this channel.
    pub channel_id: Option<ChannelId>,
    /// Only these types (any of them). Empty means all types.
    pub event_types: Vec<EventType>,
    /// Only events at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Only events before this time.
    pub to: Option<OffsetDateTime>,
    /// Only events whose `message` matches this text (full-text in OpenSearch, case-insensitive
    /// substring in memory).
    pub text: Option<String>,
    /// At most this many events (default 100).
    pub limit: usize,
    /// Sort order (default ascending).
    pub order: SortOrder,
    /// Continue after this cursor, from a previous [`EventPage::next`].
    pub after: Option<PageCursor>,
}

impl Default for EventQuery {
    fn default() -> Self {
        Self {
            channel_id: None,
            event_types: Vec::new(),
            from: None,
            to: None,
            text: None,
            limit: 100,
            order: SortOrder::Ascending,
            after: None,
        }
    }
}

impl EventQuery {
    /// All events of one channel (the seed's `query(channel_id, …)`).
    pub fn channel(channel_id: ChannelId) -> Self {
        Self {
            channel_id: Some(channel_id),
            ..Self::default()
        }
    }

    /// Whether `event` passes every filter but the cursor and limit.
    pub fn matches(&self, event: &Event) -> bool {
        self.channel_id.as_ref().is_none_or(|c| *c == event.channel_id)
            && (self.event_types.is_empty() || self.event_types.contains(&event.kind))
            && self.from.is_none_or(|t| event.timestamp >= t)
            && self.to.is_none_or(|t| event.timestamp < t)
            && self.text.as_deref().is_none_or(|text| {
                event
                    .message()
                    .is_some_and(|m| m.to_lowercase().contains(&text.to_lowercase()))
            })
    }
}

/// Where a page ended: pass it as [`EventQuery::after`] to get the next page. Opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageCursor(pub String);

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, in the requested order.
    pub events: Vec<Event>,
    /// The cursor for the next page, when this page was full.
    pub next: Option<PageCursor>,
}

/// Counters of a store's writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Events accepted into the queue.
    pub accepted: u64,
    /// Events written to the backend.
    pub written: u64,
    /// Events dropped because the queue was full or the backend refused them.
    pub dropped: u64,
}

/// Keeps events for later queries.
///
/// [`append`](Self::append) never waits: it queues the event and a background writer sends
/// batches. Streaming therefore never waits for storage.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Queues `event` for writing. Never blocks; a full queue drops the event and counts it.
    fn append(&self, event: &Event) -> Result<(), AppendError>;

    /// Writes everything queued so far and makes it visible to queries, within a bounded time.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Runs a query.
    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError>;

    /// The writer's counters.
    fn stats(&self) -> StoreStats;
}

#[async_trait]
impl<T: EventStore + ?Sized> EventStore for Arc<T> {
    fn append(&self, event: &Event) -> Result<(), AppendError> {
        (**self).append(event)
    }
    async fn flush(&self) -> Result<(), StoreError> {
        (**self).flush().await
    }
    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        (**self).query(query).await
    }
    fn stats(&self) -> StoreStats {
        (**self).stats()
    }
}
