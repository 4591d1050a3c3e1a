//! [`Streaming`]: the backends one app uses, with the ways to publish and to answer an SSE
//! request through them.

use std::fmt::Display;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use serde_json::{Map, Value};

use crate::config::ChannelConfig;
use crate::context::{EmitError, Emitter, StreamContext};
use crate::event::{Event, EventId, EventType};
use crate::ids::{ChannelId, UserId};
use crate::lease::{LeaseStore, StreamLease, StreamLeaseConfig};
use crate::memory::{MemoryBroker, MemoryEventStore, MemoryLeaseStore};
use crate::publish::{EventPublisher, PersistingPublisher};
use crate::registry::ChannelRegistry;
use crate::spawn::Spawn;
use crate::sse::{
    SseOptions, SseReply, StreamError, channel_stream, channel_stream_with_lease, direct_stream, spawned_stream,
};
use crate::store::EventStore;
use crate::subscribe::EventSubscriber;
use tokio_util::sync::CancellationToken;

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

/// An SSE response to make, built like axum's `Sse`: what to stream, and how. Await it (it
/// subscribes, and takes the lease when asked) to get the [`SseReply`], which the web adapters
/// convert into their response type (`stream_axum::Sse`, `stream_actix::Sse`).
///
/// ```
/// # async fn demo() -> Result<(), stream_core::sse::StreamError> {
/// use stream_core::sse::{SseReply, SseResponse};
/// use stream_core::{ChannelId, Streaming, UserId};
///
/// let streaming = Streaming::builder().build();
/// let channel = ChannelId::generate();
/// let reply = SseResponse::channel(&streaming, channel)
///     .lease(UserId::new("user-1").unwrap())
///     .resume(None)
///     .await?;
/// assert!(matches!(reply, SseReply::Stream(_)));
/// # Ok(())
/// # }
/// ```
#[must_use = "an SSE response does nothing until it is awaited"]
pub struct SseResponse {
    streaming: Streaming,
    source: Source,
    lease: Option<UserId>,
    options: SseOptions,
}

enum Source {
    Channel(ChannelId),
    Direct(BoxedEvents),
    Spawn(Spawn),
}

/// A direct stream's events, boxed, with errors as text.
type BoxedEvents = std::pin::Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

impl std::fmt::Debug for SseResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SseResponse");
        match &self.source {
            Source::Channel(channel) => d.field("channel", channel),
            Source::Direct(_) => d.field("direct", &true),
            Source::Spawn(spawn) => d
                .field("spawn", spawn.ctx.channel_id())
                .field("max_run_time", &spawn.max_run_time),
        };
        d.field("lease", &self.lease).field("options", &self.options).finish()
    }
}

impl SseResponse {
    /// The stream of `channel` (the seed's `sse_response`): its history after the resume point,
    /// then live events, through the bundle's subscriber, with the bundle's ping interval and
    /// idle timeout. A client that already has the channel's `done` gets
    /// [`SseReply::Finished`] (`204`).
    pub fn channel(streaming: &Streaming, channel: ChannelId) -> Self {
        Self::new(streaming, Source::Channel(channel))
    }

