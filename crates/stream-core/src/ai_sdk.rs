//! Our events in the AI SDK's **UI message stream** protocol: the stream that the `ai` npm
//! package's `useChat` (through its `DefaultChatTransport`) and `readUIMessageStream` read.
//!
//! # The wire format
//!
//! As the AI SDK's "Stream Protocols" page (`ai-sdk.dev/docs/ai-sdk-ui/stream-protocol`) and the
//! `ai` package's source (`ui-message-chunks.ts`, `json-to-sse-transform-stream.ts`,
//! `ui-message-stream-headers.ts`) have it: Server-Sent Events, each part one JSON object on one
//! `data:` line and a blank line, and `data: [DONE]` last. The response carries
//! `x-vercel-ai-ui-message-stream: v1` ([`UI_MESSAGE_STREAM_HEADERS`]). A reply looks like this:
//!
//! ```text
//! data: {"type":"start","messageId":"msg-1"}
//!
//! data: {"type":"text-start","id":"text-01J…"}
//!
//! data: {"type":"text-delta","id":"text-01J…","delta":"Hel"}
//!
//! data: {"type":"text-delta","id":"text-01J…","delta":"lo"}
//!
//! data: {"type":"text-end","id":"text-01J…"}
//!
//! data: {"type":"finish"}
//!
//! data: [DONE]
//!
//! ```
//!
//! The reader validates every part against its schema and fails the whole stream on one that does
//! not fit: an unknown `type` (our pipeline's `{"type":"ping"}` frame, say), a missing field, and
//! in some versions an unknown field (`ai` 6.0.146 checks objects strictly, 6.0.326 does not). It
//! also refuses a `text-delta` whose text part was not opened by a `text-start`. This module
//! writes only the fields that every version knows.
//! Lines starting with `:` are SSE comments, which the reader skips: they serve as keep-alives
//! ([`KEEP_ALIVE_FRAME`], the same `: keep-alive` line that the `ai` package's own server helpers
//! send).
//!
//! # The mapping
//!
//! | our event | UI message stream parts |
//! |---|---|
//! | `data` with a string `token` | `start` and `text-start` before the first one, then `text-delta` |
//! | `done` | `text-end` (when a text part is open), `finish`, then `data: [DONE]`; the stream ends |
//! | `error` | `error` with `errorText` = the event's `message` |
//! | `gap` | `error` with `errorText` = `part of this reply was lost (<missed> events): <reason>` ([`GAP_ERROR_TEXT`] and the notice's `missed` and `reason`) |
//! | `ping` | nothing (use [`with_keep_alive`] for keep-alives) |
//! | anything else (`log`, `progress`, a `data` event without a string `token`, custom types) | nothing by default; with [`OtherEvents::DataParts`] or [`OtherEvents::TransientDataParts`] a custom `data-<type>` part whose `data` is the whole event JSON |
//!
//! Notes on the choices:
//!
//! - `finish` carries no `finishReason` or `messageMetadata`, whatever the `done` event says
//!   (`success`, `reason`, `cancelled`): `finishReason` is not in every `ai` version's schema
//!   (a strict one rejects it), and message metadata is the application's to define (a `messageMetadataSchema` on the
//!   client would reject ours). A failed `done` therefore reads as a normal end: a producer
//!   that wants the client to know emits an `error` event before it.
//! - An `error` part makes `useChat` stop reading and set its error state (in
//!   `readUIMessageStream` it goes to `onError`). Our `error` events are recoverable, so a
//!   producer should emit them only when the chat should see an error.
//! - A `gap` (the history no longer holds events this client missed: trimmed, expired, or lost in
//!   a Redis restart without persistence) is an `error` part too, never silence: the text the
//!   client rebuilds lacks a piece, and it must say so. The parts after it go out as usual, for a
//!   reader that keeps reading past an error.
//! - The text part's id is `text-<id of the first event it carries>`: unique within the message,
//!   and the same on every replay of the same history.
//!
//! # Resuming
//!
//! An encoder opens its message (`start`, then `text-start` at the first token) whatever the first
//! event it is given, so the events after any resume point make a valid stream on their own: a
//! client that reconnects mid-answer gets a new text part holding the rest of the text.
//! [`UiMessageEncoder::after`] drops the events at or before a resume point, as the SSE pipeline
//! does with Last-Event-ID.
//!
//! Note that `useChat({ resume: true })` (its `DefaultChatTransport`, with
//! `resumeStreamIsReplay: true` by default) expects the resume request (`GET …/{id}/stream`) to
//! **replay the answer from its beginning** and rebuilds the message from that replay: serve it
//! the channel's whole history (no resume point), which this encoder turns into the same parts as
//! the first time. A mid-stream continuation suits clients that keep the partial message
//! themselves (`resumeStreamIsReplay: false`, or `readUIMessageStream({ message })`).
//!
//! # Keep-alives, leases and the SSE pipeline
//!
//! [`ui_message_stream`] is a plain transformation of an event stream: it has no timer, no idle
//! timeout, no lease. It counts in the stream metrics ([`crate::metrics`]) as an SSE stream does:
//! the open gauge, a `200` open, its event frames and their latency, its close by reason.
//! [`with_keep_alive`] adds a keep-alive comment after each quiet interval.
//! The pipeline's own ping frames (`data: {"type":"ping",…}`) must not reach an AI SDK client,
//! whose schema rejects them; that is why this module does not wrap
//! [`sse_stream`](crate::sse::sse_stream)'s output.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt::Display;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::{Instant, Sleep};

