//! The broker: publish, subscribe, and the channel registry.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, json};
use stream_core::{
    BoxError, ChannelConfig, ChannelId, ChannelRegistry, Event, EventCursor, EventId, EventPublisher, EventSubscriber,
    EventType, PublishError, RegistryError, SubscribeError, Subscription, UserId,
};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::fanout::{Fanout, HubMsg, Live, Registration};
use crate::history::{HistoryRead, start_after};
use crate::keys::{ChannelKeys, KeyArg, owner_key};
use crate::scripts::Scripts;
use stream_redis::{SharedConnection, evalsha, on_runtime};

/// A Redis broker: a per-channel history with one shared subscriber connection per broker.
///
/// - **Publish** is one `EVALSHA` round trip per call (and per [`publish_batch`]): the script
///   appends each event to the channel's history stream (`XADD MAXLEN ~ history_max_len`),
///   publishes it (`PUBLISH`, or `SPUBLISH` on a cluster), renews the history TTL, and records
///   the first `done` id. It works from a plain thread with no runtime (a `BlockingEmitter`):
///   the work then runs on the runtime the broker was built on.
/// - **Subscribe** registers a local subscriber with a bounded queue on the broker's one
///   subscriber connection (no connection per subscription; the first local subscriber of a
///   channel costs one `SUBSCRIBE` round trip), waits until the subscription is confirmed, then
///   reads the history after the requested id (one round trip), then goes live, dropping any
///   event whose id is not greater than the last one yielded.
/// - **Slow subscribers**: a subscriber whose queue (`subscriber_queue`) is full stops receiving
///   live messages; once it has drained its queue it refills from history after its last event,
///   and whatever the history no longer holds is reported by one `gap` event
///   (`{"missed": n, "reason": …}`). Nobody else waits; memory is bounded by the queue plus one
///   history read.
/// - **Reconnect**: when the subscriber connection is lost, every local subscriber is marked the
///   same way; the broker reconnects with backoff, subscribes every channel again, and each
///   subscriber refills from history: no loss (while the history holds it), no duplicate.
///
/// It also records channel owners ([`ChannelRegistry`]). Cloning shares the broker; the
/// subscriber connection closes when the broker and all its subscriptions are dropped.
///
/// [`publish_batch`]: EventPublisher::publish_batch
#[derive(Clone)]
pub struct RedisBroker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ChannelConfig,
    pub(crate) handle: Handle,
    pub(crate) commands: SharedConnection,
    pub(crate) fanout: Arc<Fanout>,
    pub(crate) scripts: Scripts,
    pub(crate) cluster: bool,
    pub(crate) client_name: String,
    pub(crate) subscribe_wait: Duration,
    pub(crate) max_len: String,
    pub(crate) ttl_ms: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.fanout.hub().send(HubMsg::Shutdown);
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("cluster", &self.inner.cluster)
            .field("client_name", &self.inner.client_name)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl RedisBroker {
    /// The broker's channel settings.
    pub fn config(&self) -> &ChannelConfig {
        &self.inner.config
    }

    /// Whether the broker talks to a Redis Cluster (sharded pub/sub).
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster
    }

    /// The `CLIENT SETNAME` of the subscriber connection (each node's, on a cluster).
    pub fn client_name(&self) -> &str {
        &self.inner.client_name
    }

    /// The number of channels that have local subscribers, and so a subscription on the shared
    /// connection.
    pub fn local_channel_count(&self) -> usize {
        self.inner.fanout.channel_names().len()
    }
}

fn join_error(e: tokio::task::JoinError) -> BoxError {
    if e.is_cancelled() {
        "the broker's runtime has shut down".into()
    } else {
        format!("the broker task failed: {e}").into()
    }
}

