//! The SSE pipeline: turns a subscription, or any stream of events, into SSE frames.
//!
//! It is the one place that owns keepalive pings, the idle timeout, closing after `done`,
//! Last-Event-ID filtering, and refreshing and releasing a stream's lease. The web adapters only
//! convert its [`SseBody`] into their response type.
//!
//! Frame format (see `docs/protocol.md`): every event is `id: <event id>\n` then one
//! `data: <JSON>\n` line, then a blank line. There is no `event:` field, so a plain
//! `EventSource.onmessage` sees every event. Control frames (`ping`, `gap`, and the pipeline's own
//! fatal `error`) carry no `id:`, so they never move the client's resume point.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use serde_json::json;
use time::OffsetDateTime;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::ChannelConfig;
use crate::event::{Event, EventId, EventType, InvalidEventId};
use crate::ids::{ChannelId, UserId};
use crate::lease::{AcquireError, LeaseError, LeaseStore, StreamLease};
use crate::shared::SharedEvent;
use crate::subscribe::{EventCursor, EventSubscriber, SubscribeError};

mod error;

pub use crate::streaming::SseResponse;
pub use error::{BACKEND_UNAVAILABLE, ErrorAnswer, ErrorChain, StreamError, new_request_id};

/// The response headers every SSE response carries.
pub const SSE_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];

/// The request header that carries the last event id on an EventSource's reconnect (lower case,
/// as HTTP header names are compared).
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";

/// The query parameter that may carry the last event id (an EventSource cannot set headers on
/// a first connection).
pub const LAST_EVENT_ID_QUERY: &str = "last_event_id";

/// The body of an SSE response: frames as bytes, each item one frame or several whole frames that
/// were ready together (see [`COALESCE_BYTES`]). It never fails; errors become frames.
pub type SseBody = Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send + 'static>>;

/// Appends one SSE field. For `data`, every line of `value` becomes its own `data:` line (the SSE
/// way to carry line breaks); for any other field, CR and LF are removed. Either way no value can
/// add a field or end the frame.
pub fn push_field(buf: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(!name.contains(['\r', '\n', ':']));
    if name == "data" {
        let mut rest = value;
        loop {
            let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
            buf.extend_from_slice(b"data: ");
            buf.extend_from_slice(&rest.as_bytes()[..end]);
            buf.push(b'\n');
            if end == rest.len() {
                break;
            }
            let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
            rest = &rest[end + skip..];
        }
    } else {
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend(value.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
        buf.push(b'\n');
    }
}

/// Encodes an event as one SSE frame. One JSON serialization and one buffer.
pub fn encode_event(event: &Event) -> Bytes {
    let json = event.to_json();
    let mut buf = Vec::with_capacity(json.len() + 40);
    if !event.kind.is_control() {
        push_field(&mut buf, "id", &event.id.to_string());
    }
    push_field(&mut buf, "data", &json);
    buf.push(b'\n');
    Bytes::from(buf)
}

/// What the pipeline writes: an event's id and type (for the cursor) and its SSE frame.
///
/// A [`SharedEvent`] (what a channel subscription yields) gives its frame as it is, encoded once
/// per process; an [`Event`] (a direct stream's) is encoded when written.
pub trait IntoFrame: Send + 'static {
    /// The event's id.
    fn id(&self) -> EventId;
    /// The event's type.
    fn kind(&self) -> &EventType;
    /// The SSE frame.
    fn into_frame(self) -> Bytes;
}

impl IntoFrame for Event {
    fn id(&self) -> EventId {
        self.id
    }
    fn kind(&self) -> &EventType {
        &self.kind
    }
    fn into_frame(self) -> Bytes {
        encode_event(&self)
    }
}

impl IntoFrame for SharedEvent {
    fn id(&self) -> EventId {
        SharedEvent::id(self)
    }
    fn kind(&self) -> &EventType {
        SharedEvent::kind(self)
    }
    fn into_frame(self) -> Bytes {
        self.frame().clone()
    }
}

fn control_frame(value: serde_json::Value) -> Bytes {
    let mut buf = Vec::with_capacity(96);
    push_field(&mut buf, "data", &value.to_string());
    buf.push(b'\n');
    Bytes::from(buf)
}

