#![doc = include_str!("../README.md")]

use std::fmt::Display;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError};
use futures_core::Stream;
use stream_core::sse::{LAST_EVENT_ID_HEADER, SSE_HEADERS, SseBody, SseOptions, SseReply, last_event_id_from_request};
use stream_core::{ChannelId, Event, EventId, Streaming, UserId};

/// Re-exported: the error that [`SseError`] wraps, with its variants.
pub use stream_core::sse::StreamError;

stream_core::stream_error_newtype! {
    /// Why an SSE response could not be made: stream-core's [`StreamError`], which decides the
    /// status, headers and JSON body `{"error": <code>, "message": <text>, …}`; this wrapper only
    /// makes it an actix [`ResponseError`].
    ///
    /// It converts from [`StreamError`] and from everything that converts into it
    /// ([`StreamLimitExceeded`](stream_core::StreamLimitExceeded),
    /// [`AcquireError`](stream_core::AcquireError),
    /// [`SubscribeError`](stream_core::SubscribeError), …), so `?` works on those.
    pub struct SseError;
}

impl ResponseError for SseError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        for (name, value) in self.0.headers() {
            response.insert_header((name, value));
        }
        response.json(self.0.json_body())
    }
}

/// Wraps an [`SseBody`] into a `200` response with the SSE headers and then `extra_headers`
/// (which may override them).
pub fn sse_body_response(body: SseBody, extra_headers: Option<HeaderMap>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    for (name, value) in SSE_HEADERS {
        response.insert_header((HeaderName::from_static(name), HeaderValue::from_static(value)));
    }
    for (name, value) in extra_headers.iter().flat_map(HeaderMap::iter) {
        response.insert_header((name.clone(), value.clone()));
    }
    response.streaming(body)
}

/// Converts an [`SseReply`]: a stream becomes [`sse_body_response`], [`SseReply::Finished`]
/// becomes `204 No Content` (which stops an `EventSource` from reconnecting).
pub fn sse_reply_response(reply: SseReply, extra_headers: Option<HeaderMap>) -> HttpResponse {
    match reply {
        SseReply::Stream(body) => sse_body_response(body, extra_headers),
        SseReply::Finished => HttpResponse::NoContent().finish(),
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
) -> Result<HttpResponse, SseError> {
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
) -> Result<HttpResponse, SseError> {
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
) -> Result<HttpResponse, SseError>
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
/// use actix_web::{App, web};
/// use stream_actix::LastEventId;
///
/// async fn handler(LastEventId(last): LastEventId) -> String {
///     format!("{last:?}")
/// }
/// let app = App::new().route("/", web::get().to(handler));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastEventId(pub Option<EventId>);

impl LastEventId {
    /// Reads the resume point from a request (what the extractor does).
    pub fn from_request_head(req: &HttpRequest) -> Result<Self, SseError> {
        let header = req.headers().get(LAST_EVENT_ID_HEADER).map(HeaderValue::as_bytes);
        Ok(Self(last_event_id_from_request(header, Some(req.query_string()))?))
    }
}

impl FromRequest for LastEventId {
    type Error = SseError;
    type Future = Ready<Result<Self, SseError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Self::from_request_head(req))
    }
}

/// Extracts a [`ChannelId`] from the path: the match parameter named `channel_id`, else
/// `channel`, else the route's only parameter. A malformed id is answered `404 Not Found` with a
/// JSON body, as a channel that does not exist is.
///
/// ```
/// use actix_web::{App, web};
/// use stream_actix::ChannelIdPath;
///
/// async fn handler(ChannelIdPath(channel): ChannelIdPath) -> String {
///     channel.to_string()
/// }
/// let app = App::new().route("/streams/{channel_id}", web::get().to(handler));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelIdPath(pub ChannelId);

impl ChannelIdPath {
    fn from_request_head(req: &HttpRequest) -> Result<Self, SseError> {
        let info = req.match_info();
        let value = ["channel_id", "channel"]
            .iter()
            .find_map(|name| info.get(name))
            .or_else(|| {
                let mut params = info.iter();
                match (params.next(), params.next()) {
                    (Some((_, only)), None) => Some(only),
                    _ => None,
                }
            })
            .unwrap_or_default();
        ChannelId::new(value)
            .map(Self)
            .map_err(|e| SseError(StreamError::InvalidChannelId(e)))
    }
}

impl FromRequest for ChannelIdPath {
    type Error = SseError;
    type Future = Ready<Result<Self, SseError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Self::from_request_head(req))
    }
}
