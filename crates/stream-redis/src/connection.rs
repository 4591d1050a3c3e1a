//! One kept multiplexed connection, and commands sent over it.
//!
//! deadpool-redis checks a connection with a `PING` each time it hands one out, which would double
//! the round trips of every command. Its connections are multiplexed, so a [`SharedConnection`]
//! checks one out once, keeps it, and sends every command over clones of it. The kept connection
//! is dropped after an error that breaks it, and the next command checks out a fresh one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};

use crate::BoxError;

/// How many times [`SharedConnection::run`] sends a command at most.
const ATTEMPTS: u32 = 3;

/// The default response timeout of every command: see [`SharedConnection::set_response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

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
    Standalone(#[allow(dead_code)] deadpool_redis::Connection),
    Cluster(#[allow(dead_code)] deadpool_redis::cluster::Connection),
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
    /// In microseconds, so that it can be set through a shared reference.
    response_timeout_us: AtomicU64,
}

impl SharedConnection {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            kept: Mutex::default(),
            response_timeout_us: AtomicU64::new(micros(DEFAULT_RESPONSE_TIMEOUT)),
        }
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
    pub async fn checkout(&self) -> Result<(u64, Conn), BoxError> {
        {
            let kept = self.lock();
            if let Some((conn, _)) = &kept.conn {
                return Ok((kept.generation, conn.clone()));
            }
        }
        let (conn, held) = match &self.pool {
            Pool::Standalone(pool) => {
                let obj = pool.get().await?;
                (Conn::Standalone((*obj).clone()), Held::Standalone(obj))
            }
            Pool::Cluster(pool) => {
                let obj = pool.get().await?;
                (Conn::Cluster((*obj).clone()), Held::Cluster(obj))
            }
        };
        let mut kept = self.lock();
        if let Some((existing, _)) = &kept.conn {
            // Another task checked one out meanwhile; ours goes back to the pool.
            return Ok((kept.generation, existing.clone()));
        }
        kept.generation += 1;
        kept.conn = Some((conn.clone(), held));
        Ok((kept.generation, conn))
    }

    /// Forgets the kept connection if it is still the one of `generation`; the next checkout
    /// takes a fresh one.
    pub fn discard(&self, generation: u64) {
        let mut kept = self.lock();
        if kept.generation == generation {
            kept.conn = None;
        }
    }

    /// Sends `cmd` and reads its reply: one round trip in the steady state.
    ///
    /// When `cmd` is an `EVALSHA` of `script`, a `NOSCRIPT` reply (a restarted or failed-over
    /// server) loads the script and sends again. An error that broke the connection, or no reply
    /// within the response timeout, checks out a fresh one and sends again. At most three sends,
    /// so only commands that may safely run twice belong here: a resent command may have reached
    /// Redis the first time. Commands that must not run twice use
    /// [`run_resend`](Self::run_resend).
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
        let (mut generation, mut conn) = self.checkout().await?;
        let mut resend = Some(resend);
        let mut resent: Option<Cmd> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = resent.as_ref().unwrap_or(cmd);
            let timeout = self.response_timeout();
            let result: Result<T, RedisError> =
                match tokio::time::timeout(timeout, current.query_async(&mut conn)).await {
                    Ok(result) => result,
                    Err(_) => Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no reply from redis within {timeout:?}"),
                    ))),
                };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) if attempt >= ATTEMPTS => return Err(err.into()),
                Err(err) => err,
            };
            if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                && let Some(script) = script
            {
                // The script did not run: the same form goes again.
                script.load_async(&mut conn).await?;
            } else if err.is_unrecoverable_error() || err.is_timeout() {
                tracing::debug!(error = %err, "redis connection lost or silent; checking out a fresh one");
                self.discard(generation);
                (generation, conn) = self.checkout().await?;
                if let Some(resend) = resend.take() {
                    resent = Some(resend());
                }
            } else {
                return Err(err.into());
            }
        }
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