/// A keepalive frame: `data: {"type":"ping","timestamp":…}` with no `id:`.
pub fn ping_frame() -> Bytes {
    let ts = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    control_frame(json!({"type": "ping", "timestamp": ts}))
}

/// The frame the pipeline sends before closing on a failure: an `error` event with
/// `"fatal": true`, a machine-readable `error` code, a generic `message` and a `request_id`, and
/// no `id:`. What went wrong inside a backend goes to the log with the same request id, never to
/// the client.
pub fn fatal_error_frame(code: &str, message: &str, request_id: &str) -> Bytes {
    control_frame(json!({
        "type": "error",
        "error": code,
        "message": message,
        "request_id": request_id,
        "fatal": true,
    }))
}

/// Reads the resume point from the `Last-Event-ID` header or, failing that, the
/// `last_event_id` query parameter. Empty values count as absent.
pub fn last_event_id(header: Option<&str>, query: Option<&str>) -> Result<Option<EventId>, InvalidEventId> {
    match header
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or(query.map(str::trim).filter(|s| !s.is_empty()))
    {
        Some(s) => s.parse().map(Some),
        None => Ok(None),
    }
}

/// Reads the resume point of a request, as the adapters' `LastEventId` extractors do: `header` is
/// the raw value of the [`LAST_EVENT_ID_HEADER`] header, `query` the raw query string (without
/// `?`), from which the [`LAST_EVENT_ID_QUERY`] parameter is decoded (the last one wins). Then as
/// [`last_event_id`].
///
/// A header value with a byte that is not visible ASCII (or a tab) is rejected, as
/// `HeaderValue::to_str` does; a query string that carries no usable parameter counts as absent.
pub fn last_event_id_from_request(
    header: Option<&[u8]>,
    query: Option<&str>,
) -> Result<Option<EventId>, InvalidEventId> {
    let visible_ascii = |bytes: &[u8]| bytes.iter().all(|&b| b == b'\t' || (32..127).contains(&b));
    let header = header
        .map(|bytes| match std::str::from_utf8(bytes) {
            Ok(value) if visible_ascii(bytes) => Ok(value),
            _ => Err(InvalidEventId("<not ASCII>".into())),
        })
        .transpose()?;
    let query = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .filter(|(name, _)| name == LAST_EVENT_ID_QUERY)
            .last()
            .map(|(_, value)| value)
    });
    last_event_id(header, query.as_deref())
}

/// How a pipeline runs.
#[derive(Debug)]
#[must_use]
pub struct SseOptions {
    /// Keepalive ping interval.
    pub ping_interval: Duration,
    /// Close after this long without an event.
    pub max_idle_time: Duration,
    /// A `retry:` hint sent first, when set.
    pub retry: Option<Duration>,
    /// Drop events at or before this id (the client already has them).
    pub last_event_id: Option<EventId>,
    /// A lease held for the stream's lifetime: refreshed at a third of its TTL, released when
    /// the stream ends or is dropped.
    pub lease: Option<StreamLease>,
    /// Ends the stream cleanly when cancelled (graceful shutdown).
    pub shutdown: Option<CancellationToken>,
}

impl Default for SseOptions {
    fn default() -> Self {
        Self::from_config(&ChannelConfig::default())
    }
}

impl SseOptions {
    /// Options with the config's ping interval and idle timeout.
    pub fn from_config(config: &ChannelConfig) -> Self {
        Self {
            ping_interval: config.ping_interval,
            max_idle_time: config.max_idle_time,
            retry: None,
            last_event_id: None,
            lease: None,
            shutdown: None,
        }
    }

    /// Sets the resume point.
    pub fn last_event_id(mut self, id: Option<EventId>) -> Self {
        self.last_event_id = id;
        self
    }

    /// Holds `lease` for the stream's lifetime.
    pub fn lease(mut self, lease: StreamLease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Ends the stream when `token` is cancelled.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }
}

/// A lease refresh in flight.
type Refresh = Pin<Box<dyn Future<Output = Result<bool, LeaseError>> + Send>>;

