//! The local side of the shared subscriber: which local subscribers listen to which Redis channel,
//! and the fan-out of each pushed message into their bounded queues.
//!
//! The fan-out runs inside the redis client's connection task (it is the connection's push
//! sender), in the order the server sent the pushes; it is stream-core's sharded
//! [`LocalFanout`]. It never waits: a full queue marks its subscriber for a resync from history,
//! and later messages for that subscriber are dropped until the subscriber has caught up (they are
//! in the history). A lost connection marks every subscriber the same way before any message of
//! the next connection can arrive.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use stream_core::fanout::{LocalFanout, LocalSubscription};
use tokio::sync::{mpsc, watch};

/// A local subscriber's registration: its queue, registered until dropped. The channel's state
/// is whether the shared connection has confirmed its subscription.
pub(crate) type Registration = LocalSubscription<watch::Sender<bool>>;

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

/// The registry of local subscribers (stream-core's sharded [`LocalFanout`]), shared by the
/// broker, its feeds, the hub and the connection's push sender.
pub(crate) struct Fanout {
    local: Arc<LocalFanout<watch::Sender<bool>>>,
    /// The subscriber connection's generation; pushes from older connections are ignored.
    generation: AtomicU64,
    hub: mpsc::UnboundedSender<HubMsg>,
}

