//! The background writer: the bounded queue feeds batches to `_bulk`, with bounded retries.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use metrics::{Counter, Gauge, Histogram};
use opensearch::OpenSearch;
use opensearch::http::Method;
use opensearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use stream_core::metrics as names;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::OpenSearchConfig;
use crate::error::OpenSearchError;
use crate::retention;

/// What travels through the event queue. Flush requests have a channel of their own, so that
/// they never take a queue slot from an event.
pub(crate) enum Msg {
    /// One event's two `_bulk` lines.
    Doc(Vec<u8>),
    /// Stop taking events, write everything queued, refresh, answer and exit.
    Shutdown(oneshot::Sender<Result<(), OpenSearchError>>),
}

/// How a flush or a shutdown is answered: once what came before it is written and refreshed.
pub(crate) type Reply = oneshot::Sender<Result<(), OpenSearchError>>;

/// How many flush requests may wait for the writer before `flush` callers wait to hand theirs
/// over (they are answered together, so this only bounds memory).
pub(crate) const FLUSH_QUEUE: usize = 1024;

/// The writer's counters, shared with the store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) metrics: Metrics,
}

/// The store's metrics (names in [`stream_core::metrics`]): handles registered once per store,
/// when it connects (so with the recorder installed then), and shared by the store and its
/// writer.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Events waiting in the queue, set by the writer before each `_bulk` request and after each
    /// batch (not on every append).
    pub(crate) queue_depth: Gauge,
    /// `_bulk` requests in which every event was indexed.
    batches_ok: Counter,
    /// `_bulk` requests in which some events were indexed and others refused or left to retry.
    batches_partial: Counter,
    /// `_bulk` requests in which no event was indexed: the request failed (connection error,
    /// timeout, an answer other than 2xx, an unreadable answer) or every item did.
    batches_failed: Counter,
    written: Counter,
    /// The queue was full.
    pub(crate) dropped_queue_full: Counter,
    /// OpenSearch refused the event (an item or a whole request answered with a 4xx other than
    /// 429): retrying would not help.
    dropped_rejected: Counter,
    /// Still failing after `max_retries` retries.
    dropped_retries_exhausted: Counter,
    /// Appended after [`shutdown`](crate::OpenSearchEventStore::shutdown), or still queued when
    /// a shutdown timed out and aborted the writer.
    pub(crate) dropped_closed: Counter,
    retried: Counter,
    bulk_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let batches = |outcome: &'static str| metrics::counter!(names::OPENSEARCH_BATCHES, names::OUTCOME => outcome);
        let dropped =
            |reason: &'static str| metrics::counter!(names::OPENSEARCH_EVENTS_DROPPED, names::REASON => reason);
        Self {
            queue_depth: metrics::gauge!(names::OPENSEARCH_QUEUE_DEPTH),
            batches_ok: batches("ok"),
            batches_partial: batches("partial"),
            batches_failed: batches("failed"),
            written: metrics::counter!(names::OPENSEARCH_EVENTS_WRITTEN),
            dropped_queue_full: dropped("queue_full"),
            dropped_rejected: dropped("rejected"),
            dropped_retries_exhausted: dropped("retries_exhausted"),
            dropped_closed: dropped("closed"),
            retried: metrics::counter!(names::OPENSEARCH_EVENTS_RETRIED),
            bulk_seconds: metrics::histogram!(names::OPENSEARCH_BULK_SECONDS),
        }
    }
}

impl Metrics {
    /// Counts one `_bulk` request by how many of its `sent` events were indexed.
    fn batch(&self, sent: usize, written: u64) {
        match written {
            0 => self.batches_failed.increment(1),
            n if n >= sent as u64 => self.batches_ok.increment(1),
            _ => self.batches_partial.increment(1),
        }
    }
}

/// Only what the writer needs from a `_bulk` answer.
const BULK_FILTER: &str = "errors,items.*.status,items.*._id,items.*.error.type,items.*.error.reason";