/// The pipeline: a hand-written stream. Its one timer serves the pings, the idle timeout and the
/// lease refresh, and is re-armed only when it fires (an event moves the idle deadline, not the
/// timer). The timer, the shutdown wait and the lease refresh are polled once per piece of the
/// body, and the clocks read once, however many ready frames the piece joins: an event costs a
/// poll of the events, and no timer, `Notify` or shutdown future is made or re-registered for it.
struct Pipeline<S> {
    events: Pin<Box<S>>,
    ping_interval: Duration,
    next_ping: Instant,
    max_idle: Duration,
    /// When the stream goes idle: moved forward by each event.
    idle_deadline: Instant,
    /// The lease refresh interval and its next time, with a lease.
    refresh_every: Option<Duration>,
    next_refresh: Instant,
    /// The one timer, armed at the earliest of the three deadlines.
    timer: Pin<Box<Sleep>>,
    refreshing: Option<Refresh>,
    lease: Option<StreamLease>,
    cursor: EventCursor,
    /// The shutdown wait, made once, when there is a token.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    retry: Option<Duration>,
    /// Event frames written.
    delivered: u64,
    /// Whether the piece of the body being made has an event (which moves the idle deadline).
    fresh: bool,
    /// The wall clock in milliseconds, read once per piece of the body (for the latency metric).
    wall_ms: Option<u64>,
    /// The metric handles, registered once per stream, and why the stream ended once it has.
    metrics: StreamMetrics,
    /// The stream's span (channel, user, lease, resume point), entered when it closes.
    span: tracing::Span,
}

/// A stream's metric handles ([`crate::metrics`]), registered when it opens so that a frame
/// costs an atomic add and a histogram record, never a registry lookup; and why the stream ended,
/// counted when it is dropped. The SSE pipeline and the AI SDK's UI message stream
/// ([`crate::ai_sdk`]) both keep one.
pub(crate) struct StreamMetrics {
    delivered: metrics::Counter,
    latency: metrics::Histogram,
    /// Why the stream ended, once it has; `None` when the body is dropped first (the client went).
    close: Option<&'static str>,
    /// Whether a `producer_lost` error went out: the end after it closes for that reason.
    producer_lost: bool,
}

impl StreamMetrics {
    /// A stream opened: counted as a `200` answer, and open until dropped.
    pub(crate) fn open() -> Self {
        use crate::metrics as m;
        metrics::gauge!(m::OPEN_STREAMS).increment(1.0);
        metrics::counter!(m::OPENS, m::ANSWER => "200").increment(1);
        Self {
            delivered: metrics::counter!(m::EVENTS_DELIVERED),
            latency: metrics::histogram!(m::PUBLISH_TO_DELIVER),
            close: None,
            producer_lost: false,
        }
    }

    /// One event frame handed to the body at `now_ms` (the wall clock): the publish→deliver
    /// latency from the id's time (the broker's clock when it accepted the event).
    pub(crate) fn delivered(&self, id: EventId, now_ms: u64) {
        self.delivered.increment(1);
        self.latency.record(now_ms.saturating_sub(id.unix_ms()) as f64 / 1000.0);
    }

    /// An error event went out (`bytes`: its frame or its JSON). After the `producer_lost` one,
    /// the stream's [`end`](Self::end) closes it for that reason.
    pub(crate) fn error_sent(&mut self, bytes: &[u8]) {
        const NEEDLE: &[u8] = br#""reason":"producer_lost""#;
        if bytes.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
            self.producer_lost = true;
        }
    }

    /// The stream ended for `reason` (a `reason` label of [`crate::metrics::CLOSES`]); the first
    /// reason given stands.
    pub(crate) fn close(&mut self, reason: &'static str) {
        self.close.get_or_insert(reason);
    }

    /// The channel's `done` went out: closed for `done`, or for `producer_lost` after that error
    /// ([`producer_lost_events`](crate::replay::producer_lost_events)).
    pub(crate) fn end(&mut self) {
        self.close(if self.producer_lost { "producer_lost" } else { "done" });
    }

    /// Whether the stream has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.close.is_some()
    }

    /// Why the stream ended: the reason given, or `client_gone` when none was.
    pub(crate) fn reason(&self) -> &'static str {
        self.close.unwrap_or("client_gone")
    }
}

impl Drop for StreamMetrics {
    fn drop(&mut self) {
        use crate::metrics as m;
        metrics::gauge!(m::OPEN_STREAMS).decrement(1.0);
        metrics::counter!(m::CLOSES, m::REASON => self.reason()).increment(1);
    }
}