impl Inner {
    /// The publish commands for `events`: one `EVALSHA` per channel, holding that channel's
    /// events in order. Control events are skipped. The keys and the event JSON are written
    /// straight into the command buffer.
    fn publish_commands(&self, events: &[Event]) -> Vec<redis::Cmd> {
        let mut groups: Vec<(&ChannelId, redis::Cmd)> = Vec::with_capacity(1);
        for event in events.iter().filter(|e| !e.kind.is_control()) {
            let index = match groups.iter().position(|(ch, _)| *ch == &event.channel_id) {
                Some(index) => index,
                None => {
                    let key = |suffix| KeyArg {
                        prefix: &self.config.key_prefix,
                        channel: &event.channel_id,
                        suffix,
                    };
                    let mut cmd = redis::Cmd::with_capacity(12, 512);
                    cmd.arg("EVALSHA")
                        .arg(self.scripts.publish.get_hash())
                        .arg(2)
                        .arg(key(":h"))
                        .arg(key(":d"))
                        .arg(key(""))
                        .arg(&self.max_len)
                        .arg(&self.ttl_ms)
                        .arg(if self.cluster { "SPUBLISH" } else { "PUBLISH" });
                    groups.push((&event.channel_id, cmd));
                    groups.len() - 1
                }
            };
            let cmd = &mut groups[index].1;
            cmd.arg(event.id.unix_ms());
            if event.kind.closes_stream() {
                cmd.arg(event.id.to_string());
            } else {
                cmd.arg("");
            }
            cmd.arg(EventJson(event));
        }
        groups.into_iter().map(|(_, cmd)| cmd).collect()
    }

    /// Publishes `events`: one `EVALSHA` per channel, sent together over the multiplexed
    /// connection (one round trip; on a cluster, one per node, in parallel).
    async fn publish(self: &Arc<Self>, events: &[Event]) -> Result<(), PublishError> {
        let cmds = self.publish_commands(events);
        if cmds.is_empty() {
            return Ok(());
        }
        let inner = self.clone();
        on_runtime(&self.handle, async move {
            let script = Some(&inner.scripts.publish);
            if cmds.len() == 1 {
                return inner.commands.run::<()>(&cmds[0], script).await;
            }
            futures_util::future::try_join_all(cmds.iter().map(|cmd| inner.commands.run::<()>(cmd, script)))
                .await
                .map(drop)
        })
        .await
        .map_err(|e| {
            if e.is_cancelled() {
                PublishError::Closed
            } else {
                PublishError::Backend(join_error(e))
            }
        })?
        .map_err(PublishError::Backend)
    }

    /// Reads the channel's position, done marker and history from `start` on: one round trip.
    async fn read_history(self: Arc<Self>, keys: Arc<ChannelKeys>, start: String) -> Result<HistoryRead, BoxError> {
        let handle = self.handle.clone();
        on_runtime(&handle, async move {
            let mut cmd = evalsha(&self.scripts.read, &[&keys.history, &keys.done]);
            cmd.arg(start);
            let reply: redis::Value = self.commands.run(&cmd, Some(&self.scripts.read)).await?;
            HistoryRead::parse(reply)
        })
        .await
        .map_err(join_error)?
    }

    async fn open(self: Arc<Self>, channel: ChannelId, after: Option<EventId>) -> Result<Subscription, SubscribeError> {
        let keys = Arc::new(ChannelKeys::new(&self.config.key_prefix, &channel));
        // Subscribe first, then read the history: whatever is published in between arrives both
        // ways and the copy is dropped by id; nothing falls between the two.
        let (registration, rx, mut active) = self.fanout.register(&keys.pubsub);
        match tokio::time::timeout(self.subscribe_wait, active.wait_for(|a| *a)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(SubscribeError::Closed("the broker is shutting down".into())),
            Err(_) => {
                return Err(SubscribeError::Backend(
                    format!(
                        "the shared redis subscriber did not confirm the subscription within {:?}",
                        self.subscribe_wait
                    )
                    .into(),
                ));
            }
        }
        let read = self
            .clone()
            .read_history(keys.clone(), start_after(after))
            .await
            .map_err(SubscribeError::Backend)?;
        if let (Some(done), Some(after)) = (read.done, after)
            && done <= after
        {
            return Ok(Subscription::finished());
        }
        let mut reader = Reader {
            inner: self,
            keys,
            channel,
            registration,
            rx,
            active,
            pending: VecDeque::new(),
            cursor: EventCursor::after(after),
            position: 0,
            echoes: VecDeque::new(),
        };
        // A new or resuming client gets what history holds, with no gap notice: like the
        // in-memory broker, only a subscriber that falls behind is told what it missed.
        reader.absorb(&read, false);
        Ok(Subscription::new(futures_util::stream::unfold(
            reader,
            |mut reader| async move {
                let item = reader.next().await?;
                Some((item, reader))
            },
        )))
    }
}

