//! [`StreamContext`]: plain, serializable data that a route hands to a worker, and the emitters
//! that bind it to a publisher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::event::{DebugContext, Event, EventId, EventType, ReservedKey};
use crate::group_commit::GroupCommit;
use crate::ids::{ChannelId, UserId};
use crate::publish::{EventPublisher, PublishError};
use crate::registry::ChannelRegistry;

/// Serializable context for emitting events from background workers.
///
/// It is plain data and never holds a connection: serialize it with [`to_dict`](Self::to_dict)
/// into a job, rebuild it in the worker with [`from_dict`](Self::from_dict), then
/// [`bind`](Self::bind) it to a publisher to emit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamContext {
    channel_id: ChannelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(default)]
    persist_events: bool,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    extra: Map<String, Value>,
}

/// A context could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("invalid stream context: {0}")]
pub struct InvalidContext(#[from] serde_json::Error);

impl StreamContext {
    /// Creates a context with an auto-generated channel id (the seed's `StreamContext.create`).
    pub fn create(
        workspace_id: Option<&str>,
        project: Option<&str>,
        env: Option<&str>,
        service: Option<&str>,
        persist_events: bool,
        extra: Map<String, Value>,
    ) -> Self {
        Self {
            channel_id: ChannelId::generate(),
            workspace_id: workspace_id.map(str::to_owned),
            project: project.map(str::to_owned),
            env: env.map(str::to_owned),
            service: service.map(str::to_owned),
            persist_events,
            extra,
        }
    }

    /// A builder, for the fields you need: `StreamContext::builder().project("app").build()`.
    pub fn builder() -> StreamContextBuilder {
        StreamContextBuilder::default()
    }

    /// A context with no debug fields on `channel`: what a route that publishes to a known channel
    /// needs.
    pub fn for_channel(channel_id: ChannelId) -> Self {
        Self::builder().channel_id(channel_id).build()
    }

    /// Serializes to a JSON object for a job queue. [`from_dict`](Self::from_dict) gives back an
    /// equal context.
    pub fn to_dict(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("a context serializes to an object"),
        }
    }

    /// Deserializes from [`to_dict`](Self::to_dict)'s output. Unknown keys and invalid channel ids
    /// are errors.
    pub fn from_dict(data: Map<String, Value>) -> Result<Self, InvalidContext> {
        Ok(serde_json::from_value(Value::Object(data))?)
    }

    /// [`to_dict`](Self::to_dict) as a JSON string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a context always serializes")
    }

    /// [`from_dict`](Self::from_dict) from a JSON string.
    pub fn from_json(json: &str) -> Result<Self, InvalidContext> {
        Ok(serde_json::from_str(json)?)
    }

    /// The channel the events go to.
    pub fn channel_id(&self) -> &ChannelId {
        &self.channel_id
    }

    /// The workspace.
    pub fn workspace_id(&self) -> Option<&str> {
        self.workspace_id.as_deref()
    }

    /// The project.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// The environment.
    pub fn env(&self) -> Option<&str> {
        self.env.as_deref()
    }

    /// The service.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// Whether events should also be archived (see [`PersistingPublisher`](crate::PersistingPublisher)).
    pub fn persist_events(&self) -> bool {
        self.persist_events
    }

    /// Extra fields given at creation.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// `workspace_project_env_service`, with `-` for a missing part.
    pub fn namespace(&self) -> String {
        [&self.workspace_id, &self.project, &self.env, &self.service]
            .iter()
            .map(|p| p.as_deref().unwrap_or("-"))
            .collect::<Vec<_>>()
            .join("_")
    }

    /// Whether none of the four context parts is set: events then carry no `context`.
    pub fn is_empty(&self) -> bool {
        [&self.workspace_id, &self.project, &self.env, &self.service]
            .iter()
            .all(|p| p.is_none())
    }

    /// The debugging context copied into every emitted event.
    pub fn debug_context(&self) -> DebugContext {
        DebugContext {
            namespace: self.namespace(),
            workspace_id: self.workspace_id.clone(),
            project: self.project.clone(),
            env: self.env.clone(),
            service: self.service.clone(),
        }
    }

    /// Binds the context to a publisher, for async code.
    pub fn bind(self, publisher: Arc<dyn EventPublisher>) -> Emitter {
        Emitter::new(self, publisher)
    }

    /// Binds the context to a publisher, for plain threads with no async runtime.
    pub fn bind_blocking(self, publisher: Arc<dyn EventPublisher>) -> BlockingEmitter {
        BlockingEmitter {
            inner: Emitter::new(self, publisher),
        }
    }
}

