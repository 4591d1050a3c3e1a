//! Publishing events.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::BoxError;
use crate::event::{Event, EventId};
use crate::ids::ChannelId;
use crate::store::EventStore;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The backend failed (connection lost, script error, ...). The event may not have been kept.
    #[error("publish failed: {0}")]
    Backend(#[source] BoxError),
    /// The publisher was shut down.
    #[error("the publisher is closed")]
    Closed,
}

/// What a cancel request ([`EventPublisher::request_cancel`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The request is recorded (or already was: a cancel is idempotent). The channel's producer
    /// stops within its cancel poll interval.
    Requested,
    /// The channel already has its `done`: nothing to cancel, nothing changed.
    AlreadyDone,
}

/// Publishes events to their channel.
///
/// A publish both keeps the event in the channel's history (so late and reconnecting subscribers
/// get it) and delivers it to live subscribers. Control events (`ping`, `gap`) are never published.
///
/// **The broker decides the order.** It accepts each event at one place (a lock, a script under
/// the channel's hash tag), gives it the channel's next id (see [`EventId`]) and returns that id:
/// the id the event's readers see. The id the event carried before is only provisional. So any
/// number of tasks, emitters and processes may publish to one channel at once and every reader
/// still gets every event, in one order, with strictly increasing ids.
///
/// The futures must not depend on being polled inside a particular runtime: a blocking emitter
/// drives them with a plain executor from a thread that has no tokio runtime. A backend that needs
/// tokio for its I/O keeps a runtime handle of its own for that case.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes one event and returns the id the broker gave it. A control event is not
    /// published and keeps its own id.
    async fn publish(&self, event: &Event) -> Result<EventId, PublishError>;

    /// Publishes several events in order, one after another in the channel's order, and returns
    /// their ids. Backends override this to save round trips.
    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<EventId>, PublishError> {
        let mut ids = Vec::with_capacity(events.len());
        for event in events {
            ids.push(self.publish(event).await?);
        }
        Ok(ids)
    }

    /// Whether this publisher itself sends overlapping publishes of one channel together (a group
    /// commit, as the Redis broker does). An [`Emitter`](crate::Emitter) then hands each event
    /// straight to [`publish`](Self::publish), from the emitting task, instead of batching them
    /// itself: each task serializes its own event while the channel's call in flight runs. The
    /// default, `false`, has the emitter batch overlapping emits into one
    /// [`publish_batch`](Self::publish_batch).
    fn groups_publishes(&self) -> bool {
        false
    }

    /// Keeps the channel's producer liveness record alive for `ttl` more (`Some`), or withdraws it
    /// (`None`: the producer went away on purpose). A channel whose record expires before its
    /// `done` has lost its producer: its readers end it with `producer_lost` (see
    /// [`EventSubscriber`](crate::EventSubscriber)). An [`Emitter`](crate::Emitter) calls this
    /// every heartbeat interval while it is open. Backends without liveness keep the default,
    /// which does nothing.
    async fn heartbeat(&self, channel: &ChannelId, ttl: Option<Duration>) -> Result<(), PublishError> {
        let _ = (channel, ttl);
        Ok(())
    }

    /// Asks the producer of `channel` to stop: records a cancel request that
    /// [`cancel_requested`](Self::cancel_requested) reports, on any instance that shares the
    /// backend, for the channel's history TTL. Idempotent; a channel that already has its `done` is
    /// left as it is ([`CancelOutcome::AlreadyDone`]). A spawned stream
    /// ([`SseResponse::spawn`](crate::sse::SseResponse::spawn)) polls for it and ends with `done`
    /// `{"success": false, "cancelled": true}`. Backends without cancel support keep the default,
    /// which fails.
    async fn request_cancel(&self, channel: &ChannelId) -> Result<CancelOutcome, PublishError> {
        let _ = channel;
        Err(PublishError::Backend(
            "this publisher does not support cancel requests".into(),
        ))
    }

    /// Whether a cancel of `channel` was requested ([`request_cancel`](Self::request_cancel)). One
    /// small read. The default (no cancel support) is `false`.
    async fn cancel_requested(&self, channel: &ChannelId) -> Result<bool, PublishError> {
        let _ = channel;
        Ok(false)
    }
}

#[async_trait]
impl<T: EventPublisher + ?Sized> EventPublisher for Arc<T> {
    async fn publish(&self, event: &Event) -> Result<EventId, PublishError> {
        (**self).publish(event).await
    }
    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<EventId>, PublishError> {
        (**self).publish_batch(events).await
    }
    fn groups_publishes(&self) -> bool {
        (**self).groups_publishes()
    }
    async fn heartbeat(&self, channel: &ChannelId, ttl: Option<Duration>) -> Result<(), PublishError> {
        (**self).heartbeat(channel, ttl).await
    }
    async fn request_cancel(&self, channel: &ChannelId) -> Result<CancelOutcome, PublishError> {
        (**self).request_cancel(channel).await
    }
    async fn cancel_requested(&self, channel: &ChannelId) -> Result<bool, PublishError> {
        (**self).cancel_requested(channel).await
    }
}

/// A publisher that also appends each event whose `persist` flag is set to an [`EventStore`].
///
/// The append never waits: a full store queue drops the event from the archive (the store counts
/// it) and the publish goes on. Costs one extra serialization per stored event, in the store.
pub struct PersistingPublisher {
    inner: Arc<dyn EventPublisher>,
    store: Arc<dyn EventStore>,
}

impl std::fmt::Debug for PersistingPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistingPublisher").finish_non_exhaustive()
    }
}

impl PersistingPublisher {
    /// Wraps `inner` so that persisted events also go to `store`.
    pub fn new(inner: Arc<dyn EventPublisher>, store: Arc<dyn EventStore>) -> Self {
        Self { inner, store }
    }

    /// Archives `event` under the id the broker gave it.
    fn archive(&self, event: &Event, id: EventId) {
        if !event.persist {
            return;
        }
        let mut stored = event.clone();
        stored.id = id;
        if let Err(e) = self.store.append(&stored) {
            tracing::debug!(channel = %event.channel_id, error = %e, "event not archived");
        }
    }
}

#[async_trait]
impl EventPublisher for PersistingPublisher {
    async fn publish(&self, event: &Event) -> Result<EventId, PublishError> {
        let id = self.inner.publish(event).await?;
        self.archive(event, id);
        Ok(id)
    }

    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<EventId>, PublishError> {
        let ids = self.inner.publish_batch(events).await?;
        events.iter().zip(&ids).for_each(|(e, id)| self.archive(e, *id));
        Ok(ids)
    }

    fn groups_publishes(&self) -> bool {
        self.inner.groups_publishes()
    }

    async fn heartbeat(&self, channel: &ChannelId, ttl: Option<Duration>) -> Result<(), PublishError> {
        self.inner.heartbeat(channel, ttl).await
    }

    async fn request_cancel(&self, channel: &ChannelId) -> Result<CancelOutcome, PublishError> {
        self.inner.request_cancel(channel).await
    }

    async fn cancel_requested(&self, channel: &ChannelId) -> Result<bool, PublishError> {
        self.inner.cancel_requested(channel).await
    }
}