use crate::event::{Event, EventId, EventType};
use crate::shared::SharedEvent;
use crate::sse::{SseBody, StreamMetrics, push_field, wall_ms};
use crate::subscribe::EventCursor;

/// The response header that tells the AI SDK's client that the body is a UI message stream.
pub const UI_MESSAGE_STREAM_HEADER: &str = "x-vercel-ai-ui-message-stream";

/// The value of [`UI_MESSAGE_STREAM_HEADER`]: the protocol's version.
pub const UI_MESSAGE_STREAM_VERSION: &str = "v1";

/// The response headers of a UI message stream: those of every SSE response
/// ([`SSE_HEADERS`](crate::sse::SSE_HEADERS)) and [`UI_MESSAGE_STREAM_HEADER`].
///
/// The `ai` package's own list (`UI_MESSAGE_STREAM_HEADERS`) also has `connection: keep-alive`.
/// It is left out here: it is a hop-by-hop header that HTTP/2 forbids, and the HTTP server
/// manages the connection itself.
pub const UI_MESSAGE_STREAM_HEADERS: [(&str, &str); 4] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
    (UI_MESSAGE_STREAM_HEADER, UI_MESSAGE_STREAM_VERSION),
];

/// The stream's last frame, after `finish`: `data: [DONE]` and a blank line.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// A keep-alive: an SSE comment line, which the AI SDK's reader skips.
pub const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";

/// The `errorText` of an `error` event that has no string `message`.
pub const DEFAULT_ERROR_TEXT: &str = "error";

/// The start of the `errorText` of a `gap`: `part of this reply was lost (<missed> events):
/// <reason>`, or without the count when the notice has none.
pub const GAP_ERROR_TEXT: &str = "part of this reply was lost";

/// The `errorText` sent when the event stream itself fails (a broken subscription, say).
pub const STREAM_BROKEN_ERROR_TEXT: &str = "the stream broke off; reconnect to resume";

/// An event that the encoder can read: [`Event`] or [`SharedEvent`].
///
/// The encoder asks only for what an event's type needs: the `token` of a `data` event, the
/// `message` of an `error` event, the whole JSON of an event forwarded as a data part. A
/// [`SharedEvent`] answers from its JSON, reading that one field, without decoding the event.
pub trait UiMessageEvent {
    /// The event's id.
    fn id(&self) -> EventId;
    /// The event's type.
    fn kind(&self) -> &EventType;
    /// The payload's `token` field, when it is a string.
    fn token(&self) -> Option<Cow<'_, str>>;
    /// The payload's `message` field, when it is a string.
    fn message(&self) -> Option<Cow<'_, str>>;
    /// The whole event as JSON.
    fn json(&self) -> Cow<'_, str>;
}

impl UiMessageEvent for Event {
    fn id(&self) -> EventId {
        self.id
    }
    fn kind(&self) -> &EventType {
        &self.kind
    }
    fn token(&self) -> Option<Cow<'_, str>> {
        self.payload.get("token").and_then(Value::as_str).map(Cow::Borrowed)
    }
    fn message(&self) -> Option<Cow<'_, str>> {
        Event::message(self).map(Cow::Borrowed)
    }
    fn json(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_json())
    }
}

/// One payload field read from an event's JSON; every other field is skipped unbuilt.
#[derive(Deserialize)]
struct TokenField {
    #[serde(default)]
    token: Option<Value>,
}

