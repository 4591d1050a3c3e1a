//! Building a [`RedisBroker`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use stream_core::group_commit::GroupCommit;

use deadpool_redis::Runtime;
use redis::cluster::ClusterClientBuilder;
use redis::{Client, IntoConnectionInfo, ProtocolVersion, PushInfo};
use stream_core::{BoxError, ChannelConfig};
use stream_redis::RedisSource;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::broker::{CALLS_PER_CHANNEL, Inner, RedisBroker, SPILL_AT};
use crate::error::ConnectError;
use crate::fanout::Fanout;
use crate::hub::{self, Hub, SubscriberConn};
use crate::scripts::Scripts;

/// The default `CLIENT SETNAME` of the subscriber connection.
pub const DEFAULT_CLIENT_NAME: &str = "stream-pubsub";

/// Settings for a [`RedisBroker`]; [`connect`](Self::connect) builds it.
///
/// Start from [`RedisBroker::builder`] (a URL, or [`RedisSource::cluster`] node URLs) or
/// [`RedisBroker::from_env`], the same shape as `stream_lease::StreamLeaseLimiter::builder`.
#[must_use = "a builder does nothing until `connect` is called"]
pub struct RedisBrokerBuilder {
    source: RedisSource,
    config: ChannelConfig,
    pool: Option<deadpool_redis::Pool>,
    cluster_pool: Option<deadpool_redis::cluster::Pool>,
    client_name: String,
    subscribe_wait: Option<Duration>,
    health_interval: Option<Duration>,
    response_timeout: Option<Duration>,
    retry_window: Option<Duration>,
}

impl std::fmt::Debug for RedisBrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBrokerBuilder")
            .field("source", &self.source)
            .field("config", &self.config)
            .field("pool", &self.pool.is_some())
            .field("cluster_pool", &self.cluster_pool.is_some())
            .field("client_name", &self.client_name)
            .field("subscribe_wait", &self.subscribe_wait)
            .finish()
    }
}

impl RedisBroker {
    /// Connects a broker on `source` with these settings: shorthand for
    /// `RedisBroker::builder(source).config(config).connect()`.
    pub async fn connect(source: impl Into<RedisSource>, config: ChannelConfig) -> Result<Self, ConnectError> {
        Self::builder(source).config(config).connect().await
    }

    /// Settings for a broker on `source`: a standalone server's URL
    /// (`redis://[user:password@]host:port[/db]`) or a cluster's node URLs
    /// ([`RedisSource::cluster`]; any node will do to discover the rest).
    ///
    /// The broker opens its subscriber connection from these URLs, so a source that is only a
    /// pool is refused at [`connect`](RedisBrokerBuilder::connect); hand an existing pool for
    /// the commands to [`pool`](RedisBrokerBuilder::pool) instead.
    pub fn builder(source: impl Into<RedisSource>) -> RedisBrokerBuilder {
        RedisBrokerBuilder::new(source.into())
    }

    /// Settings from the environment ([`RedisSource::from_env`]): `REDIS_CLUSTER_NODES`
    /// (comma-separated node URLs) picks a cluster; else `REDIS_URL` picks a standalone server;
    /// `None` when neither is set (an app then falls back to the in-memory broker).
    pub fn from_env() -> Option<RedisBrokerBuilder> {
        RedisSource::from_env().map(Self::builder)
    }
}

impl RedisBrokerBuilder {
    fn new(source: RedisSource) -> Self {
        Self {
            source,
            config: ChannelConfig::default(),
            pool: None,
            cluster_pool: None,
            client_name: DEFAULT_CLIENT_NAME.to_owned(),
            subscribe_wait: None,
            health_interval: None,
            response_timeout: None,
            retry_window: None,
        }
    }

    /// The channel settings (key prefix, history length and TTL, subscriber queue, ...).
    pub fn config(mut self, config: ChannelConfig) -> Self {
        self.config = config;
        self
    }

