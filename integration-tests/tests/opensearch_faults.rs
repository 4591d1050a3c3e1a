//! OpenSearch slow and down (issue 14): publishing with an OpenSearch archive attached never
//! waits for OpenSearch.
//!
//! The archive reaches the node through a TCP proxy (`support::proxy`) that either holds every
//! request 2 s before forwarding it (slow) or refuses connections (down). Each run publishes a
//! few hundred persisted events, paced, on the Redis broker through [`Streaming`]'s publisher
//! (a [`PersistingPublisher`](stream_core::PersistingPublisher) over the store), with a
//! subscriber on the channel, and measures each publish. The runs are compared with a baseline
//! run without an archive, measured in the same test:
//!
//! - the publish p99 stays within generous bounds of the baseline's (`baseline p99 × 10 + 5 ms`;
//!   the figures are printed, with a second baseline run at the end to show the noise between
//!   two runs that differ in nothing), and no publish takes as long as one slow OpenSearch
//!   request;
//! - every publish returns, and the subscriber gets every event, in order;
//! - what the archive could not take is counted: `written + dropped` ends equal to the events
//!   published, with drops in both runs and nothing written while the node is down.
//!
//! Needs the real Redis (`REDIS_URL`) and OpenSearch (`OPENSEARCH_URL`); fails without them.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stream_core::conformance::broker::numbered;
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, EventStore, EventSubscriber, StoreStats, Streaming};
use stream_pubsub::RedisBroker;
use stream_store_opensearch::{OpenSearchConfig, OpenSearchEventStore};
use support::proxy::{self, Proxy};
use support::{opensearch_url, redis_url, unique};
use tokio::time::Instant;

/// Publishes per run.
const PUBLISHES: usize = 400;
/// The pause between two publishes: a run lasts about 2 s, as long as one slow request.
const PACE: Duration = Duration::from_millis(5);
/// What the slow proxy adds to each request.
const SLOW: Duration = Duration::from_secs(2);
/// The archive's queue: smaller than a run, so that a stuck writer makes it overflow.
const QUEUE: usize = 100;

/// Publish latencies of one run.
#[derive(Debug, Clone, Copy)]
struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Figures {
    fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| {
            let rank = (q * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1]
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: latencies[latencies.len() - 1],
        }
    }
}

/// Publishes `count` persisted events, `PACE` apart, through `streaming`'s publisher, while a
/// subscriber of `broker` reads the channel; checks that every publish returns (within 5 s) and
/// that the subscriber gets every event in order. Returns the latencies' figures.
async fn run(label: &str, count: usize, streaming: &Streaming, broker: &RedisBroker) -> Figures {
    let channel = unique_channel(label);
    let mut sub = broker.subscribe(&channel, None).await.expect("subscribe");
    let reading = tokio::spawn(async move {
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
                Ok(Some(Ok(event))) => got.push(event.id),
                other => panic!("the subscriber stopped after {} events: {other:?}", got.len()),
            }
        }
        got
    });
    let mut latencies = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let mut event = numbered(&channel, n);
        event.persist = true;
        let start = Instant::now();
        let id = tokio::time::timeout(Duration::from_secs(5), streaming.publisher.publish(&event))
            .await
            .unwrap_or_else(|_| panic!("{label}: publish {n} did not return within 5 s"))
            .unwrap_or_else(|e| panic!("{label}: publish {n} failed: {e}"));
        latencies.push(start.elapsed());
        ids.push(id);
        tokio::time::sleep(PACE).await;
    }
    let got = reading.await.expect("the subscriber");
    assert_eq!(got, ids, "{label}: the subscriber gets every event once, in order");
    Figures::of(latencies)
}

/// An OpenSearch store that reaches the node through `proxy`, with a small queue, short batches
/// and few retries, so that a run shows drops.
async fn store_through(proxy: &Proxy, prefix: &str) -> Arc<OpenSearchEventStore> {
    let mut config = OpenSearchConfig::new(format!("http://{}", proxy.addr()));
    config.index_prefix = prefix.to_owned();
    config.number_of_replicas = 0;
    config.retention_days = 0;
    config.queue_capacity = QUEUE;
    config.bulk_max_events = 50;
    config.flush_interval = Duration::from_millis(100);
    config.request_timeout = Duration::from_secs(10);
    config.max_retries = 2;
    config.retry_initial_backoff = Duration::from_millis(50);
    config.retry_max_backoff = Duration::from_millis(200);
    match OpenSearchEventStore::connect(config).await {
        Ok(store) => Arc::new(store),
        Err(e) => panic!(
            "cannot use OpenSearch at {} through the proxy: {e} (start it with scripts/opensearch.sh start)",
            opensearch_url()
        ),
    }
}

