//! Configuration from the environment. The variables the worker reads too (`REDIS_URL`, the job
//! queue, heartbeats and history) are read by the worker crate's [`WorkerConfig`], with the same
//! parsing ([`Vars`]).

use std::net::IpAddr;
use std::time::Duration;

use stream_core::{ChannelConfig, StreamLeaseConfig};
use worker::{ConfigError, Vars, WorkerConfig};

/// The demo's settings. Every field comes from one environment variable; an unset or empty
/// variable takes the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `HOST` (default `0.0.0.0`): the address to bind.
    pub host: IpAddr,
    /// `PORT` (default 3000). `0` picks a free port; the app prints the bound address.
    pub port: u16,
    /// `OPENSEARCH_URL`. Unset: events are kept in an in-memory store.
    pub opensearch_url: Option<String>,
    /// `STREAM_LEASE_LIMIT` (default 5): concurrent streams per user.
    pub lease_limit: usize,
    /// `STREAM_LEASE_TTL_SECS` (default 180): lease lifetime without a refresh.
    pub lease_ttl_secs: u64,
    /// `DEMO_STEP_MS` (default 800): the delay between the deploy job's steps.
    pub step_ms: u64,
    /// `STREAM_TOKEN_SECRET`: the HMAC key of stream tokens, at least
    /// [`MIN_TOKEN_SECRET_BYTES`] bytes (a shorter one is refused). Unset: a random key per
    /// process (tokens then only work on the process that made them).
    pub token_secret: Option<String>,
    /// `CHAT_MAX_PROMPT_BYTES` (default 16384): the longest prompt `POST /chat/stream` takes, in
    /// bytes; a longer one is 413.
    pub chat_max_prompt_bytes: usize,
    /// `DEMO_MAX_BODY_BYTES` (default 65536): the largest JSON body the API takes, in bytes; a
    /// larger one is 413.
    pub max_body_bytes: usize,
    /// `DEMO_MAX_CHANNELS_PER_USER` (default 50): live channels (deployments and chats not yet
    /// `done`) per user; one more is 429.
    pub max_channels_per_user: usize,
    /// The variables the worker reads too: `REDIS_URL` (unset: everything in memory, and the
    /// deploy job runs in-process), `DEMO_JOB_QUEUE`, `DEMO_WORKER_ID`, `STREAM_PING_SECS`,
    /// `STREAM_HEARTBEAT_MS`, `STREAM_HISTORY_TTL_SECS` and `STREAM_HISTORY_MAX_LEN`.
    pub worker: WorkerConfig,
}

/// The shortest `STREAM_TOKEN_SECRET` accepted, in bytes: an HMAC-SHA256 key of less than 32
/// bytes is weaker than the hash.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

