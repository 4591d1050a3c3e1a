//! The local fan-out, for broker implementations: which local subscribers listen to which
//! channel, and the delivery of each event into their bounded queues.
//!
//! Both brokers use it (the memory broker for its channels, the Redis broker for the messages of
//! its one subscriber connection), and the replay ([`crate::replay`]) reads a
//! [`LocalSubscription`] as its live feed.
//!
//! - **Sharded.** Channels live in [`SHARDS`] maps, each behind its own lock, picked by the
//!   channel's hash: subscribers of different channels do not contend.
//! - **No lock across the list.** A channel's subscribers are an immutable snapshot
//!   (`Arc<[…]>`), replaced when one joins or leaves. [`LocalFanout::dispatch`] takes the snapshot
//!   under its shard's lock for the time of one reference count, then writes into the queues with
//!   the shard unlocked; subscribing and other channels never wait for a fan-out.
//! - **Never waits.** Each subscriber's queue is bounded. A full queue is marked *lagged*: its
//!   subscriber takes what it queued, then reads what it missed from history (the replay does
//!   it), and the fan-out skips it until then. The event itself is shared ([`SharedEvent`]): a delivery is a
//!   reference count and a queue push, never a copy.
//! - **Small when idle.** A queue allocates on its first event (and gives its memory back when it
//!   drains after a burst); an idle subscriber holds a few dozen bytes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::replay::{Live, LiveFeed};
use crate::shared::SharedEvent;

/// The number of shards of a [`LocalFanout`].
pub const SHARDS: usize = 16;

/// A queue that drained keeps at most this many slots of its allocation.
const KEEP_SLOTS: usize = 16;

/// One local subscriber's bounded queue.
#[derive(Debug)]
pub struct SubscriberQueue {
    capacity: usize,
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<SharedEvent>,
    /// The subscriber missed events (its queue overflowed, or the broker lost its connection):
    /// it must read the history before anything else, and nothing is queued until it has.
    lagged: bool,
    closed: bool,
    waker: Option<Waker>,
}

impl SubscriberQueue {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `event` (a reference count), unless the subscriber is lagged. A full queue is
    /// marked lagged. Never waits.
    pub fn offer(&self, event: &SharedEvent) {
        self.offer_all(std::slice::from_ref(event));
    }

    /// Queues `events` in order, as [`offer`](Self::offer) does, under one lock and with one
    /// wake-up.
    pub fn offer_all(&self, events: &[SharedEvent]) {
        let mut state = self.lock();
        if state.lagged || state.closed {
            return;
        }
        for event in events {
            if state.items.len() >= self.capacity {
                state.lagged = true;
                break;
            }
            state.items.push_back(event.clone());
        }
        wake(state);
    }

    /// Marks the subscriber lagged (the broker lost events it should have had): once it has
    /// taken what it queued, it reads the history.
    pub fn mark_lagged(&self) {
        let mut state = self.lock();
        state.lagged = true;
        wake(state);
    }

    /// Ends the feed: the subscriber's next receive returns `None`.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        wake(state);
    }

    /// Whether the subscriber is marked lagged and has not read its history yet.
    pub fn is_lagged(&self) -> bool {
        self.lock().lagged
    }

    /// The next item: a queued event, then [`Live::Lagged`] (once per mark) when the queue is
    /// drained, or `None` once closed.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Live>> {
        let mut state = self.lock();
        if let Poll::Ready(live) = state.take() {
            return Poll::Ready(live);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next item if there is one now, as [`poll_recv`](Self::poll_recv) gives it;
    /// `Pending` when there is none (no waker is kept).
    pub fn try_recv(&self) -> Poll<Option<Live>> {
        self.lock().take()
    }
}

/// Wakes the queue's reader, if it waits, after unlocking.
fn wake(mut state: MutexGuard<'_, QueueState>) {
    let waker = state.waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl QueueState {
    fn take(&mut self) -> Poll<Option<Live>> {
        if let Some(event) = self.items.pop_front() {
            if self.items.is_empty() && self.items.capacity() > KEEP_SLOTS {
                self.items = VecDeque::new();
            }
            return Poll::Ready(Some(Live::Event(event)));
        }
        // Everything queued came before the overflow or the lost connection; the rest is in the
        // history.
        if self.lagged {
            self.lagged = false;
            return Poll::Ready(Some(Live::Lagged));
        }
        if self.closed { Poll::Ready(None) } else { Poll::Pending }
    }
}

/// A channel's entry: its subscribers (an immutable snapshot) and the broker's per-channel state.
struct Entry<S> {
    subs: Arc<[Arc<SubscriberQueue>]>,
    state: S,
}

type Shard<S> = Mutex<HashMap<Box<str>, Entry<S>>>;

/// Called with a channel's name when its last local subscriber leaves.
type OnEmpty = Box<dyn Fn(&str) + Send + Sync>;

/// The registry of local subscribers per channel, and the fan-out of events into their queues.
///
/// `S` is what the broker keeps per channel while it has subscribers (the Redis broker: whether
/// its subscription is confirmed).
pub struct LocalFanout<S = ()> {
    shards: Box<[Shard<S>]>,
    hasher: RandomState,
    queue: usize,
    on_empty: Option<OnEmpty>,
}

impl<S: Send + 'static> std::fmt::Debug for LocalFanout<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFanout")
            .field("queue", &self.queue)
            .field("channels", &self.channel_count())
            .finish()
    }
}

