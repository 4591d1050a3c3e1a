//! Connection, index and writer settings, in code or from environment variables.

use std::fmt;
use std::time::Duration;

use opensearch::http::Url;

/// The default index prefix: events go to `stream_events-YYYY.MM.DD`.
pub const DEFAULT_INDEX_PREFIX: &str = "stream_events";

/// Names of the environment variables that [`OpenSearchConfig::from_env`] reads.
pub mod env {
    /// Full node URL, `http(s)://host:port[/path]`. An alternative to host, port and SSL.
    pub const URL: &str = "OPENSEARCH_URL";
    /// Host name or address (default `localhost`).
    pub const HOST: &str = "OPENSEARCH_HOST";
    /// Port (default 9200).
    pub const PORT: &str = "OPENSEARCH_PORT";
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`): HTTPS (default false).
    pub const USE_SSL: &str = "OPENSEARCH_USE_SSL";
    /// Whether to verify the server's TLS certificate (default true).
    pub const VERIFY_CERTS: &str = "OPENSEARCH_VERIFY_CERTS";
    /// `none`, `basic` or `aws` (default `none`).
    pub const AUTH_TYPE: &str = "OPENSEARCH_AUTH_TYPE";
    /// User name for `basic`.
    pub const USERNAME: &str = "OPENSEARCH_USERNAME";
    /// Password for `basic`.
    pub const PASSWORD: &str = "OPENSEARCH_PASSWORD";
    /// AWS region for `aws` (SigV4); falls back to [`AWS_REGION`].
    pub const AWS_REGION_OPENSEARCH: &str = "OPENSEARCH_AWS_REGION";
    /// The AWS SDKs' region variable, used when [`AWS_REGION_OPENSEARCH`] is unset.
    pub const AWS_REGION: &str = "AWS_REGION";
    /// SigV4 service name for `aws`: `es` (managed domains, the default) or `aoss` (Serverless).
    pub const AWS_SERVICE: &str = "OPENSEARCH_AWS_SERVICE";
    /// Static AWS access key id for `aws`.
    pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    /// Static AWS secret access key for `aws`.
    pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    /// Optional AWS session token for `aws`.
    pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
    /// Index prefix (default `stream_events`).
    pub const INDEX_PREFIX: &str = "OPENSEARCH_INDEX_PREFIX";
    /// Primary shards per daily index (default 1).
    pub const INDEX_SHARDS: &str = "OPENSEARCH_INDEX_SHARDS";
    /// Replicas per daily index (default 1; use 0 on a single node).
    pub const INDEX_REPLICAS: &str = "OPENSEARCH_INDEX_REPLICAS";
    /// Writer queue capacity in events (default 10,000).
    pub const QUEUE_CAPACITY: &str = "OPENSEARCH_QUEUE_CAPACITY";
    /// Events per `_bulk` request (default 1,000).
    pub const BULK_MAX_EVENTS: &str = "OPENSEARCH_BULK_MAX_EVENTS";
    /// Bytes per `_bulk` request (default 5 MiB).
    pub const BULK_MAX_BYTES: &str = "OPENSEARCH_BULK_MAX_BYTES";
    /// Longest wait before a partial batch is sent, in milliseconds (default 1,000).
    pub const FLUSH_INTERVAL_MS: &str = "OPENSEARCH_FLUSH_INTERVAL_MS";
    /// Per-request timeout in milliseconds (default 30,000).
    pub const REQUEST_TIMEOUT_MS: &str = "OPENSEARCH_REQUEST_TIMEOUT_MS";
    /// Retries of a failed `_bulk` request (429, 5xx, connection errors) before its events are
    /// dropped (default 5).
    pub const MAX_RETRIES: &str = "OPENSEARCH_MAX_RETRIES";
    /// Days that daily indices are kept before the store deletes them (default 30; `0` keeps
    /// them forever). See [`OpenSearchConfig::retention_days`](crate::OpenSearchConfig::retention_days).
    pub const RETENTION_DAYS: &str = "OPENSEARCH_RETENTION_DAYS";
}

/// A configuration value that cannot be used. It names the variable (or, for settings made in
/// code, the field) and says what was wrong; passwords and keys are never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    /// The environment variable (or config field) at fault.
    pub variable: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            reason: reason.into(),
        }
    }
}

/// How requests authenticate.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication (a local or test node).
    #[default]
    None,
    /// HTTP Basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password (never printed by `Debug`).
        password: String,
    },
    /// AWS SigV4 request signing (Amazon OpenSearch Service or Serverless). Needs the `aws`
    /// feature.
    #[cfg(feature = "aws")]
    Aws(AwsAuth),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            #[cfg(feature = "aws")]
            Self::Aws(aws) => f.debug_tuple("Aws").field(aws).finish(),
        }
    }
}

/// SigV4 settings for [`Auth::Aws`].
#[cfg(feature = "aws")]
#[derive(Clone)]
#[non_exhaustive]
pub struct AwsAuth {
    /// The region, e.g. `eu-west-1`.
    pub region: String,
    /// The signing service name: `es` for managed domains, `aoss` for Serverless.
    pub service: String,
    /// Where credentials come from. From env this is the static `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`; in code, pass any provider (for instance
    /// `aws_config`'s default chain, for instance roles and SSO).
    pub credentials: aws_credential_types::provider::SharedCredentialsProvider,
}

#[cfg(feature = "aws")]
impl AwsAuth {
    /// SigV4 for the `es` service in `region`, with credentials from `credentials`.
    pub fn new(
        region: impl Into<String>,
        credentials: aws_credential_types::provider::SharedCredentialsProvider,
    ) -> Self {
        Self {
            region: region.into(),
            service: "es".into(),
            credentials,
        }
    }
}

#[cfg(feature = "aws")]
impl fmt::Debug for AwsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsAuth")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Everything [`OpenSearchEventStore`](crate::OpenSearchEventStore) needs: where the cluster is,
/// how to authenticate, how indices are named and sized, and how the writer batches.
///
/// Start from [`Default`] (a local node on `http://localhost:9200`), [`OpenSearchConfig::new`] or
/// [`OpenSearchConfig::from_env`], then set fields:
///
/// ```
/// use std::time::Duration;
/// use stream_store_opensearch::OpenSearchConfig;
///
/// let mut config = OpenSearchConfig::new("http://127.0.0.1:9250");
/// config.index_prefix = "myapp_events".into();
/// config.number_of_replicas = 0;
/// config.flush_interval = Duration::from_millis(200);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenSearchConfig {
    /// The node URL, `http(s)://host:port[/path]`.
    pub url: String,
    /// Authentication.
    pub auth: Auth,
    /// Verify the server's TLS certificate (default true). Turn off only for self-signed test
    /// clusters.
    pub verify_certs: bool,
    /// Daily indices are `{index_prefix}-YYYY.MM.DD` (UTC date of the event). Lowercase letters,
    /// digits, `_`, `-` and `.`; must not start with `_`, `-` or `.`.
    pub index_prefix: String,
    /// Primary shards per daily index (default 1).
    pub number_of_shards: u32,
    /// Replicas per daily index (default 1; a single node needs 0 to be green).
    pub number_of_replicas: u32,
    /// How many events may wait for the writer (default 10,000). Beyond it, appends are dropped
    /// and counted. Memory: about one serialized event (a few hundred bytes) per slot in use.
    pub queue_capacity: usize,
    /// Events per `_bulk` request (default 1,000).
    pub bulk_max_events: usize,
    /// Body bytes per `_bulk` request (default 5 MiB). A request goes out when either limit is
    /// reached or [`flush_interval`](Self::flush_interval) has passed since its first event.
    pub bulk_max_bytes: usize,
    /// Longest time an event waits in a partial batch (default 1 s).
    pub flush_interval: Duration,
    /// Timeout of each HTTP request (default 30 s).
    pub request_timeout: Duration,
    /// Retries of a `_bulk` request that failed with 429, 5xx or a connection error (default 5).
    /// After them, its events are dropped, counted and logged.
    pub max_retries: u32,
    /// First retry delay (default 100 ms); it doubles up to
    /// [`retry_max_backoff`](Self::retry_max_backoff), with jitter.
    pub retry_initial_backoff: Duration,
    /// Longest retry delay (default 5 s).
    pub retry_max_backoff: Duration,
    /// Longest time [`flush`](stream_core::EventStore::flush) and
    /// [`shutdown`](crate::OpenSearchEventStore::shutdown) wait for the writer (default 30 s).
    pub flush_timeout: Duration,
    /// Archive retention in days (default 30; `0` keeps every index forever). The writer task
    /// deletes the daily indices `{index_prefix}-YYYY.MM.DD` whose date lies more than this many
    /// days before today (UTC): with 30, on 2026-12-01 it deletes `…-2026.10.31` and older, and
    /// keeps `…-2026.11.01` onward. So an event is kept at least this many days, and at most one
    /// more day plus [`retention_interval`](Self::retention_interval).
    ///
    /// The date is the one in the index name (the events' day), not the index's creation date.
    /// Only names of exactly that form are touched; other indices matching `{index_prefix}-*` are
    /// left alone. This is a periodic delete and not an ISM policy: see `docs/storage.md`.
    pub retention_days: u32,
    /// How often the writer task looks for expired indices (default 1 hour). The first look is
    /// at start-up. Not used when [`retention_days`](Self::retention_days) is 0.
    pub retention_interval: Duration,
    /// Whether [`connect`](crate::OpenSearchEventStore::connect) installs the index template of
    /// [`index_prefix`](Self::index_prefix) from these settings (default `true`). A client that
    /// only reads the archive (an on-call tool) sets `false`, so that it never changes the
    /// template the apps installed; it should also set [`retention_days`](Self::retention_days)
    /// to 0, so that it deletes nothing.
    pub install_template: bool,
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        Self::new("http://localhost:9200")
    }
}

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            variable,
            format!("{value:?} is not a boolean (true/false, 1/0, yes/no, on/off)"),
        )),
    }
}

