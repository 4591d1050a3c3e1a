//! [`StreamLeaseLimiter`]: the [`LeaseStore`] over Redis.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::{Cmd, FromRedisValue, Script};
use stream_core::metrics::LeaseMetrics;
use stream_core::{LeaseError, LeaseId, LeaseInfo, LeaseStore, StreamLeaseConfig, UserId};
use tokio::runtime::Handle;

use stream_redis::{RedisSource, SharedConnection, evalsha};

use crate::error::{LimiterError, RuntimeUnavailable};
use crate::scripts::Scripts;

/// Longest lease TTL and key grace accepted, so that expiries stay exact in Lua's doubles.
const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Per-user caps on concurrent streams, kept in Redis: one sorted set per user, each member a
/// lease id scored by its expiry in milliseconds by the Redis clock.
///
/// The key of a user is `{key_namespace}:{<user_id>}`; the braces make the user id the hash tag,
/// so on a Redis Cluster all of a user's keys live in one slot. Acquire, refresh and release are
/// one Lua script each (see [`scripts`](crate::scripts)), run with `EVALSHA`: one round trip per
/// operation, atomic, and timed by Redis `TIME`.
///
/// Cloning is cheap and clones share the connection. Operations work inside any tokio runtime
/// and also when polled by a plain executor on a thread without one (a [`StreamLease`] dropped
/// on a std thread, [`stream_lease_sync`]): then they run on the runtime the limiter was built
/// on, which must still be running.
///
/// [`StreamLease`]: stream_core::StreamLease
/// [`stream_lease_sync`]: stream_core::compat::stream_lease_sync
#[derive(Clone)]
pub struct StreamLeaseLimiter {
    config: StreamLeaseConfig,
    ttl_ms: u64,
    grace_ms: u64,
    shared: Arc<Shared>,
}

/// What clones and [`StreamLeaseLimiter::with_config`] share. Fields drop in order: the
/// connections before the runtime they run on.
struct Shared {
    conns: SharedConnection,
    scripts: Scripts,
    runtime: Handle,
    target: String,
    metrics: LeaseMetrics,
    _owned_runtime: Option<OwnedRuntime>,
}

/// The `backend` label of the limiter's lease metrics.
const BACKEND: &str = "redis";

/// The runtime of a limiter built with [`StreamLeaseLimiterBuilder::connect_blocking`]. Shut down in the
/// background, so dropping the limiter inside another runtime does not panic.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for StreamLeaseLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamLeaseLimiter")
            .field("redis", &self.shared.target)
            .field("cluster", &self.shared.conns.is_cluster())
            .field("config", &self.config)
            .finish()
    }
}

fn validate(config: &StreamLeaseConfig) -> Result<(), LimiterError> {
    let invalid = |msg: &str| Err(LimiterError::InvalidConfig(msg.to_owned()));
    if config.ttl_seconds == 0 {
        return invalid("ttl_seconds must be at least 1");
    }
    if config.ttl_seconds > MAX_SECONDS || config.key_ttl_grace > MAX_SECONDS {
        return invalid("ttl_seconds and key_ttl_grace must be at most ten years");
    }
    if config.key_namespace.is_empty() {
        return invalid("key_namespace must not be empty");
    }
    if config.key_namespace.contains(['{', '}']) {
        // The user id is the key's hash tag; braces in the namespace would take its place.
        return invalid("key_namespace must not contain '{' or '}'");
    }
    Ok(())
}

