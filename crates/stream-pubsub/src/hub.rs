//! The hub: the one task that owns the broker's subscriber connection.
//!
//! It subscribes a channel when the channel gets its first local subscriber and unsubscribes it
//! when the last one leaves, batching whatever arrived meanwhile. When the connection is lost (a
//! `Disconnection` push, a failed health-check `PING`, a failed (un)subscribe), it reconnects
//! with exponential backoff, subscribes every channel again, and then marks the channels active;
//! each local subscriber then refills from history (see the reader).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, PushInfo, RedisResult};
use tokio::sync::mpsc;

use crate::fanout::{Fanout, HubMsg};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Channels per (UN)SUBSCRIBE command on a standalone server.
const CHUNK: usize = 512;
/// How many times [`SubscriberConn::locate`] looks for a dropped channel's new primary, and the
/// pause between two looks: about a second of gossip.
const LOCATE_TRIES: u32 = 20;
const LOCATE_PAUSE: Duration = Duration::from_millis(50);

/// The subscriber connection: RESP3, with the fan-out as its push sender.
pub(crate) enum SubscriberConn {
    /// One multiplexed connection; `SUBSCRIBE`.
    Standalone(MultiplexedConnection),
    /// One connection per node, managed by the cluster client; `SSUBSCRIBE`.
    Cluster(ClusterConnection),
}

impl SubscriberConn {
    /// Subscribes `channels`. On a cluster, `in_turn` sends the `SSUBSCRIBE`s one after another
    /// instead of together: after a node's connection broke, the cluster client opens a new
    /// connection for each concurrent command to that node and keeps only one, so subscriptions
    /// made on the others would be lost. Restores go in turn; new channels go together.
    async fn subscribe(&mut self, channels: &[Box<str>], in_turn: bool) -> RedisResult<()> {
        match self {
            Self::Standalone(conn) => {
                for chunk in channels.chunks(CHUNK) {
                    let names: Vec<&str> = chunk.iter().map(|c| &**c).collect();
                    conn.subscribe(names).await?;
                }
                Ok(())
            }
            Self::Cluster(conn) if in_turn => {
                for channel in channels {
                    conn.ssubscribe(&**channel).await?;
                }
                Ok(())
            }
            // Sharded channels of different slots cannot share one command.
            Self::Cluster(conn) => try_join_all(channels.iter().map(|c| {
                let mut conn = conn.clone();
                async move { conn.ssubscribe(&**c).await }
            }))
            .await
            .map(drop),
        }
    }

    async fn unsubscribe(&mut self, channels: &[Box<str>]) -> RedisResult<()> {
        match self {
            Self::Standalone(conn) => {
                for chunk in channels.chunks(CHUNK) {
                    let names: Vec<&str> = chunk.iter().map(|c| &**c).collect();
                    conn.unsubscribe(names).await?;
                }
                Ok(())
            }
            Self::Cluster(conn) => try_join_all(channels.iter().map(|c| {
                let mut conn = conn.clone();
                async move { conn.sunsubscribe(&**c).await }
            }))
            .await
            .map(drop),
        }
    }