#[derive(Deserialize)]
struct BulkHead {
    #[serde(default)]
    errors: bool,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<BulkItem>,
}

#[derive(Deserialize)]
struct BulkItem {
    #[serde(alias = "create", alias = "update", alias = "delete")]
    index: ItemResult,
}

#[derive(Deserialize)]
struct ItemResult {
    #[serde(default)]
    _id: Option<String>,
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// What [`Writer::settle_items`] found in a `_bulk` answer: the events to retry, why, and how
/// many were written.
type Settled = (Vec<Range<usize>>, Option<OpenSearchError>, u64);

/// How one `_bulk` attempt went.
enum Attempt {
    /// Per-item results (HTTP 200).
    Items(Bytes),
    /// The request failed in a way worth retrying: 429, 5xx, a connection error or a timeout.
    Retry(OpenSearchError),
    /// The request was refused (4xx other than 429): retrying would not help.
    GiveUp(OpenSearchError),
}

fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

/// A batch: the concatenated `_bulk` lines and where each event's lines are.
struct Batch {
    body: BytesMut,
    docs: Vec<Range<usize>>,
}

impl Batch {
    fn with_capacity(bytes: usize, events: usize) -> Self {
        Self {
            body: BytesMut::with_capacity(bytes),
            docs: Vec::with_capacity(events),
        }
    }

    fn push(&mut self, doc: &[u8]) {
        let start = self.body.len();
        self.body.extend_from_slice(doc);
        self.docs.push(start..self.body.len());
    }

    fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

pub(crate) struct Writer {
    client: OpenSearch,
    config: Arc<OpenSearchConfig>,
    counters: Arc<Counters>,
    rx: mpsc::Receiver<Msg>,
    flushes: mpsc::Receiver<Reply>,
    rng: StdRng,
    bulk_headers: HeaderMap,
    /// The indices written since the last refresh: the only ones a refresh touches.
    dirty: Vec<String>,
}

/// Past this many dirty indices (events of many days in one go), a refresh covers `{prefix}-*`.
const MAX_DIRTY: usize = 16;

/// The `_index` of one event's `_bulk` lines (`{"index":{"_index":"<name>",…`).
fn index_of(doc: &[u8]) -> &[u8] {
    const HEAD: &[u8] = b"{\"index\":{\"_index\":\"";
    let rest = doc.strip_prefix(HEAD).unwrap_or_default();
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
    &rest[..end]
}

impl Writer {
    pub(crate) fn new(
        client: OpenSearch,
        config: Arc<OpenSearchConfig>,
        counters: Arc<Counters>,
        rx: mpsc::Receiver<Msg>,
        flushes: mpsc::Receiver<Reply>,
    ) -> Self {
        let mut bulk_headers = HeaderMap::new();
        bulk_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        Self {
            client,
            config,
            counters,
            rx,
            flushes,
            rng: StdRng::from_os_rng(),
            bulk_headers,
            dirty: Vec::new(),
        }
    }

    fn new_batch(&self) -> Batch {
        // Room for a full batch by count, up to the byte limit, so a batch rarely reallocates.
        let bytes = self.config.bulk_max_bytes.min(self.config.bulk_max_events * 512);
        Batch::with_capacity(bytes, self.config.bulk_max_events)
    }