    /// Publishes and reads history through this pool instead of a new one (standalone only).
    /// The broker keeps one of its connections checked out and multiplexes every command over
    /// it. The subscriber connection is still opened from the URL.
    pub fn pool(mut self, pool: deadpool_redis::Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The same as [`pool`](Self::pool), for a cluster.
    pub fn cluster_pool(mut self, pool: deadpool_redis::cluster::Pool) -> Self {
        self.cluster_pool = Some(pool);
        self
    }

    /// The `CLIENT SETNAME` of the subscriber connection (default `"stream-pubsub"`), to find it
    /// in `CLIENT LIST`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// How long a subscribe waits for the shared connection to confirm a new channel before it
    /// fails. Default: the config's `subscribe_timeout` (1 s, the seed's wait for the
    /// subscription). It only waits that long while Redis is unreachable; raise it to hold new
    /// SSE requests through a Redis restart instead of failing them.
    pub fn subscribe_wait(mut self, wait: Duration) -> Self {
        self.subscribe_wait = Some(wait);
        self
    }

    /// How often the subscriber connection is checked with a `PING` (default: the config's
    /// `ping_interval`). A failed check reconnects, as a dropped connection does.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_interval = Some(interval);
        self
    }

    /// How long a command (a publish, a history read, a heartbeat) waits for its reply before it
    /// is resent on a fresh connection (default 2 s, [`stream_redis::DEFAULT_RESPONSE_TIMEOUT`]).
    /// The subscriber connection's (un)subscribes and health checks wait as long; past it, the
    /// connection is reconnected.
    /// A resent publish finds its first run and returns the same ids: an event is never stored
    /// or delivered twice. Tries go on for the [retry window](Self::retry_window).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// How long a command (a publish, a history read, a heartbeat) keeps trying while Redis
    /// cannot be reached or does not answer (default 10 s, [`stream_redis::DEFAULT_RETRY_WINDOW`]):
    /// a worker's emits ride out a Redis restart shorter than this, each resent publish stored
    /// once. After the window the call fails with [`stream_redis::RetriesExhausted`] as the
    /// source of its error.
    pub fn retry_window(mut self, window: Duration) -> Self {
        self.retry_window = Some(window);
        self
    }

    fn check(&self) -> Result<(), ConnectError> {
        let invalid = |msg: String| Err(ConnectError::InvalidConfig(msg));
        let prefix = &self.config.key_prefix;
        if prefix.contains(['{', '}']) {
            return invalid(format!(
                "key_prefix {prefix:?} must not contain braces: the channel id is the hash tag"
            ));
        }
        if self.config.history_max_len == 0 {
            return invalid("history_max_len must be at least 1".into());
        }
        if self.client_name.is_empty() || self.client_name.contains(|c: char| c.is_whitespace()) {
            return invalid("client_name must be non-empty, without spaces".into());
        }
        match (&self.source, &self.pool, &self.cluster_pool) {
            (RedisSource::Url(_), _, Some(_)) => {
                invalid("a cluster pool was given for a standalone server; use pool".into())
            }
            (RedisSource::Url(url), _, None) => match url.as_str().into_connection_info() {
                Ok(_) => Ok(()),
                Err(e) => invalid(format!("{}: {e}", stream_redis::redact(url))),
            },
            (RedisSource::Cluster(_), Some(_), _) => {
                invalid("a standalone pool was given for a cluster; use cluster_pool".into())
            }
            (RedisSource::Cluster(nodes), None, _) if nodes.is_empty() => {
                invalid("a cluster needs at least one node URL".into())
            }
            // A source without URLs is refused where the connections are opened.
            _ => Ok(()),
        }
    }

