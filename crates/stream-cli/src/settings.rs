//! The backends, from the environment variables the apps and the worker read, through the same
//! readers: [`RedisBroker::from_env`] and [`StreamLeaseLimiter::from_env`] (`REDIS_CLUSTER_NODES`,
//! else `REDIS_URL`), the worker's [`WorkerConfig`] (the channel settings: `STREAM_*`) and
//! [`Vars`] (`STREAM_LEASE_LIMIT`, as the demo reads it), and [`OpenSearchConfig::from_env`]
//! (every `OPENSEARCH_*` variable).

use stream_core::{ChannelConfig, StreamLeaseConfig};
use stream_lease::StreamLeaseLimiter;
use stream_pubsub::RedisBroker;
use stream_store_opensearch::{OpenSearchConfig, env as os_env};
use worker::{Vars, WorkerConfig};

use crate::error::{CliError, chain};

/// The `CLIENT SETNAME` of the CLI's Redis subscriber connection, to tell it apart in
/// `CLIENT LIST`.
pub(crate) const CLIENT_NAME: &str = "stream-cli";

/// The process environment, read as the apps read it (blank counts as unset).
fn vars() -> Vars<impl Fn(&str) -> Option<String>> {
    Vars::new(|name: &str| std::env::var(name).ok())
}

/// The channel settings the apps and the worker use: [`WorkerConfig::channel_config`], so that a
/// publish keeps the history as long as theirs do and `tail` checks producers as they do.
pub(crate) fn channel_config() -> Result<ChannelConfig, CliError> {
    let worker = WorkerConfig::from_vars(&vars()).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(worker.channel_config())
}

const NO_REDIS: &str = "neither REDIS_CLUSTER_NODES nor REDIS_URL is set: point one of them at the apps' \
                        Redis (e.g. REDIS_URL=redis://127.0.0.1:6379/)";

/// The Redis broker the apps and the worker use.
pub(crate) async fn broker() -> Result<RedisBroker, CliError> {
    let config = channel_config()?;
    let builder = RedisBroker::from_env().ok_or_else(|| CliError::Usage(NO_REDIS.into()))?;
    builder
        .config(config)
        .client_name(CLIENT_NAME)
        .connect()
        .await
        .map_err(|e| match e {
            stream_pubsub::ConnectError::InvalidConfig(reason) => CliError::Usage(format!("Redis settings: {reason}")),
            e => CliError::Failed(format!("Redis: {}", chain(&e))),
        })
}

/// The lease limiter the apps use, with the limit they read (`STREAM_LEASE_LIMIT`, default 5).
pub(crate) async fn lease_limiter() -> Result<StreamLeaseLimiter, CliError> {
    let defaults = StreamLeaseConfig::default();
    let limit = vars()
        .positive("STREAM_LEASE_LIMIT")
        .map_err(|e| CliError::Usage(e.to_string()))?
        .map_or(defaults.limit, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let builder = StreamLeaseLimiter::from_env().ok_or_else(|| CliError::Usage(NO_REDIS.into()))?;
    builder
        .config(StreamLeaseConfig { limit, ..defaults })
        .connect()
        .await
        .map_err(|e| match e {
            stream_lease::LimiterError::InvalidConfig(reason) => CliError::Usage(format!("lease settings: {reason}")),
            e => CliError::Failed(format!("Redis: {}", chain(&e))),
        })
}

/// The archive's settings: [`OpenSearchConfig::from_env`], when `OPENSEARCH_URL` (or
/// `OPENSEARCH_HOST`) says where the archive is. The apps keep no archive without it.
pub(crate) fn opensearch_config() -> Result<OpenSearchConfig, CliError> {
    let vars = vars();
    if vars.get(os_env::URL).is_none() && vars.get(os_env::HOST).is_none() {
        return Err(CliError::Usage(format!(
            "{} is not set: point it at the apps' OpenSearch (e.g. {}=http://127.0.0.1:9200); \
             without it the apps keep no archive to query",
            os_env::URL,
            os_env::URL
        )));
    }
    OpenSearchConfig::from_env().map_err(|e| CliError::Usage(format!("OpenSearch settings: {e}")))
}
