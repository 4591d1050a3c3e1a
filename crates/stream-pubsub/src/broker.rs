//! The broker: publish, subscribe, and the channel registry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use stream_core::replay::{self, ChannelLog, HistoryPage, Live, LiveFeed, Liveness, ReplayOptions};
use stream_core::{
    BoxError, CancelOutcome, ChannelConfig, ChannelId, ChannelRegistry, Event, EventId, EventPublisher,
    EventSubscriber, PublishError, RegistryError, SharedEvent, SubscribeError, Subscription, UserId,
};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::fanout::{Fanout, HubMsg, Registration};
use crate::history::{HistoryRead, resume_point};
use crate::keys::{ACCEPT_SUFFIXES, ChannelKeys, KeyArg, cancel_key, owner_key};
use crate::scripts::Scripts;
use crate::wire;
use stream_core::group_commit::GroupCommit;
use stream_redis::{SharedConnection, evalsha, on_runtime};

/// A Redis broker: a per-channel history with one shared subscriber connection per broker.
///
/// - **Publish** is one `EVALSHA` round trip per call (and per [`publish_batch`]): the script, run
///   under the channel's hash tag, gives each event the channel's next id (the server's time and
///   the channel's sequence number, see [`EventId`]), appends the call's events to the channel's
///   history stream as one entry per chunk of up to 64 (`XADD`, entry id `<epoch>-<last seq>`;
///   trimmed by sequence number to `history_max_len`), publishes each chunk as one message
///   (`PUBLISH`, or `SPUBLISH` on a cluster; the events travel as the publisher serialized them,
///   the ids beside them, see `docs/pubsub.md`), renews the history and owner TTLs now and
///   then, and records the first `done` id; it returns the ids. Overlapping publishes of one
///   channel in this process share a call. So the channel's order is the order in which Redis
///   ran the scripts, whoever published, from any process or host. A publish whose reply did not
///   come (a timeout, a broken connection) is resent in a form that finds its first run by a
///   token and returns the same ids: never a second copy. It works from a plain thread with no
///   runtime (a `BlockingEmitter`): the work then runs on the runtime the broker was built on.
/// - **Subscribe** registers a local subscriber with a bounded queue on the broker's one
///   subscriber connection (no connection per subscription; the first local subscriber of a
///   channel costs one `SUBSCRIBE` round trip), waits until the subscription is confirmed, then
///   runs stream-core's [`replay`]: the history after the requested id (one round trip), then
///   live, with the gap rule and the producer watch.
/// - **Slow subscribers**: a subscriber whose queue (`subscriber_queue`) is full stops receiving
///   live messages; once it has drained its queue it refills from history after its last event,
///   and whatever the history no longer holds is reported by one `gap` event
///   (`{"missed": n, "reason": …}`).
/// - **Producer liveness**: an emitter's heartbeats keep the channel's liveness record (`…:l`);
///   a quiet channel's subscriptions check it every `heartbeat_interval`, and the first to find
///   it lapsed ends the channel with `error` (`producer_lost`) and `done`, in one script. Nobody else waits; memory is bounded by the queue plus one
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
    /// Publishes of one channel that overlap go out in one script call (see [`Inner::publish`]).
    pub(crate) commits: GroupCommit<ChannelId, Prepared>,
}

/// An event as the publish script takes it, serialized by its publisher's task: its provisional
/// id (the first of a call is the call's resend token), whether it is a `done`, and its JSON.
pub(crate) struct Prepared {
    id: EventId,
    done: bool,
    json: Vec<u8>,
}