    /// Runs until every sender is gone or a shutdown has drained the queue.
    ///
    /// With retention on ([`retention_days`](OpenSearchConfig::retention_days) above 0) it also
    /// starts a retention sweep at once and then every
    /// [`retention_interval`](OpenSearchConfig::retention_interval), each in a task of its own
    /// (one at a time), so that deleting indices never holds up a batch.
    pub(crate) async fn run(mut self) {
        let mut batch = self.new_batch();
        let mut deadline = Instant::now();
        let mut shutdown: Vec<Reply> = Vec::new();
        let mut flushes_open = true;
        let retention = self.config.retention_days > 0;
        let sweep_timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sweep_timer);
        let mut sweeping = SweepTask(None);
        loop {
            let msg = tokio::select! {
                biased;
                // First, so that a busy queue cannot starve it; it only spawns a task.
                () = &mut sweep_timer, if retention => {
                    sweep_timer.as_mut().reset(Instant::now() + self.config.retention_interval);
                    sweeping.start(&self.client, &self.config);
                    continue;
                }
                reply = self.flushes.recv(), if flushes_open => {
                    match reply {
                        Some(reply) => self.flush(reply, &mut batch, &mut deadline, &mut shutdown).await,
                        None => flushes_open = false,
                    }
                    continue;
                }
                msg = self.rx.recv() => msg,
                () = tokio::time::sleep_until(deadline), if !batch.is_empty() => {
                    self.write(&mut batch).await;
                    continue;
                }
            };
            match msg {
                Some(Msg::Doc(doc)) => self.add(doc, &mut batch, &mut deadline).await,
                Some(Msg::Shutdown(reply)) => {
                    // Appends fail from now on; what is queued is still received, then `None`.
                    self.rx.close();
                    shutdown.push(reply);
                }
                None => {
                    self.write(&mut batch).await;
                    if !shutdown.is_empty() {
                        let result = self.refresh().await;
                        for reply in shutdown {
                            let _ = reply.send(result.clone());
                        }
                    }
                    tracing::debug!("opensearch event writer stopped");
                    return;
                }
            }
        }
    }

    /// Adds one event to the batch, sending the batch when it is full.
    async fn add(&mut self, doc: Vec<u8>, batch: &mut Batch, deadline: &mut Instant) {
        if !batch.is_empty() && batch.body.len() + doc.len() > self.config.bulk_max_bytes {
            self.write(batch).await;
        }
        if batch.is_empty() {
            *deadline = Instant::now() + self.config.flush_interval;
        }
        batch.push(&doc);
        if batch.docs.len() >= self.config.bulk_max_events || batch.body.len() >= self.config.bulk_max_bytes {
            self.write(batch).await;
        }
    }

    /// Answers `first` and every other flush request waiting now with one write and one refresh:
    /// concurrent flushes coalesce. Everything appended before those requests is in the event
    /// queue already (appends never wait), so the writer takes what the queue holds now, and no
    /// more, so that a steady stream of appends cannot hold the answer up.
    async fn flush(&mut self, first: Reply, batch: &mut Batch, deadline: &mut Instant, shutdown: &mut Vec<Reply>) {
        let mut waiting = vec![first];
        while let Ok(reply) = self.flushes.try_recv() {
            waiting.push(reply);
        }
        for _ in 0..self.rx.len() {
            match self.rx.try_recv() {
                Ok(Msg::Doc(doc)) => self.add(doc, batch, deadline).await,
                Ok(Msg::Shutdown(reply)) => {
                    self.rx.close();
                    shutdown.push(reply);
                }
                Err(_) => break,
            }
        }
        self.write(batch).await;
        let result = self.refresh().await;
        for reply in waiting {
            let _ = reply.send(result.clone());
        }
    }

    /// Sends the batch (with retries) and leaves it empty, in a DEBUG span (`bulk_write`, with
    /// the batch's size).
    async fn write(&mut self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        let span = tracing::debug_span!("bulk_write", events = batch.docs.len(), bytes = batch.body.len());
        tracing::Instrument::instrument(self.write_in_span(batch), span).await;
    }

    async fn write_in_span(&mut self, batch: &mut Batch) {
        for range in &batch.docs {
            let index = index_of(&batch.body[range.clone()]);
            if !index.is_empty() && !self.dirty.iter().any(|d| d.as_bytes() == index) {
                self.dirty.push(String::from_utf8_lossy(index).into_owned());
            }
        }
        let next = self.new_batch();
        let Batch { body, docs } = std::mem::replace(batch, next);
        self.send_with_retries(body.freeze(), docs).await;
        self.set_queue_depth();
    }

    fn set_queue_depth(&self) {
        self.counters.metrics.queue_depth.set(self.rx.len() as f64);
    }

