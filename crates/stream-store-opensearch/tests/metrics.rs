//! The store's metrics: events written and batches counted against the real node
//! (`OPENSEARCH_URL`, default `http://127.0.0.1:9250`; a missing node fails the test), an event
//! the node refuses counted as `rejected`, and, with the node unreachable, retries, exhausted
//! retries, a full queue, the queue depth and appends after shutdown.
//!
//! A test binary of its own with one test: the debugging recorder is installed globally, so the
//! writer task records into it from any thread.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use stream_core::conformance::unique_channel;
use stream_core::metrics as names;
use stream_core::{AppendError, Event, EventStore};
use stream_store_opensearch::opensearch::http::Method;
use stream_store_opensearch::{OpenSearchConfig, OpenSearchEventStore, daily_index_name};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A metric by name and its label value (each of these metrics has at most one label).
type Series = (String, Option<String>);

/// Running totals of the recorder's counters and histogram sample counts, and the gauge values
/// seen. A snapshot of the debugging recorder resets what it read, so every read adds up.
struct Readings {
    snapshotter: Snapshotter,
    counters: HashMap<Series, u64>,
    samples: HashMap<Series, usize>,
    gauges: HashMap<Series, Vec<f64>>,
}

impl Readings {
    fn read(&mut self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            let series = (key.name().to_owned(), key.labels().next().map(|l| l.value().to_owned()));
            match value {
                DebugValue::Counter(n) => *self.counters.entry(series).or_default() += n,
                DebugValue::Histogram(values) => *self.samples.entry(series).or_default() += values.len(),
                DebugValue::Gauge(value) => self.gauges.entry(series).or_default().push(value.into_inner()),
            }
        }
    }

    fn counter(&mut self, name: &str, label: Option<&str>) -> u64 {
        self.read();
        let series = (name.to_owned(), label.map(str::to_owned));
        self.counters.get(&series).copied().unwrap_or(0)
    }

    fn batches(&mut self, outcome: &str) -> u64 {
        self.counter(names::OPENSEARCH_BATCHES, Some(outcome))
    }

    fn dropped(&mut self, reason: &str) -> u64 {
        self.counter(names::OPENSEARCH_EVENTS_DROPPED, Some(reason))
    }

    fn bulk_requests(&mut self) -> usize {
        self.read();
        let series = (names::OPENSEARCH_BULK_SECONDS.to_owned(), None);
        self.samples.get(&series).copied().unwrap_or(0)
    }

    /// The values the queue depth gauge was read with, oldest first. A read resets the debugging
    /// recorder's gauge to 0, so only a value set since the last read is news.
    fn queue_depths(&mut self) -> Vec<f64> {
        self.read();
        let series = (names::OPENSEARCH_QUEUE_DEPTH.to_owned(), None);
        self.gauges.get(&series).cloned().unwrap_or_default()
    }

    /// Written, then the drops by reason: queue_full, rejected, retries_exhausted, closed.
    fn outcomes(&mut self) -> [u64; 5] {
        [
            self.counter(names::OPENSEARCH_EVENTS_WRITTEN, None),
            self.dropped("queue_full"),
            self.dropped("rejected"),
            self.dropped("retries_exhausted"),
            self.dropped("closed"),
        ]
    }
}

fn event(n: usize) -> Event {
    Event::data(unique_channel("metrics"), "n", n).unwrap()
}

/// A stand-in for a node that answers one request (the index template's `PUT`) with 200 and then
/// goes away: every later connection is refused, as on a node that is down.
async fn node_that_goes_away() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // Read the whole request (headers, then the body by its length) before answering.
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before its request was complete");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if request.len() >= end + 4 + length {
                    assert!(text.starts_with("put /_index_template/"), "{text}");
                    break;
                }
            }
        }
        let body = r#"{"acknowledged":true}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        // The listener is dropped here: the port refuses connections from now on.
    });
    url
}