fn expiry(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Settings for a [`StreamLeaseLimiter`]; [`connect`](Self::connect) (or
/// [`connect_blocking`](Self::connect_blocking) in a program without tokio) builds it.
///
/// Start from [`StreamLeaseLimiter::builder`] or [`StreamLeaseLimiter::from_env`], the same
/// shape as `stream_pubsub::RedisBroker::builder`.
#[must_use = "a builder does nothing until `connect` is called"]
#[derive(Debug)]
pub struct StreamLeaseLimiterBuilder {
    source: RedisSource,
    config: StreamLeaseConfig,
    response_timeout: Option<Duration>,
    retry_window: Option<Duration>,
}

impl StreamLeaseLimiterBuilder {
    /// How long a lease operation keeps trying while Redis cannot be reached or does not answer
    /// (default 10 s, [`stream_redis::DEFAULT_RETRY_WINDOW`]); then it fails with
    /// [`stream_redis::RetriesExhausted`] as the source of its error. A request that needs a
    /// lease waits at most about this long before its `503`.
    pub fn retry_window(mut self, window: Duration) -> Self {
        self.retry_window = Some(window);
        self
    }

    /// The lease settings (limit, TTL, key namespace); default [`StreamLeaseConfig::default`].
    pub fn config(mut self, config: StreamLeaseConfig) -> Self {
        self.config = config;
        self
    }

    /// How long a lease operation waits for its reply before it is resent on a fresh connection
    /// (default 2 s, [`stream_redis::DEFAULT_RESPONSE_TIMEOUT`]); see
    /// [`StreamLeaseLimiter::set_response_timeout`].
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// Connects, checks the connection and loads the scripts (`SCRIPT LOAD`; on a cluster, on
    /// every primary), so that a missing Redis fails here and not at the first stream.
    ///
    /// Captures the current tokio runtime ([`LimiterError::NoRuntime`] without one), which must
    /// outlive the limiter: calls made later from threads without a runtime run there.
    pub async fn connect(self) -> Result<StreamLeaseLimiter, LimiterError> {
        validate(&self.config)?;
        let runtime = Handle::try_current().map_err(|_| LimiterError::NoRuntime)?;
        StreamLeaseLimiter::build(self, runtime, None).await
    }

    /// Connects with a small runtime of its own (one worker thread), for programs without
    /// tokio: workers that only call [`stream_lease_sync`](stream_core::compat::stream_lease_sync), say.
    /// Blocks the calling thread until connected. The runtime stops when the last clone is
    /// dropped.
    pub fn connect_blocking(self) -> Result<StreamLeaseLimiter, LimiterError> {
        validate(&self.config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stream-lease")
            .enable_all()
            .build()
            .map_err(LimiterError::Runtime)?;
        let handle = runtime.handle().clone();
        let owned = OwnedRuntime(Some(runtime));
        let build = StreamLeaseLimiter::build(self, handle.clone(), None);
        let mut limiter = match futures_executor::block_on(handle.spawn(build)) {
            Ok(built) => built?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(LimiterError::Runtime(std::io::Error::other(e))),
        };
        // The new limiter has no clones yet; attach the runtime so that it lives as long as they do.
        let shared = Arc::get_mut(&mut limiter.shared).expect("a limiter being built has no clones");
        shared._owned_runtime = Some(owned);
        Ok(limiter)
    }
}

impl StreamLeaseLimiter {
    /// Connects a limiter on `source` with these settings: shorthand for
    /// `StreamLeaseLimiter::builder(source).config(config).connect()`.
    pub async fn connect(source: impl Into<RedisSource>, config: StreamLeaseConfig) -> Result<Self, LimiterError> {
        Self::builder(source).config(config).connect().await
    }

    /// Settings for a limiter on `source`: a URL, a cluster's node URLs
    /// ([`RedisSource::cluster`]), or an existing deadpool-redis pool or cluster pool. With a
    /// pool, one connection is checked out and kept (the connections are multiplexed), so
    /// operations skip deadpool's per-checkout `PING`; another is checked out when it breaks.
    pub fn builder(source: impl Into<RedisSource>) -> StreamLeaseLimiterBuilder {
        StreamLeaseLimiterBuilder {
            source: source.into(),
            config: StreamLeaseConfig::default(),
            response_timeout: None,
            retry_window: None,
        }
    }

    /// Settings from the environment ([`RedisSource::from_env`]): `REDIS_CLUSTER_NODES` picks a
    /// cluster, else `REDIS_URL` a standalone server; `None` when neither is set.
    pub fn from_env() -> Option<StreamLeaseLimiterBuilder> {
        RedisSource::from_env().map(Self::builder)
    }

    async fn build(
        builder: StreamLeaseLimiterBuilder,
        runtime: Handle,
        owned: Option<OwnedRuntime>,
    ) -> Result<Self, LimiterError> {
        let StreamLeaseLimiterBuilder {
            source,
            config,
            response_timeout,
            retry_window,
        } = builder;
        let target = source.describe();
        let connect_error = |source: stream_core::BoxError| LimiterError::Connect {
            target: target.clone(),
            source,
        };
        let mut conns = source.into_shared().map_err(connect_error)?;
        let scripts = Scripts::new();
        for (script, name) in scripts.named() {
            conns.name_script(script, name);
        }
        if let Some(timeout) = response_timeout {
            conns.set_response_timeout(timeout);
        }
        if let Some(window) = retry_window {
            conns.set_retry_window(window);
        }
        let shared = Shared {
            conns,
            scripts,
            runtime,
            target: target.clone(),
            metrics: LeaseMetrics::new(BACKEND),
            _owned_runtime: owned,
        };
        // Connect now, so that a missing Redis fails here and not at the first stream.
        let (_, mut conn) = shared.conns.checkout().await.map_err(connect_error)?;
        for script in shared.scripts.all() {
            script
                .load_async(&mut conn)
                .await
                .map_err(|e| connect_error(Box::new(e)))?;
        }
        Ok(Self {
            ttl_ms: config.ttl_seconds * 1000,
            grace_ms: config.key_ttl_grace * 1000,
            config,
            shared: Arc::new(shared),
        })
    }

    /// Another limiter on the same connection and runtime with other settings (a different limit
    /// or namespace, say). No I/O.
    pub fn with_config(&self, config: StreamLeaseConfig) -> Result<Self, LimiterError> {
        validate(&config)?;
        Ok(Self {
            ttl_ms: config.ttl_seconds * 1000,
            grace_ms: config.key_ttl_grace * 1000,
            config,
            shared: self.shared.clone(),
        })
    }

    /// How long a lease operation waits for its reply before it is resent on a fresh connection
    /// (default 2 s, [`stream_redis::DEFAULT_RESPONSE_TIMEOUT`]); tries go on for the retry window. For
    /// every clone that shares this limiter's connection. A resent acquire is not counted twice:
    /// the lease id is chosen before the first send, and the script adds an id that is already
    /// there without counting it against the limit.
    pub fn set_response_timeout(&self, timeout: Duration) {
        self.shared.conns.set_response_timeout(timeout);
    }

    /// The settings.
    pub fn config(&self) -> &StreamLeaseConfig {
        &self.config
    }

    /// Whether this limiter talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.shared.conns.is_cluster()
    }

    /// The Redis key of `user`'s lease set: `{key_namespace}:{<user_id>}`. User ids are validated
    /// ([`UserId`]), so no braces, colons or spaces reach the key.
    pub fn key(&self, user: &UserId) -> String {
        format!("{}:{{{}}}", self.config.key_namespace, user.as_str())
    }

    /// Takes a lease for `user` (the seed's `acquire_stream_lease`): `None` when the user holds
    /// `limit` live leases. One round trip.
    pub async fn acquire_stream_lease(&self, user: &UserId) -> Result<Option<LeaseId>, LeaseError> {
        LeaseStore::acquire(self, user).await
    }

    /// Gives a lease back (the seed's `release_stream_lease`). Unknown leases are fine. One
    /// round trip.
    pub async fn release_stream_lease(&self, user: &UserId, lease: &LeaseId) -> Result<(), LeaseError> {
        LeaseStore::release(self, user, lease).await
    }

    /// Extends a live lease by the TTL (the seed's `refresh_stream_lease`); `false` when it had
    /// expired or was released. One round trip.
    pub async fn refresh_stream_lease(&self, user: &UserId, lease: &LeaseId) -> Result<bool, LeaseError> {
        LeaseStore::refresh(self, user, lease).await
    }

    /// The number of live leases of `user` (the seed's `get_active_streams`). One round trip.
    pub async fn get_active_streams(&self, user: &UserId) -> Result<usize, LeaseError> {
        LeaseStore::active_count(self, user).await
    }

    /// The live leases of `user` with their expiry by the Redis clock, soonest first (the seed's
    /// `get_all_leases`, for debugging). One round trip.
    pub async fn get_all_leases(&self, user: &UserId) -> Result<Vec<(LeaseId, SystemTime)>, LeaseError> {
        Ok(LeaseStore::leases(self, user)
            .await?
            .into_iter()
            .map(|l| (l.lease_id, l.expires_at))
            .collect())
    }

    /// Runs `op` on the limiter's runtime when the caller has none, and waits for it with any
    /// executor.
    /// Runs `op` on the limiter's runtime, for a caller outside any runtime (a blocking lease
    /// guard on a plain thread). Inside a runtime the methods call their script directly, with
    /// no clone of the limiter or the user.
    async fn on_runtime<T, F>(&self, op: F) -> Result<T, LeaseError>
    where
        F: Future<Output = Result<T, LeaseError>> + Send + 'static,
        T: Send + 'static,
    {
        match stream_redis::on_runtime(&self.shared.runtime, op).await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(LeaseError::Backend(Box::new(RuntimeUnavailable))),
        }
    }

    /// `EVALSHA` of `script` on `user`'s key; the caller adds the arguments.
    fn script_call(&self, script: &Script, user: &UserId) -> Cmd {
        evalsha(script, &[&self.key(user)])
    }

    /// Sends one script call. Every script is idempotent (acquire reuses its lease id), so the
    /// shared connection may send it again after an error that broke the connection.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd, script: &Script) -> Result<T, LeaseError> {
        self.shared
            .conns
            .run(cmd, Some(script))
            .await
            .map_err(LeaseError::Backend)
    }

    async fn do_acquire(&self, user: &UserId) -> Result<Option<LeaseId>, LeaseError> {
        let lease = LeaseId::generate();
        let script = &self.shared.scripts.acquire;
        let mut cmd = self.script_call(script, user);
        cmd.arg(lease.as_str())
            .arg(self.config.limit)
            .arg(self.ttl_ms)
            .arg(self.grace_ms);
        let expires: u64 = self.run(&cmd, script).await?;
        let metrics = &self.shared.metrics;
        if expires > 0 {
            metrics.acquired.increment(1);
            Ok(Some(lease))
        } else {
            metrics.denied.increment(1);
            Ok(None)
        }
    }

    async fn do_release(&self, user: &UserId, lease: &LeaseId) -> Result<(), LeaseError> {
        let script = &self.shared.scripts.release;
        let mut cmd = self.script_call(script, user);
        cmd.arg(lease.as_str());
        let removed: u64 = self.run(&cmd, script).await?;
        // Only a lease that was there counts: releasing an expired or unknown one is a no-op.
        if removed > 0 {
            self.shared.metrics.released.increment(1);
        }
        Ok(())
    }

    async fn do_refresh(&self, user: &UserId, lease: &LeaseId) -> Result<bool, LeaseError> {
        let script = &self.shared.scripts.refresh;
        let mut cmd = self.script_call(script, user);
        cmd.arg(lease.as_str()).arg(self.ttl_ms).arg(self.grace_ms);
        let expires: u64 = self.run(&cmd, script).await?;
        let metrics = &self.shared.metrics;
        if expires > 0 {
            metrics.refreshed.increment(1);
        } else {
            metrics.lost.increment(1);
        }
        Ok(expires > 0)
    }

    async fn do_count(&self, user: &UserId) -> Result<usize, LeaseError> {
        let script = &self.shared.scripts.count;
        let cmd = self.script_call(script, user);
        self.run(&cmd, script).await
    }

    async fn do_list(&self, user: &UserId) -> Result<Vec<LeaseInfo>, LeaseError> {
        let script = &self.shared.scripts.list;
        let cmd = self.script_call(script, user);
        let flat: Vec<String> = self.run(&cmd, script).await?;
        flat.chunks_exact(2)
            .map(|pair| {
                let lease_id = LeaseId::new(&pair[0]).map_err(|e| LeaseError::Backend(Box::new(e)))?;
                let ms: f64 = pair[1].parse().map_err(|e| LeaseError::Backend(Box::new(e)))?;
                Ok(LeaseInfo {
                    lease_id,
                    expires_at: expiry(ms as u64),
                })
            })
            .collect()
    }
}

