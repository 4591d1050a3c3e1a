//! What a limiter connects to.

use std::fmt;

/// Where a [`StreamLeaseLimiter`](crate::StreamLeaseLimiter) finds Redis: a URL, a cluster's node
/// URLs, or a deadpool-redis pool the application already has.
///
/// `&str` and `String` convert to [`Url`](Self::Url), the pools to their variants, so
/// [`init_lease_limiter`](crate::init_lease_limiter) takes either, like the seed's
/// `init_lease_limiter(redis_config, config)`.
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

    /// How the source is named in errors and `Debug`: URLs without passwords.
    pub(crate) fn describe(&self) -> String {
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

/// `redis://user:secret@host/` → `redis://***@host/`.
fn redact(url: &str) -> String {
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
}
