//! The command side: where publish, history reads and registry calls get their connection, and
//! how a future runs when it is polled outside tokio.
//!
//! deadpool-redis checks a connection with a `PING` each time it hands one out, which would double
//! the round trips of a publish. Its connections are multiplexed, so the broker checks one out
//! once, keeps it, and sends every command over clones of it. The kept connection is dropped after
//! an error that breaks it, and the next command checks out a fresh one from the pool.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use stream_core::BoxError;
use tokio::runtime::Handle;
use tokio::task::JoinError;

/// The pool the broker's commands come from.
pub(crate) enum Source {
    Standalone(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A multiplexed connection: a clone is cheap and shares the socket (standalone) or the node
/// connections (cluster).
#[derive(Clone)]
pub(crate) enum Conn {
    Standalone(MultiplexedConnection),
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

/// A pool object kept checked out while the broker uses its connection.
enum Held {
    Standalone(#[allow(dead_code)] deadpool_redis::Connection),
    Cluster(#[allow(dead_code)] deadpool_redis::cluster::Connection),
}

#[derive(Default)]
struct Cached {
    /// Grows with each checkout, so that a task that saw an old connection fail does not drop a
    /// newer one.
    generation: u64,
    conn: Option<(Conn, Held)>,
}

/// The pool and the kept connection.
pub(crate) struct Commands {
    source: Source,
    cached: Mutex<Cached>,
}

impl Commands {
    pub(crate) fn new(source: Source) -> Self {
        Self {
            source,
            cached: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept connection, or a fresh one from the pool. No round trip when one is kept.
    pub(crate) async fn checkout(&self) -> Result<(u64, Conn), BoxError> {
        {
            let cached = self.lock();
            if let Some((conn, _)) = &cached.conn {
                return Ok((cached.generation, conn.clone()));
            }
        }
        let (conn, held) = match &self.source {
            Source::Standalone(pool) => {
                let obj = pool.get().await?;
                (Conn::Standalone((*obj).clone()), Held::Standalone(obj))
            }
            Source::Cluster(pool) => {
                let obj = pool.get().await?;
                (Conn::Cluster((*obj).clone()), Held::Cluster(obj))
            }
        };
        let mut cached = self.lock();
        if let Some((existing, _)) = &cached.conn {
            // Another task checked one out meanwhile; ours goes back to the pool.
            return Ok((cached.generation, existing.clone()));
        }
        cached.generation += 1;
        cached.conn = Some((conn.clone(), held));
        Ok((cached.generation, conn))
    }

    fn discard(&self, generation: u64) {
        let mut cached = self.lock();
        if cached.generation == generation {
            cached.conn = None;
        }
    }

    /// Sends `cmd` and reads its reply: one round trip in the steady state.
    ///
    /// A `NOSCRIPT` reply loads `script` and sends again; an error that broke the connection
    /// checks out a fresh one and sends again, once. A resent publish may store an event twice if
    /// the first attempt reached Redis; subscribers drop the second copy by id.
    pub(crate) async fn run<T: FromRedisValue>(&self, cmd: &Cmd, script: Option<&Script>) -> Result<T, BoxError> {
        let (mut generation, mut conn) = self.checkout().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result: Result<T, RedisError> = cmd.query_async(&mut conn).await;
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) if attempt >= 3 => return Err(err.into()),
                Err(err) => err,
            };
            if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                && let Some(script) = script
            {
                script.load_async(&mut conn).await?;
            } else if err.is_unrecoverable_error() {
                tracing::debug!(error = %err, "redis connection lost; checking out a fresh one");
                self.discard(generation);
                (generation, conn) = self.checkout().await?;
            } else {
                return Err(err.into());
            }
        }
    }
}

/// Runs `fut` here when the caller is inside a tokio runtime, else on `handle` (the runtime the
/// broker was built on), waiting for it through its join handle.
///
/// The redis client's I/O and timeouts need a tokio runtime; a `BlockingEmitter` polls publish
/// futures with a plain executor on a thread that has none. The fallback costs one task spawn.
pub(crate) async fn on_runtime<T, F>(handle: &Handle, fut: F) -> Result<T, JoinError>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    if Handle::try_current().is_ok() {
        Ok(fut.await)
    } else {
        handle.spawn(fut).await
    }
}
