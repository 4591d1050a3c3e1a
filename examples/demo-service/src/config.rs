//! Configuration from the environment.

use std::net::IpAddr;
use std::time::Duration;

use stream_core::{ChannelConfig, StreamLeaseConfig};

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

/// The demo's settings. Every field comes from one environment variable; an unset or empty
/// variable takes the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `HOST` (default `0.0.0.0`): the address to bind.
    pub host: IpAddr,
    /// `PORT` (default 3000). `0` picks a free port; the app prints the bound address.
    pub port: u16,
    /// `REDIS_URL`. Unset: everything in memory, and the deploy job runs in-process.
    pub redis_url: Option<String>,
    /// `OPENSEARCH_URL`. Unset: events are kept in an in-memory store.
    pub opensearch_url: Option<String>,
    /// `STREAM_LEASE_LIMIT` (default 5): concurrent streams per user.
    pub lease_limit: usize,
    /// `STREAM_LEASE_TTL_SECS` (default 180): lease lifetime without a refresh.
    pub lease_ttl_secs: u64,
    /// `STREAM_PING_SECS` (default 15): keepalive ping interval.
    pub ping_secs: u64,
    /// `DEMO_STEP_MS` (default 800): the delay between the deploy job's steps.
    pub step_ms: u64,
    /// `STREAM_TOKEN_SECRET`: the HMAC key of stream tokens. Unset: a random key per process
    /// (tokens then only work on the process that made them).
    pub token_secret: Option<String>,
    /// `DEMO_JOB_QUEUE` (default `stream-demo:jobs`): the Redis list that carries deploy jobs.
    pub job_queue: String,
    /// `DEMO_WORKER_ID` (default: `HOSTNAME`, else `worker`): the worker's stable name; its
    /// unfinished jobs wait in `<queue>:processing:<id>` and are requeued when it starts again.
    /// Give every worker process its own.
    pub worker_id: String,
    /// `STREAM_HEARTBEAT_MS` (default 5000): how often a job's emitter sends a heartbeat, and how
    /// often a quiet stream checks its producer; a producer silent for three heartbeats is lost.
    pub heartbeat_ms: u64,
    /// `STREAM_HISTORY_TTL_SECS` (default 3600): how long a channel's history and owner record
    /// are kept after its last event or heartbeat.
    pub history_ttl_secs: u64,
    /// `STREAM_HISTORY_MAX_LEN` (default 5000): events kept per channel for late and resuming
    /// clients; a client that needs older ones is told with a `gap` event.
    pub history_max_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 3000,
            redis_url: None,
            opensearch_url: None,
            lease_limit: 5,
            lease_ttl_secs: 180,
            ping_secs: 15,
            step_ms: 800,
            token_secret: None,
            job_queue: "stream-demo:jobs".into(),
            worker_id: "worker".into(),
            heartbeat_ms: 5000,
            history_ttl_secs: 3600,
            history_max_len: 5000,
        }
    }
}