/// The wall clock in milliseconds since the Unix epoch (0 before it), for
/// [`StreamMetrics::delivered`].
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<S> Drop for Pipeline<S> {
    fn drop(&mut self) {
        // The close itself is counted when `metrics` is dropped, right after.
        let _entered = self.span.enter();
        tracing::debug!(reason = self.metrics.reason(), events = self.delivered, "stream closed");
    }
}

impl<S> Pipeline<S> {
    /// Ends the stream for `reason`.
    fn close(&mut self, reason: &'static str) {
        self.metrics.close(reason);
    }

    /// The earliest deadline the timer must wake for.
    fn next_deadline(&self) -> Instant {
        let mut at = self.next_ping.min(self.idle_deadline);
        if self.refresh_every.is_some() {
            at = at.min(self.next_refresh);
        }
        at
    }

    /// Moves the idle deadline when the piece of the body just made had an event.
    fn touch(&mut self) {
        if std::mem::take(&mut self.fresh) {
            self.idle_deadline = Instant::now() + self.max_idle;
        }
    }

    fn retry_frame(&mut self) -> Option<Bytes> {
        let retry = self.retry.take()?;
        let mut buf = Vec::new();
        push_field(&mut buf, "retry", &retry.as_millis().to_string());
        buf.push(b'\n');
        Some(Bytes::from(buf))
    }
}

/// What the timer found due.
enum Due {
    Refresh,
    Ping,
    Idle,
}

