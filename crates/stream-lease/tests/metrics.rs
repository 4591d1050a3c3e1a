//! The lease metrics against a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6399/`; a
//! missing server fails the test): acquire up to the limit, one denial, a refresh, a release, and
//! refreshes that find the lease gone, counted with `backend="redis"`; the script calls behind
//! them, by script; and the same lease counters of the in-memory store with `backend="memory"`.
//!
//! A test binary of its own with one test: the debugging recorder is installed globally, so the
//! limiter's tasks on any thread record into it.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use stream_core::memory::MemoryLeaseStore;
use stream_core::metrics as names;
use stream_lease::{LeaseId, LeaseStore, StreamLeaseConfig, StreamLeaseLimiter, UserId, redis};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

/// A metric by name and labels (sorted), as the readings key it.
type Series = (String, Vec<(String, String)>);

/// Running totals of the recorder's counters and histogram sample counts. A snapshot of the
/// debugging recorder resets what it read, so every read adds to the totals.
struct Readings {
    snapshotter: Snapshotter,
    counters: HashMap<Series, u64>,
    samples: HashMap<Series, Vec<f64>>,
}

impl Readings {
    fn new(snapshotter: Snapshotter) -> Self {
        Self {
            snapshotter,
            counters: HashMap::new(),
            samples: HashMap::new(),
        }
    }

    fn read(&mut self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let series = (key.name().to_owned(), labels);
            match value {
                DebugValue::Counter(n) => *self.counters.entry(series).or_default() += n,
                DebugValue::Histogram(values) => self
                    .samples
                    .entry(series)
                    .or_default()
                    .extend(values.into_iter().map(|v| v.into_inner())),
                DebugValue::Gauge(_) => {}
            }
        }
    }

    fn series(name: &str, labels: &[(&str, &str)]) -> Series {
        let mut labels: Vec<(String, String)> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        labels.sort();
        (name.to_owned(), labels)
    }

    /// The counter's total so far (0 when it never moved).
    fn counter(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.read();
        self.counters.get(&Self::series(name, labels)).copied().unwrap_or(0)
    }

    /// The histogram's samples so far.
    fn samples(&mut self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.read();
        self.samples
            .get(&Self::series(name, labels))
            .cloned()
            .unwrap_or_default()
    }

    /// The five lease counters of `backend`: acquired, denied, refreshed, lost, released.
    fn leases(&mut self, backend: &str) -> [u64; 5] {
        let labels = [(names::BACKEND, backend)];
        [
            self.counter(names::LEASES_ACQUIRED, &labels),
            self.counter(names::LEASES_DENIED, &labels),
            self.counter(names::LEASES_REFRESHED, &labels),
            self.counter(names::LEASES_LOST, &labels),
            self.counter(names::LEASES_RELEASED, &labels),
        ]
    }

    fn script_calls(&mut self, script: &str) -> u64 {
        self.counter(names::REDIS_SCRIPT_CALLS, &[(names::SCRIPT, script)])
    }
}