/// `STREAM_TOKEN_SECRET`, refused when shorter than [`MIN_TOKEN_SECRET_BYTES`]. The error does
/// not show the value.
fn token_secret<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Option<String>, ConfigError> {
    match vars.get("STREAM_TOKEN_SECRET") {
        Some(secret) if secret.len() < MIN_TOKEN_SECRET_BYTES => Err(ConfigError {
            name: "STREAM_TOKEN_SECRET",
            value: format!("<hidden, {} bytes>", secret.len()),
            reason: format!("must be at least {MIN_TOKEN_SECRET_BYTES} bytes"),
        }),
        secret => Ok(secret),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 3000,
            opensearch_url: None,
            lease_limit: 5,
            lease_ttl_secs: 180,
            step_ms: 800,
            token_secret: None,
            chat_max_prompt_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            max_channels_per_user: 50,
            worker: WorkerConfig::default(),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (a variable's value, or `None` when unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(lookup);
        let d = Self::default();
        Ok(Self {
            host: vars.parse("HOST")?.unwrap_or(d.host),
            port: vars.parse("PORT")?.unwrap_or(d.port),
            opensearch_url: vars.get("OPENSEARCH_URL"),
            lease_limit: vars
                .positive("STREAM_LEASE_LIMIT")?
                .map_or(d.lease_limit, |n| n as usize),
            lease_ttl_secs: vars.positive("STREAM_LEASE_TTL_SECS")?.unwrap_or(d.lease_ttl_secs),
            step_ms: vars.parse("DEMO_STEP_MS")?.unwrap_or(d.step_ms),
            token_secret: token_secret(&vars)?,
            chat_max_prompt_bytes: vars
                .positive("CHAT_MAX_PROMPT_BYTES")?
                .map_or(d.chat_max_prompt_bytes, |n| n as usize),
            max_body_bytes: vars
                .positive("DEMO_MAX_BODY_BYTES")?
                .map_or(d.max_body_bytes, |n| n as usize),
            max_channels_per_user: vars
                .positive("DEMO_MAX_CHANNELS_PER_USER")?
                .map_or(d.max_channels_per_user, |n| n as usize),
            worker: WorkerConfig::from_vars(&vars)?,
        })
    }

    /// `REDIS_URL`: `None` in memory mode.
    pub fn redis_url(&self) -> Option<&str> {
        self.worker.redis_url.as_deref()
    }

    /// The heartbeat interval of job emitters and of the producer check.
    pub fn heartbeat(&self) -> Duration {
        self.worker.heartbeat()
    }

    /// The channel and pipeline settings ([`WorkerConfig::channel_config`]).
    pub fn channel_config(&self) -> ChannelConfig {
        self.worker.channel_config()
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
        assert_eq!(c.redis_url(), None);
        assert_eq!(c.opensearch_url, None);
        assert_eq!(c.lease_limit, 5);
        assert_eq!(c.lease_ttl_secs, 180);
        assert_eq!(c.worker.ping_secs, 15);
        assert_eq!(c.step_ms, 800);
        assert_eq!(c.token_secret, None);
        assert_eq!(c.chat_max_prompt_bytes, 16384);
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.max_channels_per_user, 50);
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
            ("STREAM_TOKEN_SECRET", SECRET),
            ("CHAT_MAX_PROMPT_BYTES", "100"),
            ("DEMO_MAX_BODY_BYTES", "200"),
            ("DEMO_MAX_CHANNELS_PER_USER", "2"),
        ])
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.redis_url(), Some("redis://127.0.0.1:6399/"));
        assert_eq!(c.opensearch_url, None);
        assert_eq!(
            (c.lease_limit, c.lease_ttl_secs, c.worker.ping_secs, c.step_ms),
            (2, 30, 1, 50)
        );
        assert_eq!(c.token_secret.as_deref(), Some(SECRET));
        assert_eq!(
            (c.chat_max_prompt_bytes, c.max_body_bytes, c.max_channels_per_user),
            (100, 200, 2)
        );
        assert_eq!(c.lease_config().limit, 2);
        assert_eq!(c.channel_config().ping_interval, Duration::from_secs(1));
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_short_token_secret_is_refused_without_showing_it() {
        let e = from(&[("STREAM_TOKEN_SECRET", &SECRET[..31])]).unwrap_err();
        assert_eq!(e.name, "STREAM_TOKEN_SECRET");
        let text = e.to_string();
        assert!(
            text.contains("STREAM_TOKEN_SECRET") && text.contains("32 bytes"),
            "{text}"
        );
        assert!(!text.contains(&SECRET[..31]), "{text}");
        assert!(from(&[("STREAM_TOKEN_SECRET", SECRET)]).is_ok());
        assert!(from(&[("DEMO_MAX_CHANNELS_PER_USER", "0")]).is_err());
        assert!(from(&[("DEMO_MAX_BODY_BYTES", "big")]).is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(e.name, "PORT");
        assert!(from(&[("STREAM_LEASE_LIMIT", "0")]).is_err());
        assert!(from(&[("STREAM_PING_SECS", "-1")]).is_err());
    }
}