impl<S, T, E> Pipeline<S>
where
    S: Stream<Item = Result<T, E>> + Send,
    T: IntoFrame,
    E: Display,
{
    /// Polls the timer; when it fires, returns what is due (refresh first: a channel that always
    /// has an event ready must not starve it, or the lease would expire under a live stream) and
    /// re-arms it at the next deadline.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Option<Due> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            let due = if self.refresh_every.is_some() && now >= self.next_refresh {
                let every = self.refresh_every.unwrap_or_default();
                self.next_refresh = now + every;
                Some(Due::Refresh)
            } else if now >= self.idle_deadline {
                Some(Due::Idle)
            } else if now >= self.next_ping {
                self.next_ping = now + self.ping_interval;
                Some(Due::Ping)
            } else {
                None
            };
            let next = self.next_deadline();
            self.timer.as_mut().reset(next);
            if due.is_some() {
                return due;
            }
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(frame) = self.retry_frame() {
            return Poll::Ready(Some(frame));
        }
        loop {
            if self.metrics.is_closed() {
                return Poll::Ready(None);
            }
            if let Some(shutdown) = &mut self.shutdown
                && shutdown.as_mut().poll(cx).is_ready()
            {
                self.close("shutdown");
                return Poll::Ready(None);
            }
            if let Some(refresh) = &mut self.refreshing {
                let result = ready!(refresh.as_mut().poll(cx));
                self.refreshing = None;
                match result {
                    Ok(true) => {}
                    Ok(false) => {
                        self.close("lease_lost");
                        let request_id = new_request_id();
                        tracing::warn!(request_id = %request_id, "stream lease expired under a live stream");
                        return Poll::Ready(Some(fatal_error_frame(
                            "lease_expired",
                            "stream lease expired; reconnect to continue",
                            &request_id,
                        )));
                    }
                    Err(e) => tracing::warn!(error = %e, "stream lease refresh failed; retrying"),
                }
            }
            match self.poll_due(cx) {
                Some(Due::Refresh) => {
                    if let Some(lease) = &self.lease {
                        self.refreshing = Some(Box::pin(lease.refresh_owned()));
                    }
                    continue;
                }
                Some(Due::Idle) => {
                    self.close("idle");
                    return Poll::Ready(None);
                }
                Some(Due::Ping) => return Poll::Ready(Some(ping_frame())),
                None => {}
            }
            return self.poll_event(cx);
        }
    }

    /// The next event's frame, with none of the checks of [`poll_frame`](Self::poll_frame): for
    /// the frames after the first of a piece of the body.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if self.metrics.is_closed() {
                return Poll::Ready(None);
            }
            match ready!(self.events.as_mut().poll_next(cx)) {
                Some(Ok(event)) => {
                    if !self.cursor.admit(event.id(), event.kind()) {
                        metrics::counter!(crate::metrics::DUPLICATES_DROPPED).increment(1);
                        continue;
                    }
                    let kind = event.kind();
                    let is_error = *kind == EventType::Error;
                    if !kind.is_control() {
                        self.fresh = true;
                        self.delivered += 1;
                        let now_ms = *self.wall_ms.get_or_insert_with(wall_ms);
                        self.metrics.delivered(event.id(), now_ms);
                    }
                    if self.cursor.is_ended() {
                        self.metrics.end();
                    }
                    let frame = event.into_frame();
                    // Rare: only an error event is looked into.
                    if is_error {
                        self.metrics.error_sent(&frame);
                    }
                    return Poll::Ready(Some(frame));
                }
                Some(Err(e)) => {
                    self.close("error");
                    let request_id = new_request_id();
                    tracing::warn!(request_id = %request_id, error = %e, "stream interrupted");
                    return Poll::Ready(Some(fatal_error_frame(
                        "stream_unavailable",
                        "the stream broke off; reconnect to resume",
                        &request_id,
                    )));
                }
                None => {
                    self.close("done");
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl<S, T, E> Stream for Pipeline<S>
where
    S: Stream<Item = Result<T, E>> + Send,
    T: IntoFrame,
    E: Display,
{
    type Item = Result<Bytes, Infallible>;

    /// The next frame, or, when several are ready at once (a subscriber that fell behind, a
    /// replay), as many as are ready in one piece of up to [`COALESCE_BYTES`]: the server writes
    /// them in one write, and the client reads them in one read. A lone frame is handed on as it
    /// is (the shared bytes, not copied); nothing waits for a second.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.wall_ms = None;
        let first = this.poll_frame(cx);
        let Poll::Ready(Some(first)) = first else {
            this.touch();
            return first.map(|frame| frame.map(Ok));
        };
        let mut rest = Vec::new();
        let mut len = first.len();
        while len < COALESCE_BYTES {
            // Pending here has registered the waker, which only wakes the body early: harmless.
            let Poll::Ready(Some(next)) = this.poll_event(cx) else {
                break;
            };
            len += next.len();
            rest.push(next);
        }
        this.touch();
        if rest.is_empty() {
            return Poll::Ready(Some(Ok(first)));
        }
        // Sized to the frames: a piece may wait in the server's write buffer while the client
        // reads slowly, and spare capacity would wait with it.
        let mut piece = bytes::BytesMut::with_capacity(len);
        piece.extend_from_slice(&first);
        rest.iter().for_each(|frame| piece.extend_from_slice(frame));
        Poll::Ready(Some(Ok(piece.freeze())))
    }
}

/// The most bytes of ready frames that the pipeline joins into one piece of the body (a frame
/// larger than this goes alone).
pub const COALESCE_BYTES: usize = 16 * 1024;

/// Runs the pipeline over `events`, which may be a [`Subscription`](crate::Subscription) or any
/// stream (a direct LLM token generator, say). Needs a tokio runtime with timers.
///
/// The stream ends after `done`, after an error from `events` (with a fatal error frame), when
/// `events` ends, after `max_idle_time` without an event, when the lease is found expired, or on
/// shutdown. Dropping the body (a client disconnect) drops `events` and releases the lease.
pub fn sse_stream<S, T, E>(events: S, options: SseOptions) -> SseBody
where
    S: Stream<Item = Result<T, E>> + Send + 'static,
    T: IntoFrame,
    E: Display + Send + 'static,
{
    let span = stream_span(None, &options);
    sse_stream_in(events, options, span)
}

/// The span of one stream's life: its channel (when it has one), the lease's user and id, and
/// the resume point. DEBUG level: nothing per event, one line when it closes.
fn stream_span(channel: Option<&ChannelId>, options: &SseOptions) -> tracing::Span {
    let lease = options.lease.as_ref();
    tracing::debug_span!(
        "sse_stream",
        channel = channel.map(ChannelId::as_str),
        user = lease.map(|l| l.user_id().as_str()),
        lease = lease.map(|l| l.lease_id().as_str()),
        resume = options.last_event_id.map(tracing::field::display),
    )
}

/// [`sse_stream`] in `span`.
fn sse_stream_in<S, T, E>(events: S, options: SseOptions, span: tracing::Span) -> SseBody
where
    S: Stream<Item = Result<T, E>> + Send + 'static,
    T: IntoFrame,
    E: Display + Send + 'static,
{
    let now = Instant::now();
    let refresh_every = options
        .lease
        .as_ref()
        .map(|lease| lease.store().config().refresh_interval());
    let mut pipeline = Pipeline {
        events: Box::pin(events),
        ping_interval: options.ping_interval,
        next_ping: now + options.ping_interval,
        max_idle: options.max_idle_time,
        idle_deadline: now + options.max_idle_time,
        refresh_every,
        next_refresh: now + refresh_every.unwrap_or_default(),
        timer: Box::pin(tokio::time::sleep_until(now)),
        refreshing: None,
        lease: options.lease,
        cursor: EventCursor::after(options.last_event_id),
        shutdown: options.shutdown.map(|token| Box::pin(token.cancelled_owned())),
        retry: options.retry,
        delivered: 0,
        fresh: false,
        wall_ms: None,
        metrics: StreamMetrics::open(),
        span,
    };
    pipeline.span.in_scope(|| tracing::debug!("stream opened"));
    let first = pipeline.next_deadline();
    pipeline.timer.as_mut().reset(first);
    Box::pin(pipeline)
}

/// What a channel stream request resolves to.
pub enum SseReply {
    /// Stream these frames.
    Stream(SseBody),
    /// The client already has the channel's `done`: answer `204 No Content`.
    Finished,
}

impl From<SseBody> for SseReply {
    fn from(body: SseBody) -> Self {
        Self::Stream(body)
    }
}

impl std::fmt::Debug for SseReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stream(_) => "SseReply::Stream",
            Self::Finished => "SseReply::Finished",
        })
    }
}