impl Fanout {
    pub(crate) fn new(queue: usize, hub: mpsc::UnboundedSender<HubMsg>) -> Self {
        let release = hub.clone();
        let local = LocalFanout::new(queue).on_empty(move |channel| {
            let _ = release.send(HubMsg::Release(channel.into()));
        });
        Self {
            local: Arc::new(local),
            generation: AtomicU64::new(0),
            hub,
        }
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

    /// Adds a local subscriber to `channel`. The first subscriber of a channel asks the hub to
    /// subscribe; the returned watch turns true once the shared connection has confirmed it.
    pub(crate) fn register(&self, channel: &str) -> (Registration, watch::Receiver<bool>) {
        self.local.register(
            channel,
            || watch::channel(false).0,
            |active, first| {
                if first {
                    let _ = self.hub.send(HubMsg::Ensure(channel.into()));
                }
                active.subscribe()
            },
        )
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
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        // No subscriber here: nothing to parse.
        let Some(subs) = self.local.subscribers(channel) else {
            return;
        };
        // A message holds a chunk of one publish call's events (see `wire`). Each frame is built
        // once here; subscribers share it.
        let events = match crate::wire::message_events(payload) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "dropping a pub/sub message that is not an event");
                return;
            }
        };
        for queue in subs.iter() {
            queue.offer_all(&events);
        }
    }

    /// An unsubscribe confirmation. The hub only unsubscribes channels without local
    /// subscribers, so one that has some was dropped by the server (or is being re-created while
    /// the hub unsubscribes it): its subscribers resync once the hub has subscribed it again.
    fn unsubscribed(&self, data: &[Value]) {
        let Some(channel) = data.first().and_then(bytes).and_then(|c| std::str::from_utf8(c).ok()) else {
            return;
        };
        let found = self.local.with_channel(channel, |active, subs| {
            active.send_replace(false);
            for sub in subs {
                sub.mark_lagged();
            }
        });
        if found.is_some() {
            let _ = self.hub.send(HubMsg::Resubscribe(channel.into()));
        }
    }

    /// Marks every channel inactive and every subscriber for a resync: the connection is gone.
    pub(crate) fn mark_all_resync(&self) {
        self.local.for_each(|_, active, subs| {
            active.send_replace(false);
            for sub in subs {
                sub.mark_lagged();
            }
        });
    }

    /// Marks these channels as confirmed by the shared connection.
    pub(crate) fn activate<'a>(&self, names: impl IntoIterator<Item = &'a Box<str>>) {
        for name in names {
            self.local.with_channel(name, |active, _| active.send_replace(true));
        }
    }

    /// The channels that have local subscribers.
    pub(crate) fn channel_names(&self) -> Vec<Box<str>> {
        self.local.channel_names()
    }

    /// The number of channels that have local subscribers.
    pub(crate) fn channel_count(&self) -> usize {
        self.local.channel_count()
    }

    /// Of the `touched` channels: those to subscribe (wanted, not subscribed) and those to
    /// unsubscribe (subscribed, no longer wanted).
    pub(crate) fn diff(
        &self,
        touched: &HashSet<Box<str>>,
        subscribed: &HashSet<Box<str>>,
    ) -> (Vec<Box<str>>, Vec<Box<str>>) {
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for name in touched {
            match (self.local.contains(name), subscribed.contains(name)) {
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
    use std::task::Poll;
    use stream_core::ChannelId;
    use stream_core::replay::Live;

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

    /// What a subscriber's queue gives now.
    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        /// An event, by its `n`.
        Event(u64),
        /// The lag notice.
        Lagged,
        /// Nothing queued.
        Nothing,
    }

    fn next(sub: &Registration) -> Got {
        match sub.queue().try_recv() {
            Poll::Ready(Some(Live::Event(e))) => Got::Event(e.event().payload["n"].as_u64().expect("n")),
            Poll::Ready(Some(Live::Lagged)) => Got::Lagged,
            Poll::Ready(None) => panic!("closed"),
            Poll::Pending => Got::Nothing,
        }
    }

    #[test]
    fn a_full_queue_marks_its_subscriber_and_drops_until_it_resyncs() {
        let (fanout, mut hub) = fanout(2);
        let (slow, _) = fanout.register("ch");
        let (fast, _) = fanout.register("ch");
        assert!(matches!(hub.try_recv(), Ok(HubMsg::Ensure(c)) if &*c == "ch"));
        assert!(hub.try_recv().is_err(), "one SUBSCRIBE per channel, not per subscriber");
        let g = fanout.generation();
        for n in 0..2 {
            fanout.on_push(g, message(PushKind::Message, "ch", &event(n)));
        }
        assert_eq!(next(&fast), Got::Event(0));
        fanout.on_push(g, message(PushKind::Message, "ch", &event(2)));
        assert!(slow.queue().is_lagged(), "the slow subscriber overflowed");
        assert!(!fast.queue().is_lagged());
        assert_eq!((next(&fast), next(&fast)), (Got::Event(1), Got::Event(2)));
        // Nothing more is queued until the subscriber has taken its queue and its lag notice.
        fanout.on_push(g, message(PushKind::Message, "ch", &event(3)));
        assert_eq!((next(&slow), next(&slow)), (Got::Event(0), Got::Event(1)));
        assert_eq!(next(&slow), Got::Lagged);
        assert_eq!(next(&slow), Got::Nothing);
        assert_eq!(next(&fast), Got::Event(3));
        drop((slow, fast));
        assert!(matches!(hub.try_recv(), Ok(HubMsg::Release(c)) if &*c == "ch"));
    }

    #[test]
    fn a_message_of_the_earlier_form_is_split_without_a_copy() {
        let (fanout, _hub) = fanout(8);
        let (sub, _) = fanout.register("ch");
        let joined = format!("{}\n{}", event(1).to_json(), event(2).to_json());
        let push = PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"ch".to_vec()),
                Value::BulkString(joined.into_bytes()),
            ],
        };
        fanout.on_push(fanout.generation(), push);
        assert_eq!(
            (next(&sub), next(&sub), next(&sub)),
            (Got::Event(1), Got::Event(2), Got::Nothing)
        );
    }

    #[test]
    fn a_chunk_message_gives_each_subscriber_the_events_with_the_brokers_ids() {
        let (fanout, _hub) = fanout(8);
        let (a, _) = fanout.register("ch");
        let (b, _) = fanout.register("ch");
        // As the publish script sends a chunk: `<ms>:<first seq>`, then each event's JSON after
        // its id, one per line.
        let mut message = b"1700000000000:7".to_vec();
        for n in [1, 2] {
            message.push(b'\n');
            message.extend_from_slice(&event(n).to_json().as_bytes()[33..]);
        }
        let push = PushInfo {
            kind: PushKind::Message,
            data: vec![Value::BulkString(b"ch".to_vec()), Value::BulkString(message)],
        };
        fanout.on_push(fanout.generation(), push);
        let take = |sub: &Registration| match sub.queue().try_recv() {
            Poll::Ready(Some(Live::Event(e))) => e,
            other => panic!("an event, not {other:?}"),
        };
        for n in [1, 2] {
            let (x, y) = (take(&a), take(&b));
            let id = stream_core::EventId::from_parts(1_700_000_000_000, 6 + n);
            assert_eq!((x.id(), x.event().payload["n"].as_u64()), (id, Some(n)));
            assert_eq!(x.frame().as_ptr(), y.frame().as_ptr(), "one frame, shared");
        }
        assert_eq!((next(&a), next(&b)), (Got::Nothing, Got::Nothing));
    }

    #[test]
    fn a_lost_connection_marks_everyone_and_older_generations_are_ignored() {
        let (fanout, mut hub) = fanout(8);
        let (a, active) = fanout.register("a");
        let (b, _) = fanout.register("b");
        fanout.activate([&Box::<str>::from("a"), &"b".into()]);
        assert!(*active.borrow());
        let old = fanout.generation();
        let disconnection = || PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        };
        fanout.on_push(old, disconnection());
        assert!(!*active.borrow());
        assert!(a.queue().is_lagged() && b.queue().is_lagged());
        while let Ok(msg) = hub.try_recv() {
            if let HubMsg::Disconnected(g) = msg {
                assert_eq!(g, old);
            }
        }
        fanout.next_generation();
        assert_eq!(next(&a), Got::Lagged);
        fanout.on_push(old, message(PushKind::Message, "a", &event(1)));
        fanout.on_push(old, disconnection());
        assert_eq!(next(&a), Got::Nothing, "messages of an old connection are ignored");
        assert!(!a.queue().is_lagged(), "so is its disconnect notice");
    }

    #[test]
    fn a_subscription_dropped_by_the_server_is_renewed() {
        let (fanout, mut hub) = fanout(8);
        let (sub, active) = fanout.register("ch");
        let _ = hub.try_recv();
        fanout.activate([&Box::<str>::from("ch")]);
        let unsubscribed = PushInfo {
            kind: PushKind::SUnsubscribe,
            data: vec![Value::BulkString(b"ch".to_vec()), Value::Int(0)],
        };
        fanout.on_push(fanout.generation(), unsubscribed.clone());
        assert!(!*active.borrow());
        assert!(sub.queue().is_lagged());
        assert!(matches!(hub.try_recv(), Ok(HubMsg::Resubscribe(c)) if &*c == "ch"));
        drop(sub);
        let _ = hub.try_recv();
        // Our own unsubscribe of a channel nobody listens to is just a confirmation.
        fanout.on_push(fanout.generation(), unsubscribed);
        assert!(hub.try_recv().is_err());
    }
}
