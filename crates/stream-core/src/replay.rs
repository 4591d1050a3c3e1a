//! The replay, written once for every broker: a channel's history after the resume point, then its
//! live events, with the cursor, the gap rule, the finished check and the producer watch.
//!
//! A broker supplies only what it stores and carries:
//! - [`ChannelLog::read_after`]: the kept events after an id, and the channel's `done` id;
//! - [`ChannelLog::check_producer`]: whether the channel's producer is still alive, ending the
//!   channel (`error` `producer_lost`, then `done`) when it is not;
//! - a [`LiveFeed`]: the live events of the channel, registered *before* the first read, so that
//!   nothing published in between falls through.
//!
//! [`open`] then gives the [`Subscription`]. Its rules hold for every broker:
//! - **Order and duplicates**: events come in strictly increasing id order; an event at or before
//!   the last one yielded (history and live overlap) is dropped ([`EventCursor`]).
//! - **Contiguity**: broker ids carry the channel's sequence number ([`EventId::sequence`]). A live
//!   event that does not follow the last one (the feed overflowed, the connection was lost, the
//!   channel restarted) makes the replay read the history after the last event first.
//! - **Gaps are announced**: when the history no longer holds the events right after the resume
//!   point (or after the last event yielded), one `gap` event comes first, with `missed` when the
//!   sequence numbers tell it. A channel whose history is gone but whose `done` is known ends with
//!   a `gap` and that `done`.
//! - **Finished**: a resume at or after the channel's `done` is [`Subscription::finished`].
//! - **Producer watch**: with a check interval, a channel that has seen no event for that long is
//!   checked with [`ChannelLog::check_producer`]; a lost producer's `error` and `done` then arrive
//!   like any other events.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_core::Stream;

use serde_json::{Map, Value, json};
use tokio::time::{Instant, Sleep};

use crate::event::{Event, EventId, EventType};
use crate::ids::ChannelId;
use crate::shared::SharedEvent;
use crate::subscribe::{EventCursor, SubscribeError, Subscription};

/// What a broker read from a channel's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// The kept events after the requested id, in channel order (oldest first). When the history
    /// no longer reaches back to the requested id, these start at the oldest kept event.
    pub events: Vec<SharedEvent>,
    /// The id of the channel's first `done` event, when the broker still knows it.
    pub done: Option<EventId>,
    /// Whether the broker still has the channel's owner record
    /// ([`ChannelRegistry`](crate::ChannelRegistry)).
    pub owner_known: bool,
    /// Whether the broker holds any history for the channel (kept events, after the requested id
    /// or not). A known channel with none has lost its history, and the replay says so.
    pub history_kept: bool,
}

/// What [`ChannelLog::check_producer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// The channel has no producer liveness record (its producer does not send heartbeats, or
    /// withdrew on purpose): nothing to watch.
    Unknown,
    /// The producer is alive for at least this long.
    Alive(Duration),
    /// The producer's record expired before the channel's `done`: the broker has just ended the
    /// channel with [`producer_lost_events`] (exactly once, whoever checked).
    Lost,
    /// The channel has its `done`.
    Done,
}

/// The stored side of a broker, as the replay reads it.
pub trait ChannelLog: Send + Sync + 'static {
    /// The kept events after `after` (all kept events for `None`), and the `done` id.
    fn read_after(
        &self,
        channel: &ChannelId,
        after: Option<EventId>,
    ) -> impl Future<Output = Result<HistoryPage, SubscribeError>> + Send;

    /// Checks the channel's producer liveness record. When it has expired and the channel has no
    /// `done`, publishes [`producer_lost_events`] atomically (one checker wins) and returns
    /// [`Liveness::Lost`].
    fn check_producer(&self, channel: &ChannelId) -> impl Future<Output = Result<Liveness, SubscribeError>> + Send;
}

