use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, json};
use tokio::sync::broadcast;

use crate::config::ChannelConfig;
use crate::event::{Event, EventId, EventType};
use crate::ids::{ChannelId, UserId};
use crate::publish::{EventPublisher, PublishError};
use crate::registry::{ChannelRegistry, RegistryError};
use crate::subscribe::{EventCursor, EventSubscriber, SubscribeError, Subscription};

/// An in-process broker with per-channel history: the embedded default.
///
/// Each channel keeps its last `history_max_len` events for `history_ttl` after its last event.
/// Each subscriber has a queue of `subscriber_queue` events. A subscriber that falls further
/// behind is refilled from history; events that history no longer holds are reported with one
/// in-band `gap` event (`{"missed": n}`). A slow subscriber never blocks the publisher or other
/// subscribers, and memory stays bounded.
///
/// It also records channel owners ([`ChannelRegistry`]). Cloning shares the broker.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

struct Shared {
    config: ChannelConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    channels: HashMap<ChannelId, Channel>,
    owners: HashMap<ChannelId, (UserId, Instant)>,
    last_sweep: Option<Instant>,
}

struct Channel {
    history: VecDeque<(u64, Event)>,
    next_seq: u64,
    tx: broadcast::Sender<(u64, Event)>,
    touched: Instant,
    done: Option<EventId>,
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn channel<'a>(&self, state: &'a mut State, id: &ChannelId) -> &'a mut Channel {
        state.channels.entry(id.clone()).or_insert_with(|| Channel {
            history: VecDeque::new(),
            next_seq: 1,
            tx: broadcast::channel(self.config.subscriber_queue.max(1)).0,
            touched: Instant::now(),
            done: None,
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
        state
            .channels
            .retain(|_, c| c.tx.receiver_count() > 0 || now.duration_since(c.touched) < ttl);
        state.owners.retain(|_, (_, expires)| *expires > now);
    }

    fn publish_locked(&self, state: &mut State, event: &Event) {
        if event.kind.is_control() {
            return;
        }
        let now = Instant::now();
        self.sweep(state, now);
        let max = self.config.history_max_len.max(1);
        let channel = self.channel(state, &event.channel_id);
        let seq = channel.next_seq;
        channel.next_seq += 1;
        channel.touched = now;
        if event.kind.closes_stream() {
            channel.done.get_or_insert(event.id);
        }
        channel.history.push_back((seq, event.clone()));
        while channel.history.len() > max {
            channel.history.pop_front();
        }
        // No receivers is fine: history keeps the event for later subscribers.
        let _ = channel.tx.send((seq, event.clone()));
    }
}

#[async_trait]
impl EventPublisher for MemoryBroker {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        let mut state = self.shared.lock();
        self.shared.publish_locked(&mut state, event);
        Ok(())
    }

    async fn publish_batch(&self, events: &[Event]) -> Result<(), PublishError> {
        let mut state = self.shared.lock();
        for event in events {
            self.shared.publish_locked(&mut state, event);
        }
        Ok(())
    }
}

struct Reader {
    shared: Arc<Shared>,
    channel: ChannelId,
    rx: broadcast::Receiver<(u64, Event)>,
    pending: VecDeque<Event>,
    /// Every event with a sequence number up to this one has been delivered or skipped.
    seq: u64,
    cursor: EventCursor,
}

impl Reader {
    /// Refills `pending` from history after the reader fell behind.
    fn refill(&mut self) {
        let mut state = self.shared.lock();
        let Some(channel) = state.channels.get_mut(&self.channel) else {
            return;
        };
        let first_kept = channel.history.front().map_or(channel.next_seq, |(s, _)| *s);
        if first_kept > self.seq + 1 {
            let missed = first_kept - self.seq - 1;
            let mut payload = Map::new();
            payload.insert("missed".into(), json!(missed));
            payload.insert("reason".into(), json!("subscriber fell behind the channel history"));
            if let Ok(gap) = Event::new(self.channel.clone(), EventType::Gap, payload) {
                self.pending.push_back(gap);
            }
        }
        let newer = channel.history.iter().filter(|(s, _)| *s > self.seq);
        self.pending.extend(newer.map(|(_, e)| e.clone()));
        self.seq = channel.next_seq - 1;
    }

    async fn next(&mut self) -> Option<Event> {
        while !self.cursor.is_ended() {
            if let Some(event) = self.pending.pop_front() {
                match self.cursor.accept(event) {
                    Some(e) => return Some(e),
                    None => continue,
                }
            }
            match self.rx.recv().await {
                Ok((seq, event)) => {
                    if seq <= self.seq {
                        continue;
                    }
                    self.seq = seq;
                    if let Some(e) = self.cursor.accept(event) {
                        return Some(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.refill(),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
        None
    }
}

#[async_trait]
impl EventSubscriber for MemoryBroker {
    async fn subscribe(&self, channel: &ChannelId, after: Option<EventId>) -> Result<Subscription, SubscribeError> {
        let mut state = self.shared.lock();
        let ch = self.shared.channel(&mut state, channel);
        if let (Some(done), Some(after)) = (ch.done, after)
            && done <= after
        {
            return Ok(Subscription::finished());
        }
        // Subscribe, then read history, under one lock: nothing published in between is lost.
        let rx = ch.tx.subscribe();
        let pending: VecDeque<Event> = ch
            .history
            .iter()
            .filter(|(_, e)| after.is_none_or(|a| e.id > a))
            .map(|(_, e)| e.clone())
            .collect();
        let reader = Reader {
            shared: self.shared.clone(),
            channel: channel.clone(),
            rx,
            pending,
            seq: ch.next_seq - 1,
            cursor: EventCursor::after(after),
        };
        drop(state);
        Ok(Subscription::new(futures_util::stream::unfold(
            reader,
            |mut r| async move {
                let event = r.next().await?;
                Some((Ok(event), r))
            },
        )))
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