    /// Connects: checks out a command connection (which proves the server is reachable), opens
    /// the subscriber connection (RESP3, whatever the URL says) and starts its task on the
    /// current tokio runtime. Must be called inside a tokio runtime, which must keep running for
    /// the broker to work (also for publishes from plain threads).
    pub async fn connect(self) -> Result<RedisBroker, ConnectError> {
        let handle = Handle::try_current().map_err(|_| ConnectError::NoRuntime)?;
        self.check()?;
        let (hub_tx, hub_rx) = mpsc::unbounded_channel();
        let fanout = Arc::new(Fanout::new(self.config.subscriber_queue, hub_tx));
        let health = self.health_interval.unwrap_or(self.config.ping_interval);
        let target = self.source.describe();
        let fail = |source: BoxError| ConnectError::Connect {
            target: target.clone(),
            source,
        };
        // The subscriber connection's (un)subscribes and health checks wait this long too.
        let response_timeout = self.response_timeout.unwrap_or(stream_redis::DEFAULT_RESPONSE_TIMEOUT);
        let (mut commands, conn, client, cluster) = match &self.source {
            RedisSource::Url(url) => {
                let info = url.as_str().into_connection_info().map_err(|e| fail(e.into()))?;
                let pool = match self.pool {
                    Some(pool) => pool,
                    None => deadpool_redis::Config::from_connection_info(info.clone())
                        .create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| fail(e.into()))?,
                };
                let commands = RedisSource::Pool(pool).into_shared().map_err(fail)?;
                commands.checkout().await.map_err(fail)?;
                let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                let client = Client::open(info.set_redis_settings(resp3)).map_err(|e| fail(e.into()))?;
                let conn = hub::connect_standalone(&client, &fanout, &self.client_name, response_timeout)
                    .await
                    .map_err(|e| fail(e.into()))?;
                (commands, SubscriberConn::Standalone(conn), Some(client), false)
            }
            RedisSource::Cluster(nodes) => {
                let pool = match self.cluster_pool {
                    Some(pool) => pool,
                    None => deadpool_redis::cluster::Config::from_urls(nodes.clone())
                        .create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| fail(e.into()))?,
                };
                let commands = RedisSource::ClusterPool(pool).into_shared().map_err(fail)?;
                commands.checkout().await.map_err(fail)?;
                let generation = fanout.next_generation();
                let sender = fanout.clone();
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .use_protocol(ProtocolVersion::RESP3)
                    .response_timeout(response_timeout)
                    .push_sender(move |push: PushInfo| {
                        sender.on_push(generation, push);
                        Ok::<(), Infallible>(())
                    })
                    .build()
                    .map_err(|e| fail(e.into()))?;
                let mut conn = client.get_async_connection().await.map_err(|e| fail(e.into()))?;
                hub::name_cluster(&mut conn, &self.client_name)
                    .await
                    .map_err(|e| fail(e.into()))?;
                (commands, SubscriberConn::Cluster(conn), None, true)
            }
            // A pool (or a kind of source this builder does not know) has no URL to open the
            // subscriber connection from.
            other => {
                return Err(ConnectError::InvalidConfig(format!(
                    "the broker opens its subscriber connection from URLs, and {} has none: pass the \
                     URL(s) to RedisBroker::builder and the pool to .pool() or .cluster_pool()",
                    other.describe()
                )));
            }
        };
        let scripts = Scripts::new();
        for (script, name) in scripts.named() {
            commands.name_script(script, name);
        }
        if let Some(timeout) = self.response_timeout {
            commands.set_response_timeout(timeout);
        }
        if let Some(window) = self.retry_window {
            commands.set_retry_window(window);
        }
        let hub = Hub::new(
            fanout.clone(),
            hub_rx,
            conn,
            client,
            self.client_name.clone(),
            health,
            response_timeout,
        );
        handle.spawn(hub.run());
        let subscribe_wait = self.subscribe_wait.unwrap_or(self.config.subscribe_timeout);
        let ttl_ms = u64::try_from(self.config.history_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                max_len: self.config.history_max_len.to_string(),
                ttl_ms: ttl_ms.to_string(),
                config: self.config,
                handle,
                commands,
                fanout,
                scripts,
                cluster,
                client_name: self.client_name,
                subscribe_wait,
                commits: GroupCommit::with_depth(CALLS_PER_CHANNEL, SPILL_AT),
            }),
        })
    }
}
