//! The soak run (issue 14): S concurrent SSE streams against one demo app (`axum-app`) in Redis
//! mode, each stream on its own channel and held by its own user, and a publisher that sends
//! one event per stream every `period` for `duration`.
//!
//! - **Channels**: the harness registers each channel with its owner in Redis (the app's
//!   [`ChannelRegistry`], through [`RedisBroker`]), the record `POST /deployments` would write,
//!   but without a deploy job or the app's archive subscription: the app is then a pure SSE
//!   fan-out, which is what the soak measures.
//! - **Streams**: `GET /streams/{channel}` with `X-User-Id: <prefix>-u<i>`, one user per stream,
//!   so the app's per-user caps (`STREAM_LEASE_LIMIT`, `DEMO_MAX_CHANNELS_PER_USER`) stay at their
//!   defaults; each stream still takes a lease in Redis. The load client's subscriber
//!   ([`crate::load`]) reads them and checks every message.
//! - **Publishing**: straight into Redis with the library ([`EventPublisher::publish`] on a
//!   [`RedisBroker`]), `data` events carrying the benchmark [`Marker`] (`s` = the event's number on
//!   its channel). The streams' first events are spread evenly over one period, so the app sees a
//!   steady `streams / period` events per second. A failed publish is never retried (it may have
//!   been stored), and the run fails.
//! - **Figures** of the app process: RSS, open file descriptors and Redis connections before
//!   the streams open, once they are open, at each sample mark (seconds after publishing began),
//!   and after every client has closed (once the fds are back within the tolerance, or after
//!   `close_wait`).
//!
//! A stream passes when it got exactly the events published to its channel: as many as were
//! published, no duplicate, none out of order, and it stayed open until the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Client;
use serde::{Deserialize, Serialize};
use stream_core::{ChannelConfig, ChannelId, ChannelRegistry, Event, EventPublisher, EventType, UserId};
use stream_pubsub::RedisBroker;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::latency::{self, LatencySummary};
use crate::load::{Opening, subscriber};
use crate::message::{Marker, now_nanos};
use crate::procstat;

/// A soak run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The app, e.g. `http://127.0.0.1:3000`.
    pub base_url: String,
    /// The Redis the app runs on.
    pub redis_url: String,
    /// Concurrent streams, one channel and one user each.
    pub streams: usize,
    /// Each stream gets one event per period.
    pub period: Duration,
    /// How long to publish.
    pub duration: Duration,
    /// When to take the app's figures, counted from the start of publishing.
    pub samples: Vec<Duration>,
    /// The app's process, whose RSS, fds and Redis connections are reported.
    pub app_pid: Option<u32>,
    /// Publishing tasks: each owns every `publishers`-th channel and publishes one event at a
    /// time, so each channel's events are published in order.
    pub publishers: usize,
    /// Streams being opened at once.
    pub connect_concurrency: usize,
    /// How long all streams may take to open.
    pub connect_timeout: Duration,
    /// Wait after the last stream opened before publishing.
    pub settle: Duration,
    /// How long to wait after publishing for deliveries still under way.
    pub drain: Duration,
    /// After the clients closed, how long to wait for the app's fds to return to the baseline.
    pub close_wait: Duration,
    /// How far from the baseline the app's fds may be after the clients closed.
    pub fd_tolerance: usize,
    /// Users are `{prefix}-u{i}`; a fresh prefix per run.
    pub prefix: String,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:3000".into(),
            redis_url: "redis://127.0.0.1:6399/".into(),
            streams: 10_000,
            period: Duration::from_secs(5),
            duration: Duration::from_secs(300),
            samples: [60, 180, 300].into_iter().map(Duration::from_secs).collect(),
            app_pid: None,
            publishers: 32,
            connect_concurrency: 256,
            connect_timeout: Duration::from_secs(120),
            settle: Duration::from_secs(1),
            drain: Duration::from_secs(10),
            close_wait: Duration::from_secs(15),
            fd_tolerance: 10,
            prefix: format!("soak{}", now_nanos() % 1_000_000_000),
        }
    }
}