/// See [`TokenField`].
#[derive(Deserialize)]
struct MessageField {
    #[serde(default)]
    message: Option<Value>,
}

fn string(value: Option<Value>) -> Option<Cow<'static, str>> {
    match value {
        Some(Value::String(s)) => Some(Cow::Owned(s)),
        _ => None,
    }
}

impl UiMessageEvent for SharedEvent {
    fn id(&self) -> EventId {
        SharedEvent::id(self)
    }
    fn kind(&self) -> &EventType {
        SharedEvent::kind(self)
    }
    fn token(&self) -> Option<Cow<'_, str>> {
        string(
            serde_json::from_slice::<TokenField>(SharedEvent::json(self))
                .ok()?
                .token,
        )
    }
    fn message(&self) -> Option<Cow<'_, str>> {
        string(
            serde_json::from_slice::<MessageField>(SharedEvent::json(self))
                .ok()?
                .message,
        )
    }
    fn json(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(SharedEvent::json(self))
    }
}

/// What the encoder does with an event that has no part of its own (see the module's table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtherEvents {
    /// Leave it out (the default): the client sees only the text, errors and the end.
    #[default]
    Skip,
    /// A `data-<type>` part, `{"type":"data-progress","id":<event id>,"data":<event JSON>}`,
    /// which the client adds to the message's parts (and `useChat` passes to `onData`).
    DataParts,
    /// The same with `"transient":true`: passed to `useChat`'s `onData`, not kept in the message.
    TransientDataParts,
}

/// The parts this module writes, serialized as the AI SDK writes them (`type` first).
#[derive(Serialize)]
#[serde(tag = "type")]
enum Part<'a> {
    #[serde(rename = "start")]
    Start {
        #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
    },
    #[serde(rename = "text-start")]
    TextStart { id: &'a str },
    #[serde(rename = "text-delta")]
    TextDelta { id: &'a str, delta: &'a str },
    #[serde(rename = "text-end")]
    TextEnd { id: &'a str },
    #[serde(rename = "error")]
    Error {
        #[serde(rename = "errorText")]
        error_text: &'a str,
    },
    #[serde(rename = "finish")]
    Finish,
}

/// The `errorText` of a `gap` notice, from its JSON (`missed`, `reason`): see [`GAP_ERROR_TEXT`].
fn gap_error_text(json: &str) -> String {
    /// The notice's fields; every other field is skipped unbuilt.
    #[derive(Deserialize)]
    struct Notice {
        #[serde(default)]
        missed: Option<Value>,
        #[serde(default)]
        reason: Option<Value>,
    }
    let notice = serde_json::from_str::<Notice>(json).ok();
    let (missed, reason) = notice.map_or((None, None), |n| (n.missed, n.reason));
    let reason = match &reason {
        Some(Value::String(reason)) => reason.as_str(),
        _ => "the history no longer holds it",
    };
    match missed.as_ref().and_then(Value::as_u64) {
        Some(missed) => format!("{GAP_ERROR_TEXT} ({missed} events): {reason}"),
        None => format!("{GAP_ERROR_TEXT}: {reason}"),
    }
}

/// Appends one part as an SSE frame. serde_json escapes every control character, so the JSON is
/// one line.
fn push_part(out: &mut Vec<u8>, part: &Part<'_>) {
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, part).expect("a part always serializes");
    out.extend_from_slice(b"\n\n");
}

/// The stateful encoder: turns events, one at a time, into UI message stream frames.
///
/// It opens the message (`start`) and its text part (`text-start`) before the first token, closes
/// the text part (`text-end`) before `finish`, and writes nothing after `done`. It drops an event
/// whose id is not after the last one it took (a duplicate, or one at or before the resume point
/// given to [`after`](Self::after)), as the SSE pipeline does.
///
/// ```
/// use stream_core::ai_sdk::UiMessageEncoder;
/// use stream_core::{ChannelId, Event};
///
/// let channel = ChannelId::generate();
/// let mut encoder = UiMessageEncoder::new("msg-1");
/// let first = encoder.encode(&Event::data(channel.clone(), "token", "Hi").unwrap());
/// assert!(first.starts_with(b"data: {\"type\":\"start\",\"messageId\":\"msg-1\"}\n\n"));
/// let end = encoder.encode(&Event::done(channel, true, Default::default()).unwrap());
/// assert!(end.ends_with(b"data: {\"type\":\"finish\"}\n\ndata: [DONE]\n\n"));
/// assert!(encoder.is_finished());
/// ```
#[derive(Debug, Clone)]
pub struct UiMessageEncoder {
    message_id: Option<String>,
    other_events: OtherEvents,
    cursor: EventCursor,
    started: bool,
    /// The open text part's id.
    text_id: Option<String>,
    finished: bool,
}

