//! [`OpenSearchEventStore`]: the [`EventStore`] over OpenSearch.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use opensearch::OpenSearch;
use opensearch::http::headers::HeaderMap;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::{Method, Url};
use stream_core::{AppendError, Event, EventPage, EventQuery, EventStore, StoreError, StoreStats};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Auth, OpenSearchConfig};
use crate::document::{bulk_lines, index_template};
use crate::error::{ConnectError, OpenSearchError};
use crate::query::{MAX_PAGE_SIZE, SEARCH_PARAMS, read_page, search_body};
use crate::writer::{Counters, FLUSH_QUEUE, Msg, Reply, Writer};

/// An [`EventStore`] that keeps events in daily OpenSearch indices.
///
/// - [`append`](EventStore::append) serializes the event once into its `_bulk` lines and pushes
///   them onto a bounded queue (no await, no lock held across I/O). A full queue drops the event
///   and counts it: streaming never waits for storage.
/// - A background tokio task sends `_bulk` requests of up to
///   [`bulk_max_events`](OpenSearchConfig::bulk_max_events) events or
///   [`bulk_max_bytes`](OpenSearchConfig::bulk_max_bytes) bytes, or whatever is queued after
///   [`flush_interval`](OpenSearchConfig::flush_interval). It retries 429, 5xx and connection
///   errors with exponential backoff ([`max_retries`](OpenSearchConfig::max_retries) times), then
///   drops; it drops events the cluster refuses (4xx) at once. Every drop is counted in
///   [`stats`](EventStore::stats) and logged with `tracing`.
/// - [`flush`](EventStore::flush) waits until everything queued before it was sent, then refreshes
///   the indices, all within [`flush_timeout`](OpenSearchConfig::flush_timeout).
/// - [`query`](EventStore::query) is one `_search` over `{prefix}-*`, sorted by timestamp then id,
///   paged with `search_after`.
///
/// Dropping the last handle stops the writer after it has sent what was queued (without
/// waiting); call [`shutdown`](Self::shutdown) to wait for that.
pub struct OpenSearchEventStore {
    client: OpenSearch,
    config: Arc<OpenSearchConfig>,
    tx: mpsc::Sender<Msg>,
    /// Flush requests, apart from the events (see [`EventStore::flush`]).
    flushes: mpsc::Sender<Reply>,
    counters: Arc<Counters>,
    closed: AtomicBool,
    /// Size of the last serialized event, to size the next one's buffer.
    size_hint: AtomicUsize,
    writer: Mutex<Option<JoinHandle<()>>>,
    search_path: String,
}

impl fmt::Debug for OpenSearchEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenSearchEventStore")
            .field("url", &self.config.url)
            .field("index_prefix", &self.config.index_prefix)
            .field("queued", &self.queued())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Builds the HTTP client for `config` (no request is made).
pub fn build_client(config: &OpenSearchConfig) -> Result<OpenSearch, ConnectError> {
    config.validate()?;
    let url = Url::parse(&config.url).map_err(|e| ConnectError::Client(e.into()))?;
    #[cfg_attr(not(feature = "aws"), allow(unused_mut))]
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(config.request_timeout);
    #[cfg(any(feature = "native-tls", feature = "rustls-tls"))]
    if !config.verify_certs {
        builder = builder.cert_validation(opensearch::cert::CertificateValidation::None);
    }
    builder = match &config.auth {
        Auth::None => builder,
        Auth::Basic { username, password } => {
            builder.auth(opensearch::auth::Credentials::Basic(username.clone(), password.clone()))
        }
        #[cfg(feature = "aws")]
        Auth::Aws(aws) => builder
            .auth(opensearch::auth::Credentials::AwsSigV4(
                aws.credentials.clone(),
                aws_types::region::Region::new(aws.region.clone()),
            ))
            .service_name(&aws.service),
    };
    let transport = builder.build().map_err(|e| ConnectError::Client(e.into()))?;
    Ok(OpenSearch::new(transport))
}

impl OpenSearchEventStore {
    /// Connects: validates `config`, installs the index template (one `PUT _index_template`
    /// request; not with [`install_template`](OpenSearchConfig::install_template) off) and starts
    /// the writer task on the current tokio runtime.
    ///
    /// Fails when the config is bad, when there is no tokio runtime, or when the template cannot
    /// be installed (the cluster is down, or refused it).
    pub async fn connect(config: OpenSearchConfig) -> Result<Self, ConnectError> {
        let client = build_client(&config)?;
        Self::connect_with_client(client, config).await
    }

    /// [`connect`](Self::connect) with settings from the environment
    /// ([`OpenSearchConfig::from_env`]).
    pub async fn from_env() -> Result<Self, ConnectError> {
        Self::connect(OpenSearchConfig::from_env()?).await
    }