/// The app's figures at one moment, and the deliveries so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// What the moment is (`baseline`, `open`, `60 s`, `closed`).
    pub label: String,
    /// Seconds since publishing began (negative before).
    pub at_s: f64,
    /// The app's resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// The app's open file descriptors.
    pub open_fds: Option<usize>,
    /// The app's established connections to Redis.
    pub redis_connections: Option<usize>,
    /// Events published so far (all channels).
    pub published: u64,
    /// Events delivered so far (all streams).
    pub delivered: u64,
}

/// What a soak run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoakReport {
    /// Streams asked for.
    pub streams: usize,
    /// Streams that opened.
    pub opened: usize,
    /// Seconds all streams took to open.
    pub connect_s: f64,
    /// Seconds between a stream's events.
    pub period_s: f64,
    /// Seconds of publishing.
    pub duration_s: f64,
    /// Before the streams opened, once they were open, at the marks, after the clients closed.
    pub samples: Vec<Sample>,
    /// Seconds the app's fds took to return to the baseline (within the tolerance) after the
    /// clients closed; `None` when they did not within `close_wait` (or are not watched).
    pub fds_settled_s: Option<f64>,
    /// The tolerance that applied.
    pub fd_tolerance: usize,
    /// Events published.
    pub published: u64,
    /// Publishes that failed.
    pub publish_errors: u64,
    /// Deliveries expected: each stream, its channel's published events.
    pub expected: u64,
    /// Distinct events delivered.
    pub delivered: u64,
    /// Expected but not delivered.
    pub lost: u64,
    /// Delivered more than once.
    pub duplicates: u64,
    /// Delivered out of order.
    pub out_of_order: u64,
    /// Streams that did not get exactly their channel's events.
    pub streams_incomplete: usize,
    /// Streams that failed or ended before the end.
    pub stream_errors: usize,
    /// How late the publisher was at its worst, ms behind its schedule.
    pub max_publish_lag_ms: f64,
    /// Publish-to-receive latency.
    pub latency: LatencySummary,
    /// The first errors seen.
    pub errors: Vec<String>,
}

impl SoakReport {
    /// The sample with this label.
    pub fn sample(&self, label: &str) -> Option<&Sample> {
        self.samples.iter().find(|s| s.label == label)
    }

