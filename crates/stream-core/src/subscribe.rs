//! Subscribing to a channel.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_core::Stream;

use crate::error::BoxError;
use crate::event::{Event, EventId};
use crate::ids::ChannelId;

/// Why a subscription failed or ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The backend failed.
    #[error("subscription backend failed: {0}")]
    Backend(#[source] BoxError),
    /// The subscriber fell too far behind and was closed (see the broker's slow-subscriber policy).
    #[error("subscription closed: {0}")]
    Closed(String),
}

/// A live subscription: the channel's history after the requested id, then live events.
///
/// It yields events in strictly increasing id order, with no duplicates, and ends after `done`.
/// A `gap` event marks events that could not be delivered. Dropping it unsubscribes.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<Event, SubscribeError>> + Send>>,
    finished: bool,
}

impl Subscription {
    /// Wraps a backend's event stream.
    pub fn new(stream: impl Stream<Item = Result<Event, SubscribeError>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(stream),
            finished: false,
        }
    }

    /// A subscription that yields nothing because the channel's `done` event is at or before the
    /// requested id: the client has everything. Web adapters answer it with `204 No Content`,
    /// which stops an EventSource from reconnecting.
    pub fn finished() -> Self {
        Self {
            inner: Box::pin(futures_util::stream::empty()),
            finished: true,
        }
    }

    /// Whether this is a [`finished`](Self::finished) subscription.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

impl Stream for Subscription {
    type Item = Result<Event, SubscribeError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

/// Subscribes to channels.
#[async_trait]
pub trait EventSubscriber: Send + Sync + 'static {
    /// Subscribes to `channel`.
    ///
    /// With `after = None` the subscription starts at the beginning of the channel's history, so
    /// a client that subscribes late misses nothing that is still kept. With `after = Some(id)` it
    /// starts after that event (Last-Event-ID resume).
    async fn subscribe(&self, channel: &ChannelId, after: Option<EventId>) -> Result<Subscription, SubscribeError>;
}

#[async_trait]
impl<T: EventSubscriber + ?Sized> EventSubscriber for Arc<T> {
    async fn subscribe(&self, channel: &ChannelId, after: Option<EventId>) -> Result<Subscription, SubscribeError> {
        (**self).subscribe(channel, after).await
    }
}
