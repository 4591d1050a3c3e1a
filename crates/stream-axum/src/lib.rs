#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::fmt::Display;

use axum::body::Body;
use axum::extract::{FromRequestParts, Query};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use serde_json::json;
use stream_core::sse::{
    LAST_EVENT_ID_QUERY, OpenStreamError, SSE_HEADERS, SseBody, SseOptions, SseReply, channel_stream,
    channel_stream_with_lease, direct_stream,
};
use stream_core::{
    AcquireError, ChannelId, Event, EventId, InvalidEventId, LeaseError, StreamLimitExceeded, Streaming,
    SubscribeError, UserId,
};

/// Why an SSE response could not be made. Every variant converts into a response with a JSON body
/// `{"error": <code>, "message": <text>, …}`.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// The user is at the stream cap: `429 Too Many Requests`, with `Retry-After` and the fields
    /// `limit` and `retry_after` in the body.
    #[error(transparent)]
    LimitExceeded(#[from] StreamLimitExceeded),
    /// The lease store failed: `503 Service Unavailable`.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The subscription failed: `503 Service Unavailable`.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// The `Last-Event-ID` header or `last_event_id` query is not an event id: `400 Bad Request`.
    #[error(transparent)]
    InvalidLastEventId(#[from] InvalidEventId),
}

impl From<AcquireError> for SseError {
    fn from(e: AcquireError) -> Self {
        match e {
            AcquireError::LimitExceeded(e) => Self::LimitExceeded(e),
            AcquireError::Store(e) => Self::Lease(e),
        }
    }
}

impl From<OpenStreamError> for SseError {
    fn from(e: OpenStreamError) -> Self {
        match e {
            OpenStreamError::Lease(e) => e.into(),
            OpenStreamError::Subscribe(e) => Self::Subscribe(e),
        }
    }
}

impl SseError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Lease(_) | Self::Subscribe(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidLastEventId(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The machine-readable `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::LimitExceeded(_) => "stream_limit_exceeded",
            Self::Lease(_) | Self::Subscribe(_) => "stream_unavailable",
            Self::InvalidLastEventId(_) => "invalid_last_event_id",
        }
    }
}

/// The `Retry-After` seconds of a [`StreamLimitExceeded`]: at least 1, so that clients back off.
fn retry_after_secs(e: &StreamLimitExceeded) -> u64 {
    e.retry_after.as_secs().max(1)
}

impl IntoResponse for SseError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        let mut response = match &self {
            Self::LimitExceeded(e) => {
                let secs = retry_after_secs(e);
                body["limit"] = e.limit.into();
                body["retry_after"] = secs.into();
                let mut response = (status, axum::Json(body)).into_response();
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
                response
            }
            _ => (status, axum::Json(body)).into_response(),
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Wraps an [`SseBody`] into a `200` response with the SSE headers and then `extra_headers`
/// (which may override them).
pub fn sse_body_response(body: SseBody, extra_headers: Option<HeaderMap>) -> Response {
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    for (name, value) in SSE_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    if let Some(extra) = extra_headers {
        headers.extend(extra);
    }
    response
}

/// Converts an [`SseReply`]: a stream becomes [`sse_body_response`], [`SseReply::Finished`]
/// becomes `204 No Content` (which stops an `EventSource` from reconnecting).
pub fn sse_reply_response(reply: SseReply, extra_headers: Option<HeaderMap>) -> Response {
    match reply {
        SseReply::Stream(body) => sse_body_response(body, extra_headers),
        SseReply::Finished => StatusCode::NO_CONTENT.into_response(),
    }
}

/// An SSE response for a channel (the seed's `sse_response`): subscribes through
/// `streaming.subscriber` after `options.last_event_id` and runs stream-core's pipeline.
///
/// One subscribe call. `204` when the client already has the channel's `done`.
pub async fn sse_response(
    channel_id: &ChannelId,
    streaming: &Streaming,
    options: SseOptions,
    extra_headers: Option<HeaderMap>,
) -> Result<Response, SseError> {
    let reply = channel_stream(streaming.subscriber.as_ref(), channel_id, options).await?;
    Ok(sse_reply_response(reply, extra_headers))
}

/// [`sse_response`] under a lease of `user_id` from `streaming.leases` (the seed's
/// `sse_response_with_lease`). The lease is taken first (one lease-store round trip), held for the
/// stream's lifetime, refreshed by the pipeline and released when the stream ends or the client
/// disconnects. Over the cap: [`SseError::LimitExceeded`], which answers `429`.
pub async fn sse_response_with_lease(
    channel_id: &ChannelId,
    user_id: UserId,
    streaming: &Streaming,
    options: SseOptions,
    extra_headers: Option<HeaderMap>,
) -> Result<Response, SseError> {
    let reply = channel_stream_with_lease(
        streaming.subscriber.as_ref(),
        streaming.leases.clone(),
        channel_id,
        user_id,
        options,
    )
    .await?;
    Ok(sse_reply_response(reply, extra_headers))
}

/// An SSE response over a direct generator, such as LLM tokens (the seed's
/// `direct_sse_response`). With `use_lease` and a `user_id`, a lease from `streaming.leases` is
/// held for the stream's lifetime. A client disconnect drops `stream` and releases the lease.
pub async fn direct_sse_response<S, E>(
    stream: S,
    user_id: Option<UserId>,
    use_lease: bool,
    streaming: &Streaming,
    options: SseOptions,
    extra_headers: Option<HeaderMap>,
) -> Result<Response, SseError>
where
    S: Stream<Item = Result<Event, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let lease = user_id
        .filter(|_| use_lease)
        .map(|user| (streaming.leases.clone(), user));
    let body = direct_stream(stream, lease, options).await?;
    Ok(sse_body_response(body, extra_headers))
}

/// Extracts the resume point from the `Last-Event-ID` header or, failing that, the
/// `last_event_id` query parameter. Empty values count as absent; an invalid id is rejected with
/// `400` and a JSON body.
///
/// ```
/// use axum::{Router, routing::get};
/// use stream_axum::LastEventId;
///
/// async fn handler(LastEventId(last): LastEventId) -> String {
///     format!("{last:?}")
/// }
/// let app: Router = Router::new().route("/", get(handler));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastEventId(pub Option<EventId>);

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = SseError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get("last-event-id")
            .map(|v| v.to_str().map_err(|_| InvalidEventId("<not ASCII>".into())))
            .transpose()?;
        // A query string that does not parse carries no usable id; treat it as absent.
        let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(mut q)| q.remove(LAST_EVENT_ID_QUERY));
        Ok(Self(stream_core::sse::last_event_id(header, query.as_deref())?))
    }
}
