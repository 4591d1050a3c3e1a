//! Publishing events.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::BoxError;
use crate::event::Event;
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

/// Publishes events to their channel.
///
/// A publish both keeps the event in the channel's history (so late and reconnecting subscribers
/// get it) and delivers it to live subscribers. Control events (`ping`, `gap`) are never published.
///
/// The futures must not depend on being polled inside a particular runtime: a blocking emitter
/// drives them with a plain executor from a thread that has no tokio runtime. A backend that needs
/// tokio for its I/O keeps a runtime handle of its own for that case.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes one event.
    async fn publish(&self, event: &Event) -> Result<(), PublishError>;

    /// Publishes several events in order. Backends override this to save round trips.
    async fn publish_batch(&self, events: &[Event]) -> Result<(), PublishError> {
        for event in events {
            self.publish(event).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl<T: EventPublisher + ?Sized> EventPublisher for Arc<T> {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        (**self).publish(event).await
    }
    async fn publish_batch(&self, events: &[Event]) -> Result<(), PublishError> {
        (**self).publish_batch(events).await
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

impl PersistingPublisher {
    /// Wraps `inner` so that persisted events also go to `store`.
    pub fn new(inner: Arc<dyn EventPublisher>, store: Arc<dyn EventStore>) -> Self {
        Self { inner, store }
    }

    fn archive(&self, event: &Event) {
        if event.persist
            && let Err(e) = self.store.append(event)
        {
            tracing::debug!(channel = %event.channel_id, error = %e, "event not archived");
        }
    }
}

#[async_trait]
impl EventPublisher for PersistingPublisher {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.inner.publish(event).await?;
        self.archive(event);
        Ok(())
    }

    async fn publish_batch(&self, events: &[Event]) -> Result<(), PublishError> {
        self.inner.publish_batch(events).await?;
        events.iter().for_each(|e| self.archive(e));
        Ok(())
    }
}