/// Each method is one `EVALSHA` round trip. Inside a tokio runtime it runs on the caller's task;
/// on a thread without one it is spawned on the limiter's runtime.
#[async_trait]
impl LeaseStore for StreamLeaseLimiter {
    fn config(&self) -> &StreamLeaseConfig {
        &self.config
    }

    /// Counted in `stream_leases_acquired_total` or `stream_leases_denied_total`, and timed in
    /// `stream_lease_acquire_seconds` (whatever the outcome, errors included), all with
    /// `backend="redis"`.
    async fn acquire(&self, user: &UserId) -> Result<Option<LeaseId>, LeaseError> {
        let started = Instant::now();
        let got = if Handle::try_current().is_ok() {
            self.do_acquire(user).await
        } else {
            let (this, user) = (self.clone(), user.clone());
            self.on_runtime(async move { this.do_acquire(&user).await }).await
        };
        self.shared.metrics.acquire_seconds.record(started.elapsed());
        got
    }

    /// Counted in `stream_leases_released_total{backend="redis"}` when the lease was there.
    async fn release(&self, user: &UserId, lease: &LeaseId) -> Result<(), LeaseError> {
        if Handle::try_current().is_ok() {
            return self.do_release(user, lease).await;
        }
        let (this, user, lease) = (self.clone(), user.clone(), lease.clone());
        self.on_runtime(async move { this.do_release(&user, &lease).await })
            .await
    }