/// Waits (at most 20 s) until the store has settled every event published: `written + dropped`
/// equals `published`.
async fn settle(store: &OpenSearchEventStore, published: usize) -> StoreStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = store.stats();
        if stats.written + stats.dropped >= published as u64 {
            assert_eq!(
                stats.written + stats.dropped,
                published as u64,
                "each event written or dropped, once: {stats:?}"
            );
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not settle within 20 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes a prefix's indices and template, straight on the node (best effort).
async fn cleanup(prefix: &str) {
    let client = support::client();
    let os = opensearch_url();
    let _ = client.delete(format!("{os}/{prefix}-*")).send().await;
    let _ = client.delete(format!("{os}/_index_template/{prefix}")).send().await;
}

/// Baseline without an archive, then the archive slow (2 s per request), then down: the publish
/// latency does not move beyond generous bounds, nothing blocks, and drops are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_does_not_wait_for_a_slow_or_down_opensearch() {
    let broker = RedisBroker::connect(redis_url(), ChannelConfig::default())
        .await
        .expect("connect to Redis (is it running?)");
    let plain = Streaming::builder().broker(broker.clone()).build();
    // Warm-up: the publish script is loaded, the connection is up.
    run("os-warmup", 50, &plain, &broker).await;
    let baseline = run("os-baseline", PUBLISHES, &plain, &broker).await;

    // Slow: each request is held 2 s on its way to the node.
    let slow_prefix = format!("t_{}", unique("slow").to_lowercase());
    let slow_proxy = Proxy::start_for(&opensearch_url()).await;
    let slow_store = store_through(&slow_proxy, &slow_prefix).await;
    slow_proxy.set(proxy::Mode::Delay(SLOW)).await;
    let with_slow = plain.clone().with_store(Some(slow_store.clone()));
    let slow = run("os-slow", PUBLISHES, &with_slow, &broker).await;
    let slow_after_run = slow_store.stats();
    // Let the writer catch up at full speed; what is still queued gets written.
    slow_proxy.set(proxy::Mode::Pass).await;
    let slow_stats = settle(&slow_store, PUBLISHES).await;

    // Down: connections refused.
    let down_prefix = format!("t_{}", unique("down").to_lowercase());
    let down_proxy = Proxy::start_for(&opensearch_url()).await;
    let down_store = store_through(&down_proxy, &down_prefix).await;
    down_proxy.set(proxy::Mode::Down).await;
    let with_down = plain.clone().with_store(Some(down_store.clone()));
    let down = run("os-down", PUBLISHES, &with_down, &broker).await;
    let down_after_run = down_store.stats();
    let down_stats = settle(&down_store, PUBLISHES).await;
    // The baseline again, for the noise between two runs that differ in nothing (printed only).
    let again = run("os-again", PUBLISHES, &plain, &broker).await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (label, f) in [("baseline", baseline), ("slow", slow), ("down", down), ("again", again)] {
        eprintln!(
            "publish latency, {label:>8}: p50 {:.3} ms, p99 {:.3} ms ({:+.3} ms against the baseline, x{:.2}), \
             max {:.3} ms ({PUBLISHES} publishes, {PACE:?} apart)",
            ms(f.p50),
            ms(f.p99),
            ms(f.p99) - ms(baseline.p99),
            ms(f.p99) / ms(baseline.p99),
            ms(f.max),
        );
    }
    eprintln!("archive, slow: after the run {slow_after_run:?}; settled {slow_stats:?}");
    eprintln!("archive, down: after the run {down_after_run:?}; settled {down_stats:?}");

    let bound = baseline.p99 * 10 + Duration::from_millis(5);
    for (label, f) in [("slow", slow), ("down", down)] {
        assert!(
            f.p99 <= bound,
            "{label}: publish p99 {:?} against the baseline's {:?} (bound {bound:?})",
            f.p99,
            baseline.p99
        );
        assert!(
            f.max < SLOW,
            "{label}: a publish took {:?}, as long as an OpenSearch request",
            f.max
        );
    }
    assert!(
        slow_after_run.dropped > 0,
        "slow: the queue of {QUEUE} overflowed while the writer waited, and the drops are counted: \
         {slow_after_run:?}"
    );
    assert!(
        slow_stats.written > 0,
        "slow: the node still took events: {slow_stats:?}"
    );
    assert_eq!(
        (down_stats.written, down_stats.dropped),
        (0, PUBLISHES as u64),
        "down: every event dropped and counted"
    );

    cleanup(&slow_prefix).await;
    cleanup(&down_prefix).await;
}