    fn backoff(&mut self, attempt: u32) -> std::time::Duration {
        let base = self
            .config
            .retry_initial_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.retry_max_backoff);
        // Full delay in [base/2, base]: writers of several processes do not retry in step.
        base.mul_f64(self.rng.random_range(0.5..=1.0))
    }

    async fn send_with_retries(&mut self, original: Bytes, mut docs: Vec<Range<usize>>) {
        let mut body = original.clone();
        let mut attempt = 0u32;
        // One clone per batch, so that the handles stay at hand while `self` changes (the rng).
        let counters = self.counters.clone();
        let metrics = &counters.metrics;
        loop {
            let count = docs.len() as u64;
            self.set_queue_depth();
            let started = std::time::Instant::now();
            let attempt_result = self.bulk(body.clone()).await;
            metrics.bulk_seconds.record(started.elapsed());
            let mut written = 0;
            let (retry, reason) = match attempt_result {
                Attempt::Items(answer) => match self.settle_items(&answer, &docs) {
                    Ok((retry, reason, indexed)) => {
                        written = indexed;
                        (retry, reason)
                    }
                    Err(e) => {
                        // A 200 we cannot read: the events may or may not be stored. Retrying is
                        // safe (each event has its own `_id`), so treat it like a failed request.
                        (docs.clone(), Some(e))
                    }
                },
                Attempt::Retry(e) => (docs.clone(), Some(e)),
                Attempt::GiveUp(e) => {
                    metrics.batch(docs.len(), 0);
                    self.counters.dropped.fetch_add(count, Ordering::Relaxed);
                    metrics.dropped_rejected.increment(count);
                    tracing::error!(events = count, error = %e, "opensearch refused a _bulk request; events dropped");
                    return;
                }
            };
            metrics.batch(docs.len(), written);
            if retry.is_empty() {
                return;
            }
            let reason = reason.map_or_else(|| "unknown".to_owned(), |e| e.to_string());
            if attempt >= self.config.max_retries {
                self.counters.dropped.fetch_add(retry.len() as u64, Ordering::Relaxed);
                metrics.dropped_retries_exhausted.increment(retry.len() as u64);
                tracing::warn!(
                    events = retry.len(),
                    retries = attempt,
                    reason = %reason,
                    "opensearch _bulk still failing; events dropped"
                );
                return;
            }
            let delay = self.backoff(attempt);
            tracing::debug!(events = retry.len(), attempt, ?delay, reason = %reason, "retrying opensearch _bulk");
            tokio::time::sleep(delay).await;
            attempt += 1;
            metrics.retried.increment(retry.len() as u64);
            // `retry` keeps the order of `docs`: the same length means the same events.
            if retry.len() != docs.len() {
                body = subset(&original, &retry);
            }
            docs = retry;
        }
    }