fn parse<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError {
        name,
        reason: e.to_string(),
        value,
    })
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (a variable's value, or `None` when unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let d = Self::default();
        let positive = |name: &'static str, v: u64| {
            if v == 0 {
                Err(ConfigError {
                    name,
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(v)
            }
        };
        Ok(Self {
            host: get("HOST").map(|v| parse("HOST", v)).transpose()?.unwrap_or(d.host),
            port: get("PORT").map(|v| parse("PORT", v)).transpose()?.unwrap_or(d.port),
            redis_url: get("REDIS_URL"),
            opensearch_url: get("OPENSEARCH_URL"),
            lease_limit: get("STREAM_LEASE_LIMIT")
                .map(|v| parse::<u64>("STREAM_LEASE_LIMIT", v).and_then(|n| positive("STREAM_LEASE_LIMIT", n)))
                .transpose()?
                .map_or(d.lease_limit, |n| n as usize),
            lease_ttl_secs: get("STREAM_LEASE_TTL_SECS")
                .map(|v| parse("STREAM_LEASE_TTL_SECS", v).and_then(|n| positive("STREAM_LEASE_TTL_SECS", n)))
                .transpose()?
                .unwrap_or(d.lease_ttl_secs),
            ping_secs: get("STREAM_PING_SECS")
                .map(|v| parse("STREAM_PING_SECS", v).and_then(|n| positive("STREAM_PING_SECS", n)))
                .transpose()?
                .unwrap_or(d.ping_secs),
            step_ms: get("DEMO_STEP_MS")
                .map(|v| parse("DEMO_STEP_MS", v))
                .transpose()?
                .unwrap_or(d.step_ms),
            token_secret: get("STREAM_TOKEN_SECRET"),
            job_queue: get("DEMO_JOB_QUEUE").unwrap_or(d.job_queue),
            worker_id: get("DEMO_WORKER_ID").or_else(|| get("HOSTNAME")).unwrap_or(d.worker_id),
            heartbeat_ms: get("STREAM_HEARTBEAT_MS")
                .map(|v| parse("STREAM_HEARTBEAT_MS", v).and_then(|n| positive("STREAM_HEARTBEAT_MS", n)))
                .transpose()?
                .unwrap_or(d.heartbeat_ms),
            history_ttl_secs: get("STREAM_HISTORY_TTL_SECS")
                .map(|v| parse("STREAM_HISTORY_TTL_SECS", v).and_then(|n| positive("STREAM_HISTORY_TTL_SECS", n)))
                .transpose()?
                .unwrap_or(d.history_ttl_secs),
            history_max_len: get("STREAM_HISTORY_MAX_LEN")
                .map(|v| parse::<u64>("STREAM_HISTORY_MAX_LEN", v).and_then(|n| positive("STREAM_HISTORY_MAX_LEN", n)))
                .transpose()?
                .map_or(d.history_max_len, |n| n as usize),
        })
    }

    /// The heartbeat interval of job emitters and of the producer check.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// The channel and pipeline settings: the defaults with this ping interval.
    pub fn channel_config(&self) -> ChannelConfig {
        ChannelConfig {
            ping_interval: Duration::from_secs(self.ping_secs),
            heartbeat_interval: Some(self.heartbeat()),
            history_ttl: Duration::from_secs(self.history_ttl_secs),
            history_max_len: self.history_max_len,
            ..ChannelConfig::default()
        }
    }

    /// The lease settings: the defaults with this limit and TTL.
    pub fn lease_config(&self) -> StreamLeaseConfig {
        StreamLeaseConfig {
            limit: self.lease_limit,
            ttl_seconds: self.lease_ttl_secs,
            ..StreamLeaseConfig::default()
        }
    }

    /// The delay between the deploy job's steps.
    pub fn step(&self) -> Duration {
        Duration::from_millis(self.step_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = from(&[]).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.redis_url, None);
        assert_eq!(c.opensearch_url, None);
        assert_eq!(c.lease_limit, 5);
        assert_eq!(c.lease_ttl_secs, 180);
        assert_eq!(c.ping_secs, 15);
        assert_eq!(c.step_ms, 800);
        assert_eq!(c.token_secret, None);
    }

    #[test]
    fn values_are_read_and_empty_means_unset() {
        let c = from(&[
            ("PORT", "8080"),
            ("REDIS_URL", "redis://127.0.0.1:6399/"),
            ("OPENSEARCH_URL", ""),
            ("STREAM_LEASE_LIMIT", "2"),
            ("STREAM_LEASE_TTL_SECS", "30"),
            ("STREAM_PING_SECS", "1"),
            ("DEMO_STEP_MS", "50"),
            ("STREAM_TOKEN_SECRET", "s3cret"),
        ])
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6399/"));
        assert_eq!(c.opensearch_url, None);
        assert_eq!(
            (c.lease_limit, c.lease_ttl_secs, c.ping_secs, c.step_ms),
            (2, 30, 1, 50)
        );
        assert_eq!(c.token_secret.as_deref(), Some("s3cret"));
        assert_eq!(c.lease_config().limit, 2);
        assert_eq!(c.channel_config().ping_interval, Duration::from_secs(1));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(e.name, "PORT");
        assert!(from(&[("STREAM_LEASE_LIMIT", "0")]).is_err());
        assert!(from(&[("STREAM_PING_SECS", "-1")]).is_err());
    }
}