impl Prepared {
    fn new(event: &Event) -> Self {
        // Into a plain buffer: serde writes many small pieces, and a `Vec` takes them far more
        // cheaply than a command's argument writer (measured with perf on the emit benchmark).
        // An event always serializes.
        let mut json = Vec::with_capacity(256);
        let _ = serde_json::to_writer(&mut json, event);
        Self {
            id: event.id,
            done: event.kind.closes_stream(),
            json,
        }
    }
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
        self.inner.fanout.channel_count()
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
    /// The publish command of one channel's `events`: the keys and the events' JSON. Its resend
    /// form is [`resend_form`].
    fn publish_command(&self, channel: &ChannelId, events: &[Prepared]) -> redis::Cmd {
        let key = |suffix| KeyArg {
            prefix: &self.config.key_prefix,
            channel,
            suffix,
        };
        let mut cmd = redis::Cmd::with_capacity(
            15 + ACCEPT_SUFFIXES.len() + 2 * events.len().div_ceil(CHUNK),
            512 * events.len(),
        );
        cmd.arg("EVALSHA")
            .arg(self.scripts.publish.get_hash())
            .arg(ACCEPT_SUFFIXES.len());
        for suffix in ACCEPT_SUFFIXES {
            cmd.arg(key(suffix));
        }
        cmd.arg(key(""))
            .arg(&self.max_len)
            .arg(&self.ttl_ms)
            .arg(self.publish_command_name())
            .arg(events.first().map(|e| e.id.to_string()).unwrap_or_default())
            .arg("");
        for arg in self.event_args(events.iter().map(|e| (e.done, e.json.as_slice()))) {
            cmd.arg(arg);
        }
        cmd
    }

