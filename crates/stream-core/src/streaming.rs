//! [`Streaming`]: the backends one app uses, with the ways to publish and to answer an SSE
//! request through them.

use std::fmt::Display;
use std::sync::Arc;

use futures_core::Stream;
use serde_json::{Map, Value};

use crate::config::ChannelConfig;
use crate::context::{EmitError, Emitter, StreamContext};
use crate::event::{Event, EventId, EventType};
use crate::ids::{ChannelId, UserId};
use crate::lease::{AcquireError, LeaseStore, StreamLeaseConfig};
use crate::memory::{MemoryBroker, MemoryEventStore, MemoryLeaseStore};
use crate::publish::{EventPublisher, PersistingPublisher};
use crate::registry::ChannelRegistry;
use crate::sse::{
    SseBody, SseOptions, SseReply, StreamError, channel_stream, channel_stream_with_lease, direct_stream,
};
use crate::store::EventStore;
use crate::subscribe::{EventSubscriber, SubscribeError};

/// The backends one app uses, chosen at run time. Cloning is cheap (`Arc`s).
#[derive(Clone)]
pub struct Streaming {
    /// Where events are published. With an event store this is a [`PersistingPublisher`].
    pub publisher: Arc<dyn EventPublisher>,
    /// Where SSE responses subscribe.
    pub subscriber: Arc<dyn EventSubscriber>,
    /// Channel owners.
    pub registry: Arc<dyn ChannelRegistry>,
    /// Per-user stream leases.
    pub leases: Arc<dyn LeaseStore>,
    /// The event archive, when enabled.
    pub store: Option<Arc<dyn EventStore>>,
    /// Channel and pipeline settings.
    pub channel_config: ChannelConfig,
    /// The publisher as given, before any [`PersistingPublisher`] wraps it, so that a new store
    /// replaces the old one instead of stacking on it.
    unwrapped_publisher: Arc<dyn EventPublisher>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("channel_config", &self.channel_config)
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl Streaming {
    /// Everything in memory: the embedded default. The event store is enabled, so persisted
    /// events can be queried.
    pub fn in_memory(channel_config: ChannelConfig, lease_config: StreamLeaseConfig) -> Self {
        let broker = MemoryBroker::new(channel_config.clone());
        let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::default());
        Self::from_parts(
            Arc::new(broker.clone()),
            Arc::new(broker.clone()),
            Arc::new(broker),
            Arc::new(MemoryLeaseStore::new(lease_config)),
            Some(store),
            channel_config,
        )
    }

    /// Assembles backends. With a store, the publisher is wrapped in a [`PersistingPublisher`].
    pub fn from_parts(
        publisher: Arc<dyn EventPublisher>,
        subscriber: Arc<dyn EventSubscriber>,
        registry: Arc<dyn ChannelRegistry>,
        leases: Arc<dyn LeaseStore>,
        store: Option<Arc<dyn EventStore>>,
        channel_config: ChannelConfig,
    ) -> Self {
        Self {
            publisher: publisher.clone(),
            subscriber,
            registry,
            leases,
            store: None,
            channel_config,
            unwrapped_publisher: publisher,
        }
        .with_store(store)
    }

    /// The same backends with `store` as the event archive (or none): the publisher given to
    /// [`from_parts`](Self::from_parts) is wrapped in a [`PersistingPublisher`] for the new store
    /// only, so the previous store gets no more events.
    #[must_use]
    pub fn with_store(mut self, store: Option<Arc<dyn EventStore>>) -> Self {
        self.publisher = match &store {
            Some(store) => Arc::new(PersistingPublisher::new(
                self.unwrapped_publisher.clone(),
                store.clone(),
            )),
            None => self.unwrapped_publisher.clone(),
        };
        self.store = store;
        self
    }
}

impl Streaming {
    /// A builder: `Streaming::builder().broker(redis).leases(limiter).store(store).build()`.
    /// Every part is optional; see [`StreamingBuilder::build`] for the defaults.
    pub fn builder() -> StreamingBuilder {
        StreamingBuilder::default()
    }

    /// An emitter on `channel` through this bundle's publisher (which archives persisted events
    /// when there is a store), with an empty context: for a route or task that publishes to a
    /// channel it knows. For debug fields or archiving, bind a [`StreamContext`] yourself.
    pub fn emitter(&self, channel: ChannelId) -> Emitter {
        StreamContext::for_channel(channel).bind(self.publisher.clone())
    }

