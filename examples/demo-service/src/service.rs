//! The API's behaviour, once, for both apps: identity, ownership, channels, jobs and queries.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stream_core::sse::{SseOptions, SseResponse, StreamError};
use stream_core::{
    CancelOutcome, CancellationToken, ChannelId, EmitError, Emitter, Event, EventId, EventQuery, EventStore, EventType,
    StreamContext, StreamLease, StreamTokenSigner, Streaming, UserId,
};
use tokio::sync::oneshot;
use worker::{DeployRequest, JobQueue};

use crate::channels::{ChannelCap, ChannelSlot};
use crate::chat::{ChatRequest, chat_events_holding};
use crate::config::Config;
use crate::error::ApiError;

/// The identity header of API clients.
pub const USER_HEADER: &str = "x-user-id";
/// The query parameter that carries a signed stream token.
pub const TOKEN_QUERY: &str = "token";
/// How long a stream token in a `stream_url` stays valid (as long as a channel's history).
pub const STREAM_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The most events `GET /events` returns at once.
pub const MAX_EVENTS_LIMIT: usize = 1000;

/// Where the backends live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One process, everything in memory, the job in-process (`"memory"`).
    Memory,
    /// Redis broker and leases, the job in a worker process (`"redis"`).
    Redis,
    /// The same on a Redis Cluster, `REDIS_CLUSTER_NODES` (`"redis-cluster"`).
    RedisCluster,
}

/// The answer of `POST /deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentCreated {
    /// The new channel.
    pub channel_id: ChannelId,
    /// `/streams/{channel_id}?token=…`: an `EventSource` URL that needs no header.
    pub stream_url: String,
}

/// A deployment whose channel holds one of its owner's live-channel slots, is registered and
/// watched, but whose job has not been started yet (`POST /deploy` opens the stream first, then
/// starts the job). Dropped without [`DemoService::start`], it gives its slot back.
#[derive(Debug)]
pub struct PreparedDeployment {
    /// The context the job will emit with.
    pub ctx: StreamContext,
    /// The request.
    pub request: DeployRequest,
    /// The owner.
    pub user: UserId,
    /// The channel's slot under the per-user cap, until the job starts.
    slot: ChannelSlot,
    /// Where the slot goes once the job has started: the task that watches the channel, which
    /// gives it back at `done`. `None` when the channel could not be watched (the slot then
    /// expires with the channel's history).
    watcher: Option<oneshot::Sender<ChannelSlot>>,
}

/// A refused stream request: an API error, or the lease's (429 `stream_limit_exceeded`, 503).
#[derive(Debug)]
pub enum StreamRefusal {
    /// An API error: 400, 401, 413, 429 `channel_limit_exceeded`, 503.
    Api(ApiError),
    /// The lease was not granted.
    Lease(StreamError),
}

impl StreamRefusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::Api(e) => e.status,
            Self::Lease(e) => e.status(),
        }
    }

    /// Counts the refusal in the stream opens metric ([`stream_core::metrics::OPENS`]).
    fn count(&self) {
        stream_core::metrics::record_refused(self.status());
    }
}

impl From<ApiError> for StreamRefusal {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<StreamError> for StreamRefusal {
    fn from(e: StreamError) -> Self {
        Self::Lease(e)
    }
}

/// The events of a chat reply, made one at a time as they are polled.
pub type ChatEvents = Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// A chat whose reply runs detached from the request (`POST /chat/stream`): its channel, a
/// stream URL to follow or resume it from any instance, and the SSE answer to await.
#[derive(Debug)]
pub struct ChatStarted {
    /// The chat's channel.
    pub channel: ChannelId,
    /// `/streams/{channel}?token=…`: follows (and resumes) the chat, on any instance.
    pub stream_url: String,
    /// The answer: the channel's stream, from its start. Its producer holds the user's lease.
    pub response: SseResponse,
}

impl ChatStarted {
    /// The response headers that let a fetch client resume: `X-Stream-Channel` and
    /// `X-Stream-Url`.
    pub fn headers(&self) -> [(&'static str, String); 2] {
        [
            (STREAM_CHANNEL_HEADER, self.channel.to_string()),
            (STREAM_URL_HEADER, self.stream_url.clone()),
        ]
    }
}

/// An answer in the AI SDK's UI message stream protocol (`POST /api/chat`,
/// `GET /api/chat/{id}/stream`).
pub struct AiChatStream {
    /// The chat reply's channel.
    pub channel: ChannelId,
    /// `/streams/{channel}?token=…`: the same reply as plain SSE events.
    pub stream_url: String,
    /// The body: `data:` JSON parts, then `data: [DONE]`.
    pub body: stream_core::sse::SseBody,
}

impl std::fmt::Debug for AiChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiChatStream")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl AiChatStream {
    /// The response headers: the protocol's ([`stream_core::ai_sdk::UI_MESSAGE_STREAM_HEADERS`],
    /// with `x-vercel-ai-ui-message-stream: v1`), and `X-Stream-Channel` and `X-Stream-Url`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers: Vec<(&'static str, String)> = stream_core::ai_sdk::UI_MESSAGE_STREAM_HEADERS
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        headers.push((STREAM_CHANNEL_HEADER, self.channel.to_string()));
        headers.push((STREAM_URL_HEADER, self.stream_url.clone()));
        headers
    }