impl<S: Send + 'static> LocalFanout<S> {
    /// A fan-out whose subscribers each queue up to `queue` events.
    pub fn new(queue: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            queue: queue.max(1),
            on_empty: None,
        }
    }

    /// Calls `f` with a channel's name when its last local subscriber leaves (the entry is gone
    /// by then).
    #[must_use]
    pub fn on_empty(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_empty = Some(Box::new(f));
        self
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, HashMap<Box<str>, Entry<S>>> {
        let index = (self.hasher.hash_one(channel) % SHARDS as u64) as usize;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shards(&self) -> impl Iterator<Item = MutexGuard<'_, HashMap<Box<str>, Entry<S>>>> {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Adds a local subscriber to `channel`. The channel's first subscriber creates its state with
    /// `init`. `with` sees the state and whether this subscriber is the first, under the shard's
    /// lock (so a broker can start its own subscription exactly once).
    pub fn register<R>(
        self: &Arc<Self>,
        channel: &str,
        init: impl FnOnce() -> S,
        with: impl FnOnce(&S, bool) -> R,
    ) -> (LocalSubscription<S>, R) {
        let queue = Arc::new(SubscriberQueue::new(self.queue));
        let mut shard = self.shard(channel);
        let result = match shard.get_mut(channel) {
            Some(entry) => {
                let subs: Arc<[_]> = entry.subs.iter().cloned().chain([queue.clone()]).collect();
                entry.subs = subs;
                with(&entry.state, false)
            }
            None => {
                let entry = shard.entry(channel.into()).or_insert(Entry {
                    subs: Arc::new([queue.clone()]),
                    state: init(),
                });
                with(&entry.state, true)
            }
        };
        drop(shard);
        let subscription = LocalSubscription {
            fanout: self.clone(),
            channel: channel.into(),
            queue,
        };
        (subscription, result)
    }

    fn unregister(&self, channel: &str, queue: &Arc<SubscriberQueue>) {
        let mut shard = self.shard(channel);
        let Some(entry) = shard.get_mut(channel) else {
            return;
        };
        if entry.subs.iter().all(|q| Arc::ptr_eq(q, queue)) {
            shard.remove(channel);
            drop(shard);
            if let Some(on_empty) = &self.on_empty {
                on_empty(channel);
            }
        } else {
            entry.subs = entry.subs.iter().filter(|q| !Arc::ptr_eq(q, queue)).cloned().collect();
        }
    }

    /// Delivers `event` to every local subscriber of `channel`; returns how many there were.
    /// The shard is locked only to take the subscriber list.
    pub fn dispatch(&self, channel: &str, event: &SharedEvent) -> usize {
        self.dispatch_all(channel, std::slice::from_ref(event))
    }

    /// Delivers `events`, in order, to every local subscriber of `channel`: one queue lock and
    /// one wake-up per subscriber for them all. Returns how many subscribers there were.
    pub fn dispatch_all(&self, channel: &str, events: &[SharedEvent]) -> usize {
        let Some(subs) = self.subscribers(channel) else {
            return 0;
        };
        for queue in subs.iter() {
            queue.offer_all(events);
        }
        subs.len()
    }

    /// The subscribers of `channel` now (a snapshot: one reference count, the shard locked only
    /// to take it), or `None` when it has none. Deliver with [`SubscriberQueue::offer_all`].
    pub fn subscribers(&self, channel: &str) -> Option<Arc<[Arc<SubscriberQueue>]>> {
        self.shard(channel).get(channel).map(|e| e.subs.clone())
    }

    /// Calls `f` with the state and subscribers of `channel`, if it has subscribers.
    pub fn with_channel<R>(&self, channel: &str, f: impl FnOnce(&S, &[Arc<SubscriberQueue>]) -> R) -> Option<R> {
        self.shard(channel).get(channel).map(|e| f(&e.state, &e.subs))
    }

    /// Calls `f` for every channel that has subscribers (one shard locked at a time).
    pub fn for_each(&self, mut f: impl FnMut(&str, &S, &[Arc<SubscriberQueue>])) {
        for shard in self.shards() {
            for (name, entry) in shard.iter() {
                f(name, &entry.state, &entry.subs);
            }
        }
    }

    /// Whether `channel` has local subscribers.
    pub fn contains(&self, channel: &str) -> bool {
        self.shard(channel).contains_key(channel)
    }

    /// The channels that have local subscribers.
    pub fn channel_names(&self) -> Vec<Box<str>> {
        let mut names = Vec::new();
        self.for_each(|name, _, _| names.push(name.into()));
        names
    }

    /// The number of channels that have local subscribers.
    pub fn channel_count(&self) -> usize {
        self.shards().map(|shard| shard.len()).sum()
    }

    /// The number of local subscribers of `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.with_channel(channel, |_, subs| subs.len()).unwrap_or(0)
    }
}

