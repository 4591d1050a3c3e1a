//! Baselines measured in the same run as the servers, with no HTTP: (a) a bare redis-rs
//! `PUBLISH` loop against the project's emit path, (b) a bare redis-rs subscriber fanned out
//! in process against the project's broker subscriptions, (c) `redis-benchmark` running the lease
//! script against `acquire` plus `release`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::Value;
use stream_core::{ChannelConfig, ChannelId, EventSubscriber, StreamContext, StreamLeaseConfig, UserId};
use stream_lease::StreamLeaseLimiter;
use stream_pubsub::RedisBroker;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::latency::{self, LatencySummary};
use crate::message::{Marker, PublishOutcome, PublishPlan, SubTracker, now_nanos, open_loop};
use crate::procstat::CpuSnapshot;
use crate::record::{LoadResult, OpsResult};

/// A baseline failed to set up.
pub type BaselineError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `op` in a closed loop on `concurrency` tasks for `duration`.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, operation: &str, op: F) -> OpsResult
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut hist = latency::new_histogram();
                let (mut ops, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op(task, ops + errors).await {
                        Ok(()) => ops += 1,
                        Err(_) => errors += 1,
                    }
                    latency::record(&mut hist, t.elapsed().as_micros() as u64);
                }
                (ops, errors, hist)
            })
        })
        .collect();
    let mut result = OpsResult {
        concurrency,
        operation: operation.to_owned(),
        ..OpsResult::default()
    };
    let mut hist = latency::new_histogram();
    for task in tasks {
        if let Ok((ops, errors, h)) = task.await {
            result.ops += ops;
            result.errors += errors;
            let _ = hist.add(&h);
        } else {
            result.errors += 1;
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result.ops_per_s = result.ops as f64 / result.seconds.max(1e-9);
    result.latency = LatencySummary::from(&hist);
    result
}

fn fresh_channel(label: &str) -> ChannelId {
    ChannelId::new(format!("bench-{label}-{}", now_nanos())).expect("valid channel id")
}

fn sample_payload(pad: usize) -> serde_json::Map<String, Value> {
    Marker {
        w: 0,
        s: 0,
        t: now_nanos(),
    }
    .to_object(pad)
}

/// (a) A bare `PUBLISH` loop over one multiplexed redis-rs connection.
pub async fn bare_publish(
    redis_url: &str,
    concurrency: usize,
    duration: Duration,
    pad: usize,
) -> Result<OpsResult, BaselineError> {
    let client = redis::Client::open(redis_url)?;
    let conn = client.get_multiplexed_async_connection().await?;
    let channel = fresh_channel("bare-publish").to_string();
    let body = Value::Object(sample_payload(pad)).to_string();
    Ok(closed_loop(concurrency, duration, "PUBLISH", move |_, _| {
        let mut conn = conn.clone();
        let channel = channel.clone();
        let body = body.clone();
        async move {
            conn.publish::<_, _, i64>(channel, body)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await)
}

/// Reads Redis's own CPU time (`INFO cpu`: `used_cpu_user` plus `used_cpu_sys`), to give each
/// side of a baseline its Redis CPU per operation.
pub struct RedisCpu(redis::aio::MultiplexedConnection);

impl std::fmt::Debug for RedisCpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisCpu")
    }
}

impl RedisCpu {
    /// Connects to `redis_url`.
    pub async fn connect(redis_url: &str) -> Result<Self, BaselineError> {
        let client = redis::Client::open(redis_url)?;
        Ok(Self(client.get_multiplexed_async_connection().await?))
    }

    /// Redis's CPU seconds so far (user plus system, all its threads).
    pub async fn seconds(&self) -> Result<f64, BaselineError> {
        let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut self.0.clone()).await?;
        Ok(info
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| *name == "used_cpu_user" || *name == "used_cpu_sys")
            .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
            .sum())
    }
}