/// One item of a live feed.
#[derive(Debug, Clone)]
pub enum Live {
    /// A live event, shared by every local subscriber of its channel.
    Event(SharedEvent),
    /// The feed lost events (its queue overflowed, the connection dropped): read the history.
    Lagged,
}

/// The live events of one channel for one subscriber.
///
/// A poll, not a future: an idle subscription holds no future state of its feed.
pub trait LiveFeed: Send + Unpin + 'static {
    /// The next item, or `None` when the feed is closed (the broker shut down).
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Live>>;
}

/// How a replay runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// How often a channel that has seen no event is checked for a lost producer; `None` never
    /// checks.
    pub producer_check: Option<Duration>,
}

/// The `error` and `done` events that end a channel whose producer was lost: an `error` with
/// `"fatal": true, "reason": "producer_lost"`, then `done` with `"success": false`. Brokers
/// publish them (once) from [`ChannelLog::check_producer`].
pub fn producer_lost_events(channel: &ChannelId) -> [Event; 2] {
    let object = |value: Value| match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let error = Event::new(
        channel.clone(),
        EventType::Error,
        object(json!({
            "message": "the producer of this stream stopped responding",
            "fatal": true,
            "reason": "producer_lost",
        })),
    )
    .expect("no reserved keys");
    let done = Event::new(
        channel.clone(),
        EventType::Done,
        object(json!({"success": false, "error": "producer lost", "reason": "producer_lost"})),
    )
    .expect("no reserved keys");
    [error, done]
}

/// A `gap` notice: `{"reason", "missed"?}`.
fn gap(channel: &ChannelId, missed: Option<u64>, reason: &str) -> SharedEvent {
    metrics::counter!(crate::metrics::GAPS).increment(1);
    let mut payload = Map::new();
    payload.insert("reason".into(), json!(reason));
    if let Some(missed) = missed {
        payload.insert("missed".into(), json!(missed));
    }
    SharedEvent::from_event(Event::new(channel.clone(), EventType::Gap, payload).expect("no reserved keys"))
}

/// Opens a subscription on `channel` after `after`: reads the history, then follows `feed`.
///
/// `feed` must already receive the channel's live events (subscribe first, then read). Returns
/// [`Subscription::finished`] when `after` is at or past the channel's `done`.
pub async fn open<L: ChannelLog, F: LiveFeed>(
    log: Arc<L>,
    channel: ChannelId,
    after: Option<EventId>,
    feed: F,
    options: ReplayOptions,
) -> Result<Subscription, SubscribeError> {
    let page = log.read_after(&channel, after).await?;
    if let (Some(done), Some(after)) = (page.done, after)
        && done <= after
    {
        return Ok(Subscription::finished());
    }
    let mut replay = Replay {
        log,
        channel,
        feed: Some(feed),
        pending: VecDeque::new(),
        cursor: EventCursor::after(after),
        expected: match after {
            None => Some(1),
            Some(id) => id.sequence().map(|s| s + 1),
        },
        check_every: options.producer_check,
        check: None,
        last_seen: Instant::now(),
        task: None,
    };
    replay.absorb(page);
    Ok(Subscription::new(replay))
}

/// A broker call in flight, boxed only while it runs: an idle replay holds none.
type Call<T> = Pin<Box<dyn Future<Output = Result<T, SubscribeError>> + Send>>;

enum Task {
    /// A history read after the cursor.
    Read(Call<HistoryPage>),
    /// A producer check.
    Check(Call<Liveness>),
}

/// The replay's state. It is a hand-written [`Stream`]: while it waits for the feed it holds its
/// fields and nothing else (no future of a broker's history read is embedded in it).
struct Replay<L, F> {
    log: Arc<L>,
    channel: ChannelId,
    /// The live feed, dropped (unsubscribing) once the replay has ended.
    feed: Option<F>,
    /// Events to yield before the feed: a history read.
    pending: VecDeque<SharedEvent>,
    cursor: EventCursor,
    /// The sequence number the next event must have to follow the last one; `None` when that is
    /// not known (a resume point from elsewhere, a channel that started over), so any later event
    /// follows.
    expected: Option<u64>,
    check_every: Option<Duration>,
    /// The producer check timer, made on first use and reset in place.
    check: Option<Pin<Box<Sleep>>>,
    /// When the last event arrived (or the replay started).
    last_seen: Instant,
    task: Option<Task>,
}

