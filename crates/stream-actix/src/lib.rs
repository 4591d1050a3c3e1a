#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::fmt::Display;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
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

/// Why an SSE response could not be made. As an actix [`ResponseError`] every variant answers with
/// a JSON body `{"error": <code>, "message": <text>, …}`.
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
    /// The machine-readable `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::LimitExceeded(_) => "stream_limit_exceeded",
            Self::Lease(_) | Self::Subscribe(_) => "stream_unavailable",
            Self::InvalidLastEventId(_) => "invalid_last_event_id",
        }
    }
}

impl ResponseError for SseError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Lease(_) | Self::Subscribe(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidLastEventId(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Self::LimitExceeded(e) = self {
            // At least one second, so that clients back off.
            let secs = e.retry_after.as_secs().max(1);
            body["limit"] = e.limit.into();
            body["retry_after"] = secs.into();
            response.insert_header((header::RETRY_AFTER, secs));
        }
        response.json(body)
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
) -> Result<HttpResponse, SseError> {
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
) -> Result<HttpResponse, SseError>
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
        let header = req
            .headers()
            .get("last-event-id")
            .map(|v| v.to_str().map_err(|_| InvalidEventId("<not ASCII>".into())))
            .transpose()?;
        // A query string that does not parse carries no usable id; treat it as absent.
        let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.into_inner().remove(LAST_EVENT_ID_QUERY));
        Ok(Self(stream_core::sse::last_event_id(header, query.as_deref())?))
    }
}

impl FromRequest for LastEventId {
    type Error = SseError;
    type Future = Ready<Result<Self, SseError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Self::from_request_head(req))
    }
}