fn parse_number<T: std::str::FromStr + PartialOrd + fmt::Display>(
    variable: &'static str,
    value: &str,
    min: T,
    what: &str,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(ConfigError::new(
            variable,
            format!("{value:?} is not {what} (a whole number, at least {min})"),
        )),
    }
}

fn check_url(variable: &'static str, url: &str) -> Result<Url, ConfigError> {
    let parsed =
        Url::parse(url.trim()).map_err(|e| ConfigError::new(variable, format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            variable,
            format!("{url:?}: the scheme must be http or https"),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(variable, format!("{url:?} has no host")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::new(
            variable,
            "credentials in the URL are not supported; set OPENSEARCH_AUTH_TYPE=basic with \
             OPENSEARCH_USERNAME and OPENSEARCH_PASSWORD",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::new(
            variable,
            format!("{url:?}: a query or fragment is not allowed"),
        ));
    }
    Ok(parsed)
}

/// Checks an index prefix: the rules for OpenSearch index names, minus the date suffix.
fn check_prefix(variable: &'static str, prefix: &str) -> Result<(), ConfigError> {
    let ok_chars = prefix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    let bad_start = prefix.starts_with(['_', '-', '.']);
    if prefix.is_empty() || prefix.len() > 200 || !ok_chars || bad_start {
        return Err(ConfigError::new(
            variable,
            format!(
                "{prefix:?} is not a valid index prefix: 1 to 200 bytes of lowercase a-z, 0-9, '_', '-', '.', \
                 not starting with '_', '-' or '.'"
            ),
        ));
    }
    Ok(())
}

impl OpenSearchConfig {
    /// Defaults, with the node at `url` (`http(s)://host:port`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: Auth::None,
            verify_certs: true,
            index_prefix: DEFAULT_INDEX_PREFIX.into(),
            number_of_shards: 1,
            number_of_replicas: 1,
            queue_capacity: 10_000,
            bulk_max_events: 1_000,
            bulk_max_bytes: 5 * 1024 * 1024,
            flush_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            max_retries: 5,
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(30),
            retention_days: 30,
            retention_interval: Duration::from_secs(3600),
            install_template: true,
        }
    }

    /// Reads the process environment (see [`mod@env`] for every variable). Unset variables keep
    /// their defaults; a bad value gives an error naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), but reads variables through `lookup` (a map in tests,
    /// say). An empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Self::default();

        let host = get(env::HOST);
        let port = get(env::PORT);
        let use_ssl = get(env::USE_SSL);
        config.url = if let Some(url) = get(env::URL) {
            for (name, value) in [(env::HOST, &host), (env::PORT, &port), (env::USE_SSL, &use_ssl)] {
                if value.is_some() {
                    return Err(ConfigError::new(
                        name,
                        format!("set either {} or {name}, not both", env::URL),
                    ));
                }
            }
            check_url(env::URL, &url)?.to_string()
        } else {
            let ssl = use_ssl
                .as_deref()
                .map(|v| parse_bool(env::USE_SSL, v))
                .transpose()?
                .unwrap_or(false);
            let port: u16 = port
                .as_deref()
                .map(|v| parse_number(env::PORT, v, 1u16, "a port number"))
                .transpose()?
                .unwrap_or(9200);
            let host = host.unwrap_or_else(|| "localhost".into());
            let host = host.trim();
            if host.contains(['/', ' ', '@', '?', '#']) {
                return Err(ConfigError::new(
                    env::HOST,
                    format!(
                        "{host:?} is not a host name or address (use {} for a full URL)",
                        env::URL
                    ),
                ));
            }
            // A bare IPv6 address needs brackets in a URL.
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            let scheme = if ssl { "https" } else { "http" };
            check_url(env::HOST, &format!("{scheme}://{host}:{port}"))?.to_string()
        };

        if let Some(v) = get(env::VERIFY_CERTS) {
            config.verify_certs = parse_bool(env::VERIFY_CERTS, &v)?;
        }

        let auth_type = get(env::AUTH_TYPE).map(|v| v.trim().to_ascii_lowercase());
        config.auth = match auth_type.as_deref().unwrap_or("none") {
            "none" => Auth::None,
            "basic" => {
                let username = get(env::USERNAME)
                    .ok_or_else(|| ConfigError::new(env::USERNAME, "required when OPENSEARCH_AUTH_TYPE=basic"))?;
                // A password may legitimately be blank, but it must be set.
                let password = lookup(env::PASSWORD)
                    .ok_or_else(|| ConfigError::new(env::PASSWORD, "required when OPENSEARCH_AUTH_TYPE=basic"))?;
                Auth::Basic { username, password }
            }
            "aws" => aws_from_lookup(&get)?,
            other => {
                return Err(ConfigError::new(
                    env::AUTH_TYPE,
                    format!("{other:?} is not one of none, basic, aws"),
                ));
            }
        };

        if let Some(v) = get(env::INDEX_PREFIX) {
            check_prefix(env::INDEX_PREFIX, v.trim())?;
            config.index_prefix = v.trim().to_owned();
        }
        if let Some(v) = get(env::INDEX_SHARDS) {
            config.number_of_shards = parse_number(env::INDEX_SHARDS, &v, 1, "a shard count")?;
        }
        if let Some(v) = get(env::INDEX_REPLICAS) {
            config.number_of_replicas = parse_number(env::INDEX_REPLICAS, &v, 0, "a replica count")?;
        }
        if let Some(v) = get(env::QUEUE_CAPACITY) {
            config.queue_capacity = parse_number(env::QUEUE_CAPACITY, &v, 1, "a queue capacity")?;
        }
        if let Some(v) = get(env::BULK_MAX_EVENTS) {
            config.bulk_max_events = parse_number(env::BULK_MAX_EVENTS, &v, 1, "an event count")?;
        }
        if let Some(v) = get(env::BULK_MAX_BYTES) {
            config.bulk_max_bytes = parse_number(env::BULK_MAX_BYTES, &v, 1024, "a byte count")?;
        }
        if let Some(v) = get(env::FLUSH_INTERVAL_MS) {
            config.flush_interval = Duration::from_millis(parse_number(env::FLUSH_INTERVAL_MS, &v, 1, "milliseconds")?);
        }
        if let Some(v) = get(env::REQUEST_TIMEOUT_MS) {
            config.request_timeout =
                Duration::from_millis(parse_number(env::REQUEST_TIMEOUT_MS, &v, 1, "milliseconds")?);
        }
        if let Some(v) = get(env::MAX_RETRIES) {
            config.max_retries = parse_number(env::MAX_RETRIES, &v, 0, "a retry count")?;
        }
        if let Some(v) = get(env::RETENTION_DAYS) {
            config.retention_days = parse_number(env::RETENTION_DAYS, &v, 0, "a number of days")?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks settings made in code: the URL, the index prefix and the limits. The error names
    /// the field. [`OpenSearchEventStore::connect`](crate::OpenSearchEventStore::connect) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("url", &self.url)?;
        check_prefix("index_prefix", &self.index_prefix)?;
        let positive = [
            ("number_of_shards", self.number_of_shards as usize),
            ("queue_capacity", self.queue_capacity),
            ("bulk_max_events", self.bulk_max_events),
            ("bulk_max_bytes", self.bulk_max_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(name, "must be at least 1"));
            }
        }
        for (name, value) in [
            ("flush_interval", self.flush_interval),
            ("request_timeout", self.request_timeout),
            ("flush_timeout", self.flush_timeout),
            ("retention_interval", self.retention_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(name, "must be longer than zero"));
            }
        }
        if let Auth::Basic { username, .. } = &self.auth
            && username.is_empty()
        {
            return Err(ConfigError::new("auth", "basic auth needs a user name"));
        }
        Ok(())
    }

    /// The pattern that covers every daily index: `{index_prefix}-*`. Queries search it.
    pub fn index_pattern(&self) -> String {
        format!("{}-*", self.index_prefix)
    }

    /// The name of the index template installed at start-up: the prefix itself.
    pub fn template_name(&self) -> &str {
        &self.index_prefix
    }
}