    /// The headers ([`headers`](Self::headers)) and the body as the reply the adapters' `Sse`
    /// converts.
    pub fn into_reply(self) -> (Vec<(&'static str, String)>, stream_core::sse::SseReply) {
        (self.headers(), stream_core::sse::SseReply::Stream(self.body))
    }
}

/// The AI SDK's chat request body: the chat id and its messages (`UIMessage`s: `role` and
/// `parts`, or an older `content` string).
#[derive(Debug, Deserialize)]
struct AiChatRequest {
    id: String,
    #[serde(default)]
    messages: Vec<Value>,
}

impl AiChatRequest {
    /// The text of the last message, when it is the user's.
    fn last_user_text(&self) -> Option<String> {
        let last = self.messages.last()?;
        if last["role"] != "user" {
            return None;
        }
        let text = match last["parts"].as_array() {
            Some(parts) => parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            None => last["content"].as_str().unwrap_or_default().to_owned(),
        };
        (!text.trim().is_empty()).then_some(text)
    }
}

/// A chat id as the AI SDK makes them: 1 to 128 of `A-Z a-z 0-9 _ -` (400 `invalid_chat_id`).
fn valid_chat_id(id: &str) -> Result<&str, ApiError> {
    let ok = (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            "invalid_chat_id",
            "a chat id is 1 to 128 of A-Z a-z 0-9 _ -",
        ))
    }
}

/// A producer that emits `events` (a fake LLM reply) through its emitter; `on_end` runs when
/// it ends or is dropped (a cancel).
fn emit_all(
    events: ChatEvents,
    on_end: impl FnOnce() + Send + 'static,
) -> impl FnOnce(Arc<Emitter>) -> futures_util::future::BoxFuture<'static, Result<(), EmitError>> + Send + 'static {
    struct OnEnd<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for OnEnd<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    move |emitter: Arc<Emitter>| {
        Box::pin(async move {
            let _on_end = OnEnd(Some(on_end));
            let mut events = events;
            while let Some(Ok(event)) = events.next().await {
                emitter.emit(event.kind, event.payload).await?;
            }
            Ok(())
        })
    }
}

/// The header that names a spawned chat's channel.
pub const STREAM_CHANNEL_HEADER: &str = "x-stream-channel";
/// The header that carries a spawned chat's stream URL (with its token).
pub const STREAM_URL_HEADER: &str = "x-stream-url";

/// The backends an app runs on, chosen from the [`Config`] by [`app_backends`](crate::app_backends).
#[derive(Clone)]
pub struct Backends {
    /// Publisher, subscriber, registry, leases and the store.
    pub streaming: Streaming,
    /// Where deploy jobs go.
    pub jobs: JobQueue,
    /// Memory or Redis.
    pub mode: Mode,
    /// When set (Redis mode), the app archives each deployment channel it creates into this store
    /// itself, by subscribing to the channel from the start of its history before the job is
    /// queued: the worker that runs the job writes to no store. `GET /events` reads it. Unset
    /// (memory mode), the publisher archives into `streaming.store`.
    pub archive: Option<Arc<dyn EventStore>>,
    /// Where the users' live-channel slots are kept (`DEMO_MAX_CHANNELS_PER_USER`): in this
    /// process (memory mode) or in Redis, shared by every instance (Redis mode).
    pub channel_cap: Arc<ChannelCap>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("streaming", &self.streaming)
            .field("jobs", &self.jobs)
            .field("mode", &self.mode)
            .field("channel_cap", &self.channel_cap)
            .finish_non_exhaustive()
    }
}

/// The demo API, independent of the web framework. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct DemoService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    backends: Backends,
    signer: StreamTokenSigner,
    shutdown: CancellationToken,
}

/// Leaves a watcher's slot, if it has one, to expire with the channel's history.
fn keep(slot: Option<ChannelSlot>) {
    if let Some(slot) = slot {
        slot.keep();
    }
}