    /// The events of one script call as its arguments, in chunks of one history entry each.
    fn event_args<'a>(&self, events: impl ExactSizeIterator<Item = (bool, &'a [u8])>) -> Vec<Vec<u8>> {
        wire::event_args(events, self.config.history_max_len.min(CHUNK))
    }

    fn publish_command_name(&self) -> &'static str {
        if self.cluster { "SPUBLISH" } else { "PUBLISH" }
    }

    /// Publishes `events`: one `EVALSHA` per channel, sent together over the multiplexed
    /// connection (one round trip; on a cluster, one per node, in parallel). Returns the ids the
    /// scripts gave, in the order of `events` (a control event keeps its own).
    ///
    /// Publishes of one channel that overlap share a call (group commit, per channel): while a
    /// call of a channel is under way, the events published meanwhile to that channel, by any
    /// task or emitter of this process, queue and go out together in the next call, which starts
    /// when the call under way ends, or beside it once [`SPILL_AT`] events wait (at most
    /// [`CALLS_PER_CHANNEL`] at once). Nothing waits to fill a batch. Each caller's events stay
    /// together and in order, in one call; a publish made after another returned comes after it.
    /// Runs in a TRACE span (`publish`, with the first event's channel and the batch size).
    #[tracing::instrument(
        name = "publish",
        level = "trace",
        skip_all,
        fields(channel = events.first().map(|e| e.channel_id.as_str()), events = events.len())
    )]
    async fn publish(self: &Arc<Self>, events: &[Event]) -> Result<Vec<EventId>, PublishError> {
        let mut groups: Vec<(ChannelId, Vec<usize>)> = Vec::with_capacity(1);
        for (index, event) in events.iter().enumerate().filter(|(_, e)| !e.kind.is_control()) {
            match groups.iter_mut().find(|(ch, _)| *ch == event.channel_id) {
                Some((_, members)) => members.push(index),
                None => groups.push((event.channel_id.clone(), vec![index])),
            }
        }
        let mut ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let replies = match groups.as_slice() {
            // One channel (the usual case): no join over a list of futures.
            [(channel, members)] => vec![self.send_group(events, channel, members).await?],
            _ => {
                let sends = groups
                    .iter()
                    .map(|(channel, members)| self.send_group(events, channel, members));
                futures_util::future::try_join_all(sends).await?
            }
        };
        for ((_, members), assigned) in groups.iter().zip(replies) {
            for (&index, id) in members.iter().zip(assigned) {
                ids[index] = id;
            }
        }
        Ok(ids)
    }

    /// Publishes the `members` of `events` (all of `channel`) through the channel's group commit:
    /// their ids. Each event is serialized here, by its publisher's task.
    async fn send_group(
        self: &Arc<Self>,
        events: &[Event],
        channel: &ChannelId,
        members: &[usize],
    ) -> Result<Vec<EventId>, PublishError> {
        let prepared = members.iter().map(|&i| Prepared::new(&events[i])).collect();
        // The call's future is boxed (made by the leader only): inline, it would make every
        // submit's future as large as a whole Redis call's, copied on every publish (perf: 11% of
        // the emit benchmark's CPU went to memcpy here).
        self.commits
            .submit(channel, prepared, |batch| Box::pin(self.publish_call(channel, batch)))
            .await
    }

    /// One publish script call for one channel's `events`: their ids.
    async fn publish_call(
        self: &Arc<Self>,
        channel: &ChannelId,
        events: Vec<Prepared>,
    ) -> Result<Vec<EventId>, PublishError> {
        let cmd = self.publish_command(channel, &events);
        let inner = self.clone();
        let (ms, first) = on_runtime(&self.handle, async move {
            inner
                .commands
                .run_resend::<(u64, u64)>(&cmd, || resend_form(&cmd), Some(&inner.scripts.publish))
                .await
        })
        .await
        .map_err(|e| {
            if e.is_cancelled() {
                PublishError::Closed
            } else {
                PublishError::Backend(join_error(e))
            }
        })?
        .map_err(PublishError::Backend)?;
        metrics::counter!(stream_core::metrics::EVENTS_PUBLISHED, stream_core::metrics::BACKEND => "redis")
            .increment(events.len() as u64);
        Ok((0..events.len() as u64)
            .map(|k| EventId::from_parts(ms, first + k))
            .collect())
    }

    /// Runs the heartbeat or check script of a channel: keys and the common arguments, then `tail`.
    async fn channel_script(
        self: &Arc<Self>,
        script: fn(&Scripts) -> &redis::Script,
        channel: &ChannelId,
        tail: Vec<Vec<u8>>,
    ) -> Result<i64, BoxError> {
        let keys = ChannelKeys::new(&self.config.key_prefix, channel);
        let mut cmd = evalsha(script(&self.scripts), &keys.accept_keys());
        cmd.arg(&keys.pubsub)
            .arg(&self.max_len)
            .arg(&self.ttl_ms)
            .arg(self.publish_command_name())
            .arg(tail);
        let inner = self.clone();
        on_runtime(&self.handle, async move {
            inner.commands.run(&cmd, Some(script(&inner.scripts))).await
        })
        .await
        .map_err(join_error)?
    }

    /// Reads the channel's done marker and history after `after`: one round trip.
    async fn read_history(self: Arc<Self>, keys: ChannelKeys, after: Option<EventId>) -> Result<HistoryRead, BoxError> {
        let handle = self.handle.clone();
        on_runtime(&handle, async move {
            let mut cmd = evalsha(&self.scripts.read, &[&keys.history, &keys.done, &keys.owner, &keys.seq]);
            let (ms, seq) = resume_point(after);
            cmd.arg(ms).arg(seq);
            let reply: redis::Value = self.commands.run(&cmd, Some(&self.scripts.read)).await?;
            HistoryRead::parse(reply)
        })
        .await
        .map_err(join_error)?
    }

    async fn open(self: Arc<Self>, channel: ChannelId, after: Option<EventId>) -> Result<Subscription, SubscribeError> {
        let pubsub = ChannelKeys::new(&self.config.key_prefix, &channel).pubsub;
        // Subscribe first, then read the history: whatever is published in between arrives both
        // ways and the replay drops the copy by id; nothing falls between the two.
        let (registration, mut active) = self.fanout.register(&pubsub);
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
        let feed = Feed {
            registration,
            active,
            confirm: None,
        };
        let options = ReplayOptions {
            producer_check: self.config.heartbeat_interval,
        };
        replay::open(Arc::new(Log(self)), channel, after, feed, options).await
    }
}

