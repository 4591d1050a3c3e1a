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
use std::time::Duration;

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
pub trait LiveFeed: Send + 'static {
    /// The next item, or `None` when the feed is closed (the broker shut down).
    fn recv(&mut self) -> impl Future<Output = Option<Live>> + Send;
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
        feed,
        pending: VecDeque::new(),
        cursor: EventCursor::after(after),
        expected: match after {
            None => Some(1),
            Some(id) => id.sequence().map(|s| s + 1),
        },
        check_every: options.producer_check,
        check: None,
        last_seen: Instant::now(),
    };
    replay.absorb(page);
    Ok(Subscription::new(futures_util::stream::unfold(
        replay,
        |mut replay| async move {
            let item = replay.next().await?;
            Some((item, replay))
        },
    )))
}

struct Replay<L, F> {
    log: Arc<L>,
    channel: ChannelId,
    feed: F,
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
}

impl<L: ChannelLog, F: LiveFeed> Replay<L, F> {
    /// Yields `event` if the cursor takes it, and moves the expected sequence number past it.
    fn accept(&mut self, event: SharedEvent) -> Option<SharedEvent> {
        if !self.cursor.admit(event.id(), event.kind()) {
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

    async fn resync(&mut self) -> Result<(), SubscribeError> {
        let page = self.log.read_after(&self.channel, self.cursor.last_id()).await?;
        self.absorb(page);
        Ok(())
    }

    /// Waits for the producer check to be due.
    async fn check_due(check: &mut Option<Pin<Box<Sleep>>>, every: Option<Duration>, last_seen: Instant) {
        let Some(every) = every else {
            return std::future::pending().await;
        };
        let sleep = check.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last_seen + every)));
        sleep.as_mut().await;
    }

    fn schedule_check(&mut self, at: Instant) {
        if let Some(sleep) = &mut self.check {
            sleep.as_mut().reset(at);
        }
    }

    async fn next(&mut self) -> Option<Result<SharedEvent, SubscribeError>> {
        loop {
            if self.cursor.is_ended() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                match self.accept(event) {
                    Some(e) => return Some(Ok(e)),
                    None => continue,
                }
            }
            tokio::select! {
                live = self.feed.recv() => match live {
                    Some(Live::Event(event)) => {
                        self.last_seen = Instant::now();
                        if self.cursor.last_id().is_some_and(|last| event.id() <= last) {
                            continue;
                        }
                        let follows = match (self.expected, event.id().sequence()) {
                            (Some(expected), Some(seq)) => seq == expected,
                            (None, _) => true,
                            (Some(_), None) => false,
                        };
                        if follows {
                            if let Some(e) = self.accept(event) {
                                return Some(Ok(e));
                            }
                        } else if let Err(e) = self.resync().await {
                            return Some(Err(e));
                        }
                    }
                    Some(Live::Lagged) => {
                        if let Err(e) = self.resync().await {
                            return Some(Err(e));
                        }
                    }
                    None => return None,
                },
                () = Self::check_due(&mut self.check, self.check_every, self.last_seen) => {
                    let every = self.check_every.unwrap_or(Duration::from_secs(5));
                    let now = Instant::now();
                    if self.last_seen + every > now {
                        // An event came meanwhile: the producer is evidently there.
                        self.schedule_check(self.last_seen + every);
                        continue;
                    }
                    match self.log.check_producer(&self.channel).await {
                        Ok(Liveness::Alive(left)) => self.schedule_check(now + left.max(Duration::from_millis(50))),
                        // The lost producer's `error` and `done` arrive through the feed.
                        Ok(Liveness::Lost | Liveness::Done) => self.schedule_check(now + every),
                        // Nothing to watch yet: look again now and then (a producer that starts
                        // sends events, which push the check back anyway).
                        Ok(Liveness::Unknown) => self.schedule_check(now + every * 4),
                        Err(e) => {
                            tracing::debug!(channel = %self.channel, error = %e, "producer check failed; retrying");
                            self.schedule_check(now + every);
                        }
                    }
                }
            }
        }
    }
}