/// The value of the query parameter `name`, if present.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads the `X-User-Id` header: `None` when absent or empty; 401 when it is not a valid user id.
pub fn header_user(value: Option<&[u8]>) -> Result<Option<UserId>, ApiError> {
    let Some(raw) = value else { return Ok(None) };
    let text = std::str::from_utf8(raw)
        .map_err(|_| ApiError::unauthorized("X-User-Id is not valid UTF-8"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    UserId::new(text)
        .map(Some)
        .map_err(|e| ApiError::unauthorized(format!("invalid X-User-Id: {e}")))
}

/// Like [`header_user`], but a missing header is 401.
pub fn require_user(value: Option<&[u8]>) -> Result<UserId, ApiError> {
    header_user(value)?.ok_or_else(|| ApiError::unauthorized("send the X-User-Id header"))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], limit: usize, empty: Option<T>) -> Result<T, ApiError> {
    if body.len() > limit {
        return Err(ApiError::payload_too_large("body", limit));
    }
    if body.iter().all(u8::is_ascii_whitespace)
        && let Some(default) = empty
    {
        return Ok(default);
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}")))
}

impl DemoService {
    /// A service over `backends`. The stream token key is `config.token_secret`, or random.
    pub fn new(config: Config, backends: Backends) -> Self {
        let signer = match &config.token_secret {
            Some(secret) => StreamTokenSigner::new(secret.as_bytes().to_vec()),
            None => StreamTokenSigner::random(),
        };
        Self {
            inner: Arc::new(Inner {
                config,
                backends,
                signer,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The backends.
    pub fn streaming(&self) -> &Streaming {
        &self.inner.backends.streaming
    }

    /// The token every open stream watches: cancel it on shutdown and they all end.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Pipeline options for one stream: the configured ping interval, the resume point, and the
    /// shutdown token.
    pub fn sse_options(&self, last_event_id: Option<EventId>) -> SseOptions {
        SseOptions::from_config(&self.streaming().channel_config)
            .last_event_id(last_event_id)
            .shutdown(self.inner.shutdown.clone())
    }

    /// Ends every open stream, waits (at most 2 s) for their leases to be released, and writes
    /// what the event store still queues. Call it once the server has stopped.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        let pending = StreamLease::wait_for_releases(Duration::from_secs(2)).await;
        if pending > 0 {
            tracing::warn!(
                pending,
                "stream leases not released at shutdown; they expire with their TTL"
            );
        }
        let stores = [self.streaming().store.as_ref(), self.inner.backends.archive.as_ref()];
        for store in stores.into_iter().flatten() {
            if let Err(e) = store.flush().await {
                tracing::warn!(error = %e, "event store flush at shutdown failed");
            }
        }
    }

    /// The `GET /healthz` body.
    pub fn health(&self) -> Value {
        json!({"status": "ok", "mode": self.inner.backends.mode})
    }

    /// A stream URL for `user` on `channel`: `/streams/{channel}?token=…`.
    pub fn stream_url(&self, user: &UserId, channel: &ChannelId) -> String {
        let token = self.inner.signer.sign(user, channel, STREAM_TOKEN_TTL);
        format!("/streams/{channel}?{TOKEN_QUERY}={token}")
    }

    /// The largest JSON body the API takes (`DEMO_MAX_BODY_BYTES`): the apps' body limit.
    pub fn max_body_bytes(&self) -> usize {
        self.config().max_body_bytes
    }

    /// Takes one of `user`'s stream leases: 429 (`stream_limit_exceeded`) at the limit. Taken
    /// before any other work of a stream request, so that a 429 starts nothing.
    pub async fn lease(&self, user: &UserId) -> Result<StreamLease, StreamError> {
        Ok(StreamLease::acquire(self.streaming().leases.clone(), user.clone()).await?)
    }

    /// Takes a live-channel slot of `user` for `channel`: 429 (`channel_limit_exceeded`) when
    /// the user already has `DEMO_MAX_CHANNELS_PER_USER` live channels. The slot lives as long as
    /// the channel's history at most.
    async fn reserve_channel(&self, user: &UserId, channel: &ChannelId) -> Result<ChannelSlot, ApiError> {
        let cap = &self.inner.backends.channel_cap;
        let limit = self.config().max_channels_per_user;
        let ttl = self.streaming().channel_config.history_ttl;
        match cap.reserve(user, channel, ttl, limit).await {
            Ok(true) => Ok(ChannelSlot::new(cap.clone(), user.clone(), channel.clone())),
            Ok(false) => Err(ApiError::channel_limit_exceeded(limit)),
            Err(e) => Err(ApiError::unavailable("channel limit", e)),
        }
    }

    /// Reads a deployment request: the `X-User-Id` user (401) and the optional JSON body (413
    /// over `DEMO_MAX_BODY_BYTES`, 400 when it is not a deployment). No work is done.
    pub fn deployment_request(
        &self,
        user_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(UserId, DeployRequest), ApiError> {
        let user = require_user(user_header)?;
        let request = parse_body(body, self.max_body_bytes(), Some(DeployRequest::default()))?;
        Ok((user, request))
    }

    /// Creates a deployment channel owned by `user`, without starting its job: takes one of the
    /// user's live-channel slots (429 `channel_limit_exceeded`), registers the channel (one
    /// registry round trip) and starts watching it from the start of its history (in Redis mode
    /// this archives it), so that the slot is given back at its `done`.
    pub async fn prepare_deployment(
        &self,
        user: UserId,
        request: DeployRequest,
    ) -> Result<PreparedDeployment, ApiError> {
        let ctx = StreamContext::builder()
            .workspace_id(user.as_str())
            .project(&request.project)
            .env(&request.environment)
            .service(&request.service)
            .persist_events(true)
            .build();
        let channel = ctx.channel_id().clone();
        let slot = self.reserve_channel(&user, &channel).await?;
        let streaming = self.streaming();
        streaming
            .registry
            .register(&channel, &user, streaming.channel_config.history_ttl)
            .await
            .map_err(|e| ApiError::unavailable("channel registry", e))?;
        let watcher = self.watch(channel, self.inner.backends.archive.clone()).await;
        Ok(PreparedDeployment {
            ctx,
            request,
            user,
            slot,
            watcher,
        })
    }

    /// `POST /deploy` up to its stream: the request (401, 413, 400), then the user's stream
    /// lease (429) before anything else, then the deployment ([`prepare_deployment`](Self::prepare_deployment)).
    /// Stream the channel under the lease, then [`start`](Self::start) the job: a refusal leaves
    /// no job, no channel and no subscription behind.
    pub async fn open_deployment(
        &self,
        user_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(PreparedDeployment, StreamLease), StreamRefusal> {
        self.open_deployment_uncounted(user_header, body)
            .await
            .inspect_err(StreamRefusal::count)
    }

    async fn open_deployment_uncounted(
        &self,
        user_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(PreparedDeployment, StreamLease), StreamRefusal> {
        let (user, request) = self.deployment_request(user_header, body)?;
        let lease = self.lease(&user).await?;
        let deployment = self.prepare_deployment(user, request).await?;
        Ok((deployment, lease))
    }

    /// Starts a prepared deployment's job (in-process, or one `RPUSH`). A job that could not be
    /// started gives its channel slot back.
    pub async fn start(&self, deployment: PreparedDeployment) -> Result<(), ApiError> {
        let PreparedDeployment {
            ctx,
            request,
            user: owner,
            slot,
            watcher,
        } = deployment;
        self.inner
            .backends
            .jobs
            .submit(ctx, Some(&owner), request, self.config().step())
            .await
            .map_err(|e| ApiError::unavailable("job queue", e))?;
        match watcher {
            // The watcher gives the slot back at `done`.
            Some(watcher) => {
                if let Err(slot) = watcher.send(slot) {
                    slot.keep();
                }
            }
            None => slot.keep(),
        }
        Ok(())
    }

    /// `POST /deployments`: a registered channel (429 over the live-channel cap), the job
    /// started, and its stream URL.
    pub async fn create_deployment(
        &self,
        user_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<DeploymentCreated, ApiError> {
        let (user, request) = self.deployment_request(user_header, body)?;
        let deployment = self.prepare_deployment(user, request).await?;
        let channel_id = deployment.ctx.channel_id().clone();
        let stream_url = self.stream_url(&deployment.user, &channel_id);
        self.start(deployment).await?;
        Ok(DeploymentCreated { channel_id, stream_url })
    }

    /// Who may read `channel` (a raw path segment), checked in this order: a request with neither
    /// the `token` query parameter nor the `X-User-Id` header is 401; a malformed channel id is
    /// 404; a token must be valid for this channel (403), else the header must name a user; then
    /// the channel's owner must be that user (404 unknown, 403 someone else's). One registry round
    /// trip.
    ///
    /// A valid token is itself the owner's grant: when the registry has no owner record (a Redis
    /// restart without persistence lost it), a token holder may still resume, and learns of what
    /// the restart lost from a `gap` event. A header alone then gets 404 until the job's worker
    /// has renewed the record (one heartbeat).
    pub async fn authorize_stream(
        &self,
        channel: &str,
        user_header: Option<&[u8]>,
        query: Option<&str>,
    ) -> Result<(ChannelId, UserId), ApiError> {
        self.authorize_stream_uncounted(channel, user_header, query)
            .await
            .inspect_err(|e| stream_core::metrics::record_refused(e.status))
    }

    async fn authorize_stream_uncounted(
        &self,
        channel: &str,
        user_header: Option<&[u8]>,
        query: Option<&str>,
    ) -> Result<(ChannelId, UserId), ApiError> {
        // Who is asking comes first, so that a request without credentials learns nothing about
        // the channel.
        enum Credential {
            Token(String),
            Header(UserId),
        }
        let credential = match query_param(query, TOKEN_QUERY) {
            Some(token) => Credential::Token(token),
            None => Credential::Header(
                header_user(user_header)?
                    .ok_or_else(|| ApiError::unauthorized("send the X-User-Id header or a stream token"))?,
            ),
        };
        let channel = ChannelId::new(channel).map_err(|_| ApiError::not_found("no such channel"))?;
        let (user, granted) = match credential {
            Credential::Header(user) => (user, false),
            Credential::Token(token) => {
                let user = self
                    .inner
                    .signer
                    .verify(&token, &channel)
                    .map_err(|e| ApiError::forbidden(e.to_string()))?;
                (user, true)
            }
        };
        self.check_owner(&channel, &user, granted).await?;
        Ok((channel, user))
    }

    /// Checks that `user` owns `channel`. `granted`: the user holds a valid token for it, which
    /// stands in for a missing owner record.
    async fn check_owner(&self, channel: &ChannelId, user: &UserId, granted: bool) -> Result<(), ApiError> {
        match self.streaming().registry.owner(channel).await {
            Err(e) => Err(ApiError::unavailable("channel registry", e)),
            Ok(None) if granted => Ok(()),
            Ok(None) => Err(ApiError::not_found("no such channel")),
            Ok(Some(owner)) if owner != *user => Err(ApiError::forbidden("this channel belongs to another user")),
            Ok(Some(_)) => Ok(()),
        }
    }

    /// `POST /chat/stream` up to its stream, checked in this order: the user (401), the body (413
    /// over `DEMO_MAX_BODY_BYTES`, 400 without a prompt), the prompt (413 over
    /// `CHAT_MAX_PROMPT_BYTES`), the user's stream lease (429 `stream_limit_exceeded`), then a
    /// live-channel slot (429 `channel_limit_exceeded`, the lease given back), then the channel's
    /// owner record. The fake LLM's reply then runs detached from the request
    /// ([`SseResponse::spawn`]): it holds the lease and the slot until its `done` (or a cancel,
    /// or the maximum run time), whether or not the client stays. Await
    /// [`ChatStarted::response`] and send [`ChatStarted::headers`] with it.
    pub async fn open_chat(&self, user_header: Option<&[u8]>, body: &[u8]) -> Result<ChatStarted, StreamRefusal> {
        self.open_chat_uncounted(user_header, body)
            .await
            .inspect_err(StreamRefusal::count)
    }

    async fn open_chat_uncounted(&self, user_header: Option<&[u8]>, body: &[u8]) -> Result<ChatStarted, StreamRefusal> {
        let user = require_user(user_header)?;
        let request: ChatRequest = parse_body(body, self.max_body_bytes(), None)?;
        let (ctx, lease, events) = self.prepare_chat(&user, &request.prompt).await?;
        let channel = ctx.channel_id().clone();
        let response = SseResponse::spawn(self.streaming(), ctx, emit_all(events, || ()))
            .options(self.sse_options(None).lease(lease));
        Ok(ChatStarted {
            stream_url: self.stream_url(&user, &channel),
            channel,
            response,
        })
    }

    /// What both chat routes start with, in this order: the prompt's size (413), the user's
    /// stream lease (429 `stream_limit_exceeded`), a live-channel slot (429
    /// `channel_limit_exceeded`, the lease given back), the channel's owner record. Returns the
    /// context of the new channel, the lease, and the fake LLM's events, made as they are polled
    /// (they hold the slot until `done`, or until they are dropped).
    async fn prepare_chat(
        &self,
        user: &UserId,
        prompt: &str,
    ) -> Result<(StreamContext, StreamLease, ChatEvents), StreamRefusal> {
        let max_prompt = self.config().chat_max_prompt_bytes;
        if prompt.len() > max_prompt {
            return Err(ApiError::payload_too_large("prompt", max_prompt).into());
        }
        let lease = self.lease(user).await?;
        let ctx = StreamContext::builder().build();
        let channel = ctx.channel_id().clone();
        let slot = self.reserve_channel(user, &channel).await?;
        let streaming = self.streaming();
        streaming
            .registry
            .register(&channel, user, streaming.channel_config.history_ttl)
            .await
            .map_err(|e| ApiError::unavailable("channel registry", e))?;
        let events = chat_events_holding(channel, prompt, self.config().step() / 4, slot);
        Ok((ctx, lease, Box::pin(events)))
    }

    /// `POST /api/chat`, the AI SDK's chat request (`{"id", "messages": [...]}`): the last user
    /// message is the prompt. Checked as `POST /chat/stream` is (401, 413, 400, 429), plus the
    /// chat id (400 `invalid_chat_id`: 1 to 128 of `A-Z a-z 0-9 _ -`). The reply runs detached
    /// from the request, like `/chat/stream`'s, and is answered in the AI SDK's UI message stream
    /// protocol ([`stream_core::ai_sdk`]); the chat id names it until it ends, for
    /// [`resume_ai_chat`](Self::resume_ai_chat).
    pub async fn open_ai_chat(&self, user_header: Option<&[u8]>, body: &[u8]) -> Result<AiChatStream, StreamRefusal> {
        self.open_ai_chat_uncounted(user_header, body)
            .await
            .inspect_err(StreamRefusal::count)
    }

    async fn open_ai_chat_uncounted(
        &self,
        user_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<AiChatStream, StreamRefusal> {
        let user = require_user(user_header)?;
        let request: AiChatRequest = parse_body(body, self.max_body_bytes(), None)?;
        let chat = valid_chat_id(&request.id)?.to_owned();
        let prompt = request
            .last_user_text()
            .ok_or_else(|| ApiError::bad_request("missing_prompt", "the last message must be the user's, with text"))?;
        let (ctx, lease, events) = self.prepare_chat(&user, &prompt).await?;
        let channel = ctx.channel_id().clone();
        let ttl = self.streaming().channel_config.history_ttl;
        let index = self.inner.backends.channel_cap.clone();
        index
            .set_chat(&chat, &channel, ttl)
            .await
            .map_err(|e| ApiError::unavailable("chat index", e))?;
        let subscription = self
            .streaming()
            .subscriber
            .subscribe(&channel, None)
            .await
            .map_err(|e| ApiError::unavailable("subscribe", e))?;
        // The chat stops naming this stream once it ends, however it ends.
        let forget = {
            let channel = channel.clone();
            move || {
                tokio::spawn(async move {
                    if let Err(e) = index.forget_chat(&chat, &channel).await {
                        tracing::warn!(error = %e, "could not forget a finished chat stream");
                    }
                });
            }
        };
        stream_core::spawn::spawn_producer(
            self.streaming().publisher.clone(),
            ctx,
            emit_all(events, forget),
            Some(lease),
            stream_core::spawn::DEFAULT_MAX_RUN_TIME,
        );
        Ok(self.ai_chat_stream(&user, channel, subscription, None))
    }

    /// `GET /api/chat/{id}/stream`, what `useChat({ resume: true })` calls: the chat's active
    /// stream from its start, in the AI SDK's protocol, on any instance; `None` (the app answers
    /// 204) when the chat has no active stream (none started, or it ended). Who may read it is
    /// checked as for `GET /streams/{id}` (401, 403, 404), then the reader's own lease (429).
    pub async fn resume_ai_chat(
        &self,
        chat: &str,
        user_header: Option<&[u8]>,
        query: Option<&str>,
    ) -> Result<Option<AiChatStream>, StreamRefusal> {
        let resumed = self
            .resume_ai_chat_uncounted(chat, user_header, query)
            .await
            .inspect_err(StreamRefusal::count)?;
        if resumed.is_none() {
            stream_core::metrics::record_refused(204);
        }
        Ok(resumed)
    }

    async fn resume_ai_chat_uncounted(
        &self,
        chat: &str,
        user_header: Option<&[u8]>,
        query: Option<&str>,
    ) -> Result<Option<AiChatStream>, StreamRefusal> {
        if query_param(query, TOKEN_QUERY).is_none() {
            require_user(user_header)?;
        }
        let chat = valid_chat_id(chat)?;
        let Some(channel) = self
            .inner
            .backends
            .channel_cap
            .chat(chat)
            .await
            .map_err(|e| ApiError::unavailable("chat index", e))?
        else {
            return Ok(None);
        };
        let (channel, user) = self
            .authorize_stream_uncounted(channel.as_str(), user_header, query)
            .await?;
        let lease = self.lease(&user).await?;
        let subscription = self
            .streaming()
            .subscriber
            .subscribe(&channel, None)
            .await
            .map_err(|e| ApiError::unavailable("subscribe", e))?;
        Ok(Some(self.ai_chat_stream(
            &user,
            channel,
            subscription,
            Some(lease.auto_refresh()),
        )))
    }

    /// The AI SDK answer over `subscription` (from the channel's start), with keep-alives every
    /// ping interval; `lease` (a reader's) is held as long as the body.
    fn ai_chat_stream(
        &self,
        user: &UserId,
        channel: ChannelId,
        subscription: stream_core::Subscription,
        lease: Option<StreamLease>,
    ) -> AiChatStream {
        let events = subscription.shared().map(move |event| {
            let _held = &lease;
            event
        });
        let body = stream_core::ai_sdk::ui_message_stream(events, channel.as_str());
        let body = stream_core::ai_sdk::with_keep_alive(body, self.streaming().channel_config.ping_interval);
        AiChatStream {
            stream_url: self.stream_url(user, &channel),
            channel,
            body,
        }
    }

    /// `POST /streams/{channel_id}/cancel`: who may cancel is who may read the stream
    /// ([`authorize_stream`](Self::authorize_stream): 401, 403, 404); then the cancel request,
    /// which reaches the chat's producer on whichever instance runs it within a second.
    /// The body of the `202 Accepted` answer, `{"channel_id", "status": "cancelling"}`; once the
    /// stream has its `done`, 409 `stream_finished` (a cancel then changes nothing). Idempotent.
    pub async fn cancel_stream(
        &self,
        channel: &str,
        user_header: Option<&[u8]>,
        query: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (channel, _user) = self.authorize_stream_uncounted(channel, user_header, query).await?;
        match self
            .streaming()
            .publisher
            .request_cancel(&channel)
            .await
            .map_err(|e| ApiError::unavailable("cancel", e))?
        {
            CancelOutcome::Requested => Ok(json!({"channel_id": channel, "status": "cancelling"})),
            CancelOutcome::AlreadyDone => Err(ApiError::stream_finished()),
        }
    }

    /// `GET /events?channel_id=…&types=log,error&limit=…`: the channel's stored events, oldest
    /// first, for its owner only. One registry round trip and one store query.
    pub async fn events(&self, user_header: Option<&[u8]>, query: Option<&str>) -> Result<Vec<Event>, ApiError> {
        let user = require_user(user_header)?;
        let params: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        let channel = params
            .get("channel_id")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::bad_request("missing_channel_id", "the channel_id query parameter is required"))?;
        let channel = ChannelId::new(channel).map_err(|_| ApiError::not_found("no such channel"))?;
        let event_types = params
            .get("types")
            .map(|types| {
                types
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| t.parse::<EventType>())
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| ApiError::bad_request("invalid_types", e.to_string()))?
            .unwrap_or_default();
        let limit = match params.get("limit").filter(|l| !l.is_empty()) {
            None => 100,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_EVENTS_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_limit", format!("limit must be 1 to {MAX_EVENTS_LIMIT}"))
                })?,
        };
        self.check_owner(&channel, &user, false).await?;
        let store = self
            .inner
            .backends
            .archive
            .as_ref()
            .or(self.streaming().store.as_ref())
            .ok_or_else(|| ApiError::unavailable("event store", "none configured"))?;
        store
            .flush()
            .await
            .map_err(|e| ApiError::unavailable("event store", e))?;
        let query = EventQuery {
            event_types,
            limit,
            ..EventQuery::channel(channel)
        };
        let page = store
            .query(&query)
            .await
            .map_err(|e| ApiError::unavailable("event store", e))?;
        Ok(page.events)
    }

    /// Watches `channel` from this process until its `done`, then gives back the channel slot
    /// that [`start`](Self::start) sends through the returned sender. With `store` (Redis mode)
    /// it also archives the channel: appends every event into it. Subscribes from the start of
    /// the channel's history (so nothing published before is missed) and returns once
    /// subscribed, so that a job queued afterwards cannot publish before the watcher reads its
    /// channel. A failed subscribe is logged and returns `None`: the deployment goes ahead
    /// unarchived, and its slot expires with the channel's history. A watcher that stops before
    /// `done` (the idle timeout, shutdown, repeated failures) keeps the slot likewise.
    async fn watch(
        &self,
        channel: ChannelId,
        store: Option<Arc<dyn EventStore>>,
    ) -> Option<oneshot::Sender<ChannelSlot>> {
        // The watcher waits as long as the channel's history lives: a job may sit in the queue
        // while no worker runs, and its events are still replayed from history when one starts.
        let idle = self.streaming().channel_config.history_ttl;
        let shutdown = self.inner.shutdown.clone();
        let subscriber = self.streaming().subscriber.clone();
        let mut events = match subscriber.subscribe(&channel, None).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "cannot watch (or archive) channel");
                return None;
            }
        };
        let (slot_tx, slot_rx) = oneshot::channel::<ChannelSlot>();
        tokio::spawn(async move {
            // The slot arrives once the job has started. A closed channel instead (the deployment
            // was dropped unstarted, or its job could not be queued: the slot went back then)
            // ends a watcher that only watched for the slot; an archive keeps waiting, since a
            // push whose reply was lost may still have queued the job.
            let mut slot_rx = Some(slot_rx);
            let mut slot: Option<ChannelSlot> = None;
            let mut last = None;
            let mut failures = 0u32;
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => {
                        keep(slot);
                        return;
                    }
                    received = async { slot_rx.as_mut().expect("guarded").await }, if slot_rx.is_some() => {
                        slot_rx = None;
                        match received {
                            Ok(received) => slot = Some(received),
                            Err(_) if store.is_none() => return,
                            Err(_) => {}
                        }
                        continue;
                    }
                    next = tokio::time::timeout(idle, events.next()) => next,
                };
                let failure = match next {
                    Ok(Some(Ok(event))) if !event.kind.is_control() => {
                        failures = 0;
                        last = Some(event.id);
                        if let Some(store) = &store
                            && let Err(e) = store.append(&event)
                        {
                            tracing::warn!(channel = %channel, error = %e, "event not archived");
                        }
                        if event.kind.closes_stream() {
                            // The channel is finished: its slot goes back (dropped). `start`
                            // sends it right after the job is started, so it may still come.
                            if slot.is_none()
                                && let Some(rx) = slot_rx.take()
                            {
                                drop(rx.await);
                            }
                            drop(slot);
                            return;
                        }
                        continue;
                    }
                    Ok(Some(Ok(_control))) => continue,
                    Err(_idle) => {
                        tracing::warn!(channel = %channel, "watcher gave up: no event for the history TTL");
                        keep(slot);
                        return;
                    }
                    Ok(Some(Err(e))) => e.to_string(),
                    Ok(None) => "the subscription ended".to_owned(),
                };
                // Resume after the last event seen: the history replays what the watcher missed
                // while it was away, so nothing is archived twice or lost.
                failures += 1;
                if failures > 5 {
                    tracing::warn!(channel = %channel, error = %failure, "watcher gave up");
                    keep(slot);
                    return;
                }
                tracing::warn!(channel = %channel, error = %failure, "watcher subscription failed; resuming");
                tokio::time::sleep(Duration::from_millis(200) * failures).await;
                match subscriber.subscribe(&channel, last).await {
                    Ok(resumed) => events = resumed,
                    Err(e) => tracing::warn!(channel = %channel, error = %e, "watcher resume failed"),
                }
            }
        });
        Some(slot_tx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use stream_core::memory::{MemoryBroker, MemoryLeaseStore};
    use stream_core::{ChannelRegistry, EventSubscriber, RegistryError, SubscribeError, Subscription};

    use super::*;

    /// The memory broker, counting registrations and subscriptions.
    #[derive(Default)]
    struct Counting {
        broker: MemoryBroker,
        registered: AtomicUsize,
        subscribed: AtomicUsize,
    }

    #[async_trait]
    impl ChannelRegistry for Counting {
        async fn register(&self, channel: &ChannelId, owner: &UserId, ttl: Duration) -> Result<(), RegistryError> {
            self.registered.fetch_add(1, Ordering::SeqCst);
            self.broker.register(channel, owner, ttl).await
        }
        async fn owner(&self, channel: &ChannelId) -> Result<Option<UserId>, RegistryError> {
            self.broker.owner(channel).await
        }
    }

    #[async_trait]
    impl EventSubscriber for Counting {
        async fn subscribe(&self, channel: &ChannelId, after: Option<EventId>) -> Result<Subscription, SubscribeError> {
            self.subscribed.fetch_add(1, Ordering::SeqCst);
            self.broker.subscribe(channel, after).await
        }
    }

    /// A memory-mode service: lease limit 1, `channels` live channels per user, jobs of `step`.
    fn service(channels: usize, step_ms: u64) -> (DemoService, Arc<Counting>, Arc<ChannelCap>) {
        let config = Config {
            lease_limit: 1,
            max_channels_per_user: channels,
            step_ms,
            ..Config::default()
        };
        let counting = Arc::new(Counting::default());
        let streaming = Streaming::from_parts(
            Arc::new(counting.broker.clone()),
            counting.clone(),
            counting.clone(),
            Arc::new(MemoryLeaseStore::new(config.lease_config())),
            None,
            config.channel_config(),
        );
        let cap = Arc::new(ChannelCap::memory());
        let backends = Backends {
            jobs: JobQueue::InProcess {
                publisher: streaming.publisher.clone(),
            },
            streaming,
            mode: Mode::Memory,
            archive: None,
            channel_cap: cap.clone(),
        };
        (DemoService::new(config, backends), counting, cap)
    }

    /// The refusal of a chat that should have been refused.
    fn chat_refusal(result: Result<ChatStarted, StreamRefusal>) -> StreamRefusal {
        match result {
            Ok(_) => panic!("the chat was not refused"),
            Err(refusal) => refusal,
        }
    }

    fn status(refusal: &StreamRefusal) -> u16 {
        refusal.status()
    }

    #[tokio::test]
    async fn a_429_from_the_lease_registers_subscribes_and_reserves_nothing() {
        let (service, counting, cap) = service(5, 1000);
        let user = UserId::new("u").unwrap();
        let held = service.lease(&user).await.unwrap();
        let refused = service.open_deployment(Some(b"u"), b"{}").await.unwrap_err();
        assert_eq!(status(&refused), 429);
        let refused = chat_refusal(service.open_chat(Some(b"u"), br#"{"prompt":"hi"}"#).await);
        assert!(matches!(refused, StreamRefusal::Lease(_)), "{refused:?}");
        assert_eq!(counting.registered.load(Ordering::SeqCst), 0);
        assert_eq!(counting.subscribed.load(Ordering::SeqCst), 0);
        assert_eq!(cap.memory_count(&user), 0);
        drop(held);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (deployment, _lease) = service.open_deployment(Some(b"u"), b"{}").await.unwrap();
        assert_eq!(counting.registered.load(Ordering::SeqCst), 1);
        assert_eq!(counting.subscribed.load(Ordering::SeqCst), 1);
        assert_eq!(cap.memory_count(&user), 1);
        // Dropped unstarted (its stream could not be opened, say): the slot comes back.
        drop(deployment);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cap.memory_count(&user), 0);
    }

    #[tokio::test]
    async fn limits_are_checked_before_the_lease() {
        let (service, _, _) = service(5, 1000);
        let big = vec![b' '; service.max_body_bytes() + 1];
        let refused = chat_refusal(service.open_chat(Some(b"u"), &big).await);
        assert!(
            matches!(&refused, StreamRefusal::Api(e) if e.code == "payload_too_large"),
            "{refused:?}"
        );
        let prompt = format!(
            r#"{{"prompt":"{}"}}"#,
            "a".repeat(service.config().chat_max_prompt_bytes + 1)
        );
        let refused = chat_refusal(service.open_chat(Some(b"u"), prompt.as_bytes()).await);
        assert!(
            matches!(&refused, StreamRefusal::Api(e) if e.status == 413 && e.limit == Some(16384)),
            "{refused:?}"
        );
        let e = service.create_deployment(Some(b"u"), &big).await.unwrap_err();
        assert_eq!((e.status, e.code), (413, "payload_too_large"));
        let e = service.create_deployment(Some(b"u"), b"{nope").await.unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_body"));
    }

    #[tokio::test]
    async fn a_deployment_holds_its_slot_until_done() {
        let (service, _, cap) = service(1, 5);
        let user = UserId::new("u").unwrap();
        let created = service.create_deployment(Some(b"u"), b"{}").await.unwrap();
        let e = service.create_deployment(Some(b"u"), b"{}").await.unwrap_err();
        assert_eq!((e.status, e.code, e.limit), (429, "channel_limit_exceeded", Some(1)));
        assert_eq!(e.body()["limit"], 1);
        // A chat is a live channel too.
        let refused = chat_refusal(service.open_chat(Some(b"u"), br#"{"prompt":"hi"}"#).await);
        assert!(matches!(&refused, StreamRefusal::Api(e) if e.code == "channel_limit_exceeded"));
        let mut events = service
            .streaming()
            .subscriber
            .subscribe(&created.channel_id, None)
            .await
            .unwrap();
        while let Some(event) = events.next().await {
            if event.unwrap().kind.closes_stream() {
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while cap.memory_count(&user) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the done channel still counts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        service.create_deployment(Some(b"u"), b"{}").await.unwrap();
    }
}
