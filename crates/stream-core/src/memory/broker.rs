use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::config::ChannelConfig;
use crate::event::{Event, EventId};
use crate::fanout::LocalFanout;
use crate::ids::{ChannelId, UserId};
use crate::publish::{CancelOutcome, EventPublisher, PublishError};
use crate::registry::{ChannelRegistry, RegistryError};
use crate::replay::{self, ChannelLog, HistoryPage, Liveness, ReplayOptions};
use crate::shared::SharedEvent;
use crate::subscribe::{EventSubscriber, SubscribeError, Subscription};

/// An in-process broker with per-channel history: the embedded default.
///
/// Each event it accepts gets the channel's next id under one lock (see [`EventId`]): that is the
/// channel's order, whoever publishes. Each channel keeps its last `history_max_len` events for
/// `history_ttl` after its last event. Each subscriber has a queue of up to `subscriber_queue`
/// events, allocated as events arrive (an idle subscriber holds a few dozen bytes, and a channel
/// preallocates nothing); the local fan-out is stream-core's [`LocalFanout`], sharded by channel.
/// A subscriber that falls further behind is refilled from history, and events that history no longer holds are reported with one in-band
/// `gap` event (`{"missed": n}`). A slow subscriber never blocks the publisher or other
/// subscribers, and memory stays bounded. The replay itself is stream-core's
/// [`replay`](crate::replay), as for every broker.
///
/// It also records channel owners ([`ChannelRegistry`]); publishing renews the owner record with
/// the history. Cloning shares the broker.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

struct Shared {
    config: ChannelConfig,
    state: Mutex<State>,
    fanout: Arc<LocalFanout>,
}

#[derive(Default)]
struct State {
    channels: HashMap<ChannelId, Channel>,
    owners: HashMap<ChannelId, (UserId, Instant)>,
    last_sweep: Option<Instant>,
}

struct Channel {
    history: VecDeque<SharedEvent>,
    /// The sequence number of the channel's last event (0 before the first).
    seq: u64,
    /// The millisecond of the channel's last id: ids never go back in time.
    last_ms: u64,
    touched: Instant,
    done: Option<EventId>,
    /// When the producer's liveness record expires, while it has one.
    producer: Option<Instant>,
    /// A cancel was requested ([`EventPublisher::request_cancel`]).
    cancel: bool,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(ChannelConfig::default())
    }
}

impl MemoryBroker {
    /// A broker with these settings.
    pub fn new(config: ChannelConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                fanout: Arc::new(LocalFanout::new(config.subscriber_queue)),
                config,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The broker's settings.
    pub fn config(&self) -> &ChannelConfig {
        &self.shared.config
    }

    /// The number of channels currently kept.
    pub fn channel_count(&self) -> usize {
        self.shared.lock().channels.len()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn channel<'a>(state: &'a mut State, id: &ChannelId) -> &'a mut Channel {
        state.channels.entry(id.clone()).or_insert_with(|| Channel {
            history: VecDeque::new(),
            seq: 0,
            last_ms: 0,
            touched: Instant::now(),
            done: None,
            producer: None,
            cancel: false,
        })
    }

    /// Drops channels idle past the history TTL that nobody listens to, at most once a second.
    fn sweep(&self, state: &mut State, now: Instant) {
        if state
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        state.last_sweep = Some(now);
        let ttl = self.config.history_ttl;
        let fanout = &self.fanout;
        state
            .channels
            .retain(|id, c| now.duration_since(c.touched) < ttl || fanout.contains(id.as_str()));
        state.owners.retain(|_, (_, expires)| *expires > now);
    }

    /// Accepts one event: gives it the channel's next id, keeps it, sends it live.
    fn publish_locked(&self, state: &mut State, event: &Event) -> EventId {
        if event.kind.is_control() {
            return event.id;
        }
        metrics::counter!(crate::metrics::EVENTS_PUBLISHED, crate::metrics::BACKEND => "memory").increment(1);
        let now = Instant::now();
        self.sweep(state, now);
        let ttl = self.config.history_ttl;
        if let Some((_, expires)) = state.owners.get_mut(&event.channel_id) {
            *expires = (*expires).max(now + ttl);
        }
        let max = self.config.history_max_len.max(1);
        let channel = Self::channel(state, &event.channel_id);
        channel.seq += 1;
        channel.last_ms = channel.last_ms.max(unix_ms());
        let id = EventId::from_parts(channel.last_ms, channel.seq);
        channel.touched = now;
        if event.kind.closes_stream() {
            channel.done.get_or_insert(id);
            channel.producer = None;
        }
        let mut accepted = event.clone();
        accepted.id = id;
        // Encoded once, here; every subscriber and every history read shares the frame.
        let accepted = SharedEvent::from_event(accepted);
        channel.history.push_back(accepted.clone());
        while channel.history.len() > max {
            channel.history.pop_front();
        }
        // Under the broker's lock, so that every subscriber gets the channel's events in id
        // order; each delivery is a reference count pushed into a queue, never a wait. No
        // subscribers is fine: history keeps the event for later ones.
        self.fanout.dispatch(event.channel_id.as_str(), &accepted);
        id
    }
}

