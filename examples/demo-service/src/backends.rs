//! Chooses the backends from the [`Config`].

use std::sync::Arc;

use stream_core::memory::{MemoryEventStore, MemoryLeaseStore};
use stream_core::{EventStore, Streaming};
use stream_lease::StreamLeaseLimiter;
use stream_pubsub::RedisBroker;
use stream_store_opensearch::{OpenSearchConfig, OpenSearchEventStore};
use worker::{ConfigError, JobQueue, QUEUE_RESPONSE_TIMEOUT, QueueError};

use crate::channels::ChannelCap;
use crate::config::Config;
use crate::service::{Backends, Mode};

/// The settings or the backends could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An environment variable holds an unusable value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Redis broker failed to connect.
    #[error("Redis broker: {0}")]
    Broker(#[source] stream_pubsub::ConnectError),
    /// The Redis lease limiter failed to connect.
    #[error("Redis lease limiter: {0}")]
    Leases(#[source] stream_lease::LimiterError),
    /// The live-channel counts' Redis connection failed.
    #[error("Redis channel limit: {0}")]
    ChannelCap(#[source] stream_core::BoxError),
    /// The job queue failed to connect.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The OpenSearch settings are invalid.
    #[error("OpenSearch settings: {0}")]
    OpenSearchConfig(#[source] stream_store_opensearch::ConfigError),
    /// OpenSearch failed to connect.
    #[error("OpenSearch: {0}")]
    OpenSearch(#[source] stream_store_opensearch::ConnectError),
}

/// The OpenSearch store when `OPENSEARCH_URL` is set (all `OPENSEARCH_*` variables apply).
async fn opensearch(config: &Config) -> Result<Option<Arc<dyn EventStore>>, StartError> {
    if config.opensearch_url.is_none() {
        return Ok(None);
    }
    let os_config = OpenSearchConfig::from_env().map_err(StartError::OpenSearchConfig)?;
    let store = OpenSearchEventStore::connect(os_config)
        .await
        .map_err(StartError::OpenSearch)?;
    Ok(Some(Arc::new(store)))
}

/// The app's backends.
///
/// - `REDIS_URL` unset: the in-memory broker, leases, store and live-channel counts, and the job
///   runs in-process.
/// - `REDIS_URL` set: the Redis broker (events, history, channel owners), the Redis lease
///   limiter, the live-channel counts in Redis, and jobs pushed onto the Redis list for the
///   worker process.
/// - `OPENSEARCH_URL` set: events are archived in OpenSearch and `GET /events` reads it. Unset:
///   an in-memory store (per app instance).
///
/// In memory mode the app's publisher archives what the in-process jobs emit. In Redis mode the
/// worker writes to no store: the app archives each deployment channel it creates itself, by
/// subscribing to it ([`Backends::archive`]).
pub async fn app_backends(config: &Config) -> Result<Backends, StartError> {
    let opensearch = opensearch(config).await?;
    let channel_config = config.channel_config();
    let cluster = !config.worker.redis_cluster_nodes.is_empty();
    let source = || config.worker.redis_source();
    match source() {
        None => {
            let streaming = match opensearch {
                None => Streaming::in_memory(channel_config, config.lease_config()),
                Some(store) => {
                    let broker = Arc::new(stream_core::memory::MemoryBroker::new(channel_config.clone()));
                    Streaming::from_parts(
                        broker.clone(),
                        broker.clone(),
                        broker,
                        Arc::new(MemoryLeaseStore::new(config.lease_config())),
                        Some(store),
                        channel_config,
                    )
                }
            };
            Ok(Backends {
                jobs: JobQueue::InProcess {
                    publisher: streaming.publisher.clone(),
                },
                streaming,
                mode: Mode::Memory,
                archive: None,
                channel_cap: Arc::new(ChannelCap::memory()),
            })
        }
        Some(broker_source) => {
            let broker = Arc::new(
                RedisBroker::builder(broker_source)
                    .config(channel_config.clone())
                    .retry_window(config.worker.redis_retry_window())
                    .connect()
                    .await
                    .map_err(StartError::Broker)?,
            );
            let leases = StreamLeaseLimiter::builder(source().expect("set"))
                .config(config.lease_config())
                .retry_window(config.worker.redis_retry_window())
                .connect()
                .await
                .map_err(StartError::Leases)?;
            let archive = opensearch.unwrap_or_else(|| Arc::new(MemoryEventStore::default()));
            // No store on the publisher: the jobs' events are published by the worker, and the
            // app archives their channels by subscribing.
            let streaming = Streaming::from_parts(
                broker.clone(),
                broker.clone(),
                broker,
                Arc::new(leases),
                None,
                channel_config,
            );
            Ok(Backends {
                jobs: JobQueue::redis(source().expect("set"), &config.worker.job_queue).await?,
                streaming,
                mode: if cluster { Mode::RedisCluster } else { Mode::Redis },
                archive: Some(archive),
                channel_cap: Arc::new(
                    ChannelCap::redis(source().expect("set"), QUEUE_RESPONSE_TIMEOUT)
                        .await
                        .map_err(StartError::ChannelCap)?,
                ),
            })
        }
    }
}
