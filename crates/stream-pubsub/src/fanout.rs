//! The local side of the shared subscriber: which local subscribers listen to which Redis channel,
//! and the fan-out of each pushed message into their bounded queues.
//!
//! The fan-out runs inside the redis client's connection task (it is the connection's push
//! sender), in the order the server sent the pushes. It never waits: a full queue marks its
//! subscriber for a resync from history, and later messages for that subscriber are dropped until
//! the subscriber has caught up (they are in the history). A lost connection marks every
//! subscriber the same way before any message of the next connection can arrive.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redis::{PushInfo, PushKind, Value};
use stream_core::Event;
use tokio::sync::{Notify, mpsc, watch};

/// One live message: the event, decoded once for all local subscribers of its channel.
pub(crate) type Live = Arc<Event>;

/// One local subscriber's end of the fan-out.
pub(crate) struct LocalSub {
    id: u64,
    tx: mpsc::Sender<Live>,
    /// Set when the subscriber must refill from history (its queue overflowed, or the connection
    /// was lost). While set, the fan-out drops its messages.
    pub(crate) resync: AtomicBool,
    /// Wakes the subscriber when `resync` is set while its queue is empty.
    pub(crate) wake: Notify,
}

impl LocalSub {
    fn offer(&self, live: &Live) {
        if self.resync.load(Ordering::SeqCst) {
            return;
        }
        match self.tx.try_send(live.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.resync.store(true, Ordering::SeqCst);
                self.wake.notify_one();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn mark_resync(&self) {
        self.resync.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

struct ChannelEntry {
    subs: Vec<Arc<LocalSub>>,
    /// Whether the shared connection has confirmed its subscription to this channel.
    active: watch::Sender<bool>,
}

/// What the hub (the task that owns the subscriber connection) is told.
#[derive(Debug)]
pub(crate) enum HubMsg {
    /// A channel got its first local subscriber.
    Ensure(Box<str>),
    /// A channel lost its last local subscriber.
    Release(Box<str>),
    /// The subscriber connection of this generation was lost.
    Disconnected(u64),
    /// The broker was dropped.
    Shutdown,
}

/// The registry of local subscribers, shared by the broker, its readers, the hub and the
/// connection's push sender.
pub(crate) struct Fanout {
    channels: Mutex<HashMap<Box<str>, ChannelEntry>>,
    /// The subscriber connection's generation; pushes from older connections are ignored.
    generation: AtomicU64,
    next_id: AtomicU64,
    queue: usize,
    hub: mpsc::UnboundedSender<HubMsg>,
}

/// A local subscriber's registration; dropping it unregisters the subscriber.
pub(crate) struct Registration {
    fanout: Arc<Fanout>,
    channel: Box<str>,
    pub(crate) sub: Arc<LocalSub>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fanout.unregister(&self.channel, self.sub.id);
    }
}

impl Fanout {
    pub(crate) fn new(queue: usize, hub: mpsc::UnboundedSender<HubMsg>) -> Self {
        Self {
            channels: Mutex::default(),
            generation: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            hub,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, ChannelEntry>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn hub(&self) -> &mpsc::UnboundedSender<HubMsg> {
        &self.hub
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts a new connection generation; pushes from older connections are ignored from now on.
    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Adds a local subscriber to `channel`, with a queue of the configured size. The first
    /// subscriber of a channel asks the hub to subscribe; the returned watch turns true once the
    /// shared connection has confirmed it.
    pub(crate) fn register(
        self: &Arc<Self>,
        channel: &str,
    ) -> (Registration, mpsc::Receiver<Live>, watch::Receiver<bool>) {
        let (tx, rx) = mpsc::channel(self.queue);
        let sub = Arc::new(LocalSub {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            resync: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let mut channels = self.lock();
        let active = match channels.get_mut(channel) {
            Some(entry) => {
                entry.subs.push(sub.clone());
                entry.active.subscribe()
            }
            None => {
                let (active, watch) = watch::channel(false);
                channels.insert(
                    channel.into(),
                    ChannelEntry {
                        subs: vec![sub.clone()],
                        active,
                    },
                );
                let _ = self.hub.send(HubMsg::Ensure(channel.into()));
                watch
            }
        };
        drop(channels);
        let registration = Registration {
            fanout: self.clone(),
            channel: channel.into(),
            sub,
        };
        (registration, rx, active)
    }

    fn unregister(&self, channel: &str, id: u64) {
        let mut channels = self.lock();
        if let Some(entry) = channels.get_mut(channel) {
            entry.subs.retain(|s| s.id != id);
            if entry.subs.is_empty() {
                channels.remove(channel);
                let _ = self.hub.send(HubMsg::Release(channel.into()));
            }
        }
    }

    /// The push sender of a subscriber connection of `generation`.
    pub(crate) fn on_push(&self, generation: u64, push: PushInfo) {
        if generation != self.generation() {
            return;
        }
        match push.kind {
            PushKind::Message | PushKind::SMessage => self.dispatch(push.data),
            PushKind::Disconnection => {
                self.mark_all_resync();
                let _ = self.hub.send(HubMsg::Disconnected(generation));
            }
            _ => {}
        }
    }

    fn dispatch(&self, data: Vec<Value>) {
        let mut data = data.into_iter();
        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
            return;
        };
        let (Some(channel), Some(payload)) = (bytes(&channel), bytes(&payload)) else {
            return;
        };
        let event: Event = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(
                    channel = %String::from_utf8_lossy(channel),
                    error = %e,
                    "dropping a pub/sub message that is not an event"
                );
                return;
            }
        };
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        let live: Live = Arc::new(event);
        let channels = self.lock();
        if let Some(entry) = channels.get(channel) {
            for sub in &entry.subs {
                sub.offer(&live);
            }
        }
    }

    /// Marks every channel inactive and every subscriber for a resync: the connection is gone.
    pub(crate) fn mark_all_resync(&self) {
        let channels = self.lock();
        for entry in channels.values() {
            entry.active.send_replace(false);
            for sub in &entry.subs {
                sub.mark_resync();
            }
        }
    }

    /// Marks these channels as confirmed by the shared connection.
    pub(crate) fn activate<'a>(&self, names: impl IntoIterator<Item = &'a Box<str>>) {
        let channels = self.lock();
        for name in names {
            if let Some(entry) = channels.get(name) {
                entry.active.send_replace(true);
            }
        }
    }

    /// The channels that have local subscribers.
    pub(crate) fn channel_names(&self) -> Vec<Box<str>> {
        self.lock().keys().cloned().collect()
    }

    /// Of the `touched` channels: those to subscribe (wanted, not subscribed) and those to
    /// unsubscribe (subscribed, no longer wanted).
    pub(crate) fn diff(
        &self,
        touched: &HashSet<Box<str>>,
        subscribed: &HashSet<Box<str>>,
    ) -> (Vec<Box<str>>, Vec<Box<str>>) {
        let channels = self.lock();
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for name in touched {
            match (channels.contains_key(name), subscribed.contains(name)) {
                (true, false) => add.push(name.clone()),
                (false, true) => remove.push(name.clone()),
                _ => {}
            }
        }
        (add, remove)
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}