impl UiMessageEncoder {
    /// An encoder for the assistant message `message_id` (the `start` part's `messageId`, which
    /// the client gives the message it builds).
    pub fn new(message_id: impl Into<String>) -> Self {
        Self::with_message_id(Some(message_id.into()))
    }

    /// An encoder whose `start` part carries no `messageId`: the client keeps the id it made.
    pub fn without_message_id() -> Self {
        Self::with_message_id(None)
    }

    fn with_message_id(message_id: Option<String>) -> Self {
        Self {
            message_id,
            other_events: OtherEvents::Skip,
            cursor: EventCursor::after(None),
            started: false,
            text_id: None,
            finished: false,
        }
    }

    /// Drops the events at or before `last` (the client's resume point); the first event after it
    /// opens the message as usual.
    #[must_use]
    pub fn after(mut self, last: Option<EventId>) -> Self {
        self.cursor = EventCursor::after(last);
        self
    }

    /// What to do with events that have no part of their own: [`OtherEvents::Skip`] by default.
    #[must_use]
    pub fn other_events(mut self, other_events: OtherEvents) -> Self {
        self.other_events = other_events;
        self
    }

    /// Whether `finish` (or a [`fail`](Self::fail)) went out: the encoder writes nothing more.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether `start` went out.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// The frames for one event; empty when it has none (skipped, a duplicate, or after the end).
    pub fn encode<E: UiMessageEvent + ?Sized>(&mut self, event: &E) -> Bytes {
        let mut out = Vec::new();
        self.encode_into(event, &mut out);
        Bytes::from(out)
    }

    /// [`encode`](Self::encode), appending to `out`.
    pub fn encode_into<E: UiMessageEvent + ?Sized>(&mut self, event: &E, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        let kind = event.kind();
        if *kind == EventType::Ping || !self.cursor.admit(event.id(), kind) {
            return;
        }
        match kind {
            EventType::Done => self.finish_into(out),
            EventType::Error => {
                self.start_into(out);
                let message = event.message();
                let error_text = message.as_deref().unwrap_or(DEFAULT_ERROR_TEXT);
                push_part(out, &Part::Error { error_text });
            }
            EventType::Gap => {
                self.start_into(out);
                let error_text = gap_error_text(&event.json());
                push_part(
                    out,
                    &Part::Error {
                        error_text: &error_text,
                    },
                );
            }
            EventType::Data => match event.token() {
                Some(token) => self.delta_into(event.id(), &token, out),
                None => self.other_into(event, out),
            },
            _ => self.other_into(event, out),
        }
    }

