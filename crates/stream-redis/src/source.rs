//! Where Redis is.

use std::fmt;

use deadpool_redis::Runtime;

use crate::BoxError;
use crate::connection::{Pool, SharedConnection};

/// Where a backend finds Redis: a URL, a cluster's node URLs, or a deadpool-redis pool the
/// application already has.
///
/// `&str` and `String` convert to [`Url`](Self::Url), the pools to their variants, so entry
/// points such as `stream_lease::StreamLeaseLimiter::builder` take any of them, like the seed's
/// `init_lease_limiter(redis_config, config)` (`stream_lease::compat::init_lease_limiter`).
#[non_exhaustive]
pub enum RedisSource {
    /// A standalone Redis (`redis://[:password@]host:port[/db]`, `rediss://…`). A deadpool-redis
    /// pool is built for it.
    Url(String),
    /// A standalone Redis behind an existing pool.
    Pool(deadpool_redis::Pool),
    /// A Redis Cluster, by the URLs of some of its nodes (any node will do to discover the rest).
    Cluster(Vec<String>),
    /// A Redis Cluster behind an existing pool.
    ClusterPool(deadpool_redis::cluster::Pool),
}

impl RedisSource {
    /// A Redis Cluster from node URLs, e.g. the comma-separated `REDIS_CLUSTER_NODES` split up.
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Cluster(nodes.into_iter().map(Into::into).collect())
    }

    /// The source the environment names, as the apps and the worker read it:
    /// `REDIS_CLUSTER_NODES` (comma-separated node URLs) picks a cluster; else `REDIS_URL` picks a
    /// standalone server; `None` when neither is set (or both are blank), so that a program can
    /// fall back to the in-memory backends.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let var = |name| var(name).filter(|v| !v.trim().is_empty());
        if let Some(nodes) = var("REDIS_CLUSTER_NODES") {
            return Some(Self::cluster(nodes.split(',').map(str::trim).filter(|n| !n.is_empty())));
        }
        var("REDIS_URL").map(|url| Self::Url(url.trim().to_owned()))
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_) | Self::ClusterPool(_))
    }

    /// How the source is named in errors and `Debug`: URLs without passwords.
    pub fn describe(&self) -> String {
        match self {
            Self::Url(url) => redact(url),
            Self::Pool(_) => "a deadpool-redis pool".into(),
            Self::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| redact(n)).collect();
                format!("the Redis Cluster {}", nodes.join(","))
            }
            Self::ClusterPool(_) => "a deadpool-redis cluster pool".into(),
        }
    }

    /// The pool (built for a URL on the tokio runtime, no I/O yet) behind a [`SharedConnection`].
    /// Fails on a URL that does not parse, or an empty node list.
    pub fn into_shared(self) -> Result<SharedConnection, BoxError> {
        let pool = match self {
            Self::Url(url) => {
                // The shared connection times each send itself (`set_response_timeout`); the
                // client's own 500 ms default would cut a longer configured timeout short.
                let config = deadpool_redis::redis::AsyncConnectionConfig::new().set_response_timeout(None);
                let manager = deadpool_redis::Manager::new_with_config(url.as_str(), config)?;
                Pool::Standalone(
                    deadpool_redis::Pool::builder(manager)
                        .runtime(Runtime::Tokio1)
                        .build()?,
                )
            }
            Self::Pool(pool) => Pool::Standalone(pool),
            Self::Cluster(nodes) if nodes.is_empty() => {
                return Err("a Redis Cluster needs at least one node URL".into());
            }
            Self::Cluster(nodes) => {
                Pool::Cluster(deadpool_redis::cluster::Config::from_urls(nodes).create_pool(Some(Runtime::Tokio1))?)
            }
            Self::ClusterPool(pool) => Pool::Cluster(pool),
        };
        Ok(SharedConnection::new(pool))
    }
}

impl fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisSource({})", self.describe())
    }
}

impl From<&str> for RedisSource {
    fn from(url: &str) -> Self {
        Self::Url(url.to_owned())
    }
}

impl From<String> for RedisSource {
    fn from(url: String) -> Self {
        Self::Url(url)
    }
}

impl From<&String> for RedisSource {
    fn from(url: &String) -> Self {
        Self::Url(url.clone())
    }
}

impl From<deadpool_redis::Pool> for RedisSource {
    fn from(pool: deadpool_redis::Pool) -> Self {
        Self::Pool(pool)
    }
}

impl From<deadpool_redis::cluster::Pool> for RedisSource {
    fn from(pool: deadpool_redis::cluster::Pool) -> Self {
        Self::ClusterPool(pool)
    }
}

/// A Redis URL without its credentials: `redis://user:secret@host/` → `redis://***@host/`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call in flight holds its command's future (each idle stream's history read and
    /// producer check, say), so it stays small: the cold paths (a pool checkout, a script load,
    /// a pause between tries) are boxed. It was 7.4 KiB in a debug build before they were.
    #[tokio::test]
    async fn a_commands_future_is_small() {
        for source in [
            RedisSource::Url("redis://127.0.0.1:1/".into()),
            RedisSource::cluster(["redis://127.0.0.1:1"]),
        ] {
            let shared = source.into_shared().unwrap();
            let cmd = redis::cmd("PING");
            let run = shared.run::<String>(&cmd, None);
            let size = std::mem::size_of_val(&run);
            assert!(size <= 1536, "a command's future is {size} bytes");
        }
        // And handing a future to the runtime does not hold it twice.
        let held = async {
            let buf = [1u8; 1024];
            tokio::task::yield_now().await;
            std::hint::black_box(buf).len()
        };
        let size = std::mem::size_of_val(&held);
        let on = crate::on_runtime(&tokio::runtime::Handle::current(), held);
        assert!(
            std::mem::size_of_val(&on) <= size + 64,
            "on_runtime adds little to {size} bytes"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("rediss://u:p@w@h"), "rediss://***@h");
        assert_eq!(redact("redis://h:1/"), "redis://h:1/");
        assert_eq!(redact("redis://h/a@b"), "redis://h/a@b");
        let cluster = RedisSource::cluster(["redis://:x@a:1", "redis://b:2"]);
        assert_eq!(
            format!("{cluster:?}"),
            "RedisSource(the Redis Cluster redis://***@a:1,redis://b:2)"
        );
    }

    #[test]
    fn the_environment_picks_the_cluster_first() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        let cluster = RedisSource::from_vars(env(&[
            ("REDIS_CLUSTER_NODES", " redis://a:1, redis://b:2 ,"),
            ("REDIS_URL", "redis://c:3"),
        ]));
        assert!(matches!(cluster, Some(RedisSource::Cluster(n)) if n == ["redis://a:1", "redis://b:2"]));
        let url = RedisSource::from_vars(env(&[("REDIS_CLUSTER_NODES", " "), ("REDIS_URL", "redis://c:3")]));
        assert!(matches!(url, Some(RedisSource::Url(u)) if u == "redis://c:3"));
        assert!(RedisSource::from_vars(env(&[])).is_none());
    }

    #[test]
    fn bad_sources_fail_without_io() {
        assert!(RedisSource::from("not a url").into_shared().is_err());
        assert!(RedisSource::cluster(Vec::<String>::new()).into_shared().is_err());
        let shared = RedisSource::cluster(["redis://127.0.0.1:1"]).into_shared().unwrap();
        assert!(shared.is_cluster());
    }
}
