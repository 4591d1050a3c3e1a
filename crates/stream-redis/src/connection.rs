//! One kept multiplexed connection, and commands sent over it.
//!
//! deadpool-redis checks a connection with a `PING` each time it hands one out, which would double
//! the round trips of every command. Its connections are multiplexed, so a [`SharedConnection`]
//! checks one out once, keeps it, and sends every command over clones of it. The kept connection
//! is closed after an error that breaks it or a send that gets no reply in time (it leaves the
//! pool, rather than wait there idle), and the next command checks out a fresh one: one checkout
//! at a time, so that the commands under way when a connection is lost (a Redis restart, a
//! failover) share one new connection instead of opening one each.
//!
//! Metrics (names in `stream_core::metrics`): every script call counts in
//! `stream_redis_script_calls_total{script}`, by the name given to
//! [`SharedConnection::name_script`] (`other` for a script without one); every send without a
//! reply within the response timeout in `stream_redis_timeouts_total`; every send again after a
//! failure, within the retry window, in `stream_redis_retries_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use metrics::Counter;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use stream_core::metrics as names;

use crate::BoxError;

/// How many times [`SharedConnection::run`] tries a command at once, before it backs off.
const QUICK_ATTEMPTS: u32 = 3;

/// The first pause between tries once the quick ones failed.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between tries while Redis is unreachable.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The default response timeout of every command: see [`SharedConnection::set_response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The default retry window of every command: see [`SharedConnection::set_retry_window`].
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// A command gave up: Redis could not be reached, or did not answer, for the whole retry window.
/// Its source is the last error.
#[derive(Debug, thiserror::Error)]
#[error("redis unreachable: gave up after {tries} tries in {elapsed:?} (retry window {window:?})")]
pub struct RetriesExhausted {
    /// How many times the command was tried.
    pub tries: u32,
    /// How long it kept trying.
    pub elapsed: Duration,
    /// The retry window it was given.
    pub window: Duration,
    /// The last error.
    #[source]
    pub source: BoxError,
}