/// Builds a [`StreamContext`]; the channel id is generated at [`build`](Self::build) unless one
/// is given.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct StreamContextBuilder {
    channel_id: Option<ChannelId>,
    workspace_id: Option<String>,
    project: Option<String>,
    env: Option<String>,
    service: Option<String>,
    persist_events: bool,
    extra: Map<String, Value>,
}

impl StreamContextBuilder {
    /// Uses this channel id instead of a generated one.
    pub fn channel_id(mut self, id: ChannelId) -> Self {
        self.channel_id = Some(id);
        self
    }
    /// Sets the workspace.
    pub fn workspace_id(mut self, v: impl Into<String>) -> Self {
        self.workspace_id = Some(v.into());
        self
    }
    /// Sets the project.
    pub fn project(mut self, v: impl Into<String>) -> Self {
        self.project = Some(v.into());
        self
    }
    /// Sets the environment.
    pub fn env(mut self, v: impl Into<String>) -> Self {
        self.env = Some(v.into());
        self
    }
    /// Sets the service.
    pub fn service(mut self, v: impl Into<String>) -> Self {
        self.service = Some(v.into());
        self
    }
    /// Archives events (default false).
    pub fn persist_events(mut self, v: bool) -> Self {
        self.persist_events = v;
        self
    }
    /// Adds an extra field.
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
    /// The context.
    pub fn build(self) -> StreamContext {
        StreamContext {
            channel_id: self.channel_id.unwrap_or_else(ChannelId::generate),
            workspace_id: self.workspace_id,
            project: self.project,
            env: self.env,
            service: self.service,
            persist_events: self.persist_events,
            extra: self.extra,
        }
    }
}

/// Why an emit failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// `complete` was already called on this emitter.
    #[error("stream {0} is closed: complete() was already called")]
    Closed(ChannelId),
    /// The payload used a reserved key.
    #[error(transparent)]
    ReservedKey(#[from] ReservedKey),
    /// `ping` and `gap` are control frames made by the pipeline and broker, not emitted.
    #[error("event type {0} cannot be emitted")]
    ControlType(EventType),
    /// The publisher failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Log level of a `log` event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Debug detail.
    Debug,
    /// Information (the default).
    #[default]
    Info,
    /// A warning.
    Warning,
    /// An error.
    Error,
}

/// A [`StreamContext`] bound to a publisher: emits events from async code.
///
/// Every method publishes one event (one publisher call) and returns the id the broker gave it,
/// which is the id every reader sees. An emitter may be shared (`Arc<Emitter>`) by any number of
/// tasks: the broker orders their events, and none is lost.
///
/// **Producer liveness.** From one second after its first event (or one interval, if shorter)
/// until `done`, an emitter sends a heartbeat every
/// [`DEFAULT_HEARTBEAT`](Self::DEFAULT_HEARTBEAT) (one small write to the broker, on a tokio task,
/// or on a thread of its own outside a runtime), which keeps the channel's liveness record alive
/// for three intervals. An emitter used for a moment (a route publishing one event) is gone before
/// its first heartbeat and costs the broker nothing. If its process dies before `done`, the record expires and the channel's
/// readers end the stream with `error` (`"reason": "producer_lost"`) and `done`
/// (`"success": false`). Dropping an emitter before `done` withdraws the record instead: the
/// channel then has no watched producer. Producers that are not jobs (a route publishing one-off
/// events) can turn the heartbeat off with [`with_heartbeat(None)`](Self::with_heartbeat).
#[must_use = "an emitter publishes nothing until it is used"]
pub struct Emitter {
    ctx: Arc<StreamContext>,
    /// Copied into every event; `None` for an empty context (no `context` on the wire).
    debug: Option<DebugContext>,
    publisher: Arc<dyn EventPublisher>,
    closed: AtomicBool,
    heartbeat: Option<Duration>,
    owner: Option<OwnerRecord>,
    beat: Mutex<Option<Beat>>,
    /// Events emitted while a publish of this emitter is under way go out together in the next
    /// one (one round trip, one script run), in the order they were emitted. Unused with a
    /// publisher that groups overlapping publishes itself
    /// ([`EventPublisher::groups_publishes`]), such as the Redis broker.
    batch: GroupCommit<(), Event>,
}

