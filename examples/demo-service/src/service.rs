//! The API's behaviour, once, for both apps: identity, ownership, channels, jobs and queries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use stream_core::sse::SseOptions;
use stream_core::{
    CancellationToken, ChannelId, Event, EventId, EventQuery, EventStore, EventType, StreamContext, StreamLease,
    StreamTokenSigner, Streaming, UserId,
};
use worker::{DeployRequest, JobQueue};

use crate::chat::{ChatRequest, chat_events};
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
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One process, everything in memory, the job in-process.
    Memory,
    /// Redis broker and leases, the job in a worker process.
    Redis,
}

/// The answer of `POST /deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentCreated {
    /// The new channel.
    pub channel_id: ChannelId,
    /// `/streams/{channel_id}?token=…`: an `EventSource` URL that needs no header.
    pub stream_url: String,
}

/// A deployment whose channel exists and is registered, but whose job has not been started yet
/// (`POST /deploy` opens the stream first, then starts the job).
#[derive(Debug)]
pub struct PreparedDeployment {
    /// The context the job will emit with.
    pub ctx: StreamContext,
    /// The request.
    pub request: DeployRequest,
    /// The owner.
    pub user: UserId,
}

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
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("streaming", &self.streaming)
            .field("jobs", &self.jobs)
            .field("mode", &self.mode)
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

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], empty: Option<T>) -> Result<T, ApiError> {
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

    /// Creates and registers a deployment channel owned by the `X-User-Id` user, without starting
    /// its job. One registry round trip.
    pub async fn prepare_deployment(
        &self,
        user_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<PreparedDeployment, ApiError> {
        let user = require_user(user_header)?;
        let request: DeployRequest = parse_body(body, Some(DeployRequest::default()))?;
        let ctx = StreamContext::builder()
            .workspace_id(user.as_str())
            .project(&request.project)
            .env(&request.environment)
            .service(&request.service)
            .persist_events(true)
            .build();
        let streaming = self.streaming();
        streaming
            .registry
            .register(ctx.channel_id(), &user, streaming.channel_config.history_ttl)
            .await
            .map_err(|e| ApiError::unavailable(format!("channel registry: {e}")))?;
        if let Some(store) = &self.inner.backends.archive {
            self.archive(ctx.channel_id().clone(), store.clone()).await;
        }
        Ok(PreparedDeployment { ctx, request, user })
    }

    /// Starts a prepared deployment's job (in-process, or one `RPUSH`).
    pub async fn start(&self, deployment: PreparedDeployment) -> Result<(), ApiError> {
        self.inner
            .backends
            .jobs
            .submit(deployment.ctx, deployment.request, self.config().step())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// `POST /deployments`: a registered channel, the job started, and its stream URL.
    pub async fn create_deployment(
        &self,
        user_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<DeploymentCreated, ApiError> {
        let deployment = self.prepare_deployment(user_header, body).await?;
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
    pub async fn authorize_stream(
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
        let user = match credential {
            Credential::Header(user) => user,
            Credential::Token(token) => self
                .inner
                .signer
                .verify(&token, &channel)
                .map_err(|e| ApiError::forbidden(e.to_string()))?,
        };
        self.check_owner(&channel, &user).await?;
        Ok((channel, user))
    }

    async fn check_owner(&self, channel: &ChannelId, user: &UserId) -> Result<(), ApiError> {
        match self.streaming().registry.owner(channel).await {
            Err(e) => Err(ApiError::unavailable(format!("channel registry: {e}"))),
            Ok(None) => Err(ApiError::not_found("no such channel")),
            Ok(Some(owner)) if owner != *user => Err(ApiError::forbidden("this channel belongs to another user")),
            Ok(Some(_)) => Ok(()),
        }
    }

    /// `POST /chat/stream`: the user (401 without one) and the fake LLM's events for the prompt
    /// (400 without one). The app serves them with `SseResponse::direct` under the user's lease.
    pub fn chat(
        &self,
        user_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<
        (
            UserId,
            impl Stream<Item = Result<Event, std::convert::Infallible>> + Send + 'static + use<>,
        ),
        ApiError,
    > {
        let user = require_user(user_header)?;
        let request: ChatRequest = parse_body(body, None)?;
        Ok((user, chat_events(&request.prompt, self.config().step() / 4)))
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
        self.check_owner(&channel, &user).await?;
        let store = self
            .inner
            .backends
            .archive
            .as_ref()
            .or(self.streaming().store.as_ref())
            .ok_or_else(|| ApiError::unavailable("no event store"))?;
        store
            .flush()
            .await
            .map_err(|e| ApiError::unavailable(format!("event store: {e}")))?;
        let query = EventQuery {
            event_types,
            limit,
            ..EventQuery::channel(channel)
        };
        let page = store
            .query(&query)
            .await
            .map_err(|e| ApiError::unavailable(format!("event store: {e}")))?;
        Ok(page.events)
    }

    /// Archives `channel` into `store` from this process: subscribes from the start of the
    /// channel's history (so nothing published before is missed) and, from a task, appends every
    /// event until `done`, the idle timeout, or shutdown. Returns once subscribed, so that a job
    /// queued afterwards cannot publish before the archive reads its channel; a failed subscribe
    /// is logged, and the deployment goes ahead unarchived.
    async fn archive(&self, channel: ChannelId, store: Arc<dyn EventStore>) {
        // The archive waits as long as the channel's history lives: a job may sit in the queue
        // while no worker runs, and its events are still replayed from history when one starts.
        let idle = self.streaming().channel_config.history_ttl;
        let shutdown = self.inner.shutdown.clone();
        let subscriber = self.streaming().subscriber.clone();
        let mut events = match subscriber.subscribe(&channel, None).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "cannot archive channel");
                return;
            }
        };
        tokio::spawn(async move {
            let mut last = None;
            let mut failures = 0u32;
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = tokio::time::timeout(idle, events.next()) => next,
                };
                let failure = match next {
                    Ok(Some(Ok(event))) if !event.kind.is_control() => {
                        failures = 0;
                        last = Some(event.id);
                        if let Err(e) = store.append(&event) {
                            tracing::warn!(channel = %channel, error = %e, "event not archived");
                        }
                        if event.kind.closes_stream() {
                            return;
                        }
                        continue;
                    }
                    Ok(Some(Ok(_control))) => continue,
                    Err(_idle) => {
                        tracing::warn!(channel = %channel, "archive gave up: no event for the history TTL");
                        return;
                    }
                    Ok(Some(Err(e))) => e.to_string(),
                    Ok(None) => "the subscription ended".to_owned(),
                };
                // Resume after the last archived event: the history replays what the archive
                // missed while it was away, so nothing is archived twice or lost.
                failures += 1;
                if failures > 5 {
                    tracing::warn!(channel = %channel, error = %failure, "archive gave up");
                    return;
                }
                tracing::warn!(channel = %channel, error = %failure, "archive subscription failed; resuming");
                tokio::time::sleep(Duration::from_millis(200) * failures).await;
                match subscriber.subscribe(&channel, last).await {
                    Ok(resumed) => events = resumed,
                    Err(e) => tracing::warn!(channel = %channel, error = %e, "archive resume failed"),
                }
            }
        });
    }
}
