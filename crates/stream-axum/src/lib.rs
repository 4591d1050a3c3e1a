#![doc = include_str!("../README.md")]

use std::fmt::Display;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use stream_core::sse::{LAST_EVENT_ID_HEADER, SSE_HEADERS, SseBody, SseOptions, SseReply, last_event_id_from_request};
use stream_core::{ChannelId, Event, EventId, Streaming, UserId};

/// Re-exported: the error that [`SseError`] wraps, with its variants.
pub use stream_core::sse::StreamError;

#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "serve")]
pub use serve::serve;

stream_core::stream_error_newtype! {
    /// Why an SSE response could not be made: stream-core's [`StreamError`], which decides the
    /// status, headers and JSON body `{"error": <code>, "message": <text>, …}`; this wrapper only
    /// makes it an axum [`Response`] ([`IntoResponse`]).
    ///
    /// It converts from [`StreamError`] and from everything that converts into it
    /// ([`StreamLimitExceeded`](stream_core::StreamLimitExceeded),
    /// [`AcquireError`](stream_core::AcquireError),
    /// [`SubscribeError`](stream_core::SubscribeError), …), so `?` works on those.
    pub struct SseError;
}

impl SseError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for SseError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.0.json_body())).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.0.headers() {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
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
    let reply = streaming.sse_channel(channel_id, options).await?;
    Ok(sse_reply_response(reply, extra_headers))
}

/// [`sse_response`] under a lease of `user_id` from `streaming.leases` (the seed's
/// `sse_response_with_lease`). The lease (one lease-store round trip) is taken for a stream that
/// will run, held for its lifetime, refreshed by the pipeline and released when the stream ends or
/// the client disconnects. Over the cap: [`StreamError::LimitExceeded`], which answers `429`; a
/// client that already has the channel's `done` gets `204` even then.
pub async fn sse_response_with_lease(
    channel_id: &ChannelId,
    user_id: UserId,
    streaming: &Streaming,
    options: SseOptions,
    extra_headers: Option<HeaderMap>,
) -> Result<Response, SseError> {
    let reply = streaming.sse_channel_with_lease(channel_id, user_id, options).await?;
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
    let body = streaming.sse_direct(stream, user_id, use_lease, options).await?;
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
        let header = parts.headers.get(LAST_EVENT_ID_HEADER).map(HeaderValue::as_bytes);
        Ok(Self(last_event_id_from_request(header, parts.uri.query())?))
    }
}

/// Extracts a [`ChannelId`] from the path: the parameter named `channel_id`, else `channel`, else
/// the route's only parameter. A malformed id (or a segment that does not decode) is answered
/// `404 Not Found` with a JSON body, as a channel that does not exist is.
///
/// ```
/// use axum::{Router, routing::get};
/// use stream_axum::ChannelIdPath;
///
/// async fn handler(ChannelIdPath(channel): ChannelIdPath) -> String {
///     channel.to_string()
/// }
/// let app: Router = Router::new().route("/streams/{channel_id}", get(handler));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelIdPath(pub ChannelId);

impl<S: Send + Sync> FromRequestParts<S> for ChannelIdPath {
    type Rejection = SseError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = |e| SseError(StreamError::InvalidChannelId(e));
        let params = axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found(stream_core::InvalidId::Empty { kind: "channel id" }))?;
        let value = ["channel_id", "channel"]
            .iter()
            .find_map(|name| params.iter().find(|(n, _)| n == name))
            .or(match params.as_slice() {
                [only] => Some(only),
                _ => None,
            })
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        ChannelId::new(value).map(Self).map_err(not_found)
    }
}