/// A channel's owner record, which an [`Emitter`] renews with each heartbeat and with `done`
/// ([`Emitter::with_owner`]): it re-creates the record if the registry lost it (a Redis restart
/// without persistence), so that the owner can still read and resume the channel. Renewing never
/// takes a channel from another owner: [`ChannelRegistry::register`] refuses that.
#[derive(Clone)]
pub struct OwnerRecord {
    /// Where the record lives (the app's registry; the Redis broker is one).
    pub registry: Arc<dyn ChannelRegistry>,
    /// The channel's owner.
    pub owner: UserId,
    /// The record's lifetime from each renewal: the channel's history TTL.
    pub ttl: Duration,
}

impl std::fmt::Debug for OwnerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerRecord")
            .field("owner", &self.owner)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl OwnerRecord {
    /// Renews the record; a failure is logged (the next heartbeat tries again).
    async fn renew(&self, channel: &ChannelId) {
        if let Err(e) = self.registry.register(channel, &self.owner, self.ttl).await {
            tracing::debug!(channel = %channel, error = %e, "owner record renewal failed");
        }
    }
}

/// A running heartbeat; dropping it stops the beat, withdrawing the liveness record unless the
/// channel got its `done`.
struct Beat {
    stop: BeatStop,
    withdraw: Arc<AtomicBool>,
}

enum BeatStop {
    Task(tokio_util::sync::CancellationToken),
    Thread(std::sync::mpsc::Sender<()>),
}

impl Beat {
    fn start(
        publisher: Arc<dyn EventPublisher>,
        owner: Option<OwnerRecord>,
        channel: ChannelId,
        every: Duration,
    ) -> Self {
        let withdraw = Arc::new(AtomicBool::new(true));
        let ttl = every * 3;
        let stop = match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let token = tokio_util::sync::CancellationToken::new();
                let (stopped, withdraw) = (token.clone(), withdraw.clone());
                handle.spawn(async move {
                    let mut wait = first_beat(every);
                    let mut sent = false;
                    loop {
                        tokio::select! {
                            () = stopped.cancelled() => break,
                            () = tokio::time::sleep(wait) => {}
                        }
                        if let Err(e) = publisher.heartbeat(&channel, Some(ttl)).await {
                            tracing::debug!(channel = %channel, error = %e, "heartbeat failed");
                        }
                        if let Some(owner) = &owner {
                            owner.renew(&channel).await;
                        }
                        sent = true;
                        wait = every;
                    }
                    if sent && withdraw.load(Ordering::Acquire) {
                        let _ = publisher.heartbeat(&channel, None).await;
                    }
                });
                BeatStop::Task(token)
            }
            Err(_) => {
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                let withdraw = withdraw.clone();
                let beat = move || {
                    let mut wait = first_beat(every);
                    let mut sent = false;
                    while matches!(rx.recv_timeout(wait), Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
                        if let Err(e) = futures_executor::block_on(publisher.heartbeat(&channel, Some(ttl))) {
                            tracing::debug!(channel = %channel, error = %e, "heartbeat failed");
                        }
                        if let Some(owner) = &owner {
                            futures_executor::block_on(owner.renew(&channel));
                        }
                        sent = true;
                        wait = every;
                    }
                    if sent && withdraw.load(Ordering::Acquire) {
                        let _ = futures_executor::block_on(publisher.heartbeat(&channel, None));
                    }
                };
                if let Err(e) = std::thread::Builder::new().name("stream-heartbeat".into()).spawn(beat) {
                    tracing::warn!(error = %e, "could not start the heartbeat thread");
                }
                BeatStop::Thread(tx)
            }
        };
        Self { stop, withdraw }
    }
}