/// The pool a [`SharedConnection`] checks its connection out of.
pub(crate) enum Pool {
    Standalone(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A multiplexed connection to a standalone Redis or a cluster: a clone is cheap and shares the
/// socket (standalone) or the node connections (cluster).
#[derive(Clone)]
pub enum Conn {
    /// A standalone server's connection.
    Standalone(MultiplexedConnection),
    /// A cluster connection, which routes each command to the node of its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A pool object kept checked out while its connection is in use, so the pool counts it.
enum Held {
    Standalone(deadpool_redis::Connection),
    Cluster(deadpool_redis::cluster::Connection),
}

impl Held {
    /// Takes the connection out of the pool for good and drops it: its socket closes once the
    /// commands still holding a clone are done.
    fn close(self) {
        match self {
            Self::Standalone(conn) => drop(deadpool_redis::Connection::take(conn)),
            Self::Cluster(conn) => drop(deadpool_redis::cluster::Connection::take(conn)),
        }
    }
}

#[derive(Default)]
struct Kept {
    /// Grows with each checkout, so that a task that saw an old connection fail does not drop a
    /// newer one.
    generation: u64,
    conn: Option<(Conn, Held)>,
}

/// A pool and the one connection kept out of it. Build it with [`RedisSource::into_shared`].
///
/// [`RedisSource::into_shared`]: crate::RedisSource::into_shared
pub struct SharedConnection {
    pool: Pool,
    kept: Mutex<Kept>,
    /// Held by the one checkout under way: the others wait for it rather than connect too.
    checking_out: tokio::sync::Mutex<()>,
    /// Checkouts that got no connection, and the last one's error: a checkout that waited
    /// through one of them fails with its error instead of trying again at once.
    failed_checkouts: Mutex<(u64, Option<String>)>,
    /// In microseconds, so that it can be set through a shared reference.
    response_timeout_us: AtomicU64,
    /// In microseconds, as above.
    retry_window_us: AtomicU64,
    metrics: Metrics,
}

/// The metric handles of one [`SharedConnection`], registered once when it is built (so with
/// the recorder installed then).
struct Metrics {
    /// `stream_redis_script_calls_total` of each named script, by the script's SHA1.
    scripts: Vec<(String, Counter)>,
    /// `stream_redis_script_calls_total{script="other"}`: scripts without a name.
    other_scripts: Counter,
    timeouts: Counter,
    retries: Counter,
}

/// The `script` label of a script call whose script was not named.
const OTHER_SCRIPT: &str = "other";

impl SharedConnection {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            kept: Mutex::default(),
            checking_out: tokio::sync::Mutex::const_new(()),
            failed_checkouts: Mutex::default(),
            response_timeout_us: AtomicU64::new(micros(DEFAULT_RESPONSE_TIMEOUT)),
            retry_window_us: AtomicU64::new(micros(DEFAULT_RETRY_WINDOW)),
            metrics: Metrics {
                scripts: Vec::new(),
                other_scripts: metrics::counter!(names::REDIS_SCRIPT_CALLS, names::SCRIPT => OTHER_SCRIPT),
                timeouts: metrics::counter!(names::REDIS_TIMEOUTS),
                retries: metrics::counter!(names::REDIS_RETRIES),
            },
        }
    }

    /// Names `script` for the metrics: its calls through [`run`](Self::run) and
    /// [`run_resend`](Self::run_resend) count in `stream_redis_script_calls_total` with the label
    /// `script="<name>"` (calls of scripts without a name count as `script="other"`). Give each
    /// script a short fixed name (`"acquire"`, `"publish"`), never one made from data, so that
    /// the number of series stays bounded. Naming a script again replaces its name.
    pub fn name_script(&mut self, script: &Script, name: &'static str) {
        let counter = metrics::counter!(names::REDIS_SCRIPT_CALLS, names::SCRIPT => name);
        let sha = script.get_hash();
        match self.metrics.scripts.iter_mut().find(|(s, _)| s == sha) {
            Some((_, existing)) => *existing = counter,
            None => self.metrics.scripts.push((sha.to_owned(), counter)),
        }
    }

    /// The call counter of `script`: a scan of the few named scripts, no allocation.
    fn script_calls(&self, script: &Script) -> &Counter {
        let sha = script.get_hash();
        self.metrics
            .scripts
            .iter()
            .find(|(s, _)| s == sha)
            .map_or(&self.metrics.other_scripts, |(_, counter)| counter)
    }

    /// How long a command keeps trying, from its first failed try, while Redis cannot be reached
    /// or does not answer (default
    /// [`DEFAULT_RETRY_WINDOW`], 10 s): a restart or a failover shorter than this is invisible to
    /// the caller, apart from the wait. The first tries go at once; then it backs off (50 ms,
    /// doubling, at most 1 s) until the window has passed, and fails with
    /// [`RetriesExhausted`]. Zero: three quick tries only.
    pub fn set_retry_window(&self, window: Duration) {
        self.retry_window_us.store(micros(window), Ordering::Relaxed);
    }

    /// The retry window.
    pub fn retry_window(&self) -> Duration {
        Duration::from_micros(self.retry_window_us.load(Ordering::Relaxed))
    }

    /// How long one send waits for its reply (default [`DEFAULT_RESPONSE_TIMEOUT`], 2 s). A send
    /// that times out may still have run on the server: [`run`](Self::run) then resends on a
    /// fresh connection, in the command's resend form when it has one.
    pub fn set_response_timeout(&self, timeout: Duration) {
        self.response_timeout_us
            .store(micros(timeout.max(Duration::from_millis(1))), Ordering::Relaxed);
    }

    /// The response timeout.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_micros(self.response_timeout_us.load(Ordering::Relaxed))
    }

