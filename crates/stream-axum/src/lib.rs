#![doc = include_str!("../README.md")]

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use stream_core::sse::{LAST_EVENT_ID_HEADER, SSE_HEADERS, SseReply, last_event_id_from_request};
use stream_core::{ChannelId, EventId};

/// Re-exported: the SSE response builder, which [`Sse`] converts once awaited.
pub use stream_core::sse::SseResponse;
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
        let answer = self.0.answer();
        let mut response = (self.status(), axum::Json(answer.body)).into_response();
        let headers = response.headers_mut();
        for (name, value) in answer.headers {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

/// An SSE answer for axum: stream-core's [`SseReply`] as an axum [`Response`]. A stream becomes
/// `200` with the SSE headers (`Content-Type: text/event-stream`, `Cache-Control: no-cache`,
/// `X-Accel-Buffering: no`); [`SseReply::Finished`] becomes `204 No Content`, which stops an
/// `EventSource` from reconnecting. Extra headers are axum's job: return `(headers, sse)`.
///
/// Made from an awaited [`SseResponse`]:
///
/// ```
/// use axum::extract::State;
/// use axum::{Router, routing::get};
/// use stream_axum::{ChannelIdPath, LastEventId, Sse, SseError};
/// use stream_core::sse::SseResponse;
/// use stream_core::{Streaming, UserId};
///
/// async fn stream(
///     State(streaming): State<Streaming>,
///     ChannelIdPath(channel): ChannelIdPath,
///     LastEventId(last): LastEventId,
/// ) -> Result<Sse, SseError> {
///     let user = UserId::new("user-1").expect("a valid user id"); // from your auth
///     Ok(SseResponse::channel(&streaming, channel).lease(user).resume(last).await?.into())
/// }
///
/// let app: Router = Router::new()
///     .route("/streams/{channel_id}", get(stream))
///     .with_state(Streaming::builder().build());
/// ```
///
/// The builder is the only way to an SSE answer: the port's positional helpers
/// (`sse_response`, `sse_response_with_lease`, `direct_sse_response`, with their `bool` lease
/// and header arguments) are gone, and this compile test keeps them gone:
///
/// ```compile_fail,E0425
/// let _ = stream_axum::sse_response_with_lease;
/// ```
#[derive(Debug)]
pub struct Sse(pub SseReply);

impl From<SseReply> for Sse {
    fn from(reply: SseReply) -> Self {
        Self(reply)
    }
}

impl IntoResponse for Sse {
    fn into_response(self) -> Response {
        let body = match self.0 {
            SseReply::Stream(body) => body,
            SseReply::Finished => return StatusCode::NO_CONTENT.into_response(),
        };
        let mut response = Response::new(Body::from_stream(body));
        let headers = response.headers_mut();
        for (name, value) in SSE_HEADERS {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        response
    }
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