/// An event serialized straight into a command's buffer (no intermediate `String`).
struct EventJson<'a>(&'a Event);

impl redis::ToRedisArgs for EventJson<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        // An event always serializes, and a command buffer accepts every write.
        let _ = serde_json::to_writer(out.writer_for_next_arg(), self.0);
    }
}

fn parse_entry(json: &[u8]) -> Option<Event> {
    match serde_json::from_slice(json) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(error = %e, "skipping a history entry that is not an event");
            None
        }
    }
}

/// How many entries of a history read are remembered as possible echoes of live messages.
const MAX_ECHOES: usize = 4096;

/// One subscription: history first, then the local queue, with resyncs from history.
struct Reader {
    inner: Arc<Inner>,
    keys: Arc<ChannelKeys>,
    channel: ChannelId,
    registration: Registration,
    rx: mpsc::Receiver<Live>,
    active: watch::Receiver<bool>,
    /// Events to yield before the queue: the history read, or a refill.
    pending: VecDeque<Event>,
    cursor: EventCursor,
    /// The channel position (1 = its first event ever) of the newest event seen: yielded,
    /// dropped as a duplicate, or covered by a history read. Positions make `gap` counts exact.
    position: u64,
    /// `(id, position)` of the newest entries of the last history read: the live messages that
    /// may still arrive for them (published between the subscription and the read). The first
    /// live message that is not one of them clears the list: later ones cannot be.
    echoes: VecDeque<(EventId, u64)>,
}

impl Reader {
    fn take_live(&mut self, live: Live) -> Option<Event> {
        let position = match self.echoes.iter().position(|(id, _)| *id == live.id) {
            Some(index) => {
                let position = self.echoes[index].1;
                self.echoes.drain(..=index);
                position
            }
            None => {
                self.echoes.clear();
                self.position + 1
            }
        };
        self.position = self.position.max(position);
        self.cursor.accept(Arc::unwrap_or_clone(live))
    }

    /// Takes a history read: queues the entries after `position`, remembers the newest as
    /// possible echoes, and (when asked) reports with one `gap` the events between `position` and
    /// the first entry the history still holds.
    fn absorb(&mut self, read: &HistoryRead, report_gap: bool) {
        if read.added < self.position {
            // The channel expired and started over: its positions restarted.
            self.position = 0;
        }
        let count = read.entries.len();
        let first_new = (0..count)
            .map(|i| read.position(i))
            .find(|p| *p > self.position)
            .unwrap_or(read.added + 1);
        let missed = first_new.saturating_sub(self.position + 1);
        if report_gap && missed > 0 {
            let mut payload = Map::new();
            payload.insert("missed".into(), json!(missed));
            payload.insert("reason".into(), json!("subscriber fell behind the channel history"));
            if let Ok(gap) = Event::new(self.channel.clone(), EventType::Gap, payload) {
                self.pending.push_back(gap);
            }
        }
        self.echoes.clear();
        let echoes_from = count.saturating_sub(MAX_ECHOES);
        for (index, json) in read.entries.iter().enumerate() {
            let Some(event) = parse_entry(json) else {
                continue;
            };
            let position = read.position(index);
            if index >= echoes_from {
                self.echoes.push_back((event.id, position));
            }
            if position > self.position {
                self.pending.push_back(event);
            }
        }
        self.position = self.position.max(read.added);
    }