    /// Why the delivery check failed: empty when every stream opened, stayed open and got
    /// exactly the events published to its channel, and every publish succeeded.
    pub fn delivery_failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.opened < self.streams {
            failures.push(format!("only {} of {} streams opened", self.opened, self.streams));
        }
        if self.publish_errors > 0 {
            failures.push(format!("{} publishes failed", self.publish_errors));
        }
        if self.published == 0 {
            failures.push("nothing was published".into());
        }
        if self.lost > 0 || self.delivered != self.expected {
            failures.push(format!(
                "{} of {} expected deliveries arrived ({} lost)",
                self.delivered, self.expected, self.lost
            ));
        }
        if self.duplicates > 0 || self.out_of_order > 0 {
            failures.push(format!(
                "{} duplicates, {} out of order",
                self.duplicates, self.out_of_order
            ));
        }
        if self.streams_incomplete > 0 {
            failures.push(format!(
                "{} streams did not get exactly their channel's events",
                self.streams_incomplete
            ));
        }
        if self.stream_errors > 0 {
            failures.push(format!("{} streams failed or ended early", self.stream_errors));
        }
        failures
    }

    /// Whether the app's fds returned to the baseline within the tolerance (`None` when they
    /// were not watched).
    pub fn fds_returned(&self) -> Option<bool> {
        let baseline = self.sample("baseline")?.open_fds?;
        let closed = self.sample("closed")?.open_fds?;
        Some(closed.abs_diff(baseline) <= self.fd_tolerance)
    }

    /// The report as text, one line per figure.
    pub fn to_text(&self) -> String {
        fn mib(b: Option<u64>) -> String {
            b.map_or_else(|| "-".into(), |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
        }
        fn num(n: Option<usize>) -> String {
            n.map_or_else(|| "-".into(), |n| n.to_string())
        }
        let mut out = format!(
            "soak: {} streams (opened {} in {:.1} s), one event per stream every {} s for {} s\n",
            self.streams, self.opened, self.connect_s, self.period_s, self.duration_s
        );
        out.push_str(&format!(
            "{:<10} {:>8} {:>12} {:>8} {:>6} {:>11} {:>11}\n",
            "when", "at (s)", "app RSS", "app fds", "redis", "published", "delivered"
        ));
        for s in &self.samples {
            out.push_str(&format!(
                "{:<10} {:>8.1} {:>12} {:>8} {:>6} {:>11} {:>11}\n",
                s.label,
                s.at_s,
                mib(s.rss_bytes),
                num(s.open_fds),
                num(s.redis_connections),
                s.published,
                s.delivered
            ));
        }
        out.push_str(&format!(
            "events: published {} ({} failed), expected {}, delivered {}, lost {}, duplicates {}, out of order {}\n",
            self.published,
            self.publish_errors,
            self.expected,
            self.delivered,
            self.lost,
            self.duplicates,
            self.out_of_order
        ));
        out.push_str(&format!(
            "streams: {} incomplete, {} failed; publisher lag at worst {:.0} ms; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            self.streams_incomplete,
            self.stream_errors,
            self.max_publish_lag_ms,
            self.latency.p50_us as f64 / 1000.0,
            self.latency.p99_us as f64 / 1000.0,
            self.latency.max_us as f64 / 1000.0
        ));
        match (self.fds_returned(), self.fds_settled_s) {
            (Some(true), Some(t)) => out.push_str(&format!(
                "fds: back to the baseline (±{}) {:.1} s after the clients closed\n",
                self.fd_tolerance, t
            )),
            (Some(_), _) => out.push_str(&format!("fds: NOT back to the baseline (±{})\n", self.fd_tolerance)),
            (None, _) => {}
        }
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        let failures = self.delivery_failures();
        if failures.is_empty() {
            out.push_str("result: nothing lost\n");
        } else {
            out.push_str(&format!("result: FAILED: {}\n", failures.join("; ")));
        }
        out
    }
}

/// The soak run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// A setting is unusable.
    #[error("invalid soak settings: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The publisher could not connect to Redis.
    #[error("Redis: {0}")]
    Redis(#[from] stream_pubsub::ConnectError),
    /// A channel could not be registered.
    #[error("registering the channels: {0}")]
    Register(String),
}

/// The port of a `redis://host:port/` URL (6379 when it has none).
pub fn redis_port(url: &str) -> Option<u16> {
    let url = reqwest::Url::parse(url).ok()?;
    Some(url.port().unwrap_or(6379))
}

fn take_sample(cfg: &SoakConfig, label: &str, at_s: f64, published: u64, delivered: u64) -> Sample {
    let pid = cfg.app_pid;
    Sample {
        label: label.to_owned(),
        at_s,
        rss_bytes: pid.and_then(|p| procstat::rss_bytes(p).ok()),
        open_fds: pid.and_then(|p| procstat::open_fds(p).ok()),
        redis_connections: pid.and_then(|p| {
            let port = redis_port(&cfg.redis_url)?;
            procstat::tcp_connections_to(p, port).ok()
        }),
        published,
        delivered,
    }
}

fn label_of(mark: Duration) -> String {
    format!("{} s", mark.as_secs_f64())
}

