//! The shared connection's metrics against a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6399/`; a missing server fails the test): script calls by name, timeouts
//! and retries.
//!
//! A test binary of its own with one test: the debugging recorder is installed globally.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use stream_core::metrics as names;
use stream_redis::redis::{self, Script};
use stream_redis::{RedisSource, RetriesExhausted, evalsha};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

/// Running totals of the recorder's counters, by name and `script` label (a snapshot of the
/// debugging recorder resets what it read).
struct Counters {
    snapshotter: Snapshotter,
    totals: HashMap<(String, Option<String>), u64>,
}

impl Counters {
    fn get(&mut self, name: &str, script: Option<&str>) -> u64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            let label = key
                .labels()
                .find(|l| l.key() == names::SCRIPT)
                .map(|l| l.value().to_owned());
            if let DebugValue::Counter(n) = value {
                *self.totals.entry((key.name().to_owned(), label)).or_default() += n;
            }
        }
        let key = (name.to_owned(), script.map(str::to_owned));
        self.totals.get(&key).copied().unwrap_or(0)
    }

    fn script_calls(&mut self, script: &str) -> u64 {
        self.get(names::REDIS_SCRIPT_CALLS, Some(script))
    }
}

#[test]
fn script_calls_timeouts_and_retries_are_counted() {
    let recorder = DebuggingRecorder::new();
    let mut counters = Counters {
        snapshotter: recorder.snapshotter(),
        totals: HashMap::new(),
    };
    recorder.install().expect("the only recorder of this test binary");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = redis_url();
        let mut shared = RedisSource::from(url.as_str()).into_shared().expect("a Redis URL");
        // A script of its own (a fresh SHA, so the server does not have it yet: the first call
        // gets NOSCRIPT, loads it and sends again).
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let named = Script::new(&format!("return '{nanos}'"));
        let unnamed = Script::new(&format!("return 'unnamed {nanos}'"));
        shared.name_script(&named, "echo");
        shared
            .checkout()
            .await
            .unwrap_or_else(|e| panic!("no Redis at {url} (scripts/redis.sh start): {e}"));

        for _ in 0..2 {
            let got: String = shared.run(&evalsha(&named, &[]), Some(&named)).await.expect("EVALSHA");
            assert_eq!(got, nanos.to_string());
        }
        let got: String = shared
            .run(&evalsha(&unnamed, &[]), Some(&unnamed))
            .await
            .expect("EVALSHA");
        assert_eq!(got, format!("unnamed {nanos}"));
        let _: String = shared.run(&redis::cmd("PING"), None).await.expect("PING");
        assert_eq!(
            counters.script_calls("echo"),
            2,
            "each call once, the NOSCRIPT resend not again"
        );
        assert_eq!(counters.script_calls("other"), 1, "a script without a name");
        assert_eq!(counters.get(names::REDIS_TIMEOUTS, None), 0);
        assert_eq!(
            counters.get(names::REDIS_RETRIES, None),
            0,
            "a NOSCRIPT reload is not a retry"
        );

        // A command that gets no reply in time: a BLPOP on a key nobody pushes to, blocking for
        // longer than the response timeout. With no retry window it is tried three times at
        // once: three timeouts, two retries, then the error.
        shared.set_response_timeout(Duration::from_millis(100));
        shared.set_retry_window(Duration::ZERO);
        let mut blpop = redis::cmd("BLPOP");
        blpop.arg(format!("test-redis-metrics-{nanos}")).arg(1);
        let err = shared
            .run::<Option<(String, String)>>(&blpop, None)
            .await
            .expect_err("BLPOP cannot answer within 100 ms");
        let exhausted = err.downcast_ref::<RetriesExhausted>().expect("RetriesExhausted");
        assert_eq!(exhausted.tries, 3, "{exhausted}");
        assert_eq!(counters.get(names::REDIS_TIMEOUTS, None), 3);
        assert_eq!(counters.get(names::REDIS_RETRIES, None), 2);
        assert_eq!(counters.script_calls("echo"), 2, "no script ran");
    });
}