#[cfg(feature = "aws")]
fn aws_from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Auth, ConfigError> {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;

    let region = get(env::AWS_REGION_OPENSEARCH)
        .or_else(|| get(env::AWS_REGION))
        .ok_or_else(|| {
            ConfigError::new(
                env::AWS_REGION_OPENSEARCH,
                "required when OPENSEARCH_AUTH_TYPE=aws (or set AWS_REGION)",
            )
        })?;
    let region = region.trim().to_owned();
    let region_ok = region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        let variable = if get(env::AWS_REGION_OPENSEARCH).is_some() {
            env::AWS_REGION_OPENSEARCH
        } else {
            env::AWS_REGION
        };
        return Err(ConfigError::new(
            variable,
            format!("{region:?} is not an AWS region (like eu-west-1)"),
        ));
    }
    let service = get(env::AWS_SERVICE).map_or_else(|| "es".to_owned(), |s| s.trim().to_owned());
    if !matches!(service.as_str(), "es" | "aoss") {
        return Err(ConfigError::new(
            env::AWS_SERVICE,
            format!("{service:?} is not one of es, aoss"),
        ));
    }
    let key_id = get(env::AWS_ACCESS_KEY_ID).ok_or_else(|| {
        ConfigError::new(
            env::AWS_ACCESS_KEY_ID,
            "required when OPENSEARCH_AUTH_TYPE=aws is configured from the environment (in code, pass any \
             credentials provider in AwsAuth)",
        )
    })?;
    let secret = get(env::AWS_SECRET_ACCESS_KEY).ok_or_else(|| {
        ConfigError::new(
            env::AWS_SECRET_ACCESS_KEY,
            "required when OPENSEARCH_AUTH_TYPE=aws is configured from the environment",
        )
    })?;
    let credentials = Credentials::new(key_id, secret, get(env::AWS_SESSION_TOKEN), None, "environment");
    Ok(Auth::Aws(AwsAuth {
        region,
        service,
        credentials: SharedCredentialsProvider::new(credentials),
    }))
}

#[cfg(not(feature = "aws"))]
fn aws_from_lookup(_get: &impl Fn(&str) -> Option<String>) -> Result<Auth, ConfigError> {
    Err(ConfigError::new(
        env::AUTH_TYPE,
        "\"aws\" needs stream-store-opensearch built with its `aws` feature (SigV4)",
    ))
}
