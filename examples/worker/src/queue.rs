//! Where deploy jobs run: in-process (memory mode) or on a Redis list that the worker process
//! takes from (Redis mode).

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
#[cfg(doc)]
use stream_core::Emitter;
use stream_core::{CancellationToken, ChannelRegistry, EventPublisher, OwnerRecord, StreamContext, UserId};
use stream_pubsub::{RedisSource, stream_redis};

use crate::job::{DeployJob, DeployRequest, run_deploy_job};

/// A job could not be queued or taken.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis failed.
    #[error("job queue: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis failed, or did not answer, on every try of a push.
    #[error("job queue: {0}")]
    Push(#[source] stream_core::BoxError),
}

/// Where [`submit`](Self::submit) sends jobs.
#[derive(Clone)]
pub enum JobQueue {
    /// Runs each job as a tokio task of this process, emitting through `publisher`.
    InProcess {
        /// The app's publisher (with the in-memory broker and store).
        publisher: Arc<dyn EventPublisher>,
    },
    /// Pushes each job onto the Redis list `key` (`RPUSH`, once per job), for a worker's
    /// `BLMOVE`.
    Redis {
        /// The kept multiplexed connection of stream-redis: a response timeout on every send, and a
        /// fresh connection after one that broke or went silent.
        connection: Arc<stream_redis::SharedConnection>,
        /// The push script.
        script: Arc<redis::Script>,
        /// The list.
        key: String,
    },
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess { .. } => f.write_str("JobQueue::InProcess"),
            Self::Redis { key, .. } => write!(f, "JobQueue::Redis({key})"),
        }
    }
}

/// Pushes a job once: `KEYS[1]` the queue, `KEYS[2]` the job's marker; `ARGV[1]` the job, `ARGV[2]`
/// the marker's TTL in seconds. A push resent after its reply was lost finds the marker and pushes
/// nothing. Returns 1 when pushed, 0 when it already was.
const PUSH_ONCE: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// How long a job's push marker is kept: a resend comes within seconds; a day is generous.
const PUSH_MARKER_TTL_SECS: u64 = 24 * 3600;

/// The default response timeout of the job queue's Redis commands.
pub const QUEUE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

impl JobQueue {
    /// A queue named `key` (the list [`queue_key`]) in Redis at `source` (a URL, or a cluster),
    /// with the default response timeout (2 s). One connection, checked now.
    pub async fn redis(source: impl Into<RedisSource>, key: &str) -> Result<Self, QueueError> {
        Self::redis_with_timeout(source, key, QUEUE_RESPONSE_TIMEOUT).await
    }

    /// A queue named `key` whose commands wait `response_timeout` for a reply.
    pub async fn redis_with_timeout(
        source: impl Into<RedisSource>,
        key: &str,
        response_timeout: Duration,
    ) -> Result<Self, QueueError> {
        let connection = source.into().into_shared().map_err(QueueError::Push)?;
        connection.set_response_timeout(response_timeout);
        let _: String = connection
            .run(&redis::cmd("PING"), None)
            .await
            .map_err(QueueError::Push)?;
        Ok(Self::Redis {
            connection: Arc::new(connection),
            script: Arc::new(redis::Script::new(PUSH_ONCE)),
            key: key.to_owned(),
        })
    }

    /// Starts the deploy job for `ctx`, whose channel `owner` registered: spawns it, or pushes it
    /// onto the list (one round trip).
    ///
    /// The push is idempotent: it is keyed by the job's channel, so a push whose reply was lost (a
    /// timeout, a dropped connection) is sent again and the job is still queued exactly once.
    pub async fn submit(
        &self,
        ctx: StreamContext,
        owner: Option<&UserId>,
        request: DeployRequest,
        step: Duration,
    ) -> Result<(), QueueError> {
        match self {
            Self::InProcess { publisher } => {
                let emitter = ctx.bind(publisher.clone());
                tokio::spawn(async move {
                    if let Err(e) = run_deploy_job(&emitter, &request, step).await {
                        tracing::warn!(channel = %emitter.channel_id(), error = %e, "deploy job failed");
                    }
                });
                Ok(())
            }
            Self::Redis {
                connection,
                script,
                key,
            } => {
                let job = DeployJob::new(&ctx, owner, request, step).to_json();
                let marker = format!("{}:pushed:{}", queue_key(key), ctx.channel_id());
                let mut cmd = stream_redis::evalsha(script, &[&queue_key(key), &marker]);
                cmd.arg(job).arg(PUSH_MARKER_TTL_SECS);
                // Sent again (on a fresh connection) when no reply comes: the marker makes the
                // second run push nothing.
                let _pushed: i64 = connection.run(&cmd, Some(script)).await.map_err(QueueError::Push)?;
                Ok(())
            }
        }
    }
}

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The worker's stable name (see [`run_worker`]).
    pub worker: String,
    /// How long jobs still running at shutdown are awaited.
    pub grace: Duration,
    /// The job emitters' heartbeat interval.
    pub heartbeat: Duration,
    /// Where the apps register channel owners, and for how long (the history TTL): each job's
    /// emitter renews its channel's owner record with its heartbeat ([`Emitter::with_owner`]).
    /// `None` renews nothing.
    pub owners: Option<(Arc<dyn ChannelRegistry>, Duration)>,
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("worker", &self.worker)
            .field("grace", &self.grace)
            .field("heartbeat", &self.heartbeat)
            .field("owner_ttl", &self.owners.as_ref().map(|(_, ttl)| ttl))
            .finish()
    }
}