    /// On a cluster, makes sure the client routes `channels` to the primaries that serve their
    /// slots now, before they are subscribed again after the server dropped them. After a failover
    /// the old primary is a replica, and a replica takes `SSUBSCRIBE` for its primary's slots
    /// without a `MOVED`: with its slot map still naming the old primary, the client would
    /// subscribe there again, and the broker would stay on a node an operator is about to take
    /// down. So, per channel: one keyed read (`EXISTS` of the channel's name, which carries its
    /// hash tag, so the same slot), which a node that no longer serves the slot answers with
    /// `MOVED`, making the client rebuild its slot map; then `ROLE` on the node the map now names.
    /// A map rebuilt from a node that has not heard of the failover yet still names the old
    /// primary (a replica): then again, a few times, before subscribing anyway (a replica's
    /// sharded subscribers still get the messages).
    async fn locate(&mut self, channels: &[Box<str>]) -> RedisResult<()> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let Self::Cluster(conn) = self else {
            return Ok(());
        };
        for channel in channels {
            let primary = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                channel.as_bytes(),
                SlotAddr::Master,
            )));
            for _ in 0..LOCATE_TRIES {
                redis::cmd("EXISTS").arg(&**channel).query_async::<i64>(conn).await?;
                let role = conn.route_command(redis::cmd("ROLE"), primary.clone()).await?;
                let is_primary = matches!(&role, redis::Value::Array(fields)
                    if matches!(fields.first(), Some(redis::Value::BulkString(r)) if r == b"master"));
                if is_primary {
                    break;
                }
                tracing::debug!(%channel, "the cluster client still routes to a replica; asking again");
                tokio::time::sleep(LOCATE_PAUSE).await;
            }
        }
        Ok(())
    }

    async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Self::Standalone(conn) => redis::cmd("PING").query_async(conn).await,
            Self::Cluster(conn) => redis::cmd("PING").query_async(conn).await,
        }
    }
}

/// Opens a standalone subscriber connection of a new generation and names it.
///
/// `client` must use RESP3 (pushes on a multiplexed connection).
///
/// `response_timeout` bounds each (un)subscribe and health `PING`: the client's own default
/// (500 ms) was too short for the acknowledgements of hundreds of channels on a busy server, and
/// a mass close then cost a needless reconnect.
pub(crate) async fn connect_standalone(
    client: &Client,
    fanout: &Arc<Fanout>,
    name: &str,
    response_timeout: Duration,
) -> RedisResult<MultiplexedConnection> {
    let generation = fanout.next_generation();
    let sender = fanout.clone();
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_push_sender(move |push: PushInfo| {
            sender.on_push(generation, push);
            Ok::<(), Infallible>(())
        });
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(conn)
}

/// Names every node connection of a cluster subscriber connection (`CLIENT SETNAME` goes to all
/// nodes). A node connection that the cluster client re-opens later is not renamed.
pub(crate) async fn name_cluster(conn: &mut ClusterConnection, name: &str) -> RedisResult<()> {
    redis::cmd("CLIENT").arg("SETNAME").arg(name).query_async(conn).await
}

pub(crate) struct Hub {
    fanout: Arc<Fanout>,
    rx: mpsc::UnboundedReceiver<HubMsg>,
    conn: SubscriberConn,
    /// Standalone only: how to open a fresh connection.
    client: Option<Client>,
    name: String,
    subscribed: HashSet<Box<str>>,
    health_interval: Duration,
    response_timeout: Duration,
}