/// A local subscriber of one channel: its queue, registered until dropped. It is a
/// [`LiveFeed`] for the replay.
#[must_use = "dropping a local subscription unregisters it"]
pub struct LocalSubscription<S: Send + 'static = ()> {
    fanout: Arc<LocalFanout<S>>,
    channel: Box<str>,
    queue: Arc<SubscriberQueue>,
}

impl<S: Send + 'static> LocalSubscription<S> {
    /// This subscriber's queue.
    pub fn queue(&self) -> &Arc<SubscriberQueue> {
        &self.queue
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl<S: Send + 'static> std::fmt::Debug for LocalSubscription<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSubscription")
            .field("channel", &self.channel)
            .finish()
    }
}

impl<S: Send + 'static> Drop for LocalSubscription<S> {
    fn drop(&mut self) {
        self.fanout.unregister(&self.channel, &self.queue);
    }
}

impl<S: Send + Sync + 'static> LiveFeed for LocalSubscription<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Live>> {
        self.queue.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelId, Event};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(n: u64) -> SharedEvent {
        SharedEvent::from_event(Event::data(ChannelId::new("c").unwrap(), "n", n).unwrap())
    }

    fn recv(sub: &LocalSubscription) -> Poll<Option<Live>> {
        sub.queue.try_recv()
    }

    #[test]
    fn a_full_queue_is_marked_and_skipped_until_the_subscriber_has_caught_up() {
        let fanout = Arc::new(LocalFanout::<()>::new(2));
        let (slow, first) = fanout.register("ch", || (), |_, first| first);
        assert!(first);
        let (fast, first) = fanout.register("ch", || (), |_, first| first);
        assert!(!first);
        assert_eq!(fanout.dispatch("ch", &event(0)), 2);
        fanout.dispatch("ch", &event(1));
        assert!(matches!(recv(&fast), Poll::Ready(Some(Live::Event(e))) if e.event().payload["n"] == 0));
        fanout.dispatch("ch", &event(2));
        assert!(slow.queue.is_lagged(), "the slow subscriber overflowed");
        assert!(!fast.queue.is_lagged());
        for n in 1..=2 {
            assert!(matches!(recv(&fast), Poll::Ready(Some(Live::Event(e))) if e.event().payload["n"] == n));
        }
        fanout.dispatch("ch", &event(3));
        for n in 0..=1 {
            assert!(matches!(recv(&slow), Poll::Ready(Some(Live::Event(e))) if e.event().payload["n"] == n));
        }
        assert!(matches!(recv(&slow), Poll::Ready(Some(Live::Lagged))));
        assert!(recv(&slow).is_pending(), "nothing queued while lagged");
        fanout.dispatch("ch", &event(4));
        assert!(matches!(recv(&slow), Poll::Ready(Some(Live::Event(e))) if e.event().payload["n"] == 4));
        for n in 3..=4 {
            assert!(matches!(recv(&fast), Poll::Ready(Some(Live::Event(e))) if e.event().payload["n"] == n));
        }
    }

    #[test]
    fn the_last_subscriber_leaving_removes_the_channel() {
        let emptied = Arc::new(AtomicUsize::new(0));
        let seen = emptied.clone();
        let fanout = Arc::new(LocalFanout::<()>::new(4).on_empty(move |ch| {
            assert_eq!(ch, "ch");
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        let (a, ()) = fanout.register("ch", || (), |_, _| ());
        let (b, ()) = fanout.register("ch", || (), |_, _| ());
        assert_eq!(fanout.subscriber_count("ch"), 2);
        drop(a);
        assert_eq!(fanout.subscriber_count("ch"), 1);
        assert_eq!(emptied.load(Ordering::SeqCst), 0);
        drop(b);
        assert!(!fanout.contains("ch"));
        assert_eq!(emptied.load(Ordering::SeqCst), 1);
        assert_eq!(fanout.dispatch("ch", &event(0)), 0);
    }

    #[test]
    fn closing_ends_the_feed_after_the_queue() {
        let fanout = Arc::new(LocalFanout::<()>::new(4));
        let (sub, ()) = fanout.register("ch", || (), |_, _| ());
        fanout.dispatch("ch", &event(0));
        sub.queue.close();
        assert!(matches!(recv(&sub), Poll::Ready(Some(Live::Event(_)))));
        assert!(matches!(recv(&sub), Poll::Ready(None)));
    }
}