impl<L: ChannelLog, F: LiveFeed> Replay<L, F> {
    /// Yields `event` if the cursor takes it, and moves the expected sequence number past it.
    fn accept(&mut self, event: SharedEvent) -> Option<SharedEvent> {
        if !self.cursor.admit(event.id(), event.kind()) {
            metrics::counter!(crate::metrics::DUPLICATES_DROPPED).increment(1);
            return None;
        }
        if !event.kind().is_control() {
            self.expected = event.id().sequence().map(|s| s + 1);
        }
        Some(event)
    }

    /// Announces a gap whose size is unknown; whatever follows is taken as it comes.
    fn lost(&mut self) {
        self.pending
            .push_back(gap(&self.channel, None, "the channel history was lost or restarted"));
        self.expected = None;
    }

    /// Takes a history read: a `gap` when it does not continue where the cursor stands, then its
    /// events.
    fn absorb(&mut self, page: HistoryPage) {
        let last = self.cursor.last_id();
        let seen = page.events.iter().filter(|e| last.is_some_and(|l| e.id() <= l)).count();
        if seen > 0 {
            metrics::counter!(crate::metrics::DUPLICATES_DROPPED).increment(seen as u64);
        }
        let mut events = page
            .events
            .into_iter()
            .filter(|e| last.is_none_or(|l| e.id() > l))
            .peekable();
        match events.peek() {
            Some(first) => {
                let seq = first.id().sequence();
                match (self.expected, seq) {
                    (Some(expected), Some(seq)) if seq == expected => {}
                    (Some(expected), Some(seq)) if seq > expected => {
                        let missed = seq - expected;
                        self.pending.push_back(gap(
                            &self.channel,
                            Some(missed),
                            "the channel history no longer holds these events",
                        ));
                    }
                    // A resume point from elsewhere, and the history starts at the beginning.
                    (None, Some(1)) => {}
                    // The channel started over (its history was lost), or the resume point is
                    // not one of its ids: what came between is unknown.
                    _ => self.lost(),
                }
                self.pending.extend(events);
            }
            None => {
                if page.done.is_none()
                    && page.owner_known
                    && !page.history_kept
                    && last.is_some()
                    && self.expected.is_some()
                {
                    // A known channel with no trace of its history: whatever came after the resume
                    // point is gone (Redis lost it, say).
                    self.lost();
                } else if let Some(done) = page.done
                    && last.is_none_or(|l| done > l)
                {
                    // The history is gone but the channel is known to have ended.
                    self.pending.push_back(gap(
                        &self.channel,
                        None,
                        "the channel history no longer holds these events",
                    ));
                    let mut payload = Map::new();
                    payload.insert("success".into(), Value::Bool(false));
                    payload.insert("reason".into(), json!("history_lost"));
                    let mut end = Event::new(self.channel.clone(), EventType::Done, payload).expect("no reserved keys");
                    end.id = done;
                    self.pending.push_back(SharedEvent::from_event(end));
                }
            }
        }
    }

    /// Drops the feed (unsubscribing), the timer and any call in flight: the replay has ended.
    fn end(&mut self) {
        self.feed = None;
        self.check = None;
        self.task = None;
        self.pending.clear();
    }

    /// Starts reading the history after the cursor.
    fn start_read(&mut self) {
        let log = self.log.clone();
        let channel = self.channel.clone();
        let after = self.cursor.last_id();
        self.task = Some(Task::Read(Box::pin(
            async move { log.read_after(&channel, after).await },
        )));
    }

