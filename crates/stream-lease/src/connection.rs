//! Where the limiter's connections come from, and the cached multiplexed connection every
//! operation clones.
//!
//! deadpool checks a connection with a `PING` each time it hands one out, which would double the
//! round trips of an operation. Redis connections from deadpool-redis are multiplexed, so the
//! limiter checks one out once, keeps a clone of it, and sends every script over that clone. The
//! clone is dropped after an error that breaks the connection, and the next operation checks out
//! a fresh one from the pool.

use std::sync::Mutex;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use stream_core::BoxError;

/// The pool behind a limiter.
pub(crate) enum Source {
    Standalone(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A multiplexed connection: cloning it is cheap and every clone shares one socket (standalone) or
/// one set of node connections (cluster).
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

/// The pool and the cached connection. The generation grows with each connection taken from the
/// pool, so that a task that saw an old connection fail does not throw away a newer one.
pub(crate) struct Connections {
    source: Source,
    cached: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    generation: u64,
    conn: Option<Conn>,
}

impl Connections {
    pub(crate) fn new(source: Source) -> Self {
        Self {
            source,
            cached: Mutex::default(),
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster(_))
    }

    /// The cached connection, or a fresh one from the pool (one pool checkout, which may connect).
    pub(crate) async fn get(&self) -> Result<(u64, Conn), BoxError> {
        {
            let cached = self.lock();
            if let Some(conn) = &cached.conn {
                return Ok((cached.generation, conn.clone()));
            }
        }
        let conn = match &self.source {
            Source::Standalone(pool) => {
                let pooled = pool.get().await?;
                Conn::Standalone(MultiplexedConnection::clone(&pooled))
            }
            Source::Cluster(pool) => {
                let pooled = pool.get().await?;
                Conn::Cluster(ClusterConnection::clone(&pooled))
            }
        };
        let mut cached = self.lock();
        if let Some(newer) = &cached.conn {
            // Another task replaced it meanwhile; share that one.
            return Ok((cached.generation, newer.clone()));
        }
        cached.generation += 1;
        cached.conn = Some(conn.clone());
        Ok((cached.generation, conn))
    }

    /// Forgets the cached connection if it is still the one of `generation`.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut cached = self.lock();
        if cached.generation == generation {
            cached.conn = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}
