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

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use stream_core::SharedEvent;
use tokio::sync::{Notify, mpsc, watch};

/// One live message: the event, framed once for all local subscribers of its channel.
pub(crate) type Live = SharedEvent;

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
    /// The server dropped the subscription of a channel that still has local subscribers (a
    /// cluster slot moved to another node): subscribe it again.
    Resubscribe(Box<str>),
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
            PushKind::Unsubscribe | PushKind::SUnsubscribe => self.unsubscribed(&push.data),
            _ => {}
        }
    }

    fn dispatch(&self, data: Vec<Value>) {
        let mut data = data.into_iter();
        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
            return;
        };
        let (Some(channel), Some(payload)) = (bytes(&channel), owned_bytes(payload)) else {
            return;
        };
        // The frame is built once here around the very bytes that came from Redis; subscribers
        // share it.
        let live: Live = match SharedEvent::from_json(payload) {
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
        let channels = self.lock();
        if let Some(entry) = channels.get(channel) {
            for sub in &entry.subs {
                sub.offer(&live);
            }
        }
    }

    /// An unsubscribe confirmation. The hub only unsubscribes channels without local
    /// subscribers, so one that has some was dropped by the server (or is being re-created while
    /// the hub unsubscribes it): its subscribers resync once the hub has subscribed it again.
    fn unsubscribed(&self, data: &[Value]) {
        let Some(channel) = data.first().and_then(bytes).and_then(|c| std::str::from_utf8(c).ok()) else {
            return;
        };
        let channels = self.lock();
        if let Some(entry) = channels.get(channel) {
            entry.active.send_replace(false);
            for sub in &entry.subs {
                sub.mark_resync();
            }
            let _ = self.hub.send(HubMsg::Resubscribe(channel.into()));
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

/// A bulk string's bytes, taken without a copy.
fn owned_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::from(b)),
        Value::SimpleString(s) => Some(Bytes::from(s)),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stream_core::ChannelId;

    fn message(kind: PushKind, channel: &str, event: &stream_core::Event) -> PushInfo {
        PushInfo {
            kind,
            data: vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(event.to_json().into_bytes()),
            ],
        }
    }

    fn event(n: u64) -> stream_core::Event {
        stream_core::Event::data(ChannelId::new("c").unwrap(), "n", n).unwrap()
    }

    fn fanout(queue: usize) -> (Arc<Fanout>, mpsc::UnboundedReceiver<HubMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fanout = Arc::new(Fanout::new(queue, tx));
        fanout.next_generation();
        (fanout, rx)
    }

    #[test]
    fn a_full_queue_marks_its_subscriber_and_drops_until_it_resyncs() {
        let (fanout, mut hub) = fanout(2);
        let (slow, mut slow_rx, _) = fanout.register("ch");
        let (fast, mut fast_rx, _) = fanout.register("ch");
        assert!(matches!(hub.try_recv(), Ok(HubMsg::Ensure(c)) if &*c == "ch"));
        assert!(hub.try_recv().is_err(), "one SUBSCRIBE per channel, not per subscriber");
        let g = fanout.generation();
        for n in 0..2 {
            fanout.on_push(g, message(PushKind::Message, "ch", &event(n)));
        }
        assert_eq!(fast_rx.try_recv().unwrap().event().payload["n"], 0);
        fanout.on_push(g, message(PushKind::Message, "ch", &event(2)));
        assert!(slow.sub.resync.load(Ordering::SeqCst), "the slow subscriber overflowed");
        assert!(!fast.sub.resync.load(Ordering::SeqCst));
        // Draining makes room, but nothing more is queued until the subscriber has resynced.
        assert_eq!(slow_rx.try_recv().unwrap().event().payload["n"], 0);
        fanout.on_push(g, message(PushKind::Message, "ch", &event(3)));
        assert_eq!(slow_rx.try_recv().unwrap().event().payload["n"], 1);
        assert!(slow_rx.try_recv().is_err());
        drop((slow, fast));
        assert!(matches!(hub.try_recv(), Ok(HubMsg::Release(c)) if &*c == "ch"));
    }

    #[test]
    fn a_lost_connection_marks_everyone_and_older_generations_are_ignored() {
        let (fanout, mut hub) = fanout(8);
        let (a, mut a_rx, active) = fanout.register("a");
        let (b, _b_rx, _) = fanout.register("b");
        fanout.activate([&Box::<str>::from("a"), &"b".into()]);
        assert!(*active.borrow());
        let old = fanout.generation();
        fanout.on_push(
            old,
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
        );
        assert!(!*active.borrow());
        assert!(a.sub.resync.load(Ordering::SeqCst) && b.sub.resync.load(Ordering::SeqCst));
        while let Ok(msg) = hub.try_recv() {
            if let HubMsg::Disconnected(g) = msg {
                assert_eq!(g, old);
            }
        }
        fanout.next_generation();
        a.sub.resync.store(false, Ordering::SeqCst);
        fanout.on_push(old, message(PushKind::Message, "a", &event(1)));
        fanout.on_push(
            old,
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
        );
        assert!(a_rx.try_recv().is_err(), "messages of an old connection are ignored");
        assert!(!a.sub.resync.load(Ordering::SeqCst), "so is its disconnect notice");
    }

    #[test]
    fn a_subscription_dropped_by_the_server_is_renewed() {
        let (fanout, mut hub) = fanout(8);
        let (sub, _rx, active) = fanout.register("ch");
        let _ = hub.try_recv();
        fanout.activate([&Box::<str>::from("ch")]);
        let unsubscribed = PushInfo {
            kind: PushKind::SUnsubscribe,
            data: vec![Value::BulkString(b"ch".to_vec()), Value::Int(0)],
        };
        fanout.on_push(fanout.generation(), unsubscribed.clone());
        assert!(!*active.borrow());
        assert!(sub.sub.resync.load(Ordering::SeqCst));
        assert!(matches!(hub.try_recv(), Ok(HubMsg::Resubscribe(c)) if &*c == "ch"));
        drop(sub);
        let _ = hub.try_recv();
        // Our own unsubscribe of a channel nobody listens to is just a confirmation.
        fanout.on_push(fanout.generation(), unsubscribed);
        assert!(hub.try_recv().is_err());
    }
}