/// The wait before the first heartbeat: an emitter that is done within it (a route that publishes
/// one event and drops its emitter) costs the broker nothing. A producer that dies within it leaves
/// no liveness record, so its channel is not watched.
fn first_beat(every: Duration) -> Duration {
    every.min(Duration::from_secs(1))
}

impl Drop for Beat {
    fn drop(&mut self) {
        match &self.stop {
            BeatStop::Task(token) => token.cancel(),
            BeatStop::Thread(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("ctx", &self.ctx)
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Emitter {
    fn new(ctx: StreamContext, publisher: Arc<dyn EventPublisher>) -> Self {
        let debug = (!ctx.is_empty()).then(|| ctx.debug_context());
        Self {
            ctx: Arc::new(ctx),
            debug,
            publisher,
            closed: AtomicBool::new(false),
            heartbeat: Some(Self::DEFAULT_HEARTBEAT),
            owner: None,
            beat: Mutex::new(None),
            batch: GroupCommit::new(),
        }
    }

    /// The default heartbeat interval: 5 s.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

    /// Sets the heartbeat interval; `None` sends no heartbeat, so the channel's readers do not
    /// watch this producer (see the type's docs). Readers check at their broker's
    /// [`ChannelConfig::heartbeat_interval`](crate::ChannelConfig::heartbeat_interval).
    pub fn with_heartbeat(mut self, every: Option<Duration>) -> Self {
        self.heartbeat = every.filter(|d| !d.is_zero());
        self
    }

    /// Renews the channel's owner record with each heartbeat and with `done`, so that a registry
    /// that lost it (a Redis restart without persistence) has it again within one heartbeat
    /// interval, or when the stream ends, and the owner can resume the channel. Without a
    /// heartbeat ([`with_heartbeat(None)`](Self::with_heartbeat)) nothing is renewed. A producer
    /// that runs apart from the app that registered the channel (a worker) sets this; see
    /// [`OwnerRecord`].
    pub fn with_owner(mut self, owner: OwnerRecord) -> Self {
        self.owner = Some(owner);
        self
    }

    fn beat(&self) -> std::sync::MutexGuard<'_, Option<Beat>> {
        self.beat.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the heartbeat on the first event.
    fn start_heartbeat(&self) {
        let Some(every) = self.heartbeat else { return };
        let mut beat = self.beat();
        if beat.is_none() && !self.is_closed() {
            *beat = Some(Beat::start(
                self.publisher.clone(),
                self.owner.clone(),
                self.ctx.channel_id.clone(),
                every,
            ));
        }
    }

    /// Stops the heartbeat after `done`: the record ends with the channel, nothing to withdraw.
    fn stop_heartbeat(&self) {
        if let Some(beat) = self.beat().take() {
            beat.withdraw.store(false, Ordering::Release);
        }
    }

    /// The bound context.
    pub fn context(&self) -> &StreamContext {
        &self.ctx
    }

    /// The channel id.
    pub fn channel_id(&self) -> &ChannelId {
        &self.ctx.channel_id
    }

    /// Whether `complete` has been called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn build(&self, kind: EventType, payload: Map<String, Value>) -> Result<Event, EmitError> {
        if kind.is_control() {
            return Err(EmitError::ControlType(kind));
        }
        let mut event = Event::new(self.ctx.channel_id.clone(), kind, payload)?;
        event.context = self.debug.clone();
        event.persist = self.ctx.persist_events;
        Ok(event)
    }

    async fn send(&self, event: Event) -> Result<EventId, EmitError> {
        self.start_heartbeat();
        let publisher = &self.publisher;
        if publisher.groups_publishes() {
            return Ok(publisher.publish(&event).await?);
        }
        let ids = self
            .batch
            .submit(&(), vec![event], |events| async move {
                if events.len() == 1 {
                    publisher.publish(&events[0]).await.map(|id| vec![id])
                } else {
                    publisher.publish_batch(&events).await
                }
            })
            .await?;
        ids.into_iter().next().ok_or(EmitError::Publish(PublishError::Closed))
    }

    /// Emits a raw event of any type but `ping` and `gap`. A `done` closes the emitter as
    /// [`complete`](Self::complete) does.
    ///
    /// A `done` that fails (a bad payload, a publisher error) leaves the emitter open, so the
    /// caller can send it again: a stream is never left without its `done` by a passing error.
    /// Two `done`s racing each other: one is sent, the other gets [`EmitError::Closed`].
    pub async fn emit(&self, kind: EventType, payload: Map<String, Value>) -> Result<EventId, EmitError> {
        if !kind.closes_stream() {
            if self.is_closed() {
                return Err(EmitError::Closed(self.ctx.channel_id.clone()));
            }
            let event = self.build(kind, payload)?;
            return self.send(event).await;
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(EmitError::Closed(self.ctx.channel_id.clone()));
        }
        let sent = match self.build(kind, payload) {
            Ok(event) => self.send(event).await,
            Err(e) => Err(e),
        };
        match &sent {
            Ok(_) => {
                self.stop_heartbeat();
                // Once more at the end: a job that ends before the heartbeat after a registry loss
                // would otherwise leave its owner unable to resume the rest of the stream.
                if let Some(owner) = &self.owner
                    && self.heartbeat.is_some()
                {
                    owner.renew(&self.ctx.channel_id).await;
                }
            }
            Err(_) => self.closed.store(false, Ordering::Release),
        }
        sent
    }

    /// Emits a `log` event: `{"message", "level"}`.
    pub async fn log(&self, message: &str, level: LogLevel) -> Result<EventId, EmitError> {
        self.emit(EventType::Log, object(json!({"message": message, "level": level})))
            .await
    }

    /// Emits a `progress` event: `{"percent", "step"?, "message"?}`. The percent is clamped to
    /// 0..=100.
    pub async fn progress(
        &self,
        percent: i64,
        step: Option<&str>,
        message: Option<&str>,
    ) -> Result<EventId, EmitError> {
        let mut payload = object(json!({"percent": percent.clamp(0, 100)}));
        if let Some(step) = step {
            payload.insert("step".into(), step.into());
        }
        if let Some(message) = message {
            payload.insert("message".into(), message.into());
        }
        self.emit(EventType::Progress, payload).await
    }

    /// Emits an `error` event, which does not close the stream: `{"message", "details"?}`.
    pub async fn error(&self, message: &str, details: Option<Value>) -> Result<EventId, EmitError> {
        let mut payload = object(json!({"message": message}));
        if let Some(details) = details {
            payload.insert("details".into(), details);
        }
        self.emit(EventType::Error, payload).await
    }

    /// Emits a `data` event whose fields are the payload's.
    pub async fn data(&self, payload: Map<String, Value>) -> Result<EventId, EmitError> {
        self.emit(EventType::Data, payload).await
    }

    /// Emits `done` and closes the emitter: `{"success", "error"?, …result}`. Later emits fail
    /// with [`EmitError::Closed`].
    pub async fn complete(
        &self,
        success: bool,
        error: Option<&str>,
        result: Map<String, Value>,
    ) -> Result<EventId, EmitError> {
        let mut payload = result;
        payload.insert("success".into(), success.into());
        if let Some(error) = error {
            payload.insert("error".into(), error.into());
        }
        self.emit(EventType::Done, payload).await
    }

    /// Emits `deploy_start`: `{"target", "server_count"}`.
    pub async fn deploy_start(&self, target: &str, server_count: u32) -> Result<EventId, EmitError> {
        self.emit(
            EventType::DeployStart,
            object(json!({"target": target, "server_count": server_count})),
        )
        .await
    }

    /// Emits `deploy_success`: `{"ip", "container_name", "url"?}`.
    pub async fn deploy_success(
        &self,
        ip: &str,
        container_name: &str,
        url: Option<&str>,
    ) -> Result<EventId, EmitError> {
        let mut payload = object(json!({"ip": ip, "container_name": container_name}));
        if let Some(url) = url {
            payload.insert("url".into(), url.into());
        }
        self.emit(EventType::DeploySuccess, payload).await
    }

    /// Emits `deploy_failure`: `{"ip", "error"}`.
    pub async fn deploy_failure(&self, ip: &str, error: &str) -> Result<EventId, EmitError> {
        self.emit(EventType::DeployFailure, object(json!({"ip": ip, "error": error})))
            .await
    }
}

/// A [`StreamContext`] bound to a publisher for plain threads: the same methods as [`Emitter`],
/// run to completion on the calling thread. It needs no tokio runtime in scope.
///
/// Each call blocks its thread until the publish is done, so use it from plain threads (or
/// `tokio::task::spawn_blocking`), never from async code: on a tokio worker it stalls that worker,
/// and on a current-thread runtime it can wait forever for I/O that only that thread would drive.
/// Async code uses [`Emitter`].
#[derive(Debug)]
#[must_use = "an emitter publishes nothing until it is used"]
pub struct BlockingEmitter {
    inner: Emitter,
}

impl BlockingEmitter {
    /// The async emitter underneath.
    pub fn as_async(&self) -> &Emitter {
        &self.inner
    }
    /// The channel id.
    pub fn channel_id(&self) -> &ChannelId {
        self.inner.channel_id()
    }
    /// Whether `complete` has been called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
    /// See [`Emitter::with_heartbeat`]; outside a tokio runtime the heartbeat runs on a thread of
    /// its own.
    pub fn with_heartbeat(self, every: Option<Duration>) -> Self {
        Self {
            inner: self.inner.with_heartbeat(every),
        }
    }
    /// See [`Emitter::with_owner`].
    pub fn with_owner(self, owner: OwnerRecord) -> Self {
        Self {
            inner: self.inner.with_owner(owner),
        }
    }
    /// See [`Emitter::emit`].
    pub fn emit(&self, kind: EventType, payload: Map<String, Value>) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.emit(kind, payload))
    }
    /// See [`Emitter::log`].
    pub fn log(&self, message: &str, level: LogLevel) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.log(message, level))
    }
    /// See [`Emitter::progress`].
    pub fn progress(&self, percent: i64, step: Option<&str>, message: Option<&str>) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.progress(percent, step, message))
    }
    /// See [`Emitter::error`].
    pub fn error(&self, message: &str, details: Option<Value>) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.error(message, details))
    }
    /// See [`Emitter::data`].
    pub fn data(&self, payload: Map<String, Value>) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.data(payload))
    }
    /// See [`Emitter::complete`].
    pub fn complete(
        &self,
        success: bool,
        error: Option<&str>,
        result: Map<String, Value>,
    ) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.complete(success, error, result))
    }
    /// See [`Emitter::deploy_start`].
    pub fn deploy_start(&self, target: &str, server_count: u32) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.deploy_start(target, server_count))
    }
    /// See [`Emitter::deploy_success`].
    pub fn deploy_success(&self, ip: &str, container_name: &str, url: Option<&str>) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.deploy_success(ip, container_name, url))
    }
    /// See [`Emitter::deploy_failure`].
    pub fn deploy_failure(&self, ip: &str, error: &str) -> Result<EventId, EmitError> {
        futures_executor::block_on(self.inner.deploy_failure(ip, error))
    }
}

/// The seed's legacy `SSEEmitter`: a fresh context on a new channel, bound to a publisher.
///
/// `SseEmitter::new(publisher)` then `emitter.log(…)`, and hand `emitter.channel_id()` to
/// [`SseResponse::channel`](crate::sse::SseResponse::channel). It derefs to [`Emitter`].
#[derive(Debug)]
pub struct SseEmitter {
    inner: Emitter,
}

impl SseEmitter {
    /// A new emitter on a fresh channel.
    pub fn new(publisher: Arc<dyn EventPublisher>) -> Self {
        Self {
            inner: StreamContext::builder().build().bind(publisher),
        }
    }
}

impl std::ops::Deref for SseEmitter {
    type Target = Emitter;
    fn deref(&self) -> &Emitter {
        &self.inner
    }
}