    /// Counted in `stream_leases_refreshed_total` (found) or `stream_leases_lost_total` (gone),
    /// with `backend="redis"`.
    async fn refresh(&self, user: &UserId, lease: &LeaseId) -> Result<bool, LeaseError> {
        if Handle::try_current().is_ok() {
            return self.do_refresh(user, lease).await;
        }
        let (this, user, lease) = (self.clone(), user.clone(), lease.clone());
        self.on_runtime(async move { this.do_refresh(&user, &lease).await })
            .await
    }

    async fn active_count(&self, user: &UserId) -> Result<usize, LeaseError> {
        if Handle::try_current().is_ok() {
            return self.do_count(user).await;
        }
        let (this, user) = (self.clone(), user.clone());
        self.on_runtime(async move { this.do_count(&user).await }).await
    }

    async fn leases(&self, user: &UserId) -> Result<Vec<LeaseInfo>, LeaseError> {
        if Handle::try_current().is_ok() {
            return self.do_list(user).await;
        }
        let (this, user) = (self.clone(), user.clone());
        self.on_runtime(async move { this.do_list(&user).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_that_cannot_work_are_refused() {
        let ok = StreamLeaseConfig::default();
        assert!(validate(&ok).is_ok());
        for bad in [
            StreamLeaseConfig {
                ttl_seconds: 0,
                ..ok.clone()
            },
            StreamLeaseConfig {
                key_namespace: String::new(),
                ..ok.clone()
            },
            StreamLeaseConfig {
                key_namespace: "a{b}".into(),
                ..ok.clone()
            },
            StreamLeaseConfig {
                key_ttl_grace: MAX_SECONDS + 1,
                ..ok
            },
        ] {
            assert!(matches!(validate(&bad), Err(LimiterError::InvalidConfig(_))), "{bad:?}");
        }
    }

    #[test]
    fn async_constructors_need_a_runtime() {
        let got = futures_executor::block_on(StreamLeaseLimiter::connect(
            "redis://127.0.0.1:1/",
            StreamLeaseConfig::default(),
        ));
        assert!(matches!(got, Err(LimiterError::NoRuntime)), "{got:?}");
    }
}