    fn start_check(&mut self) {
        let log = self.log.clone();
        let channel = self.channel.clone();
        self.task = Some(Task::Check(Box::pin(async move { log.check_producer(&channel).await })));
    }

    fn schedule_check(&mut self, at: Instant) {
        if let Some(sleep) = &mut self.check {
            sleep.as_mut().reset(at);
        }
    }

    /// Takes the result of a producer check: when to check next. A check that answered also
    /// reads the history after the cursor: a channel that has been quiet here may not be quiet
    /// (its live feed lost the subscription without noticing, say when the cluster node that
    /// served it died before its replica took over), and whatever it missed, `done` included,
    /// comes from there. So a stream never waits on a dead feed for longer than one check.
    fn checked(&mut self, found: Result<Liveness, SubscribeError>) {
        if found.is_ok() {
            self.start_read();
        }
        let every = self.check_every.unwrap_or(Duration::from_secs(5));
        let now = Instant::now();
        let next = match found {
            Ok(Liveness::Alive(left)) => now + left.max(Duration::from_millis(50)),
            // The lost producer's `error` and `done` arrive through the feed.
            Ok(Liveness::Lost | Liveness::Done) => now + every,
            // Nothing to watch yet: look again now and then (a producer that starts sends events,
            // which push the check back anyway).
            Ok(Liveness::Unknown) => now + every * 4,
            Err(e) => {
                tracing::debug!(channel = %self.channel, error = %e, "producer check failed; retrying");
                now + every
            }
        };
        self.schedule_check(next);
    }

    /// Whether the producer check is due now; registers the timer's wake-up otherwise.
    fn poll_check_due(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(every) = self.check_every else {
            return false;
        };
        let last_seen = self.last_seen;
        let sleep = self
            .check
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last_seen + every)));
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        if last_seen + every > Instant::now() {
            // An event came meanwhile: the producer is evidently there.
            sleep.as_mut().reset(last_seen + every);
            return self.poll_check_due(cx);
        }
        true
    }
}

impl<L: ChannelLog, F: LiveFeed> Stream for Replay<L, F> {
    type Item = Result<SharedEvent, SubscribeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.cursor.is_ended() {
                this.end();
                return Poll::Ready(None);
            }
            match &mut this.task {
                Some(Task::Read(read)) => {
                    let page = ready!(read.as_mut().poll(cx));
                    this.task = None;
                    match page {
                        Ok(page) => this.absorb(page),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                    continue;
                }
                Some(Task::Check(check)) => {
                    let found = ready!(check.as_mut().poll(cx));
                    this.task = None;
                    this.checked(found);
                    continue;
                }
                None => {}
            }
            if let Some(event) = this.pending.pop_front() {
                match this.accept(event) {
                    Some(e) => return Poll::Ready(Some(Ok(e))),
                    None => continue,
                }
            }
            let Some(feed) = &mut this.feed else {
                return Poll::Ready(None);
            };
            match feed.poll_recv(cx) {
                Poll::Ready(Some(Live::Event(event))) => {
                    if this.check_every.is_some() {
                        this.last_seen = Instant::now();
                    }
                    if this.cursor.last_id().is_some_and(|last| event.id() <= last) {
                        continue;
                    }
                    let follows = match (this.expected, event.id().sequence()) {
                        (Some(expected), Some(seq)) => seq == expected,
                        (None, _) => true,
                        (Some(_), None) => false,
                    };
                    if follows {
                        if let Some(e) = this.accept(event) {
                            return Poll::Ready(Some(Ok(e)));
                        }
                    } else {
                        this.start_read();
                    }
                    continue;
                }
                Poll::Ready(Some(Live::Lagged)) => {
                    metrics::counter!(crate::metrics::RESYNCS).increment(1);
                    this.start_read();
                    continue;
                }
                Poll::Ready(None) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            if this.poll_check_due(cx) {
                this.start_check();
                continue;
            }
            return Poll::Pending;
        }
    }
}
