//! The worker's settings from the environment, and the reading of variables that the apps'
//! configuration (`demo_service::Config`) shares.

use std::time::Duration;

use stream_core::ChannelConfig;
use stream_pubsub::RedisSource;

/// A variable held a value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Environment variables read through a lookup (a variable's value, or `None` when unset). An
/// empty or blank value counts as unset, so it takes the default.
pub struct Vars<F> {
    lookup: F,
}

impl<F> std::fmt::Debug for Vars<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vars").finish_non_exhaustive()
    }
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// Variables read through `lookup`.
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    /// The value of `name`; `None` when it is unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value of `name` parsed (surrounding spaces ignored); `None` when it is unset or blank.
    pub fn parse<T: std::str::FromStr>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|value| {
                value.trim().parse().map_err(|e: T::Err| ConfigError {
                    name,
                    reason: e.to_string(),
                    value,
                })
            })
            .transpose()
    }

    /// The value of `name` as a whole number of at least 1; `None` when it is unset or blank.
    pub fn positive(&self, name: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.parse::<u64>(name)? {
            Some(0) => Err(ConfigError {
                name,
                value: "0".into(),
                reason: "must be at least 1".into(),
            }),
            n => Ok(n),
        }
    }
}

/// What the worker reads from the environment; the apps read the same variables (their
/// `Config` holds one of these). Every field comes from one variable; an unset or empty variable
/// takes the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// `REDIS_URL`. The worker needs it (or `REDIS_CLUSTER_NODES`); for the apps, unset (with no
    /// cluster) means everything in memory and the deploy job in-process.
    pub redis_url: Option<String>,
    /// `REDIS_CLUSTER_NODES`: comma-separated node URLs of a Redis Cluster. When set, it wins
    /// over `REDIS_URL`: the broker, the lease limiter, the job queue and the demo's own keys all
    /// use the cluster (every key of a user, channel or queue keeps its hash tag).
    pub redis_cluster_nodes: Vec<String>,
    /// `DEMO_JOB_QUEUE` (default `stream-demo:jobs`): the Redis list that carries deploy jobs.
    pub job_queue: String,
    /// `DEMO_WORKER_ID` (default: `HOSTNAME`, else `worker`): the worker's stable name; its
    /// unfinished jobs wait in `<queue>:processing:<id>` and are requeued when it starts again.
    /// Give every worker process its own.
    pub worker_id: String,
    /// `STREAM_PING_SECS` (default 15): keepalive ping interval (and the Redis subscriber's
    /// health check).
    pub ping_secs: u64,
    /// `STREAM_HEARTBEAT_MS` (default 5000): how often a job's emitter sends a heartbeat, and how
    /// often a quiet stream checks its producer; a producer silent for three heartbeats is lost.
    pub heartbeat_ms: u64,
    /// `STREAM_HISTORY_TTL_SECS` (default 3600): how long a channel's history and owner record
    /// are kept after its last event or heartbeat.
    pub history_ttl_secs: u64,
    /// `STREAM_HISTORY_MAX_LEN` (default 5000): events kept per channel for late and resuming
    /// clients; a client that needs older ones is told with a `gap` event.
    pub history_max_len: usize,
    /// `STREAM_REDIS_RETRY_SECS` (default 10): how long a Redis command (an emit, a lease call)
    /// is retried with backoff through an outage, counted from its first failed try, before it
    /// fails with a clear error.
    pub redis_retry_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            job_queue: "stream-demo:jobs".into(),
            worker_id: "worker".into(),
            ping_secs: 15,
            heartbeat_ms: 5000,
            history_ttl_secs: 3600,
            history_max_len: 5000,
            redis_retry_secs: 10,
        }
    }
}

