//! The load client: M SSE subscriptions over N channels and an open-loop publisher over K
//! keep-alive connections, against the project's bench server or a peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::{Client, RequestBuilder, Url};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::latency::{self, LatencySummary};
use crate::message::{Marker, PublishPlan, SubTracker, now_nanos, open_loop};
use crate::procstat::{self, CpuSnapshot, NamedPids};
use crate::record::LoadResult;
use crate::sse::SseParser;

/// The kind of server, which decides its URLs and message framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The project's bench server (or anything with the same API): `GET /sub/{ch}` (SSE) and
    /// `POST /pub/{ch}` with the JSON body.
    Stream,
    /// Nchan: `GET /sub/{ch}` with `Accept: text/event-stream`, `POST /pub/{ch}`.
    Nchan,
    /// Centrifugo v6: uni-directional SSE at `/connection/uni_sse` with an HS256 JWT whose
    /// `channels` claim subscribes the connection server-side; `POST /api/publish` with an API
    /// key.
    Centrifugo {
        /// `http_api.key`.
        api_key: String,
        /// `client.token.hmac_secret_key`.
        hmac_secret: String,
    },
}

/// A load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Its kind.
    pub target: Target,
    /// Subscriptions (M); subscription `i` is on channel `i % channels`.
    pub subscribers: usize,
    /// Channels (N).
    pub channels: usize,
    /// Publishing workers, one keep-alive connection each (K).
    pub publishers: usize,
    /// Offered messages per second, in total.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// How long to wait after publishing for deliveries still under way.
    pub drain: Duration,
    /// Wait after the last subscription opened before publishing.
    pub settle: Duration,
    /// Subscriptions being opened at once.
    pub connect_concurrency: usize,
    /// How long all subscriptions may take to open.
    pub connect_timeout: Duration,
    /// Channel names are `{prefix}-{i}`; use a fresh prefix per run so no history is replayed.
    pub channel_prefix: String,
    /// Filler bytes per message.
    pub pad: usize,
    /// Processes whose CPU, RSS and Redis connections are reported.
    pub pids: Vec<NamedPids>,
    /// Redis's port, to count the processes' Redis connections.
    pub redis_port: Option<u16>,
    /// Idle mode: open the subscriptions, measure memory and connections, publish nothing.
    pub idle: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".into(),
            target: Target::Stream,
            subscribers: 1,
            channels: 1,
            publishers: 8,
            rate: 100.0,
            duration: Duration::from_secs(3),
            drain: Duration::from_secs(3),
            settle: Duration::from_millis(300),
            connect_concurrency: 256,
            connect_timeout: Duration::from_secs(60),
            channel_prefix: format!("bench{}", now_nanos() % 1_000_000_000),
            pad: 64,
            pids: Vec::new(),
            redis_port: None,
            idle: false,
        }
    }
}

/// The load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting is unusable.
    #[error("invalid load settings: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// An HS256 JWT with `claims`.