#[async_trait]
impl EventPublisher for MemoryBroker {
    async fn publish(&self, event: &Event) -> Result<EventId, PublishError> {
        let mut state = self.shared.lock();
        Ok(self.shared.publish_locked(&mut state, event))
    }

    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<EventId>, PublishError> {
        let mut state = self.shared.lock();
        Ok(events
            .iter()
            .map(|event| self.shared.publish_locked(&mut state, event))
            .collect())
    }

    async fn heartbeat(&self, channel: &ChannelId, ttl: Option<Duration>) -> Result<(), PublishError> {
        let mut state = self.shared.lock();
        let now = Instant::now();
        let ch = Shared::channel(&mut state, channel);
        if ch.done.is_none() {
            ch.producer = ttl.map(|ttl| now + ttl);
            ch.touched = now;
        }
        Ok(())
    }

    async fn request_cancel(&self, channel: &ChannelId) -> Result<CancelOutcome, PublishError> {
        let mut state = self.shared.lock();
        let ch = Shared::channel(&mut state, channel);
        if ch.done.is_some() {
            return Ok(CancelOutcome::AlreadyDone);
        }
        ch.cancel = true;
        Ok(CancelOutcome::Requested)
    }

    async fn cancel_requested(&self, channel: &ChannelId) -> Result<bool, PublishError> {
        let state = self.shared.lock();
        Ok(state.channels.get(channel).is_some_and(|ch| ch.cancel))
    }
}

impl ChannelLog for Shared {
    async fn read_after(&self, channel: &ChannelId, after: Option<EventId>) -> Result<HistoryPage, SubscribeError> {
        let state = self.lock();
        let owner_known = state
            .owners
            .get(channel)
            .is_some_and(|(_, expires)| *expires > Instant::now());
        let Some(ch) = state.channels.get(channel) else {
            return Ok(HistoryPage {
                owner_known,
                ..HistoryPage::default()
            });
        };
        let events = ch
            .history
            .iter()
            .filter(|e| after.is_none_or(|a| e.id() > a))
            .cloned()
            .collect();
        Ok(HistoryPage {
            events,
            done: ch.done,
            owner_known,
            history_kept: !ch.history.is_empty(),
        })
    }

    async fn check_producer(&self, channel: &ChannelId) -> Result<Liveness, SubscribeError> {
        let mut state = self.lock();
        let now = Instant::now();
        let Some(ch) = state.channels.get(channel) else {
            return Ok(Liveness::Unknown);
        };
        match (ch.done, ch.producer) {
            (Some(_), _) => Ok(Liveness::Done),
            (None, None) => Ok(Liveness::Unknown),
            (None, Some(deadline)) if deadline > now => Ok(Liveness::Alive(deadline - now)),
            (None, Some(_)) => {
                for event in replay::producer_lost_events(channel) {
                    self.publish_locked(&mut state, &event);
                }
                Ok(Liveness::Lost)
            }
        }
    }
}

#[async_trait]
impl EventSubscriber for MemoryBroker {
    async fn subscribe(&self, channel: &ChannelId, after: Option<EventId>) -> Result<Subscription, SubscribeError> {
        // Registered before the history read: nothing published in between falls through.
        let (feed, ()) = self.shared.fanout.register(channel.as_str(), || (), |_, _| ());
        let options = ReplayOptions {
            producer_check: self.shared.config.heartbeat_interval,
        };
        replay::open(self.shared.clone(), channel.clone(), after, feed, options).await
    }
}

#[async_trait]
impl ChannelRegistry for MemoryBroker {
    async fn register(&self, channel: &ChannelId, owner: &UserId, ttl: Duration) -> Result<(), RegistryError> {
        let mut state = self.shared.lock();
        let now = Instant::now();
        match state.owners.get(channel) {
            Some((current, expires)) if *expires > now && current != owner => Err(RegistryError::AlreadyOwned {
                channel: channel.clone(),
            }),
            _ => {
                state.owners.insert(channel.clone(), (owner.clone(), now + ttl));
                Ok(())
            }
        }
    }

    async fn owner(&self, channel: &ChannelId) -> Result<Option<UserId>, RegistryError> {
        let state = self.shared.lock();
        Ok(state
            .owners
            .get(channel)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(owner, _)| owner.clone()))
    }
}