    /// Whether the pool is a Redis Cluster's.
    pub fn is_cluster(&self) -> bool {
        matches!(self.pool, Pool::Cluster(_))
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept connection and its generation, or a fresh one from the pool (which connects when
    /// the pool has none idle). No round trip when one is kept.
    ///
    /// One checkout runs at a time. The tasks that find no connection meanwhile wait for it and
    /// share what it got; when it got nothing, they fail with its error rather than each try the
    /// unreachable server in turn (their retries back off and try again).
    pub async fn checkout(&self) -> Result<(u64, Conn), BoxError> {
        if let Some(kept) = self.kept() {
            return Ok(kept);
        }
        let failed_before = self.failed_checkouts().0;
        let _turn = self.checking_out.lock().await;
        if let Some(kept) = self.kept() {
            return Ok(kept);
        }
        if let (failed, Some(error)) = &*self.failed_checkouts()
            && *failed != failed_before
        {
            return Err(format!("no redis connection: {error}").into());
        }
        let checked_out = match &self.pool {
            Pool::Standalone(pool) => pool
                .get()
                .await
                .map(|obj| (Conn::Standalone((*obj).clone()), Held::Standalone(obj)))
                .map_err(BoxError::from),
            Pool::Cluster(pool) => pool
                .get()
                .await
                .map(|obj| (Conn::Cluster((*obj).clone()), Held::Cluster(obj)))
                .map_err(BoxError::from),
        };
        let (conn, held) = match checked_out {
            Ok(checked_out) => checked_out,
            Err(e) => {
                let mut failed = self.failed_checkouts();
                *failed = (failed.0 + 1, Some(e.to_string()));
                return Err(e);
            }
        };
        let mut kept = self.lock();
        kept.generation += 1;
        kept.conn = Some((conn.clone(), held));
        Ok((kept.generation, conn))
    }

    /// How many checkouts got no connection, and the last one's error.
    fn failed_checkouts(&self) -> MutexGuard<'_, (u64, Option<String>)> {
        self.failed_checkouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept connection and its generation, if one is kept (no pool checkout).
    fn kept(&self) -> Option<(u64, Conn)> {
        let kept = self.lock();
        kept.conn.as_ref().map(|(conn, _)| (kept.generation, conn.clone()))
    }

    /// Closes the kept connection if it is still the one of `generation` (it leaves the pool);
    /// the next checkout takes a fresh one.
    pub fn discard(&self, generation: u64) {
        let held = {
            let mut kept = self.lock();
            if kept.generation != generation {
                return;
            }
            kept.conn.take()
        };
        if let Some((_, held)) = held {
            held.close();
        }
    }

    /// Sends `cmd` and reads its reply: one round trip in the steady state.
    ///
    /// When `cmd` is an `EVALSHA` of `script`, a `NOSCRIPT` reply (a restarted or failed-over
    /// server) loads the script and sends again. An error that broke the connection, or no reply
    /// within the response timeout, checks out a fresh one and sends again, for as long as the
    /// [retry window](Self::set_retry_window) allows; so only commands that may safely run twice
    /// belong here: a resent command may have reached Redis the first time. Commands that must
    /// not run twice use [`run_resend`](Self::run_resend).
    ///
    /// A script call counts once in `stream_redis_script_calls_total`, however often it is sent
    /// (see [`name_script`](Self::name_script)).
    pub async fn run<T: FromRedisValue>(&self, cmd: &Cmd, script: Option<&Script>) -> Result<T, BoxError> {
        self.run_resend(cmd, || cmd.clone(), script).await
    }

    /// As [`run`](Self::run), but a resend after a send whose outcome is unknown (the connection
    /// broke, or the reply did not come in time) sends `resend()` instead: a form of the command
    /// that recognises its own earlier run (a publish that looks for its token, say).
    pub async fn run_resend<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        resend: impl FnOnce() -> Cmd,
        script: Option<&Script>,
    ) -> Result<T, BoxError> {
        if let Some(script) = script {
            self.script_calls(script).increment(1);
        }
        let mut retry = Retry::default();
        let mut resend = Some(resend);
        let mut resent: Option<Cmd> = None;
        loop {
            // The cold paths (a pool checkout, a script load, a pause) are boxed: inline, they
            // would make every command's future several KiB, held by each call in flight.
            let checked_out = match self.kept() {
                Some(checked_out) => Ok(checked_out),
                None => Box::pin(self.checkout()).await,
            };
            let (generation, mut conn) = match checked_out {
                Ok(checked_out) => checked_out,
                // Nothing was sent: Redis could not be reached.
                Err(e) => {
                    Box::pin(retry.pause(self, e)).await?;
                    continue;
                }
            };
            let current = resent.as_ref().unwrap_or(cmd);
            let timeout = self.response_timeout();
            let result: Result<T, RedisError> =
                match tokio::time::timeout(timeout, current.query_async(&mut conn)).await {
                    Ok(result) => result,
                    Err(_) => {
                        self.metrics.timeouts.increment(1);
                        Err(RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no reply from redis within {timeout:?}"),
                        )))
                    }
                };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                && let Some(script) = script
            {
                // The script did not run: the same form goes again, once it is loaded.
                if let Err(e) = Box::pin(script.load_async(&mut conn)).await {
                    self.discard(generation);
                    Box::pin(retry.pause(self, e.into())).await?;
                }
            } else if err.is_unrecoverable_error() || err.is_timeout() || err.is_connection_refusal() {
                tracing::debug!(error = %err, "redis connection lost or silent; checking out a fresh one");
                self.discard(generation);
                // The send's outcome is unknown: from now on the form that finds its first run.
                if let Some(resend) = resend.take() {
                    resent = Some(resend());
                }
                Box::pin(retry.pause(self, err.into())).await?;
            } else {
                return Err(err.into());
            }
        }
    }
}