impl WorkerConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::new(|name: &str| std::env::var(name).ok()))
    }

    /// Reads settings through `lookup` (a variable's value, or `None` when unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::new(lookup))
    }

    /// Reads settings from `vars`.
    pub fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            redis_url: vars.get("REDIS_URL"),
            redis_cluster_nodes: vars
                .get("REDIS_CLUSTER_NODES")
                .map(|nodes| {
                    nodes
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            job_queue: vars.get("DEMO_JOB_QUEUE").unwrap_or(d.job_queue),
            worker_id: vars
                .get("DEMO_WORKER_ID")
                .or_else(|| vars.get("HOSTNAME"))
                .unwrap_or(d.worker_id),
            ping_secs: vars.positive("STREAM_PING_SECS")?.unwrap_or(d.ping_secs),
            heartbeat_ms: vars.positive("STREAM_HEARTBEAT_MS")?.unwrap_or(d.heartbeat_ms),
            history_ttl_secs: vars.positive("STREAM_HISTORY_TTL_SECS")?.unwrap_or(d.history_ttl_secs),
            history_max_len: vars
                .positive("STREAM_HISTORY_MAX_LEN")?
                .map_or(d.history_max_len, |n| n as usize),
            redis_retry_secs: vars.positive("STREAM_REDIS_RETRY_SECS")?.unwrap_or(d.redis_retry_secs),
        })
    }

    /// The heartbeat interval of job emitters and of the producer check.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// Where Redis is: the cluster when `REDIS_CLUSTER_NODES` is set, else `REDIS_URL`; `None`
    /// when neither is (memory mode). A new source each call (a source is not `Clone`).
    pub fn redis_source(&self) -> Option<RedisSource> {
        if !self.redis_cluster_nodes.is_empty() {
            return Some(RedisSource::cluster(self.redis_cluster_nodes.iter().cloned()));
        }
        self.redis_url.as_deref().map(RedisSource::from)
    }

    /// How long a Redis command is retried through an outage ([`Self::redis_retry_secs`]).
    pub fn redis_retry_window(&self) -> Duration {
        Duration::from_secs(self.redis_retry_secs)
    }

    /// The channel and pipeline settings: the defaults with these intervals and history limits.
    pub fn channel_config(&self) -> ChannelConfig {
        ChannelConfig {
            ping_interval: Duration::from_secs(self.ping_secs),
            heartbeat_interval: Some(self.heartbeat()),
            history_ttl: Duration::from_secs(self.history_ttl_secs),
            history_max_len: self.history_max_len,
            ..ChannelConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<WorkerConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        WorkerConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = from(&[]).unwrap();
        assert_eq!(c.redis_url, None);
        assert!(c.redis_source().is_none());
        assert_eq!(c.job_queue, "stream-demo:jobs");
        assert_eq!(c.worker_id, "worker");
        assert_eq!(c.ping_secs, 15);
        assert_eq!(c.heartbeat(), Duration::from_secs(5));
        assert_eq!(c.history_ttl_secs, 3600);
        assert_eq!(c.history_max_len, 5000);
        assert_eq!(c.redis_retry_window(), Duration::from_secs(10));
    }

    #[test]
    fn values_are_read_and_empty_means_unset() {
        let c = from(&[
            ("REDIS_URL", "redis://127.0.0.1:6399/"),
            ("DEMO_JOB_QUEUE", " "),
            ("HOSTNAME", "host-1"),
            ("STREAM_PING_SECS", "2"),
            ("STREAM_HEARTBEAT_MS", " 250 "),
            ("STREAM_HISTORY_TTL_SECS", "60"),
            ("STREAM_HISTORY_MAX_LEN", "10"),
            ("STREAM_REDIS_RETRY_SECS", "3"),
        ])
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6399/"));
        assert_eq!(c.job_queue, "stream-demo:jobs");
        assert_eq!(c.worker_id, "host-1");
        let channel = c.channel_config();
        assert_eq!(channel.ping_interval, Duration::from_secs(2));
        assert_eq!(channel.heartbeat_interval, Some(Duration::from_millis(250)));
        assert_eq!(channel.history_ttl, Duration::from_secs(60));
        assert_eq!(channel.history_max_len, 10);
        assert_eq!(c.redis_retry_window(), Duration::from_secs(3));
        assert!(!c.redis_source().unwrap().is_cluster());
        let cluster = from(&[
            ("REDIS_URL", "redis://127.0.0.1:6399/"),
            (
                "REDIS_CLUSTER_NODES",
                " redis://127.0.0.1:7101, redis://127.0.0.1:7102 ,",
            ),
        ])
        .unwrap();
        assert_eq!(
            cluster.redis_cluster_nodes,
            ["redis://127.0.0.1:7101", "redis://127.0.0.1:7102"]
        );
        assert!(cluster.redis_source().unwrap().is_cluster(), "the cluster wins");
        let named = from(&[("DEMO_WORKER_ID", "w-7"), ("HOSTNAME", "host-1")]).unwrap();
        assert_eq!(named.worker_id, "w-7");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[("STREAM_HEARTBEAT_MS", "0")]).unwrap_err();
        assert_eq!((e.name, e.value.as_str()), ("STREAM_HEARTBEAT_MS", "0"));
        let e = from(&[("STREAM_HISTORY_MAX_LEN", "many")]).unwrap_err();
        assert_eq!((e.name, e.value.as_str()), ("STREAM_HISTORY_MAX_LEN", "many"));
    }
}
