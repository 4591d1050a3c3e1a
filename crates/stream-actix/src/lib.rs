#![doc = include_str!("../README.md")]

use std::future::{Ready, ready};

use actix_web::body::BoxBody;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, Responder, ResponseError};
use stream_core::sse::{LAST_EVENT_ID_HEADER, SSE_HEADERS, SseReply, last_event_id_from_request};
use stream_core::{ChannelId, EventId};

/// Re-exported: the SSE response builder, which [`Sse`] converts once awaited.
pub use stream_core::sse::SseResponse;
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
        let answer = self.0.answer();
        let mut response = HttpResponse::build(self.status_code());
        for (name, value) in answer.headers {
            response.insert_header((name, value));
        }
        response.json(answer.body)
    }
}

/// An SSE answer for actix-web: stream-core's [`SseReply`] as a [`Responder`]. A stream becomes
/// `200` with the SSE headers (`Content-Type: text/event-stream`, `Cache-Control: no-cache`,
/// `X-Accel-Buffering: no`); [`SseReply::Finished`] becomes `204 No Content`, which stops an
/// `EventSource` from reconnecting. Extra headers are actix's job:
/// `sse.customize().insert_header(..)`.
///
/// Made from an awaited [`SseResponse`]:
///
/// ```
/// use actix_web::{App, web};
/// use stream_actix::{ChannelIdPath, LastEventId, Sse, SseError};
/// use stream_core::sse::SseResponse;
/// use stream_core::{Streaming, UserId};
///
/// async fn stream(
///     streaming: web::Data<Streaming>,
///     ChannelIdPath(channel): ChannelIdPath,
///     LastEventId(last): LastEventId,
/// ) -> Result<Sse, SseError> {
///     let user = UserId::new("user-1").expect("a valid user id"); // from your auth
///     Ok(SseResponse::channel(&streaming, channel).lease(user).resume(last).await?.into())
/// }
///
/// let app = App::new()
///     .app_data(web::Data::new(Streaming::builder().build()))
///     .route("/streams/{channel_id}", web::get().to(stream));
/// ```
///
/// The builder is the only way to an SSE answer: the port's positional helpers
/// (`sse_response`, `sse_response_with_lease`, `direct_sse_response`, with their `bool` lease
/// and header arguments) are gone, and this compile test keeps them gone:
///
/// ```compile_fail,E0425
/// let _ = stream_actix::sse_response_with_lease;
/// ```
#[derive(Debug)]
pub struct Sse(pub SseReply);

impl From<SseReply> for Sse {
    fn from(reply: SseReply) -> Self {
        Self(reply)
    }
}

impl Responder for Sse {
    type Body = BoxBody;

    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        let body = match self.0 {
            SseReply::Stream(body) => body,
            SseReply::Finished => return HttpResponse::NoContent().finish(),
        };
        let mut response = HttpResponse::Ok();
        for (name, value) in SSE_HEADERS {
            response.insert_header((HeaderName::from_static(name), HeaderValue::from_static(value)));
        }
        response.streaming(body)
    }
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