/// The broker's stored side, as the replay reads it.
struct Log(Arc<Inner>);

impl ChannelLog for Log {
    async fn read_after(&self, channel: &ChannelId, after: Option<EventId>) -> Result<HistoryPage, SubscribeError> {
        let inner = self.0.clone();
        let keys = ChannelKeys::new(&inner.config.key_prefix, channel);
        let read = inner.read_history(keys, after).await.map_err(SubscribeError::Backend)?;
        Ok(HistoryPage {
            // The first entry read may also hold the events up to `after` (one entry per call).
            events: read
                .entries
                .into_iter()
                .filter_map(parse_entry)
                .filter(|e| after.is_none_or(|a| e.id() > a))
                .collect(),
            done: read.done,
            owner_known: read.owner_known,
            history_kept: read.history_kept,
        })
    }

    async fn check_producer(&self, channel: &ChannelId) -> Result<Liveness, SubscribeError> {
        let inner = &self.0;
        let events: Vec<(bool, String)> = replay::producer_lost_events(channel)
            .iter()
            .map(|e| (e.kind.closes_stream(), e.to_json()))
            .collect();
        let tail = inner.event_args(events.iter().map(|(done, json)| (*done, json.as_bytes())));
        let found = inner
            .channel_script(|s| &s.check, channel, tail)
            .await
            .map_err(SubscribeError::Backend)?;
        Ok(match found {
            -1 => Liveness::Done,
            -2 => Liveness::Unknown,
            0 => Liveness::Lost,
            left => Liveness::Alive(Duration::from_millis(left.unsigned_abs())),
        })
    }
}

/// The most events of one history entry (and pub/sub message): fewer when the history is shorter.
const CHUNK: usize = 64;

/// The most publish calls of one channel under way at once ([`GroupCommit::with_depth`]): while
/// Redis runs one, the next is already on its way, with the events published meanwhile. Their
/// order is the order Redis runs them in, which is the order they were sent in unless one is
/// resent after a lost connection; publishes that overlap have no order of their own.
pub(crate) const CALLS_PER_CHANNEL: usize = 2;

/// The events that must be queued for a channel before a second call starts beside the one under
/// way; fewer wait for it to end and go out together. A/B on this project's benchmarks (2 cores,
/// Redis on loopback), medians of runs in one session:
/// - 64 tasks emitting to one channel: one call at a time 119-127k events/s; a second call at once
///   (a spill of 1) 120-166k; at 16 queued events 163k;
/// - one stream fed by 32 HTTP publishers (CPU-bound): one call at a time 12.8-14.3k/s; a spill of
///   1 13.4-13.6k, with Redis busier (26 % against 21 %: more, smaller calls); at 16 14.3-15.5k.
pub(crate) const SPILL_AT: usize = 16;

/// The position of the resend flag among a publish command's arguments: `EVALSHA`, the SHA, the
/// key count, the keys, then the channel, the history length, the TTL, the publish command and
/// the token (see the publish script).
const RESEND_ARG: usize = 3 + ACCEPT_SUFFIXES.len() + 5;

/// A publish command's resend form: the same arguments with the resend flag set, so that the
/// script looks for its first run. Made only when a resend happens (a byte copy, no event
/// serialized again).
fn resend_form(cmd: &redis::Cmd) -> redis::Cmd {
    let mut resend = redis::Cmd::with_capacity(cmd.args_iter().len(), 0);
    for (index, arg) in cmd.args_iter().enumerate() {
        match arg {
            redis::Arg::Simple(_) if index == RESEND_ARG => resend.arg("1"),
            redis::Arg::Simple(bytes) => resend.arg(bytes),
            // A publish command has no cursor.
            _ => &mut resend,
        };
    }
    resend
}

fn parse_entry(json: Vec<u8>) -> Option<SharedEvent> {
    match SharedEvent::from_json(json.into()) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(error = %e, "skipping a history entry that is not an event");
            None
        }
    }
}