    /// Publishes one event on `channel` (a one-off, no heartbeat): its broker id, or why not.
    /// For a sequence of events, keep an [`emitter`](Self::emitter).
    pub async fn publish(
        &self,
        channel: &ChannelId,
        kind: EventType,
        payload: Map<String, Value>,
    ) -> Result<EventId, EmitError> {
        if kind.is_control() {
            return Err(EmitError::ControlType(kind));
        }
        let event = Event::new(channel.clone(), kind, payload)?;
        Ok(self.publisher.publish(&event).await?)
    }
}

/// A broker's three roles.
type BrokerParts = (
    Arc<dyn EventPublisher>,
    Arc<dyn EventSubscriber>,
    Arc<dyn ChannelRegistry>,
);

/// Builds a [`Streaming`] bundle. Made by [`Streaming::builder`].
#[derive(Default)]
#[must_use]
pub struct StreamingBuilder {
    broker: Option<BrokerParts>,
    leases: Option<Arc<dyn LeaseStore>>,
    store: Option<Arc<dyn EventStore>>,
    channel_config: Option<ChannelConfig>,
}

impl std::fmt::Debug for StreamingBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingBuilder")
            .field("broker", &self.broker.is_some())
            .field("leases", &self.leases.is_some())
            .field("store", &self.store.is_some())
            .field("channel_config", &self.channel_config)
            .finish()
    }
}

impl StreamingBuilder {
    /// The broker: publisher, subscriber and channel registry in one (a `RedisBroker`, a
    /// [`MemoryBroker`]).
    pub fn broker<B>(mut self, broker: B) -> Self
    where
        B: EventPublisher + EventSubscriber + ChannelRegistry + Clone,
    {
        self.broker = Some((Arc::new(broker.clone()), Arc::new(broker.clone()), Arc::new(broker)));
        self
    }

    /// The per-user stream lease store (a `StreamLeaseLimiter`, a [`MemoryLeaseStore`]).
    pub fn leases(mut self, leases: impl LeaseStore) -> Self {
        self.leases = Some(Arc::new(leases));
        self
    }

    /// The event archive: events emitted with `persist_events` are stored there too.
    pub fn store(mut self, store: impl EventStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Channel and pipeline settings for the SSE responses (ping interval, idle timeout). Give
    /// the broker's own settings when it has others than the defaults.
    pub fn channel_config(mut self, config: ChannelConfig) -> Self {
        self.channel_config = Some(config);
        self
    }

    /// The bundle. What was not given: the broker is a [`MemoryBroker`] (one process only), the
    /// lease store a [`MemoryLeaseStore`] with [`StreamLeaseConfig::default`] (a cap per process,
    /// not per cluster), no archive, and [`ChannelConfig::default`].
    pub fn build(self) -> Streaming {
        let channel_config = self.channel_config.unwrap_or_default();
        let (publisher, subscriber, registry) = self.broker.unwrap_or_else(|| {
            let broker = MemoryBroker::new(channel_config.clone());
            (Arc::new(broker.clone()), Arc::new(broker.clone()), Arc::new(broker))
        });
        let leases = self
            .leases
            .unwrap_or_else(|| Arc::new(MemoryLeaseStore::new(StreamLeaseConfig::default())));
        Streaming::from_parts(publisher, subscriber, registry, leases, self.store, channel_config)
    }
}

/// The three SSE entry points over a [`Streaming`] bundle: what the web adapters' `sse_response`,
/// `sse_response_with_lease` and `direct_sse_response` call before converting the result into
/// their framework's response.
impl Streaming {
    /// [`channel_stream`] through this bundle's subscriber.
    pub async fn sse_channel(&self, channel: &ChannelId, options: SseOptions) -> Result<SseReply, SubscribeError> {
        channel_stream(self.subscriber.as_ref(), channel, options).await
    }

    /// [`channel_stream_with_lease`] through this bundle's subscriber and lease store.
    pub async fn sse_channel_with_lease(
        &self,
        channel: &ChannelId,
        user: UserId,
        options: SseOptions,
    ) -> Result<SseReply, StreamError> {
        channel_stream_with_lease(self.subscriber.as_ref(), self.leases.clone(), channel, user, options).await
    }

    /// [`direct_stream`] under a lease of `user` from this bundle's lease store when there is a
    /// user and `use_lease` is set (the seed's `direct_sse_response(generator, user_id,
    /// use_lease)`), else without one.
    pub async fn sse_direct<S, E>(
        &self,
        events: S,
        user: Option<UserId>,
        use_lease: bool,
        options: SseOptions,
    ) -> Result<SseBody, AcquireError>
    where
        S: Stream<Item = Result<Event, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let lease = user.filter(|_| use_lease).map(|user| (self.leases.clone(), user));
        direct_stream(events, lease, options).await
    }
}
