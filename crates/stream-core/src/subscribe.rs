//! Subscribing to a channel.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_core::Stream;

use crate::error::BoxError;
use crate::event::{Event, EventId, EventType};
use crate::ids::ChannelId;
use crate::shared::SharedEvent;

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

/// The order rule every subscription keeps, for broker implementations: an event whose id is not
/// greater than the last one yielded is a duplicate (history and live overlap, a replay after a
/// reconnect) and is dropped; control events (`ping`, `gap`) always pass and move nothing; after
/// `done` the subscription has ended.
///
/// ```
/// use serde_json::Map;
/// use stream_core::{ChannelId, Event, EventCursor};
///
/// let channel = ChannelId::generate();
/// let first = Event::new(channel.clone(), "log".parse().unwrap(), Map::new()).unwrap();
/// let done = Event::done(channel, true, Map::new()).unwrap();
/// let mut cursor = EventCursor::after(None);
/// assert!(cursor.accept(first.clone()).is_some());
/// assert!(cursor.accept(first).is_none(), "a duplicate is dropped");
/// assert!(cursor.accept(done).is_some());
/// assert!(cursor.is_ended());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCursor {
    last_id: Option<EventId>,
    ended: bool,
}

impl EventCursor {
    /// A cursor for a client that already has every event up to `last` (its Last-Event-ID).
    pub fn after(last: Option<EventId>) -> Self {
        Self {
            last_id: last,
            ended: false,
        }
    }

    /// The id of the newest event yielded (or the starting point).
    pub fn last_id(&self) -> Option<EventId> {
        self.last_id
    }

    /// Whether `done` has been yielded.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// `Some(event)` to yield it, `None` for a duplicate.
    pub fn accept(&mut self, event: Event) -> Option<Event> {
        self.admit(event.id, &event.kind).then_some(event)
    }

    /// The same rule on an event's id and type: `true` to yield it, `false` for a duplicate.
    pub fn admit(&mut self, id: EventId, kind: &EventType) -> bool {
        if !kind.is_control() {
            if self.last_id.is_some_and(|last| id <= last) {
                return false;
            }
            self.last_id = Some(id);
        }
        if kind.closes_stream() {
            self.ended = true;
        }
        true
    }
}

/// A live subscription: the channel's history after the requested id, then live events.
///
/// It yields events in strictly increasing id order, with no duplicates, and ends after `done`.
/// A `gap` event marks events that could not be delivered. Dropping it unsubscribes.
///
/// Underneath it yields [`SharedEvent`]s, each encoded once per process
/// ([`next_shared`](Self::next_shared), [`poll_next_shared`](Self::poll_next_shared)): the SSE
/// pipeline writes their frames as they are. As a `Stream` it yields whole [`Event`]s, decoded
/// (once per process) and cloned for this subscriber.
#[must_use = "dropping a subscription unsubscribes"]
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<SharedEvent, SubscribeError>> + Send>>,
    finished: bool,
}

impl Subscription {
    /// Wraps a backend's event stream.
    pub fn new(stream: impl Stream<Item = Result<SharedEvent, SubscribeError>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(stream),
            finished: false,
        }
    }

    /// The next event, as shared.
    pub fn poll_next_shared(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<SharedEvent, SubscribeError>>> {
        self.inner.as_mut().poll_next(cx)
    }

    /// The next event, as shared.
    pub async fn next_shared(&mut self) -> Option<Result<SharedEvent, SubscribeError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next_shared(cx)).await
    }

    /// This subscription as a stream of [`SharedEvent`]s.
    pub fn shared(self) -> impl Stream<Item = Result<SharedEvent, SubscribeError>> + Send + 'static {
        let mut sub = self;
        futures_util::stream::poll_fn(move |cx| Pin::new(&mut sub).poll_next_shared(cx))
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
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_next_shared(cx)
            .map(|item| item.map(|result| result.map(|shared| shared.event().clone())))
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