#[test]
fn writes_batches_and_drops_are_counted() {
    let recorder = DebuggingRecorder::new();
    let mut readings = Readings {
        snapshotter: recorder.snapshotter(),
        counters: HashMap::new(),
        samples: HashMap::new(),
        gauges: HashMap::new(),
    };
    recorder.install().expect("the only recorder of this test binary");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The real node: five events in one batch, all written.
        let store = common::connect(common::test_config("metrics")).await;
        for n in 0..5 {
            store.append(&event(n)).expect("append");
        }
        store.flush().await.expect("flush");
        assert_eq!(readings.outcomes(), [5, 0, 0, 0, 0], "five written, nothing dropped");
        assert_eq!(readings.batches("ok"), 1, "one _bulk request for the five");
        assert_eq!((readings.batches("partial"), readings.batches("failed")), (0, 0));
        assert_eq!(readings.bulk_requests(), 1, "the request is timed");
        assert_eq!(readings.counter(names::OPENSEARCH_EVENTS_RETRIED, None), 0);

        // An event the node refuses (its day's index blocks writes) is dropped as `rejected`,
        // and its batch, with nothing written, counts as failed; the event beside it, on
        // another day, is written, so that batch is a partial one.
        let blocked_day = OffsetDateTime::from_unix_timestamp(946_684_800).unwrap(); // 2000-01-01
        let blocked_index = daily_index_name(&store.config().index_prefix, blocked_day);
        let (status, answer) = common::request(
            &store,
            Method::Put,
            &format!("/{blocked_index}"),
            Some(json!({"settings": {"index.blocks.write": true}})),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let mut refused = event(5);
        refused.timestamp = blocked_day;
        store.append(&refused).expect("append");
        store.append(&event(6)).expect("append");
        let _ = store.flush().await;
        assert_eq!(readings.outcomes(), [6, 0, 1, 0, 0], "one more written, one rejected");
        assert_eq!(readings.batches("partial"), 1, "{:?}", readings.counters);
        assert_eq!((readings.batches("ok"), readings.batches("failed")), (1, 0));
        assert_eq!(store.stats().dropped, 1);
        let _ = common::request(
            &store,
            Method::Put,
            &format!("/{blocked_index}/_settings"),
            Some(json!({"index.blocks.write": false})),
        )
        .await;
        common::cleanup(&store).await;
        store.shutdown().await.expect("shutdown");

        // A node that is gone after the store connected: each event is tried three times
        // (max_retries 2), then dropped; the queue (two events) fills meanwhile, and what does
        // not fit is dropped at once.
        let before = readings.outcomes();
        let batches_before = readings.batches("failed");
        let requests_before = readings.bulk_requests();
        let mut config = OpenSearchConfig::new(node_that_goes_away().await);
        config.index_prefix = common::unique_prefix("metrics_down");
        config.retention_days = 0;
        config.queue_capacity = 2;
        config.bulk_max_events = 1;
        config.flush_interval = Duration::from_millis(10);
        config.request_timeout = Duration::from_secs(2);
        config.max_retries = 2;
        config.retry_initial_backoff = Duration::from_millis(200);
        config.retry_max_backoff = Duration::from_millis(200);
        config.flush_timeout = Duration::from_secs(30);
        let down = OpenSearchEventStore::connect(config)
            .await
            .expect("connect to the stand-in");
        let mut full = 0;
        for n in 0..10 {
            match down.append(&event(n)) {
                Ok(()) => {}
                Err(AppendError::QueueFull) => full += 1,
                Err(e) => panic!("append: {e}"),
            }
        }
        let accepted = down.stats().accepted;
        assert!(
            (2..=3).contains(&accepted),
            "the writer holds one, the queue two: {accepted}"
        );
        assert_eq!(full, 10 - accepted);
        // While the writer retries the first event, the queue depth gauge shows the others
        // waiting (two, or one if all ten came before the writer took the first).
        let waiting = (accepted - 1) as f64;
        let mut seen_full = false;
        for _ in 0..40 {
            if readings.queue_depths().contains(&waiting) {
                seen_full = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            seen_full,
            "{waiting} waiting; queue depths seen: {:?}",
            readings.queue_depths()
        );
        // Shutdown waits for the writer to give up on every queued event (and reports the
        // refresh it could not send).
        let shut = down.shutdown().await;
        assert!(
            shut.as_ref().is_err_and(|e| e.to_string().contains("_refresh")),
            "{shut:?}"
        );
        assert!(matches!(down.append(&event(10)), Err(AppendError::Closed)));

        let after = readings.outcomes();
        let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(
            delta,
            [0, full, 0, accepted, 1],
            "written, queue_full, rejected, exhausted, closed"
        );
        assert_eq!(down.stats().dropped, full + accepted);
        assert_eq!(
            readings.counter(names::OPENSEARCH_EVENTS_RETRIED, None),
            2 * accepted,
            "each accepted event was sent again twice"
        );
        assert_eq!(
            readings.batches("failed") - batches_before,
            3 * accepted,
            "three tries each"
        );
        assert_eq!(readings.bulk_requests() - requests_before, 3 * accepted as usize);
        assert_eq!((readings.batches("ok"), readings.batches("partial")), (1, 1));
    });
}