    /// A direct stream of `events`, such as LLM tokens generated in the request (the seed's
    /// `direct_sse_response`). A client disconnect drops `events`.
    pub fn direct<S, E>(streaming: &Streaming, events: S) -> Self
    where
        S: Stream<Item = Result<Event, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        use futures_util::StreamExt;
        let events = events.map(|item| item.map_err(|e| e.to_string()));
        Self::new(streaming, Source::Direct(Box::pin(events)))
    }

    /// Runs `producer` detached from the request, on a task of its own, and answers with the
    /// stream of its context's channel (from the start). The producer gets the channel's
    /// [`Emitter`] and emits as any producer does.
    ///
    /// - It keeps running when the client disconnects: anyone allowed to read the channel
    ///   follows it with [`channel`](Self::channel), on any instance, with resume, while it runs
    ///   and after it ends.
    /// - With [`lease`](Self::lease), the **producer** holds one lease of that user until it ends
    ///   (taken first: a user at the cap gets `429` and nothing starts); so does a lease already
    ///   held in the [`options`](Self::options). The answering stream takes none of its own.
    /// - It ends when its future does (a `done` is emitted for it if it did not emit one), when
    ///   the [`max_run_time`](Self::max_run_time) is up (default
    ///   [`DEFAULT_MAX_RUN_TIME`](crate::spawn::DEFAULT_MAX_RUN_TIME), 10 minutes: `done` with
    ///   `"reason": "timeout"`), or on a cancel request from any instance
    ///   ([`EventPublisher::request_cancel`]): its future is dropped within
    ///   [`CANCEL_POLL_INTERVAL`](crate::spawn::CANCEL_POLL_INTERVAL) and the channel gets `done`
    ///   with `"success": false, "cancelled": true`.
    ///
    /// Needs a tokio runtime. The channel should be registered to its owner first
    /// ([`ChannelRegistry::register`]), so that followers can be authorized.
    pub fn spawn<F, Fut, E>(streaming: &Streaming, ctx: StreamContext, producer: F) -> Self
    where
        F: FnOnce(Arc<Emitter>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        Self::new(
            streaming,
            Source::Spawn(Spawn {
                ctx,
                producer: crate::spawn::boxed(producer),
                max_run_time: crate::spawn::DEFAULT_MAX_RUN_TIME,
            }),
        )
    }

    /// The longest a [`spawn`](Self::spawn)ed producer may run; ignored by the other sources.
    pub fn max_run_time(mut self, limit: Duration) -> Self {
        if let Source::Spawn(spawn) = &mut self.source {
            spawn.max_run_time = limit;
        }
        self
    }

    fn new(streaming: &Streaming, source: Source) -> Self {
        Self {
            streaming: streaming.clone(),
            source,
            lease: None,
            options: SseOptions::from_config(&streaming.channel_config),
        }
    }

    /// Holds a lease of `user` from the bundle's lease store for the stream's lifetime (the seed's
    /// `…_with_lease`): taken once the stream will run, refreshed, released when it ends or the
    /// client goes. A user at the cap gets [`StreamError::LimitExceeded`] (`429`); a client that
    /// already has the channel's `done` gets `204` even then.
    pub fn lease(mut self, user: UserId) -> Self {
        self.lease = Some(user);
        self
    }

    /// Resumes after `last_event_id` (from the adapters' `LastEventId` extractor).
    pub fn resume(mut self, last_event_id: Option<EventId>) -> Self {
        self.options.last_event_id = last_event_id;
        self
    }

    /// Ends the stream when `token` is cancelled (graceful shutdown).
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.options.shutdown = Some(token);
        self
    }

    /// Replaces the pipeline options (ping interval, idle timeout, `retry:` hint, resume point,
    /// shutdown): set them before [`resume`](Self::resume) and [`shutdown`](Self::shutdown),
    /// which write into them.
    pub fn options(mut self, options: SseOptions) -> Self {
        self.options = options;
        self
    }

    /// Subscribes (or starts the direct stream) and takes the lease: the reply to convert. Counts
    /// the answer in [`crate::metrics::OPENS`].
    pub async fn reply(self) -> Result<SseReply, StreamError> {
        let reply = self.reply_uncounted().await;
        match &reply {
            // The pipeline counted the stream when it opened.
            Ok(SseReply::Stream(_)) => {}
            Ok(SseReply::Finished) => crate::metrics::record_refused(204),
            Err(e) => crate::metrics::record_refused(e.status()),
        }
        reply
    }

    async fn reply_uncounted(self) -> Result<SseReply, StreamError> {
        let Self {
            streaming,
            source,
            lease,
            options,
        } = self;
        let lease = lease.map(|user| (streaming.leases.clone(), user));
        match source {
            Source::Channel(channel) => match lease {
                Some((store, user)) => {
                    channel_stream_with_lease(streaming.subscriber.as_ref(), store, &channel, user, options).await
                }
                None => Ok(channel_stream(streaming.subscriber.as_ref(), &channel, options).await?),
            },
            Source::Direct(events) => Ok(SseReply::Stream(direct_stream(events, lease, options).await?)),
            Source::Spawn(spawn) => {
                // The producer's lease: one already held in the options, else taken now, first,
                // so that a 429 starts nothing. The answering stream holds none.
                let mut options = options;
                let lease = match (options.lease.take(), lease) {
                    (Some(held), _) => Some(held.auto_refresh()),
                    (None, Some((store, user))) => Some(StreamLease::acquire(store, user).await?.auto_refresh()),
                    (None, None) => None,
                };
                let channel = spawn.ctx.channel_id().clone();
                // Subscribed before the producer starts; from the start of the channel either way.
                let subscription = streaming.subscriber.subscribe(&channel, None).await?;
                crate::spawn::start(streaming.publisher.clone(), spawn, lease);
                Ok(SseReply::Stream(spawned_stream(subscription, &channel, options)))
            }
        }
    }
}

impl IntoFuture for SseResponse {
    type Output = Result<SseReply, StreamError>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.reply())
    }
}