impl Hub {
    pub(crate) fn new(
        fanout: Arc<Fanout>,
        rx: mpsc::UnboundedReceiver<HubMsg>,
        conn: SubscriberConn,
        client: Option<Client>,
        name: String,
        health_interval: Duration,
        response_timeout: Duration,
    ) -> Self {
        Self {
            fanout,
            rx,
            conn,
            client,
            name,
            subscribed: HashSet::new(),
            health_interval: health_interval.max(Duration::from_millis(100)),
            response_timeout,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut health = tokio::time::interval(self.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            let first = tokio::select! {
                msg = self.rx.recv() => msg,
                _ = health.tick() => {
                    if let Err(e) = self.conn.ping().await {
                        tracing::warn!(error = %e, "redis subscriber connection failed its health check");
                        if !self.recover().await {
                            return;
                        }
                    }
                    continue;
                }
            };
            let mut touched = HashSet::new();
            let mut dropped = Vec::new();
            let mut lost = false;
            // Channels the server dropped are subscribed again in turn (see `subscribe`).
            let mut resubscribing = false;
            let mut next = first;
            loop {
                match next {
                    None | Some(HubMsg::Shutdown) => return,
                    Some(HubMsg::Ensure(c) | HubMsg::Release(c)) => {
                        touched.insert(c);
                    }
                    Some(HubMsg::Resubscribe(c)) => {
                        tracing::info!(channel = %c, "redis dropped a subscription; subscribing again");
                        self.subscribed.remove(&c);
                        dropped.push(c.clone());
                        touched.insert(c);
                        resubscribing = true;
                    }
                    Some(HubMsg::Disconnected(generation)) => lost |= generation == self.fanout.generation(),
                }
                match self.rx.try_recv() {
                    Ok(msg) => next = Some(msg),
                    Err(_) => break,
                }
            }
            if lost {
                tracing::warn!("redis subscriber connection lost; reconnecting");
                if !self.recover().await {
                    return;
                }
                continue;
            }
            let located = self.conn.locate(&dropped).await;
            if let Err(e) = match located {
                Ok(()) => self.reconcile(&touched, resubscribing).await,
                Err(e) => Err(e),
            } {
                tracing::warn!(error = %e, "redis (un)subscribe failed; reconnecting");
                if !self.recover().await {
                    return;
                }
            }
        }
    }

    /// Brings the server-side subscriptions of `touched` in line with the local subscribers;
    /// `in_turn` as for [`SubscriberConn::subscribe`].
    async fn reconcile(&mut self, touched: &HashSet<Box<str>>, in_turn: bool) -> RedisResult<()> {
        let (add, remove) = self.fanout.diff(touched, &self.subscribed);
        if !remove.is_empty() {
            self.conn.unsubscribe(&remove).await?;
            for name in &remove {
                self.subscribed.remove(name);
            }
        }
        if !add.is_empty() {
            let started = std::time::Instant::now();
            self.conn.subscribe(&add, in_turn).await?;
            metrics::histogram!(stream_core::metrics::REDIS_SUBSCRIBE_CONFIRM_SECONDS)
                .record(started.elapsed().as_secs_f64());
            self.subscribed.extend(add);
        }
        self.fanout
            .activate(touched.iter().filter(|c| self.subscribed.contains(*c)));
        Ok(())
    }

    /// Reconnects (standalone) and subscribes every channel again, retrying with backoff until it
    /// works. Returns false when the broker was dropped meanwhile.
    async fn recover(&mut self) -> bool {
        self.fanout.mark_all_resync();
        // On a cluster the nodes that kept their connection keep their subscriptions: the ones
        // whose local subscribers left meanwhile are dropped once the rest is restored.
        let mut stale = std::mem::take(&mut self.subscribed);
        let mut delay = MIN_BACKOFF;
        loop {
            match self.restore(&mut stale).await {
                Ok(()) => {
                    metrics::counter!(stream_core::metrics::REDIS_SUBSCRIBER_RECONNECTS).increment(1);
                    tracing::info!(channels = self.subscribed.len(), "redis subscriber connection restored");
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "redis subscriber reconnect failed"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
            // Ensure/Release/Resubscribe that arrived meanwhile are covered by the next restore.
            loop {
                match self.rx.try_recv() {
                    Ok(HubMsg::Shutdown) | Err(mpsc::error::TryRecvError::Disconnected) => return false,
                    Ok(_) => {}
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
        }
    }

    async fn restore(&mut self, stale: &mut HashSet<Box<str>>) -> RedisResult<()> {
        if let Some(client) = &self.client {
            // A new generation: pushes (and the disconnect notice) of the old connection are
            // ignored, and the old connection's subscriptions are gone with it.
            self.conn = SubscriberConn::Standalone(
                connect_standalone(client, &self.fanout, &self.name, self.response_timeout).await?,
            );
            stale.clear();
        }
        let wanted = self.fanout.channel_names();
        stale.extend(wanted.iter().cloned());
        self.conn.subscribe(&wanted, true).await?;
        self.subscribed = wanted.into_iter().collect();
        self.fanout.activate(self.subscribed.iter());
        let gone: Vec<Box<str>> = stale.difference(&self.subscribed).cloned().collect();
        stale.clear();
        if !gone.is_empty()
            && let Err(e) = self.conn.unsubscribe(&gone).await
        {
            tracing::debug!(error = %e, "could not drop subscriptions left over from before the reconnect");
        }
        Ok(())
    }
}