    /// Counts written and refused items; returns the ones to retry (429, 5xx), why, and how many
    /// were written.
    fn settle_items(&self, answer: &[u8], docs: &[Range<usize>]) -> Result<Settled, OpenSearchError> {
        let head: BulkHead = serde_json::from_slice(answer)
            .map_err(|e| OpenSearchError::new(None, format!("unreadable _bulk response: {e}")))?;
        if !head.errors {
            let written = docs.len() as u64;
            self.counters.written.fetch_add(written, Ordering::Relaxed);
            self.counters.metrics.written.increment(written);
            return Ok((Vec::new(), None, written));
        }
        let response: BulkResponse = serde_json::from_slice(answer)
            .map_err(|e| OpenSearchError::new(None, format!("unreadable _bulk response: {e}")))?;
        if response.items.len() != docs.len() {
            return Err(OpenSearchError::new(
                None,
                format!(
                    "_bulk answered {} items for {} events",
                    response.items.len(),
                    docs.len()
                ),
            ));
        }
        let mut retry = Vec::new();
        let mut retry_reason = None;
        let (mut written, mut refused) = (0u64, 0u64);
        for (item, doc) in response.items.into_iter().zip(docs) {
            let item = item.index;
            let reason = || {
                let e = item.error.as_ref();
                format!(
                    "{}: {}",
                    e.and_then(|e| e.kind.as_deref()).unwrap_or("error"),
                    e.and_then(|e| e.reason.as_deref()).unwrap_or("no reason given")
                )
            };
            if (200..300).contains(&item.status) {
                written += 1;
            } else if retryable(item.status) {
                if retry_reason.is_none() {
                    retry_reason = Some(OpenSearchError::new(Some(item.status), reason()));
                }
                retry.push(doc.clone());
            } else {
                refused += 1;
                // Logged one by one: a refused event is a bug (a mapping conflict, say) worth seeing.
                tracing::error!(
                    id = item._id.as_deref().unwrap_or("?"),
                    status = item.status,
                    reason = %reason(),
                    "opensearch refused an event; dropped"
                );
            }
        }
        self.counters.written.fetch_add(written, Ordering::Relaxed);
        self.counters.dropped.fetch_add(refused, Ordering::Relaxed);
        let metrics = &self.counters.metrics;
        metrics.written.increment(written);
        metrics.dropped_rejected.increment(refused);
        Ok((retry, retry_reason, written))
    }

    async fn bulk(&self, body: Bytes) -> Attempt {
        let sent = self
            .client
            .send(
                Method::Post,
                "/_bulk",
                self.bulk_headers.clone(),
                Some(&[("filter_path", BULK_FILTER)]),
                Some(body),
                None,
            )
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(OpenSearchError::request("_bulk", e)),
        };
        let status = response.status_code().as_u16();
        let answer = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Retry(OpenSearchError::request("_bulk", e)),
        };
        if (200..300).contains(&status) {
            Attempt::Items(answer)
        } else if retryable(status) {
            Attempt::Retry(OpenSearchError::status("_bulk", status, &answer))
        } else {
            Attempt::GiveUp(OpenSearchError::status("_bulk", status, &answer))
        }
    }

    /// Makes everything written so far visible to searches: refreshes the indices written since
    /// the last refresh (none: no request at all).
    async fn refresh(&mut self) -> Result<(), OpenSearchError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let path = if self.dirty.len() > MAX_DIRTY {
            format!("/{}/_refresh", self.config.index_pattern())
        } else {
            format!("/{}/_refresh", self.dirty.join(","))
        };
        let sent = self
            .client
            .send::<(), _>(
                Method::Post,
                &path,
                HeaderMap::new(),
                Some(&[("ignore_unavailable", "true"), ("allow_no_indices", "true")]),
                None,
                None,
            )
            .await
            .map_err(|e| OpenSearchError::request("_refresh", e))?;
        let status = sent.status_code().as_u16();
        if (200..300).contains(&status) {
            self.dirty.clear();
            return Ok(());
        }
        let answer = sent.bytes().await.unwrap_or_default();
        Err(OpenSearchError::status("_refresh", status, &answer))
    }
}

/// The running retention sweep, if any; dropping it (the writer stopped) aborts the sweep.
struct SweepTask(Option<JoinHandle<()>>);

impl SweepTask {
    /// Starts a sweep, unless the last one is still running (a slow cluster).
    fn start(&mut self, client: &OpenSearch, config: &Arc<OpenSearchConfig>) {
        if self.0.as_ref().is_some_and(|task| !task.is_finished()) {
            tracing::debug!("opensearch retention: the last sweep is still running; skipped");
            return;
        }
        self.0 = Some(tokio::spawn(retention::sweep_and_log(client.clone(), config.clone())));
    }
}

impl Drop for SweepTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A new body with the lines of `docs` out of `original`.
fn subset(original: &Bytes, docs: &[Range<usize>]) -> Bytes {
    let mut body = BytesMut::with_capacity(docs.iter().map(|r| r.len()).sum());
    for r in docs {
        body.extend_from_slice(&original[r.clone()]);
    }
    body.freeze()
}