    /// Refills `pending` from history after the last event, with a `gap` for what history lost.
    async fn refill(&mut self) -> Result<(), SubscribeError> {
        let read = self
            .inner
            .clone()
            .read_history(self.keys.clone(), start_after(self.cursor.last_id()))
            .await
            .map_err(SubscribeError::Backend)?;
        self.absorb(&read, true);
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<Event, SubscribeError>> {
        let sub = self.registration.sub.clone();
        loop {
            if self.cursor.is_ended() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                match self.cursor.accept(event) {
                    Some(e) => return Some(Ok(e)),
                    None => continue,
                }
            }
            match self.rx.try_recv() {
                Ok(live) => {
                    if let Some(e) = self.take_live(live) {
                        return Some(Ok(e));
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            // The queue is drained: everything queued came before the overflow or the lost
            // connection. Once the channel is (again) confirmed live, read what was missed.
            if sub.resync.load(Ordering::SeqCst) {
                if self.active.wait_for(|a| *a).await.is_err() {
                    return None;
                }
                sub.resync.store(false, Ordering::SeqCst);
                if let Err(e) = self.refill().await {
                    sub.resync.store(true, Ordering::SeqCst);
                    return Some(Err(e));
                }
                continue;
            }
            tokio::select! {
                live = self.rx.recv() => match live {
                    Some(live) => {
                        if let Some(e) = self.take_live(live) {
                            return Some(Ok(e));
                        }
                    }
                    None => return None,
                },
                () = sub.wake.notified() => {}
            }
        }
    }
}

#[async_trait]
impl EventPublisher for RedisBroker {
    /// One `EVALSHA` round trip (history append + publish). Control events are ignored.
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.inner.publish(std::slice::from_ref(event)).await
    }

    /// One round trip for the whole batch: one `EVALSHA` per channel in the batch, sent together
    /// (on a cluster, in parallel to the channels' nodes).
    async fn publish_batch(&self, events: &[Event]) -> Result<(), PublishError> {
        self.inner.publish(events).await
    }
}

#[async_trait]
impl EventSubscriber for RedisBroker {
    /// Costs one history read round trip, plus one `SUBSCRIBE` round trip when the channel has no
    /// other local subscriber. Returns [`Subscription::finished`] when `after` is at or past the
    /// channel's `done` event.
    async fn subscribe(&self, channel: &ChannelId, after: Option<EventId>) -> Result<Subscription, SubscribeError> {
        let inner = self.inner.clone();
        let channel = channel.clone();
        on_runtime(&self.inner.handle, inner.open(channel, after))
            .await
            .map_err(|e| SubscribeError::Backend(join_error(e)))?
    }
}

#[async_trait]
impl ChannelRegistry for RedisBroker {
    /// One round trip (a script: set when absent or the same owner, with `PX ttl`).
    async fn register(&self, channel: &ChannelId, owner: &UserId, ttl: Duration) -> Result<(), RegistryError> {
        let inner = self.inner.clone();
        let mut cmd = evalsha(
            &inner.scripts.register,
            &[&owner_key(&inner.config.key_prefix, channel)],
        );
        cmd.arg(owner.as_str())
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let set: i64 = on_runtime(&self.inner.handle, async move {
            inner.commands.run(&cmd, Some(&inner.scripts.register)).await
        })
        .await
        .map_err(|e| RegistryError::Backend(join_error(e)))?
        .map_err(RegistryError::Backend)?;
        if set == 1 {
            Ok(())
        } else {
            Err(RegistryError::AlreadyOwned {
                channel: channel.clone(),
            })
        }
    }

    /// One `GET` round trip.
    async fn owner(&self, channel: &ChannelId) -> Result<Option<UserId>, RegistryError> {
        let inner = self.inner.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(owner_key(&inner.config.key_prefix, channel));
        let owner: Option<String> = on_runtime(&self.inner.handle, async move { inner.commands.run(&cmd, None).await })
            .await
            .map_err(|e| RegistryError::Backend(join_error(e)))?
            .map_err(RegistryError::Backend)?;
        owner
            .map(|o| UserId::new(o).map_err(|e| RegistryError::Backend(Box::new(e))))
            .transpose()
    }
}