    /// Ends the message without a `done` event: `start` if it has not gone out, `text-end` if a
    /// text part is open, `finish` and `[DONE]`. Empty once finished.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.finish_into(&mut out);
        Bytes::from(out)
    }

    /// Ends the stream on a failure: one `error` part with `error_text`, and no `finish` or
    /// `[DONE]`, so that the message reads as unfinished (the client may resume it). Empty once
    /// finished.
    pub fn fail(&mut self, error_text: &str) -> Bytes {
        let mut out = Vec::new();
        if !self.finished {
            self.finished = true;
            push_part(&mut out, &Part::Error { error_text });
        }
        Bytes::from(out)
    }

    /// Consumes the encoder into the body of a response: see [`ui_message_stream`].
    pub fn into_stream<S, T, E>(self, events: S) -> SseBody
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: UiMessageEvent + Send + 'static,
        E: Display + Send + 'static,
    {
        Box::pin(UiMessageStream {
            events: Box::pin(events),
            encoder: self,
            metrics: StreamMetrics::open(),
        })
    }

    fn start_into(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            push_part(
                out,
                &Part::Start {
                    message_id: self.message_id.as_deref(),
                },
            );
        }
    }

    fn delta_into(&mut self, id: EventId, delta: &str, out: &mut Vec<u8>) {
        self.start_into(out);
        let text_id = match &self.text_id {
            Some(text_id) => text_id,
            None => {
                let text_id = self.text_id.insert(format!("text-{id}"));
                push_part(out, &Part::TextStart { id: text_id });
                text_id
            }
        };
        push_part(out, &Part::TextDelta { id: text_id, delta });
    }

    fn other_into<E: UiMessageEvent + ?Sized>(&mut self, event: &E, out: &mut Vec<u8>) {
        let transient = match self.other_events {
            OtherEvents::Skip => return,
            OtherEvents::DataParts => false,
            OtherEvents::TransientDataParts => true,
        };
        self.start_into(out);
        let json = event.json();
        let mut part = String::with_capacity(json.len() + 80);
        part.push_str(r#"{"type":"#);
        part.push_str(&Value::from(format!("data-{}", event.kind())).to_string());
        part.push_str(r#","id":""#);
        part.push_str(&event.id().to_string());
        part.push_str(r#"","data":"#);
        part.push_str(&json);
        if transient {
            part.push_str(r#","transient":true"#);
        }
        part.push('}');
        // The JSON of a foreign publisher may hold line breaks (between tokens, never inside a
        // string): push_field puts each line on its own `data:` line, which the reader joins.
        push_field(out, "data", &part);
        out.push(b'\n');
    }

    fn finish_into(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.start_into(out);
        if let Some(id) = self.text_id.take() {
            push_part(out, &Part::TextEnd { id: &id });
        }
        push_part(out, &Part::Finish);
        out.extend_from_slice(DONE_FRAME);
        self.finished = true;
    }
}

/// The body of a UI message stream response (send it with [`UI_MESSAGE_STREAM_HEADERS`]) for
/// `events`: a channel's subscription ([`Subscription::shared`](crate::Subscription::shared)), or
/// any stream of [`Event`]s or [`SharedEvent`]s, such as a direct token generator. Events after a
/// resume point make a valid stream too (see the module's "Resuming").
///
/// One chunk per event that has frames. The body ends after `done` (with `finish` and
/// `[DONE]`, and `events` is dropped), when `events` ends (without `finish`: the message is
/// unfinished), or after an error from `events`, which becomes one `error` part
/// ([`STREAM_BROKEN_ERROR_TEXT`]; the error itself goes to the log).
///
/// It adds no keep-alives, idle timeout or lease: wrap it in [`with_keep_alive`] for the first.
/// It counts in the stream metrics from the moment it is made until it is dropped (see the
/// module's "Keep-alives, leases and the SSE pipeline").
/// Use [`UiMessageEncoder::into_stream`] to set a resume point or forward other events.
pub fn ui_message_stream<S, T, E>(events: S, message_id: impl Into<String>) -> SseBody
where
    S: Stream<Item = Result<T, E>> + Send + 'static,
    T: UiMessageEvent + Send + 'static,
    E: Display + Send + 'static,
{
    UiMessageEncoder::new(message_id).into_stream(events)
}

/// [`UiMessageEncoder::into_stream`]'s stream. It counts in the stream metrics as an SSE stream
/// does ([`crate::metrics`]: the open gauge, a `200` open, its event frames and their latency, and
/// its close, by reason).
struct UiMessageStream<S> {
    events: Pin<Box<S>>,
    encoder: UiMessageEncoder,
    metrics: StreamMetrics,
}

impl<S, T, E> Stream for UiMessageStream<S>
where
    S: Stream<Item = Result<T, E>>,
    T: UiMessageEvent,
    E: Display,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.encoder.is_finished() {
                return Poll::Ready(None);
            }
            match ready!(this.events.as_mut().poll_next(cx)) {
                Some(Ok(event)) => {
                    let frames = this.encoder.encode(&event);
                    if frames.is_empty() {
                        continue;
                    }
                    let kind = event.kind();
                    if !kind.is_control() {
                        this.metrics.delivered(event.id(), wall_ms());
                    }
                    if *kind == EventType::Error {
                        this.metrics.error_sent(event.json().as_bytes());
                    }
                    if this.encoder.is_finished() {
                        this.metrics.end();
                    }
                    return Poll::Ready(Some(Ok(frames)));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "UI message stream interrupted");
                    this.metrics.close("error");
                    return Poll::Ready(Some(Ok(this.encoder.fail(STREAM_BROKEN_ERROR_TEXT))));
                }
                None => {
                    // Nothing more: the message stays unfinished (no `finish`), as the client
                    // should see a stream that ended early.
                    this.encoder.finished = true;
                    this.metrics.close("done");
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// Adds a keep-alive ([`KEEP_ALIVE_FRAME`], an SSE comment the AI SDK's reader skips) to `body`
/// each time it has been quiet for `every`, so that proxies do not close an idle connection.
/// Needs a tokio runtime with timers.
pub fn with_keep_alive(body: SseBody, every: Duration) -> SseBody {
    Box::pin(KeepAlive {
        body,
        every,
        timer: Box::pin(tokio::time::sleep(every)),
    })
}

/// [`with_keep_alive`]'s stream.
struct KeepAlive {
    body: SseBody,
    every: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Stream for KeepAlive {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let every = self.every;
        if let Poll::Ready(item) = self.body.as_mut().poll_next(cx) {
            self.timer.as_mut().reset(Instant::now() + every);
            return Poll::Ready(item);
        }
        ready!(self.timer.as_mut().poll(cx));
        self.timer.as_mut().reset(Instant::now() + every);
        Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE_FRAME))))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::ids::ChannelId;

    fn channel() -> ChannelId {
        ChannelId::new("chat").unwrap()
    }

    /// An event with a fixed id (time 1000 ms, sequence `seq`).
    fn event(seq: u64, kind: &str, payload: Value) -> Event {
        let Value::Object(payload) = payload else {
            panic!("an object")
        };
        let mut event = Event::new(channel(), kind.parse().unwrap(), payload).unwrap();
        event.id = EventId::from_parts(1000, seq);
        event
    }

    fn token(seq: u64, text: &str) -> Event {
        event(seq, "data", json!({ "token": text }))
    }

    fn done(seq: u64) -> Event {
        event(seq, "done", json!({ "success": true }))
    }

    fn encode_all<E: UiMessageEvent>(encoder: &mut UiMessageEncoder, events: &[E]) -> String {
        let mut out = Vec::new();
        for event in events {
            encoder.encode_into(event, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn text_id(seq: u64) -> String {
        format!("text-{}", EventId::from_parts(1000, seq))
    }

    #[test]
    fn a_token_stream_is_exact() {
        let events = [token(1, "Hel"), token(2, "lo"), done(3)];
        let got = encode_all(&mut UiMessageEncoder::new("msg-1"), &events);
        let t = text_id(1);
        let want = format!(
            "data: {{\"type\":\"start\",\"messageId\":\"msg-1\"}}\n\n\
             data: {{\"type\":\"text-start\",\"id\":\"{t}\"}}\n\n\
             data: {{\"type\":\"text-delta\",\"id\":\"{t}\",\"delta\":\"Hel\"}}\n\n\
             data: {{\"type\":\"text-delta\",\"id\":\"{t}\",\"delta\":\"lo\"}}\n\n\
             data: {{\"type\":\"text-end\",\"id\":\"{t}\"}}\n\n\
             data: {{\"type\":\"finish\"}}\n\n\
             data: [DONE]\n\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn shared_events_encode_like_events() {
        let events = [
            token(1, "a \"quoted\"\nline"),
            event(2, "error", json!({"message": "retrying"})),
            event(3, "progress", json!({"percent": 40})),
            token(4, "é✓"),
            done(5),
        ];
        let shared: Vec<SharedEvent> = events.iter().cloned().map(SharedEvent::from_event).collect();
        let from_json: Vec<SharedEvent> = events
            .iter()
            .map(|e| SharedEvent::from_json(Bytes::from(e.to_json())).unwrap())
            .collect();
        for other in [OtherEvents::Skip, OtherEvents::DataParts] {
            let want = encode_all(&mut UiMessageEncoder::new("m").other_events(other), &events);
            assert_eq!(
                encode_all(&mut UiMessageEncoder::new("m").other_events(other), &shared),
                want
            );
            assert_eq!(
                encode_all(&mut UiMessageEncoder::new("m").other_events(other), &from_json),
                want
            );
        }
        // A line break in a token stays escaped: one `data:` line per part.
        let got = encode_all(&mut UiMessageEncoder::new("m"), &shared[..1]);
        assert!(got.contains(r#""delta":"a \"quoted\"\nline""#), "{got}");
        assert_eq!(got.matches('\n').count(), 6, "{got}");
    }

    #[test]
    fn done_alone_is_start_finish_done() {
        let mut encoder = UiMessageEncoder::without_message_id();
        let got = encode_all(&mut encoder, &[done(1)]);
        assert_eq!(
            got,
            "data: {\"type\":\"start\"}\n\ndata: {\"type\":\"finish\"}\n\ndata: [DONE]\n\n"
        );
        assert!(encoder.is_finished());
        // Nothing after the end.
        assert!(encoder.encode(&token(2, "late")).is_empty());
        assert!(encoder.finish().is_empty());
        assert!(encoder.fail("x").is_empty());
    }

    #[test]
    fn errors_become_error_parts() {
        let events = [
            token(1, "a"),
            event(2, "error", json!({"message": "Warning: retrying..."})),
            event(3, "error", json!({"details": {"attempt": 2}})),
            token(4, "b"),
        ];
        let got = encode_all(&mut UiMessageEncoder::new("m"), &events);
        let t = text_id(1);
        let want = format!(
            "data: {{\"type\":\"start\",\"messageId\":\"m\"}}\n\n\
             data: {{\"type\":\"text-start\",\"id\":\"{t}\"}}\n\n\
             data: {{\"type\":\"text-delta\",\"id\":\"{t}\",\"delta\":\"a\"}}\n\n\
             data: {{\"type\":\"error\",\"errorText\":\"Warning: retrying...\"}}\n\n\
             data: {{\"type\":\"error\",\"errorText\":\"error\"}}\n\n\
             data: {{\"type\":\"text-delta\",\"id\":\"{t}\",\"delta\":\"b\"}}\n\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn a_gap_is_an_error_part_and_the_text_goes_on() {
        let events = [
            event(
                0,
                "gap",
                json!({"missed": 40, "reason": "the channel history no longer holds these events"}),
            ),
            token(41, "rest"),
            event(0, "gap", json!({"reason": "the channel history was lost or restarted"})),
            event(0, "gap", json!({})),
            done(42),
        ];
        let shared: Vec<SharedEvent> = events.iter().cloned().map(SharedEvent::from_event).collect();
        let got = encode_all(&mut UiMessageEncoder::new("m"), &events);
        assert_eq!(encode_all(&mut UiMessageEncoder::new("m"), &shared), got);
        let t = text_id(41);
        let want = format!(
            "data: {{\"type\":\"start\",\"messageId\":\"m\"}}\n\n\
             data: {{\"type\":\"error\",\"errorText\":\"part of this reply was lost (40 events): the channel history no longer holds these events\"}}\n\n\
             data: {{\"type\":\"text-start\",\"id\":\"{t}\"}}\n\n\
             data: {{\"type\":\"text-delta\",\"id\":\"{t}\",\"delta\":\"rest\"}}\n\n\
             data: {{\"type\":\"error\",\"errorText\":\"part of this reply was lost: the channel history was lost or restarted\"}}\n\n\
             data: {{\"type\":\"error\",\"errorText\":\"part of this reply was lost: the history no longer holds it\"}}\n\n\
             data: {{\"type\":\"text-end\",\"id\":\"{t}\"}}\n\n\
             data: {{\"type\":\"finish\"}}\n\n\
             data: [DONE]\n\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn a_resumed_stream_opens_the_message_again() {
        let events = [token(1, "one"), token(2, " two"), token(3, " three"), done(4)];
        // The events after the resume point, given to a fresh encoder...
        let resumed = encode_all(&mut UiMessageEncoder::new("m"), &events[2..]);
        // ...or every event, with the resume point: the same frames.
        let filtered = encode_all(&mut UiMessageEncoder::new("m").after(Some(events[1].id)), &events);
        let t = text_id(3);
        let want = format!(
            "data: {{\"type\":\"start\",\"messageId\":\"m\"}}\n\n\
             data: {{\"type\":\"text-start\",\"id\":\"{t}\"}}\n\n\
             data: {{\"type\":\"text-delta\",\"id\":\"{t}\",\"delta\":\" three\"}}\n\n\
             data: {{\"type\":\"text-end\",\"id\":\"{t}\"}}\n\n\
             data: {{\"type\":\"finish\"}}\n\n\
             data: [DONE]\n\n"
        );
        assert_eq!(resumed, want);
        assert_eq!(filtered, want);
    }

    #[test]
    fn duplicates_pings_and_other_events_are_skipped() {
        let events = [
            token(1, "a"),
            token(1, "a"),
            event(2, "ping", json!({})),
            event(3, "progress", json!({"percent": 10})),
            event(4, "data", json!({"result": 1})),
            token(5, "b"),
        ];
        let got = encode_all(&mut UiMessageEncoder::new("m"), &events);
        assert_eq!(got.matches("text-delta").count(), 2, "{got}");
        assert!(!got.contains("data-"), "{got}");
    }

    #[test]
    fn other_events_can_be_data_parts() {
        let progress = event(1, "progress", json!({"percent": 40}));
        let got = encode_all(
            &mut UiMessageEncoder::new("m").other_events(OtherEvents::TransientDataParts),
            std::slice::from_ref(&progress),
        );
        let want = format!(
            "data: {{\"type\":\"start\",\"messageId\":\"m\"}}\n\n\
             data: {{\"type\":\"data-progress\",\"id\":\"{}\",\"data\":{},\"transient\":true}}\n\n",
            progress.id,
            progress.to_json()
        );
        assert_eq!(got, want);
        // A foreign publisher's multi-line JSON becomes several `data:` lines, which an SSE reader
        // joins with line feeds: still the same JSON.
        let pretty = serde_json::to_string_pretty(&progress).unwrap();
        let shared = SharedEvent::from_json(Bytes::from(pretty)).unwrap();
        let got = encode_all(
            &mut UiMessageEncoder::new("m").other_events(OtherEvents::DataParts),
            &[shared],
        );
        let part = got.split("\n\n").nth(1).unwrap();
        let joined: String = part
            .lines()
            .map(|l| l.strip_prefix("data: ").unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let value: Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(value["type"], "data-progress");
        assert_eq!(value["data"]["percent"], 40);
    }

    #[test]
    fn finish_and_fail_end_the_message() {
        let mut encoder = UiMessageEncoder::new("m");
        encoder.encode(&token(1, "x"));
        let t = text_id(1);
        assert_eq!(
            encoder.finish(),
            format!(
                "data: {{\"type\":\"text-end\",\"id\":\"{t}\"}}\n\ndata: {{\"type\":\"finish\"}}\n\ndata: [DONE]\n\n"
            )
        );
        let mut encoder = UiMessageEncoder::new("m");
        assert_eq!(
            encoder.fail("gone"),
            "data: {\"type\":\"error\",\"errorText\":\"gone\"}\n\n"
        );
        assert!(encoder.is_finished() && !encoder.is_started());
    }

    #[tokio::test]
    async fn the_stream_ends_after_done_or_on_an_error() {
        // After `done` it stops reading: the later item is never polled.
        let events = futures_util::stream::iter([Ok(token(1, "hi")), Ok(done(2)), Err("unreachable")]);
        let chunks: Vec<Bytes> = ui_message_stream(events, "m").map(Result::unwrap).collect().await;
        assert_eq!(chunks.len(), 2);
        assert!(chunks[1].ends_with(DONE_FRAME));

        let events = futures_util::stream::iter([Ok(token(1, "hi")), Err("broken"), Ok(done(3))]);
        let chunks: Vec<Bytes> = ui_message_stream(events, "m").map(Result::unwrap).collect().await;
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[1],
            format!("data: {{\"type\":\"error\",\"errorText\":\"{STREAM_BROKEN_ERROR_TEXT}\"}}\n\n")
        );

        // A stream that ends without `done` leaves the message unfinished.
        let events = futures_util::stream::iter([Ok::<_, Infallible>(token(1, "hi"))]);
        let body: Vec<u8> = ui_message_stream(events, "m")
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .await
            .concat();
        assert!(!String::from_utf8(body).unwrap().contains("finish"));

        // Skipped events make no empty chunks.
        let events = futures_util::stream::iter([
            Ok::<_, Infallible>(event(1, "log", json!({"message": "x", "level": "info"}))),
            Ok(done(2)),
        ]);
        let chunks: Vec<Bytes> = ui_message_stream(events, "m").map(Result::unwrap).collect().await;
        assert_eq!(chunks.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alives_fill_the_quiet() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Event, Infallible>>();
        let events = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
        let mut body = with_keep_alive(ui_message_stream(events, "m"), Duration::from_secs(15));
        let started = Instant::now();
        assert_eq!(body.next().await.unwrap().unwrap(), KEEP_ALIVE_FRAME);
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        tx.send(Ok(token(1, "hi"))).unwrap();
        assert!(
            body.next()
                .await
                .unwrap()
                .unwrap()
                .starts_with(b"data: {\"type\":\"start\"")
        );
        assert_eq!(body.next().await.unwrap().unwrap(), KEEP_ALIVE_FRAME);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        tx.send(Ok(done(2))).unwrap();
        assert!(body.next().await.unwrap().unwrap().ends_with(DONE_FRAME));
        assert!(body.next().await.is_none());
    }
}