/// (a) The project's emit path: `Emitter::data` on the Redis broker.
pub async fn emit_path(
    redis_url: &str,
    concurrency: usize,
    duration: Duration,
    pad: usize,
) -> Result<OpsResult, BaselineError> {
    let broker = Arc::new(RedisBroker::builder(redis_url).connect().await?);
    let emitter = Arc::new(
        StreamContext::builder()
            .channel_id(fresh_channel("emit"))
            .build()
            .bind(broker),
    );
    let payload = sample_payload(pad);
    Ok(closed_loop(concurrency, duration, "Emitter::data", move |_, _| {
        let emitter = emitter.clone();
        let payload = payload.clone();
        async move { emitter.data(payload).await.map(drop).map_err(|e| e.to_string()) }
    })
    .await)
}

/// (c) `acquire` plus `release` of a stream lease, one user per task.
pub async fn lease_pairs(redis_url: &str, concurrency: usize, duration: Duration) -> Result<OpsResult, BaselineError> {
    let config = StreamLeaseConfig {
        limit: 1_000_000,
        key_namespace: format!("bench_leases_{}", now_nanos()),
        ..StreamLeaseConfig::default()
    };
    let limiter = Arc::new(StreamLeaseLimiter::connect(redis_url, config).await?);
    Ok(closed_loop(concurrency, duration, "acquire + release", move |task, _| {
        let limiter = limiter.clone();
        async move {
            let user = UserId::new(format!("bench-user-{task}")).map_err(|e| e.to_string())?;
            let lease = limiter
                .acquire_stream_lease(&user)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("over the limit")?;
            limiter
                .release_stream_lease(&user, &lease)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await)
}

/// (c) Loads the lease `ACQUIRE` script and runs `redis-benchmark` with `EVALSHA` of it at
/// `concurrency` clients, `requests` calls in all, on random users and lease ids.
pub async fn redis_benchmark_acquire(
    host: &str,
    port: u16,
    concurrency: usize,
    requests: u64,
) -> Result<OpsResult, BaselineError> {
    let client = redis::Client::open(format!("redis://{host}:{port}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(stream_lease::scripts::ACQUIRE)
        .query_async(&mut conn)
        .await?;
    let namespace = format!("bench_rb_leases_{}", now_nanos());
    let started = Instant::now();
    let output = tokio::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", &port.to_string()])
        .args([
            "-c",
            &concurrency.to_string(),
            "-n",
            &requests.to_string(),
            "-r",
            "1000000",
            "--csv",
        ])
        .args(["EVALSHA", &sha, "1"])
        .arg(format!("{namespace}:__rand_int__"))
        .args(["lease-__rand_int__", "1000000", "180000", "60000"])
        .output()
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        return Err(format!("redis-benchmark failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    parse_redis_benchmark_csv(&String::from_utf8_lossy(&output.stdout), concurrency, requests, seconds)
}

/// Reads `redis-benchmark --csv`: a header line, then
/// `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"`.
pub fn parse_redis_benchmark_csv(
    csv: &str,
    concurrency: usize,
    requests: u64,
    seconds: f64,
) -> Result<OpsResult, BaselineError> {
    let row = csv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .nth(1)
        .ok_or_else(|| format!("no result row in redis-benchmark output: {csv:?}"))?;
    let fields: Vec<f64> = row
        .split("\",\"")
        .skip(1)
        .map(|f| f.trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("redis-benchmark row {row:?}: {e}"))?;
    let [rps, avg, _min, p50, _p95, p99, max] = fields[..] else {
        return Err(format!("redis-benchmark row {row:?}: expected 7 numbers").into());
    };
    let us = |ms: f64| (ms * 1000.0).round() as u64;
    Ok(OpsResult {
        concurrency,
        ops: requests,
        errors: 0,
        seconds,
        ops_per_s: rps,
        latency: LatencySummary {
            count: requests,
            mean_us: avg * 1000.0,
            p50_us: us(p50),
            p90_us: 0,
            p99_us: us(p99),
            p999_us: 0,
            max_us: us(max),
        },
        operation: "EVALSHA acquire (redis-benchmark)".into(),
        redis_cpu_us_per_op: None,
    })
}

/// Settings of a fan-out baseline (b).
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The Redis server.
    pub redis_url: String,
    /// In-process receivers of the one channel.
    pub receivers: usize,
    /// Offered messages per second.
    pub rate: f64,
    /// Concurrent publishers.
    pub publishers: usize,
    /// How long to publish.
    pub duration: Duration,
    /// How long to wait for deliveries after publishing.
    pub drain: Duration,
    /// Filler bytes per message.
    pub pad: usize,
}

async fn drain_and_collect(
    cfg: &FanoutConfig,
    outcome: PublishOutcome,
    received: &AtomicU64,
    stop: CancellationToken,
    receivers: Vec<tokio::task::JoinHandle<SubTracker>>,
    cpu_start: CpuSnapshot,
) -> LoadResult {
    let published = outcome.total_ok();
    let expected = published * cfg.receivers as u64;
    let drain_until = Instant::now() + cfg.drain;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = CpuSnapshot::take(&[]).since(&cpu_start);
    stop.cancel();
    let mut result = LoadResult {
        subscribers: cfg.receivers,
        subscribed: cfg.receivers,
        channels: 1,
        publishers: cfg.publishers,
        offered_rate: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        published,
        publish_errors: outcome.errors,
        achieved_publish_rate: published as f64 / outcome.elapsed.max(cfg.duration).as_secs_f64().max(1e-9),
        expected,
        publish_latency: LatencySummary::from(&outcome.latency),
        cpu,
        ..LoadResult::default()
    };
    let mut hist = latency::new_histogram();
    let mut last: Option<Instant> = None;
    for handle in receivers {
        let Ok(t) = handle.await else {
            result.subscription_errors += 1;
            continue;
        };
        result.received += t.distinct();
        result.duplicates += t.duplicates;
        result.out_of_order += t.out_of_order;
        result.lost += published.saturating_sub(t.distinct());
        if let Some(e) = t.error {
            result.subscription_errors += 1;
            if result.errors.len() < 5 {
                result.errors.push(e);
            }
        }
        if t.lagged > 0 && result.errors.len() < 5 {
            result
                .errors
                .push(format!("a receiver lagged and lost {} messages", t.lagged));
        }
        let _ = hist.add(&t.latency);
        last = last.max(t.last_at);
    }
    if let Some(e) = outcome.first_error {
        result.errors.push(e);
    }
    result.latency = LatencySummary::from(&hist);
    if let Some(last) = last {
        result.deliveries_per_s =
            result.received as f64 / last.saturating_duration_since(outcome.started).as_secs_f64().max(1e-9);
    }
    result
}

fn plan(cfg: &FanoutConfig) -> PublishPlan {
    PublishPlan {
        workers: cfg.publishers,
        rate: cfg.rate,
        duration: cfg.duration,
        channels: 1,
        pad: cfg.pad,
    }
}

/// (b) A bare redis-rs subscriber on one pub/sub connection, fanned out in process to every
/// receiver through a tokio broadcast channel; published with a bare `PUBLISH`.
pub async fn bare_fanout(cfg: &FanoutConfig) -> Result<LoadResult, BaselineError> {
    let client = redis::Client::open(cfg.redis_url.as_str())?;
    let channel = fresh_channel("bare-fanout").to_string();
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    let (tx, _) = broadcast::channel::<Arc<[u8]>>(4096);
    let stop = CancellationToken::new();
    let received = Arc::new(AtomicU64::new(0));
    let receivers: Vec<_> = (0..cfg.receivers)
        .map(|_| {
            let mut rx = tx.subscribe();
            let stop = stop.clone();
            let received = received.clone();
            let workers = cfg.publishers;
            tokio::spawn(async move {
                let mut tracker = SubTracker::new(workers);
                loop {
                    let message = tokio::select! {
                        biased;
                        m = rx.recv() => m,
                        () = stop.cancelled() => break,
                    };
                    match message {
                        Ok(bytes) => match serde_json::from_slice::<Marker>(&bytes) {
                            Ok(m) => {
                                tracker.record(m, now_nanos());
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => tracker.other += 1,
                        },
                        Err(broadcast::error::RecvError::Lagged(n)) => tracker.lagged += n,
                        Err(broadcast::error::RecvError::Closed) => {
                            tracker.error = Some("the fan-out channel closed".into());
                            break;
                        }
                    }
                }
                tracker
            })
        })
        .collect();
    let forwarder = tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let _ = tx.send(Arc::from(msg.get_payload_bytes()));
        }
    });
    let conn = client.get_multiplexed_async_connection().await?;
    let cpu_start = CpuSnapshot::take(&[]);
    let publish_channel = channel.clone();
    let outcome = open_loop(plan(cfg), move |_, _, message| {
        let mut conn = conn.clone();
        let channel = publish_channel.clone();
        async move {
            conn.publish::<_, _, i64>(channel, Value::Object(message).to_string())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let result = drain_and_collect(cfg, outcome, &received, stop, receivers, cpu_start).await;
    forwarder.abort();
    Ok(result)
}

/// (b) The project's subscription path: one `RedisBroker` subscription per receiver (the broker
/// shares one Redis connection among them), published through an `Emitter`.
pub async fn broker_fanout(cfg: &FanoutConfig) -> Result<LoadResult, BaselineError> {
    let broker = Arc::new(
        RedisBroker::builder(cfg.redis_url.as_str())
            .config(ChannelConfig::default())
            .connect()
            .await?,
    );
    let channel = fresh_channel("broker-fanout");
    let stop = CancellationToken::new();
    let received = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::with_capacity(cfg.receivers);
    for _ in 0..cfg.receivers {
        let mut subscription = broker.subscribe(&channel, None).await?;
        let stop = stop.clone();
        let received = received.clone();
        let workers = cfg.publishers;
        receivers.push(tokio::spawn(async move {
            let mut tracker = SubTracker::new(workers);
            loop {
                let event = tokio::select! {
                    biased;
                    e = subscription.next() => e,
                    () = stop.cancelled() => break,
                };
                match event {
                    Some(Ok(event)) => match Marker::find(&Value::Object(event.payload)) {
                        Some(m) => {
                            tracker.record(m, now_nanos());
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        None => tracker.other += 1,
                    },
                    Some(Err(e)) => {
                        tracker.error = Some(e.to_string());
                        break;
                    }
                    None => {
                        tracker.error = Some("subscription ended".into());
                        break;
                    }
                }
            }
            tracker
        }));
    }
    let emitter = Arc::new(StreamContext::builder().channel_id(channel).build().bind(broker));
    let cpu_start = CpuSnapshot::take(&[]);
    let outcome = open_loop(plan(cfg), move |_, _, message| {
        let emitter = emitter.clone();
        async move { emitter.data(message).await.map(drop).map_err(|e| e.to_string()) }
    })
    .await;
    Ok(drain_and_collect(cfg, outcome, &received, stop, receivers, cpu_start).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"EVALSHA abc 1 k\",\"81234.56\",\"0.550\",\"0.100\",\"0.511\",\"0.900\",\"1.207\",\"3.000\"\n";
        let r = parse_redis_benchmark_csv(csv, 50, 1000, 0.1).unwrap();
        assert_eq!(r.ops_per_s, 81234.56);
        assert_eq!(
            (r.latency.p50_us, r.latency.p99_us, r.latency.max_us),
            (511, 1207, 3000)
        );
    }
}