    /// Like [`connect`](Self::connect), with a client you built (a custom transport, say).
    /// `config`'s connection fields (`url`, `auth`, `verify_certs`) are then not used.
    pub async fn connect_with_client(client: OpenSearch, config: OpenSearchConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConnectError::NoRuntime)?;
        if config.install_template {
            install_template(&client, &config).await?;
        }
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (flushes, flush_rx) = mpsc::channel(FLUSH_QUEUE);
        let writer = Writer::new(client.clone(), config.clone(), counters.clone(), rx, flush_rx);
        let handle = runtime.spawn(writer.run());
        Ok(Self {
            search_path: format!("/{}/_search", config.index_pattern()),
            client,
            config,
            tx,
            flushes,
            counters,
            closed: AtomicBool::new(false),
            size_hint: AtomicUsize::new(512),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The OpenSearch client, for requests of your own.
    pub fn client(&self) -> &OpenSearch {
        &self.client
    }

    /// The settings in use.
    pub fn config(&self) -> &OpenSearchConfig {
        &self.config
    }

    /// How many events wait in the queue (not counting the batch being sent).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Stops taking events (appends then fail with [`AppendError::Closed`]), writes everything
    /// queued, refreshes, and stops the writer, all within
    /// [`flush_timeout`](OpenSearchConfig::flush_timeout). After a timeout the writer is aborted
    /// and what it still held is lost (and the error says how much). Calling it again is a no-op.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::SeqCst);
        let Some(handle) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let deadline = Instant::now() + self.config.flush_timeout;
        let (reply, answer) = oneshot::channel();
        let result = match tokio::time::timeout_at(deadline, self.tx.send(Msg::Shutdown(reply))).await {
            Err(_) => Err(StoreError::FlushTimeout { pending: self.queued() }),
            // The writer is already gone.
            Ok(Err(_)) => Ok(()),
            Ok(Ok(())) => match tokio::time::timeout_at(deadline, answer).await {
                Err(_) => Err(StoreError::FlushTimeout { pending: self.queued() }),
                Ok(Err(_)) => Ok(()),
                Ok(Ok(refreshed)) => refreshed.map_err(|e| StoreError::Backend(e.into())),
            },
        };
        if result.is_err() {
            // What is still queued is lost with the writer.
            self.counters.metrics.dropped_closed.increment(self.queued() as u64);
            handle.abort();
            self.counters.metrics.queue_depth.set(0.0);
        }
        result
    }
}

async fn install_template(client: &OpenSearch, config: &OpenSearchConfig) -> Result<(), ConnectError> {
    let name = config.template_name().to_owned();
    let fail = |source| ConnectError::Template {
        name: name.clone(),
        source,
    };
    let body = serde_json::to_vec(&index_template(config)).expect("a JSON value always serializes");
    let response = client
        .send::<_, ()>(
            Method::Put,
            &format!("/_index_template/{name}"),
            HeaderMap::new(),
            None,
            Some(body),
            None,
        )
        .await
        .map_err(|e| fail(OpenSearchError::request("_index_template", e)))?;
    let status = response.status_code().as_u16();
    if (200..300).contains(&status) {
        tracing::debug!(template = %name, "opensearch index template installed");
        return Ok(());
    }
    let answer = response.bytes().await.unwrap_or_default();
    Err(fail(OpenSearchError::status("_index_template", status, &answer)))
}

#[async_trait]
impl EventStore for OpenSearchEventStore {
    /// Serializes the event once (one allocation) and queues it; never waits. When the queue is
    /// full the event is dropped and counted before any serialization.
    fn append(&self, event: &Event) -> Result<(), AppendError> {
        if self.closed.load(Ordering::Relaxed) {
            self.counters.metrics.dropped_closed.increment(1);
            return Err(AppendError::Closed);
        }
        if self.tx.capacity() == 0 {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.counters.metrics.dropped_queue_full.increment(1);
            return Err(AppendError::QueueFull);
        }
        let doc = bulk_lines(
            &self.config.index_prefix,
            event,
            self.size_hint.load(Ordering::Relaxed) + 64,
        );
        self.size_hint.store(doc.len(), Ordering::Relaxed);
        // Counted before the send, so `written` never runs ahead of `accepted`.
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Doc(doc)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.counters.accepted.fetch_sub(1, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        self.counters.metrics.dropped_queue_full.increment(1);
                        Err(AppendError::QueueFull)
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        self.counters.metrics.dropped_closed.increment(1);
                        Err(AppendError::Closed)
                    }
                }
            }
        }
    }

    /// Asks the writer to send what was appended before the call and refresh the indices it
    /// wrote to since the last refresh, and waits for that. The request does not take a slot of
    /// the event queue, and concurrent flushes coalesce: the writer answers every request
    /// waiting with one write and one `_refresh`. Events dropped on the way are counted in
    /// [`stats`](EventStore::stats), not reported here; a failed refresh is.
    async fn flush(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.config.flush_timeout;
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend("the OpenSearch event writer has stopped".into());
        match tokio::time::timeout_at(deadline, self.flushes.send(reply)).await {
            Err(_) => return Err(StoreError::FlushTimeout { pending: self.queued() }),
            Ok(Err(_)) => return Err(stopped()),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(StoreError::FlushTimeout { pending: self.queued() }),
            Ok(Err(_)) => Err(stopped()),
            Ok(Ok(refreshed)) => refreshed.map_err(|e| StoreError::Backend(e.into())),
        }
    }

    /// One `_search` request over `{prefix}-*`. Limits above [`MAX_PAGE_SIZE`] are cut to it.
    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        if query.limit == 0 {
            return Ok(EventPage {
                events: Vec::new(),
                next: None,
            });
        }
        let size = query.limit.min(MAX_PAGE_SIZE);
        let body = search_body(query, size)?;
        let response = self
            .client
            .send(
                Method::Post,
                &self.search_path,
                HeaderMap::new(),
                Some(&SEARCH_PARAMS),
                Some(body),
                None,
            )
            .await
            .map_err(|e| StoreError::Backend(OpenSearchError::request("_search", e).into()))?;
        let status = response.status_code().as_u16();
        let answer = response
            .bytes()
            .await
            .map_err(|e| StoreError::Backend(OpenSearchError::request("_search", e).into()))?;
        if !(200..300).contains(&status) {
            let e = OpenSearchError::status("_search", status, &answer);
            return Err(if status == 400 {
                StoreError::InvalidQuery(e.to_string())
            } else {
                StoreError::Backend(e.into())
            });
        }
        read_page(&answer, size)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}