/// Subscribes to `channel` after `options.last_event_id` and runs the pipeline over it: the body
/// of [`SseResponse::channel`]. One subscribe call.
pub(crate) async fn channel_stream(
    subscriber: &dyn EventSubscriber,
    channel: &ChannelId,
    options: SseOptions,
) -> Result<SseReply, SubscribeError> {
    let subscription = subscriber.subscribe(channel, options.last_event_id).await?;
    if subscription.is_finished() {
        return Ok(SseReply::Finished);
    }
    let span = stream_span(Some(channel), &options);
    Ok(SseReply::Stream(sse_stream_in(subscription.shared(), options, span)))
}

/// [`channel_stream`] under a lease of `user`, held for the stream's lifetime (the seed's
/// `sse_response_with_lease`).
///
/// It subscribes first and takes the lease only for a stream that will run: a client that already
/// has the channel's `done` gets [`SseReply::Finished`] (`204`) even when its user is at the cap,
/// so that a browser's `EventSource` stops retrying. A user at the cap otherwise gets
/// [`StreamLimitExceeded`](crate::StreamLimitExceeded), and the subscription is dropped.
pub(crate) async fn channel_stream_with_lease(
    subscriber: &dyn EventSubscriber,
    leases: Arc<dyn LeaseStore>,
    channel: &ChannelId,
    user: UserId,
    options: SseOptions,
) -> Result<SseReply, StreamError> {
    let subscription = subscriber.subscribe(channel, options.last_event_id).await?;
    if subscription.is_finished() {
        return Ok(SseReply::Finished);
    }
    let lease = StreamLease::acquire(leases, user).await?;
    let options = options.lease(lease);
    let span = stream_span(Some(channel), &options);
    Ok(SseReply::Stream(sse_stream_in(subscription.shared(), options, span)))
}

/// The answer of a spawned producer: the pipeline over `subscription` (from the channel's start),
/// without a lease of its own (the producer holds it).
pub(crate) fn spawned_stream(subscription: crate::Subscription, channel: &ChannelId, options: SseOptions) -> SseBody {
    let span = stream_span(Some(channel), &options);
    sse_stream_in(subscription.shared(), options, span)
}

/// Runs the pipeline over a direct generator, under a lease of `user` when one is given (the
/// seed's `direct_sse_response`).
pub(crate) async fn direct_stream<S, E>(
    events: S,
    lease: Option<(Arc<dyn LeaseStore>, UserId)>,
    options: SseOptions,
) -> Result<SseBody, AcquireError>
where
    S: Stream<Item = Result<Event, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let options = match lease {
        Some((store, user)) => options.lease(StreamLease::acquire(store, user).await?),
        None => options,
    };
    Ok(sse_stream(events, options))
}