/// Takes two leases (the limit), is refused one more, refreshes, releases, and refreshes the
/// released lease; checks the counters after each step. Returns the second lease, still held.
async fn lease_life(store: &dyn LeaseStore, user: &UserId, readings: &mut Readings, backend: &str) -> LeaseId {
    let first = store
        .acquire(user)
        .await
        .expect("acquire")
        .expect("a lease under the limit");
    let second = store
        .acquire(user)
        .await
        .expect("acquire")
        .expect("a lease under the limit");
    assert_eq!(readings.leases(backend), [2, 0, 0, 0, 0], "{backend}: two acquired");
    assert!(store.acquire(user).await.expect("acquire").is_none(), "the limit is 2");
    assert_eq!(readings.leases(backend), [2, 1, 0, 0, 0], "{backend}: one denied");
    let latencies = readings.samples(names::LEASE_ACQUIRE_SECONDS, &[(names::BACKEND, backend)]);
    assert_eq!(
        latencies.len(),
        3,
        "{backend}: every acquire call is timed: {latencies:?}"
    );
    assert!(
        latencies.iter().all(|s| (0.0..10.0).contains(s)),
        "{backend}: in seconds: {latencies:?}"
    );

    assert!(store.refresh(user, &first).await.expect("refresh"));
    assert_eq!(readings.leases(backend), [2, 1, 1, 0, 0], "{backend}: one refreshed");
    store.release(user, &first).await.expect("release");
    assert_eq!(readings.leases(backend), [2, 1, 1, 0, 1], "{backend}: one released");
    assert!(
        !store.refresh(user, &first).await.expect("refresh"),
        "a released lease is gone"
    );
    assert_eq!(
        readings.leases(backend),
        [2, 1, 1, 1, 1],
        "{backend}: a refresh found it gone"
    );
    // Releasing a lease that is no longer there is not counted again.
    store.release(user, &first).await.expect("release");
    assert_eq!(
        readings.leases(backend),
        [2, 1, 1, 1, 1],
        "{backend}: nothing to release"
    );
    second
}

#[test]
fn lease_operations_move_the_lease_counters() {
    let recorder = DebuggingRecorder::new();
    let mut readings = Readings::new(recorder.snapshotter());
    recorder.install().expect("the only recorder of this test binary");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let namespace = format!("test-lease-metrics-{nanos}");
        let config = StreamLeaseConfig {
            limit: 2,
            ttl_seconds: 30,
            key_namespace: namespace.clone(),
            ..StreamLeaseConfig::default()
        };
        let url = redis_url();
        let limiter = StreamLeaseLimiter::connect(&url, config.clone())
            .await
            .unwrap_or_else(|e| panic!("no Redis at {url} (scripts/redis.sh start): {e:?}"));
        let user = UserId::new("metrics-user").unwrap();

        let second = lease_life(&limiter, &user, &mut readings, "redis").await;

        // A lease removed behind the limiter's back (expired, or released by another instance):
        // its refresh is a lost one.
        let mut raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("a raw Redis connection");
        let removed: u64 = redis::cmd("ZREM")
            .arg(limiter.key(&user))
            .arg(second.as_str())
            .query_async(&mut raw)
            .await
            .expect("ZREM");
        assert_eq!(removed, 1);
        assert!(!limiter.refresh_stream_lease(&user, &second).await.expect("refresh"));
        assert_eq!(
            readings.leases("redis"),
            [2, 1, 1, 2, 1],
            "redis: a removed lease is lost"
        );
        assert_eq!(limiter.get_active_streams(&user).await.expect("count"), 0);

        // Every operation was one script call, counted by script; nothing timed out or was resent.
        assert_eq!(readings.script_calls("acquire"), 3);
        assert_eq!(readings.script_calls("refresh"), 3);
        assert_eq!(readings.script_calls("release"), 2);
        assert_eq!(readings.script_calls("count"), 1);
        assert_eq!(readings.script_calls("list"), 0);
        assert_eq!(readings.script_calls("other"), 0);
        assert_eq!(readings.counter(names::REDIS_TIMEOUTS, &[]), 0);
        assert_eq!(readings.counter(names::REDIS_RETRIES, &[]), 0);
        // The in-memory store has not recorded anything yet.
        assert_eq!(readings.leases("memory"), [0; 5]);

        // The in-memory store counts the same way, as `backend="memory"`, and leaves the Redis
        // series alone.
        let memory = MemoryLeaseStore::new(config);
        let second = lease_life(&memory, &user, &mut readings, "memory").await;
        memory.release(&user, &second).await.unwrap();
        assert_eq!(
            readings.leases("memory"),
            [2, 1, 1, 1, 2],
            "memory: the second released"
        );
        assert_eq!(readings.leases("redis"), [2, 1, 1, 2, 1], "redis: unchanged");
        assert_eq!(readings.script_calls("acquire"), 3, "the memory store runs no script");
    });
}