/// Runs one soak.
pub async fn run(cfg: SoakConfig) -> Result<SoakReport, SoakError> {
    if cfg.streams == 0 || cfg.period.is_zero() || cfg.duration < cfg.period || cfg.publishers == 0 {
        return Err(SoakError::Config(
            "streams and publishers must be positive, and the duration at least one period".into(),
        ));
    }
    let history_ttl = cfg.duration + Duration::from_secs(600);
    let broker = Arc::new(
        RedisBroker::builder(cfg.redis_url.as_str())
            .config(ChannelConfig {
                history_ttl,
                ..ChannelConfig::default()
            })
            .connect()
            .await?,
    );
    let channels: Arc<Vec<ChannelId>> = Arc::new((0..cfg.streams).map(|_| ChannelId::generate()).collect());
    let users: Vec<UserId> = (0..cfg.streams)
        .map(|i| UserId::new(format!("{}-u{i}", cfg.prefix)))
        .collect::<Result<_, _>>()
        .map_err(|e| SoakError::Config(format!("user prefix: {e}")))?;
    // The owner records the app checks (what `POST /deployments` registers).
    let registered: Vec<Result<(), String>> = futures_util::stream::iter(channels.iter().zip(&users))
        .map(|(channel, user)| {
            let broker = broker.clone();
            async move {
                broker
                    .register(channel, user, history_ttl)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    if let Some(Err(e)) = registered.into_iter().find(Result::is_err) {
        return Err(SoakError::Register(e));
    }

    let mut report = SoakReport {
        streams: cfg.streams,
        period_s: cfg.period.as_secs_f64(),
        duration_s: cfg.duration.as_secs_f64(),
        fd_tolerance: cfg.fd_tolerance,
        ..SoakReport::default()
    };
    let baseline = take_sample(&cfg, "baseline", 0.0, 0, 0);
    let baseline_fds = baseline.open_fds;
    report.samples.push(baseline);

    // One connection per stream; none kept idle, so a closed stream closes its connection.
    let client = Client::builder()
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let base = cfg.base_url.trim_end_matches('/').to_owned();
    let stop = CancellationToken::new();
    let received = Arc::new(AtomicU64::new(0));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let slots = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let connect_started = Instant::now();
    let mut subs = Vec::with_capacity(cfg.streams);
    for (channel, user) in channels.iter().zip(&users) {
        let request = client
            .get(format!("{base}/streams/{channel}"))
            .header("x-user-id", user.as_str());
        let (done, slots, stop, received) = (opened_tx.clone(), slots.clone(), stop.clone(), received.clone());
        subs.push(tokio::spawn(async move {
            let slot = slots.acquire_owned().await.expect("the semaphore is never closed");
            subscriber(request, false, 1, Opening::new(done, slot), stop, received).await
        }));
    }
    drop(opened_tx);
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    for _ in 0..cfg.streams {
        match tokio::time::timeout_at(deadline, opened_rx.recv()).await {
            Ok(Some(Ok(()))) => report.opened += 1,
            Ok(Some(Err(e))) => {
                if report.errors.len() < 5 {
                    report.errors.push(e);
                }
            }
            Ok(None) => break,
            Err(_) => {
                report.errors.push(format!(
                    "only {} streams open after {:?}",
                    report.opened, cfg.connect_timeout
                ));
                break;
            }
        }
    }
    report.connect_s = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(cfg.settle).await;
    report
        .samples
        .push(take_sample(&cfg, "open", 0.0, 0, received.load(Ordering::Relaxed)));

    // Publishing: channel i's k-th event is due at start + k·period + i·period/streams.
    let rounds = (cfg.duration.as_secs_f64() / cfg.period.as_secs_f64()).floor() as u64;
    let published = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut workers = Vec::with_capacity(cfg.publishers);
    for w in 0..cfg.publishers.min(cfg.streams) {
        let (broker, channels, published) = (broker.clone(), channels.clone(), published.clone());
        let (streams, period, publishers) = (cfg.streams, cfg.period, cfg.publishers);
        workers.push(tokio::spawn(async move {
            // (channel, events published on it), errors, first error, worst lag.
            let mut ok: Vec<(usize, u64)> = (w..streams).step_by(publishers).map(|i| (i, 0)).collect();
            let (mut errors, mut first_error, mut max_lag) = (0u64, None::<String>, Duration::ZERO);
            for k in 0..rounds {
                for (i, count) in &mut ok {
                    let due = start
                        + period * u32::try_from(k).unwrap_or(u32::MAX)
                        + period.mul_f64(*i as f64 / streams as f64);
                    tokio::time::sleep_until(due).await;
                    max_lag = max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
                    let marker = Marker {
                        w: 0,
                        s: k,
                        t: now_nanos(),
                    };
                    let outcome = match Event::new(channels[*i].clone(), EventType::Data, marker.to_object(0)) {
                        Ok(event) => broker.publish(&event).await.map(drop).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(()) => {
                            *count += 1;
                            published.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            (ok, errors, first_error, max_lag)
        }));
    }
    // The samples, while the publishers run.
    let sampler = {
        let cfg = cfg.clone();
        let (published, received) = (published.clone(), received.clone());
        async move {
            let mut marks = cfg.samples.clone();
            marks.sort();
            let mut samples = Vec::new();
            for mark in marks {
                tokio::time::sleep_until(start + mark).await;
                samples.push(take_sample(
                    &cfg,
                    &label_of(mark),
                    mark.as_secs_f64(),
                    published.load(Ordering::Relaxed),
                    received.load(Ordering::Relaxed),
                ));
            }
            samples
        }
    };
    let (samples, outcomes) = tokio::join!(sampler, futures_util::future::join_all(workers));
    report.samples.extend(samples);
    let mut per_channel = vec![0u64; cfg.streams];
    let mut max_lag = Duration::ZERO;
    for outcome in outcomes {
        match outcome {
            Ok((ok, errors, first_error, lag)) => {
                for (i, count) in ok {
                    per_channel[i] = count;
                }
                report.publish_errors += errors;
                max_lag = max_lag.max(lag);
                if let Some(e) = first_error
                    && report.errors.len() < 10
                {
                    report.errors.push(format!("publish: {e}"));
                }
            }
            Err(e) => report.errors.push(format!("publisher task: {e}")),
        }
    }
    report.max_publish_lag_ms = max_lag.as_secs_f64() * 1000.0;
    report.published = per_channel.iter().sum();
    report.expected = report.published;
    let drain_until = Instant::now() + cfg.drain;
    while received.load(Ordering::Relaxed) < report.expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every client closes.
    stop.cancel();
    let mut histogram = latency::new_histogram();
    for (i, task) in subs.into_iter().enumerate() {
        let tracker = match task.await {
            Ok(t) => t,
            Err(e) => {
                report.stream_errors += 1;
                report.streams_incomplete += 1;
                report.lost += per_channel[i];
                report.errors.push(format!("stream task: {e}"));
                continue;
            }
        };
        if let Some(e) = &tracker.error {
            report.stream_errors += 1;
            if report.errors.len() < 10 {
                report.errors.push(format!("stream {i}: {e}"));
            }
        }
        let distinct = tracker.distinct();
        report.delivered += distinct;
        report.duplicates += tracker.duplicates;
        report.out_of_order += tracker.out_of_order;
        report.lost += per_channel[i].saturating_sub(distinct);
        if distinct != per_channel[i] || tracker.duplicates > 0 || tracker.out_of_order > 0 || tracker.lagged > 0 {
            report.streams_incomplete += 1;
        }
        let _ = histogram.add(&tracker.latency);
    }
    report.latency = LatencySummary::from(&histogram);
    drop(client);

    // The app's fds after the clients closed: back to the baseline within the tolerance?
    let closed_at = Instant::now();
    let after = start.elapsed().as_secs_f64();
    let mut closed = take_sample(&cfg, "closed", after, report.published, report.delivered);
    if let Some(base_fds) = baseline_fds {
        loop {
            let fds = cfg.app_pid.and_then(|p| procstat::open_fds(p).ok());
            if fds.is_some_and(|n| n.abs_diff(base_fds) <= cfg.fd_tolerance) {
                report.fds_settled_s = Some(closed_at.elapsed().as_secs_f64());
                break;
            }
            if closed_at.elapsed() >= cfg.close_wait {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        closed = take_sample(
            &cfg,
            "closed",
            start.elapsed().as_secs_f64(),
            report.published,
            report.delivered,
        );
    }
    report.samples.push(closed);
    Ok(report)
}