pub fn hs256_jwt(secret: &str, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// The subscription request for subscriber `i` on `channel`, and whether it is open only once
/// the first event arrives (Centrifugo subscribes during its connect reply).
fn subscribe_request(cfg: &LoadConfig, client: &Client, i: usize, channel: &str) -> (RequestBuilder, bool) {
    match &cfg.target {
        Target::Stream => (client.get(format!("{}/sub/{channel}", base(&cfg.base_url))), false),
        Target::Nchan => (
            client
                .get(format!("{}/sub/{channel}", base(&cfg.base_url)))
                .header("accept", "text/event-stream"),
            false,
        ),
        Target::Centrifugo { hmac_secret, .. } => {
            let exp = now_nanos() / 1_000_000_000 + 3600;
            let token = hs256_jwt(
                hmac_secret,
                &json!({"sub": format!("bench-{i}"), "exp": exp, "channels": [channel]}),
            );
            let mut url = Url::parse(&format!("{}/connection/uni_sse", base(&cfg.base_url))).expect("valid base URL");
            url.query_pairs_mut()
                .append_pair("cf_connect", &json!({"token": token}).to_string());
            (client.get(url), true)
        }
    }
}

async fn publish_one(
    client: &Client,
    target: &Target,
    base_url: &str,
    channel: &str,
    message: Map<String, Value>,
) -> Result<(), String> {
    let request = match target {
        Target::Stream | Target::Nchan => client
            .post(format!("{}/pub/{channel}", base(base_url)))
            .header("content-type", "application/json")
            .body(Value::Object(message).to_string()),
        Target::Centrifugo { api_key, .. } => client
            .post(format!("{}/api/publish", base(base_url)))
            .header("content-type", "application/json")
            .header("x-api-key", api_key)
            .body(json!({"channel": channel, "data": message}).to_string()),
    };
    let response = request.send().await.map_err(|e| format!("publish: {e}"))?;
    let status = response.status();
    // Reading the body to its end returns the connection to the pool for the next request.
    let body = response.bytes().await.map_err(|e| format!("publish body: {e}"))?;
    if !status.is_success() {
        return Err(format!("publish: HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    if matches!(target, Target::Centrifugo { .. }) && body.starts_with(br#"{"error""#) {
        return Err(format!("publish: {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}

/// A subscription being opened: it holds a connect slot until it is open or has failed, and
/// then says which.
pub(crate) struct Opening {
    done: mpsc::UnboundedSender<Result<(), String>>,
    _slot: OwnedSemaphorePermit,
}

impl Opening {
    /// Reports to `done`, holding `slot` until then.
    pub(crate) fn new(done: mpsc::UnboundedSender<Result<(), String>>, slot: OwnedSemaphorePermit) -> Self {
        Self { done, _slot: slot }
    }

    fn finish(self, outcome: Result<(), String>) {
        let _ = self.done.send(outcome);
    }
}

/// Reads one SSE subscription until `stop`, checking every message.
///
/// Per event it borrows the `data` from the body chunk when it can ([`SseParser`]) and reads
/// only the marker out of the JSON ([`Marker::find_in_json`]): the client must cost less per
/// delivery than the servers it measures.
pub(crate) async fn subscriber(
    request: RequestBuilder,
    open_on_first_event: bool,
    workers: usize,
    opening: Opening,
    stop: CancellationToken,
    received: Arc<AtomicU64>,
) -> SubTracker {
    let mut tracker = SubTracker::new(workers);
    let response = tokio::select! {
        r = request.send() => r,
        () = stop.cancelled() => return tracker,
    };
    let failure = match response {
        Ok(r) if r.status().is_success() => Ok(r),
        Ok(r) => Err(format!("subscribe: HTTP {}", r.status())),
        Err(e) => Err(format!("subscribe: {e}")),
    };
    let response = match failure {
        Ok(r) => r,
        Err(e) => {
            opening.finish(Err(e.clone()));
            tracker.error = Some(e);
            return tracker;
        }
    };
    let mut body = response.bytes_stream();
    let mut parser = SseParser::new();
    let mut pending_open = Some(opening);
    if !open_on_first_event && let Some(o) = pending_open.take() {
        o.finish(Ok(()));
    }
    loop {
        let chunk = tokio::select! {
            biased;
            c = body.next() => c,
            () = stop.cancelled() => break,
        };
        match chunk {
            Some(Ok(chunk)) => {
                let mut markers = 0;
                parser.feed(&chunk, |data| {
                    let now = now_nanos();
                    if let Some(o) = pending_open.take() {
                        o.finish(Ok(()));
                    }
                    match Marker::find_in_json(data) {
                        Some(m) => {
                            tracker.record(m, now);
                            markers += 1;
                        }
                        None => tracker.other += 1,
                    }
                });
                if markers > 0 {
                    // Once per chunk: the counter is shared by all subscriptions.
                    received.fetch_add(markers, Ordering::Relaxed);
                }
            }
            Some(Err(e)) => {
                // The wording of the `eventsource-stream` error this replaced.
                tracker.error = Some(format!("stream: Transport error: {e}"));
                break;
            }
            None => {
                tracker.error = Some("stream ended".into());
                break;
            }
        }
    }
    if let Some(o) = pending_open.take() {
        o.finish(Err(tracker.error.clone().unwrap_or_else(|| "stopped".into())));
    }
    tracker
}

/// Runs one load measurement.
pub async fn run(cfg: LoadConfig) -> Result<LoadResult, LoadError> {
    if cfg.channels == 0 || cfg.publishers == 0 || cfg.rate <= 0.0 {
        return Err(LoadError::Config(
            "channels, publishers and rate must be positive".into(),
        ));
    }
    let channels: Arc<Vec<String>> = Arc::new(
        (0..cfg.channels)
            .map(|i| format!("{}-{i}", cfg.channel_prefix))
            .collect(),
    );
    // One connection per subscription, opened on demand; none kept idle.
    let sub_client = Client::builder()
        .http1_only()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    // K keep-alive connections, reused request after request.
    let pub_client = Client::builder()
        .http1_only()
        .pool_max_idle_per_host(cfg.publishers)
        .timeout(Duration::from_secs(10))
        .build()?;

    let rss_before = procstat::rss_by_group(&cfg.pids);
    let stop = CancellationToken::new();
    let received = Arc::new(AtomicU64::new(0));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let connect_slots = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let mut subs = Vec::with_capacity(cfg.subscribers);
    for i in 0..cfg.subscribers {
        let (request, on_first) = subscribe_request(&cfg, &sub_client, i, &channels[i % cfg.channels]);
        let done = opened_tx.clone();
        let slots = connect_slots.clone();
        let stop = stop.clone();
        let received = received.clone();
        let workers = cfg.publishers;
        subs.push(tokio::spawn(async move {
            // At most `connect_concurrency` subscriptions are being opened at once.
            let slot = slots.acquire_owned().await.expect("the semaphore is never closed");
            let opening = Opening { done, _slot: slot };
            subscriber(request, on_first, workers, opening, stop, received).await
        }));
    }
    drop(opened_tx);
    let mut opened_ok = 0usize;
    let mut errors: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    for _ in 0..cfg.subscribers {
        match tokio::time::timeout_at(deadline, opened_rx.recv()).await {
            Ok(Some(Ok(()))) => opened_ok += 1,
            Ok(Some(Err(e))) => {
                if errors.len() < 5 {
                    errors.push(e);
                }
            }
            Ok(None) => break,
            Err(_) => {
                errors.push(format!(
                    "only {opened_ok} subscriptions open after {:?}",
                    cfg.connect_timeout
                ));
                break;
            }
        }
    }
    tokio::time::sleep(cfg.settle).await;
    let rss_after = procstat::rss_by_group(&cfg.pids);
    let redis_connections = cfg
        .redis_port
        .map(|port| procstat::redis_connections_by_group(&cfg.pids, port))
        .unwrap_or_default();

    let mut result = LoadResult {
        subscribers: cfg.subscribers,
        subscribed: opened_ok,
        channels: cfg.channels,
        publishers: cfg.publishers,
        offered_rate: if cfg.idle { 0.0 } else { cfg.rate },
        duration_s: if cfg.idle { 0.0 } else { cfg.duration.as_secs_f64() },
        rss_before,
        rss_after,
        redis_connections,
        ..LoadResult::default()
    };

    let mut outcome = None;
    let mut cpu = None;
    if !cfg.idle {
        let cpu_start = CpuSnapshot::take(&cfg.pids);
        let plan = PublishPlan {
            workers: cfg.publishers,
            rate: cfg.rate,
            duration: cfg.duration,
            channels: cfg.channels,
            pad: cfg.pad,
        };
        let target = Arc::new(cfg.target.clone());
        let base_url: Arc<str> = cfg.base_url.clone().into();
        let chans = channels.clone();
        let published = open_loop(plan, move |_, c, message| {
            let client = pub_client.clone();
            let target = target.clone();
            let base_url = base_url.clone();
            let chans = chans.clone();
            async move { publish_one(&client, &target, &base_url, &chans[c], message).await }
        })
        .await;
        // Deliveries expected: each channel's publishes times its subscriptions.
        let expected: u64 = (0..cfg.subscribers).map(|i| published.ok_on(i % cfg.channels)).sum();
        let drain_until = Instant::now() + cfg.drain;
        while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cpu = Some(CpuSnapshot::take(&cfg.pids).since(&cpu_start));
        result.expected = expected;
        outcome = Some(published);
    }

    stop.cancel();
    let mut latency = latency::new_histogram();
    let mut last_at: Option<Instant> = None;
    for (i, task) in subs.into_iter().enumerate() {
        let tracker = match task.await {
            Ok(t) => t,
            Err(e) => {
                result.subscription_errors += 1;
                errors.push(format!("subscriber task: {e}"));
                continue;
            }
        };
        if let Some(e) = &tracker.error {
            result.subscription_errors += 1;
            if errors.len() < 5 {
                errors.push(e.clone());
            }
        }
        result.received += tracker.distinct();
        result.duplicates += tracker.duplicates;
        result.out_of_order += tracker.out_of_order;
        if let Some(o) = &outcome {
            result.lost += o.ok_on(i % cfg.channels).saturating_sub(tracker.distinct());
        }
        let _ = latency.add(&tracker.latency);
        last_at = last_at.max(tracker.last_at);
    }
    result.latency = LatencySummary::from(&latency);
    if let Some(o) = outcome {
        result.published = o.total_ok();
        result.publish_errors = o.errors;
        // Over the planned publishing time, or longer when the publishers fell behind.
        let window = o.elapsed.max(cfg.duration).as_secs_f64().max(1e-9);
        result.achieved_publish_rate = o.total_ok() as f64 / window;
        result.publish_latency = LatencySummary::from(&o.latency);
        if let Some(e) = o.first_error {
            errors.push(e);
        }
        if let Some(last) = last_at {
            let window = last.saturating_duration_since(o.started).as_secs_f64().max(1e-9);
            result.deliveries_per_s = result.received as f64 / window;
        }
    }
    result.cpu = cpu.unwrap_or_default();
    result.errors = errors;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body chunk, as reqwest's `bytes_stream` yields them (shared, cheap to clone).
    type Chunk = Arc<[u8]>;

    /// The per-event client work on a body, the way `subscriber` did it with
    /// `eventsource-stream` and a `Value`: (events with a marker, other events).
    fn old_path(chunks: &[Chunk]) -> (u64, u64) {
        use eventsource_stream::Eventsource;
        let stream = futures_util::stream::iter(chunks.iter().cloned().map(Ok::<_, std::convert::Infallible>));
        let mut events = stream.eventsource();
        let (mut markers, mut other) = (0, 0);
        while let Some(Some(Ok(event))) = futures_util::FutureExt::now_or_never(events.next()) {
            let marker = serde_json::from_str::<Value>(&event.data)
                .ok()
                .as_ref()
                .and_then(Marker::find);
            match marker {
                Some(_) => markers += 1,
                None => other += 1,
            }
        }
        (markers, other)
    }

    /// The same, the way `subscriber` does it now.
    fn new_path(chunks: &[Chunk]) -> (u64, u64) {
        let mut parser = SseParser::new();
        let (mut markers, mut other) = (0, 0);
        for chunk in chunks {
            parser.feed(chunk, |data| match Marker::find_in_json(data) {
                Some(_) => markers += 1,
                None => other += 1,
            });
        }
        (markers, other)
    }

    /// Bodies as each server frames a 64-byte-pad benchmark message, one chunk per event, with
    /// a ping every tenth event.
    fn bodies(events: u64) -> Vec<(&'static str, Vec<Chunk>)> {
        let pad = "x".repeat(64);
        let frame = |target: &str, s: u64| -> String {
            let t = 1_735_000_000_000_000_000 + s * 1_000;
            match target {
                "stream" => format!(
                    "id: 01JGZ5J3T0000000000000{s:04}\ndata: {{\"channel\":\"bench-0\",\"id\":\"01JGZ5J3T0000000000000{s:04}\",\
                     \"pad\":\"{pad}\",\"s\":{s},\"t\":{t},\"ts\":\"2025-01-01T00:00:00.000Z\",\"type\":\"data\",\"w\":3}}\n\n"
                ),
                "nchan" => format!("data: {{\"pad\":\"{pad}\",\"s\":{s},\"t\":{t},\"w\":3}}\n\n"),
                _ => format!(
                    "data: {{\"pub\":{{\"data\":{{\"pad\":\"{pad}\",\"s\":{s},\"t\":{t},\"w\":3}},\"offset\":{s}}}}}\n\n"
                ),
            }
        };
        ["stream", "nchan", "centrifugo"]
            .into_iter()
            .map(|target| {
                let chunks = (0..events)
                    .map(|s| {
                        let mut f = frame(target, s);
                        if s % 10 == 9 {
                            f.push_str(": ping\n\n");
                        }
                        Chunk::from(f.into_bytes())
                    })
                    .collect();
                (target, chunks)
            })
            .collect()
    }

    #[test]
    fn old_and_new_client_paths_agree() {
        for (target, chunks) in bodies(200) {
            assert_eq!(old_path(&chunks), new_path(&chunks), "{target}");
            assert_eq!(new_path(&chunks), (200, 0), "{target}");
            // The same body cut anywhere.
            let body: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let cut: Vec<Chunk> = body.chunks(97).map(Chunk::from).collect();
            assert_eq!(new_path(&cut), (200, 0), "{target}");
        }
    }

    #[test]
    fn jwt_has_three_parts_and_the_claims() {
        let token = hs256_jwt("secret", &json!({"sub": "u", "channels": ["c"]}));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&claims).unwrap(),
            json!({"sub": "u", "channels": ["c"]})
        );
    }
}