/// The list that holds the jobs a worker has taken and not finished: `<queue>:processing:<worker>`.
pub fn processing_list(queue: &str, worker: &str) -> String {
    format!("{}:processing:{worker}", queue_key(queue))
}

/// The Redis list of the queue named `queue`: `{<queue>}`. The braces make the name a hash tag:
/// the list, the workers' processing lists ([`processing_list`]) and the push markers share it,
/// so that on a Redis Cluster they live in one slot (`BLMOVE` and the push script touch two of
/// them at once).
pub fn queue_key(queue: &str) -> String {
    format!("{{{queue}}}")
}

/// The worker's connection for its queue commands: one server (a connection manager, which
/// reconnects after Redis restarts), or a cluster (which follows slot moves and failovers).
#[derive(Clone)]
enum QueueConnection {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl QueueConnection {
    /// Opens a connection to `source` whose replies may take up to `response_timeout` (`BLMOVE`
    /// blocks for a second).
    async fn open(source: RedisSource, response_timeout: Duration) -> Result<Self, QueueError> {
        match source {
            RedisSource::Url(url) => {
                let client = redis::Client::open(url)?;
                let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(response_timeout));
                Ok(Self::Single(client.get_connection_manager_with_config(config).await?))
            }
            RedisSource::Cluster(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes)
                    .response_timeout(response_timeout)
                    .build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
            other => Err(QueueError::Push(
                format!(
                    "the worker needs a Redis URL or cluster node URLs, not {}",
                    other.describe()
                )
                .into(),
            )),
        }
    }
}

impl redis::aio::ConnectionLike for QueueConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The worker loop, a reliable queue: takes jobs from the Redis list `key` with `BLMOVE` into this
/// worker's processing list (one second at a time), runs each as a task that emits through
/// `publisher`, and removes it from the processing list when it ends, until `shutdown` is
/// cancelled. Jobs still running then are awaited for at most `grace`.
///
/// A job is never lost between Redis and the worker: a `BLMOVE` whose reply is lost leaves the job
/// in the processing list, and so does a worker that stops (or dies) with jobs unfinished. At
/// start the worker moves whatever its processing list holds back to the head of the queue, so
/// each worker needs its own stable `worker` name (the demo's `DEMO_WORKER_ID`).
pub async fn run_worker(
    source: impl Into<RedisSource>,
    key: &str,
    options: WorkerOptions,
    publisher: Arc<dyn EventPublisher>,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    let WorkerOptions {
        worker,
        grace,
        heartbeat,
        owners,
    } = options;
    let worker = worker.as_str();
    // BLMOVE waits up to a second, beyond the default response timeout. The connection reconnects
    // after Redis restarts or drops the connection (or, on a cluster, follows the slot to its new
    // primary); until then BLMOVE fails and is retried below.
    let mut connection = QueueConnection::open(source.into(), Duration::from_secs(10)).await?;
    let processing = processing_list(key, worker);
    let list = queue_key(key);
    let mut recovered = 0;
    // Jobs a previous run of this worker took and did not finish go back to the head of the queue.
    while let Some(_job) = connection
        .lmove::<_, _, Option<String>>(&processing, &list, redis::Direction::Right, redis::Direction::Left)
        .await?
    {
        recovered += 1;
    }
    if recovered > 0 {
        tracing::warn!(
            jobs = recovered,
            queue = key,
            "requeued jobs a previous run did not finish"
        );
    }
    let mut running = tokio::task::JoinSet::new();
    tracing::info!(queue = key, worker, "worker waiting for jobs");
    let mut blmove = redis::cmd("BLMOVE");
    blmove.arg(&list).arg(&processing).arg("LEFT").arg("RIGHT").arg(1);
    loop {
        let popped: Option<String> = tokio::select! {
            () = shutdown.cancelled() => break,
            popped = blmove.query_async(&mut connection) => match popped {
                Ok(popped) => popped,
                Err(e) => {
                    tracing::warn!(error = %e, "BLMOVE failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        while running.try_join_next().is_some() {}
        let Some(json) = popped else { continue };
        let (job, ctx) = match DeployJob::from_json(&json) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "dropping an invalid job");
                let _: Result<i64, _> = connection.lrem(&processing, 1, &json).await;
                continue;
            }
        };
        tracing::info!(channel = %ctx.channel_id(), "job taken");
        let mut emitter = ctx.bind(publisher.clone()).with_heartbeat(Some(heartbeat));
        if let (Some((registry, ttl)), Some(owner)) = (&owners, job.owner()) {
            emitter = emitter.with_owner(OwnerRecord {
                registry: registry.clone(),
                owner,
                ttl: *ttl,
            });
        }
        let (mut done_conn, processing) = (connection.clone(), processing.clone());
        running.spawn(async move {
            match run_deploy_job(&emitter, &job.config, job.step()).await {
                Ok(()) => tracing::info!(channel = %emitter.channel_id(), "job done"),
                Err(e) => tracing::warn!(channel = %emitter.channel_id(), error = %e, "deploy job failed"),
            }
            if let Err(e) = done_conn.lrem::<_, _, i64>(&processing, 1, &json).await {
                tracing::warn!(error = %e, "could not remove a finished job from the processing list");
            }
        });
    }
    if tokio::time::timeout(grace, async { while running.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(jobs = running.len(), "shutting down with jobs still running");
    }
    Ok(())
}