/// A Redis subscriber's live feed: its queue on the shared connection. After a lost connection
/// (or a subscription the server dropped) the lag notice waits until the channel is confirmed
/// live again, so that the replay's history read cannot miss what is published meanwhile.
struct Feed {
    registration: Registration,
    active: watch::Receiver<bool>,
    /// The wait for the channel to be confirmed again, boxed only while it runs.
    confirm: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl LiveFeed for Feed {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Live>> {
        if let Some(confirm) = &mut self.confirm {
            let live = ready!(confirm.as_mut().poll(cx));
            self.confirm = None;
            return Poll::Ready(live.then_some(Live::Lagged));
        }
        match ready!(self.registration.queue().poll_recv(cx)) {
            Some(Live::Lagged) if !*self.active.borrow() => {
                let mut active = self.active.clone();
                self.confirm = Some(Box::pin(async move { active.wait_for(|a| *a).await.is_ok() }));
                self.poll_recv(cx)
            }
            item => Poll::Ready(item),
        }
    }
}

#[async_trait]
impl EventPublisher for RedisBroker {
    /// One `EVALSHA` round trip (id, history append, publish). Control events are ignored.
    async fn publish(&self, event: &Event) -> Result<EventId, PublishError> {
        let ids = self.inner.publish(std::slice::from_ref(event)).await?;
        Ok(ids[0])
    }

    /// One round trip for the whole batch: one `EVALSHA` per channel in the batch, sent together
    /// (on a cluster, in parallel to the channels' nodes).
    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<EventId>, PublishError> {
        self.inner.publish(events).await
    }

    /// Yes: overlapping publishes of one channel in this process share a script call.
    fn groups_publishes(&self) -> bool {
        true
    }

    /// One `EVALSHA` round trip: records the request for the history TTL, unless the channel's
    /// `done` is known (one script, so a cancel and a `done` never both win).
    async fn request_cancel(&self, channel: &ChannelId) -> Result<CancelOutcome, PublishError> {
        let config = &self.inner.config;
        let keys = ChannelKeys::new(&config.key_prefix, channel);
        let mut cmd = evalsha(
            &self.inner.scripts.cancel,
            &[&keys.done, &cancel_key(&config.key_prefix, channel)],
        );
        cmd.arg(u64::try_from(config.history_ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let recorded: i64 = self
            .run_command(cmd, Some(|s: &Scripts| &s.cancel))
            .await
            .map_err(PublishError::Backend)?;
        Ok(if recorded == 1 {
            CancelOutcome::Requested
        } else {
            CancelOutcome::AlreadyDone
        })
    }

    /// One `EXISTS` round trip.
    async fn cancel_requested(&self, channel: &ChannelId) -> Result<bool, PublishError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(cancel_key(&self.inner.config.key_prefix, channel));
        let n: i64 = self.run_command(cmd, None).await.map_err(PublishError::Backend)?;
        Ok(n == 1)
    }

    /// One `EVALSHA` round trip: sets the liveness record (the server's time plus `ttl`) and
    /// renews the history, or deletes the record for `None`.
    async fn heartbeat(&self, channel: &ChannelId, ttl: Option<Duration>) -> Result<(), PublishError> {
        let ttl = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1).to_string());
        self.inner
            .channel_script(|s| &s.heartbeat, channel, vec![ttl.unwrap_or_default().into_bytes()])
            .await
            .map(drop)
            .map_err(PublishError::Backend)
    }
}

impl RedisBroker {
    /// Runs `cmd` (with `script`, if it is one) on the broker's runtime.
    async fn run_command<T: redis::FromRedisValue + Send + 'static>(
        &self,
        cmd: redis::Cmd,
        script: Option<fn(&Scripts) -> &redis::Script>,
    ) -> Result<T, BoxError> {
        let inner = self.inner.clone();
        on_runtime(&self.inner.handle, async move {
            inner.commands.run(&cmd, script.map(|s| s(&inner.scripts))).await
        })
        .await
        .map_err(join_error)?
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