/// The failed tries of one command: a few resent at once, then with backoff until the retry
/// window has passed. Nothing is read (no clock, no setting) until a try fails, so a command that
/// succeeds at once pays nothing for it.
#[derive(Default)]
struct Retry {
    /// When the first try failed, and the window then in force.
    since: Option<(Instant, Duration)>,
    tries: u32,
    pause: Duration,
}

impl Retry {
    /// After a failed try: waits before the next one (counted in `stream_redis_retries_total`),
    /// or gives up with `error` as the source.
    async fn pause(&mut self, connection: &SharedConnection, error: BoxError) -> Result<(), BoxError> {
        let (started, window) = *self
            .since
            .get_or_insert_with(|| (Instant::now(), connection.retry_window()));
        self.tries += 1;
        if self.tries < QUICK_ATTEMPTS {
            connection.metrics.retries.increment(1);
            return Ok(());
        }
        let elapsed = started.elapsed();
        let left = window.saturating_sub(elapsed);
        if left.is_zero() {
            tracing::warn!(tries = self.tries, ?elapsed, error = %error, "redis command gave up");
            return Err(Box::new(RetriesExhausted {
                tries: self.tries,
                elapsed,
                window,
                source: error,
            }));
        }
        if self.tries == QUICK_ATTEMPTS {
            tracing::warn!(error = %error, ?window, "redis unreachable; retrying");
        }
        let pause = if self.pause.is_zero() { FIRST_PAUSE } else { self.pause };
        tokio::time::sleep(pause.min(left)).await;
        self.pause = (pause * 2).min(MAX_PAUSE);
        connection.metrics.retries.increment(1);
        Ok(())
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `EVALSHA <sha> <keys.len()> keys… ` with room for the arguments the caller adds: the command
/// [`SharedConnection::run`] sends for a script call.
pub fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Standalone(_) => "Conn::Standalone",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl std::fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnection")
            .field("response_timeout", &self.response_timeout())
            .finish_non_exhaustive()
    }
}
