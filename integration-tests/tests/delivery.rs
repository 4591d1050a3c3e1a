//! Delivery guarantees of the whole system, on real processes in Redis mode: a worker that dies
//! mid-job ends its stream with `producer_lost`; a graceful shutdown releases every lease; a job
//! that runs longer than the history TTL keeps its owner record and its stream.

mod support;

use std::time::{Duration, Instant};

use stream_core::{StreamLeaseConfig, UserId};
use stream_lease::StreamLeaseLimiter;
use stream_pubsub::redis;
use support::{APPS, App, Mode, Settings, SseReader, Target, redis_url, unique};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// SIGKILL of the worker mid-job: within about three heartbeats the stream gets `error`
/// (`producer_lost`, fatal) and `done` (`success: false`), and a reconnect with the last id gets 204.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_ends_the_stream_with_producer_lost() {
    const HEARTBEAT_MS: u64 = 300;
    for app in APPS {
        let settings = Settings {
            step_ms: 400,
            env: env(&[("STREAM_HEARTBEAT_MS", "300")]),
            ..Settings::default()
        };
        let mut demo = App::start_with(Target { app, mode: Mode::Redis }, settings);
        let user = unique("killed");
        let (channel, _) = demo.deploy(&user).await;
        let res = demo.get(&format!("/streams/{channel}"), Some(&user), None).await;
        assert_eq!(res.status(), 200, "{app}");
        let mut sse = SseReader::new(res);
        let mut frames = Vec::new();
        while frames.len() < 2 {
            frames.push(sse.next_event().await.expect("the job's first events"));
        }
        let worker = demo.worker.as_mut().expect("the worker");
        worker.child.kill().expect("SIGKILL the worker");
        worker.child.wait().expect("the worker exits");
        let killed = Instant::now();
        let mut tail = sse.until_done().await;
        let took = killed.elapsed();
        let kinds: Vec<String> = tail.iter().map(|f| f.kind().to_owned()).collect();
        let end = tail.split_off(tail.len() - 2);
        assert_eq!(kinds[kinds.len() - 2..], ["error", "done"], "{app}: {kinds:?}");
        assert_eq!(end[0].data["reason"], "producer_lost", "{app}");
        assert_eq!(end[0].data["fatal"], true, "{app}");
        assert_eq!(end[1].data["success"], false, "{app}");
        // Three heartbeats for the record to lapse, one check interval to notice, and slack for a
        // loaded machine.
        let bound = Duration::from_millis(HEARTBEAT_MS * 4) + Duration::from_secs(3);
        assert!(took < bound, "{app}: producer_lost after {took:?}");
        eprintln!("{app}: producer_lost {took:?} after SIGKILL (heartbeat {HEARTBEAT_MS} ms)");
        let last = end[1].id.clone().expect("done has an id");
        let again = demo.get(&format!("/streams/{channel}"), Some(&user), Some(&last)).await;
        assert_eq!(again.status(), 204, "{app}: a reconnect after producer_lost's done");
    }
}

/// SIGTERM with five open streams: the app releases every lease before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_every_lease() {
    let limiter = StreamLeaseLimiter::connect(redis_url(), StreamLeaseConfig::default())
        .await
        .expect("connect the lease limiter");
    let mut admin = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    for app in APPS {
        let settings = Settings {
            step_ms: 2_000,
            lease_limit: 5,
            ping_secs: 30,
            ..Settings::default()
        };
        let mut demo = App::start_with(Target { app, mode: Mode::Redis }, settings);
        let user = unique("sigterm");
        let key = limiter.key(&UserId::new(user.clone()).expect("user id"));
        let mut streams = Vec::new();
        for _ in 0..5 {
            let (channel, _) = demo.deploy(&user).await;
            let res = demo.get(&format!("/streams/{channel}"), Some(&user), None).await;
            assert_eq!(res.status(), 200, "{app}");
            let mut sse = SseReader::new(res);
            sse.next_event().await.expect("a first event");
            streams.push(sse);
        }
        let held: usize = redis::cmd("ZCARD")
            .arg(&key)
            .query_async(&mut admin)
            .await
            .expect("ZCARD");
        assert_eq!(held, 5, "{app}: five streams hold five leases");
        demo.proc.terminate();
        let status = demo.proc.wait_exit(Duration::from_secs(15));
        assert!(status.success(), "{app} exits cleanly after SIGTERM: {status}");
        let left: usize = redis::cmd("ZCARD")
            .arg(&key)
            .query_async(&mut admin)
            .await
            .expect("ZCARD");
        assert_eq!(left, 0, "{app}: every lease is released before the process exits");
    }
}

/// A job that runs past a short history TTL keeps publishing, which renews its owner record and
/// its history: the stream is still served (200) after the TTL, and ends with `done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_outlives_a_short_history_ttl() {
    let settings = Settings {
        step_ms: 500,
        env: env(&[("STREAM_HISTORY_TTL_SECS", "2")]),
        ..Settings::default()
    };
    let demo = App::start_with(
        Target {
            app: "axum-app",
            mode: Mode::Redis,
        },
        settings,
    );
    let user = unique("ttl");
    let (channel, _) = demo.deploy(&user).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let res = demo.get(&format!("/streams/{channel}"), Some(&user), None).await;
    assert_eq!(
        res.status(),
        200,
        "the owner record outlives the history TTL while the job runs"
    );
    let frames = SseReader::new(res).until_done().await;
    assert_eq!(
        frames.first().map(|f| f.kind()),
        Some("log"),
        "the whole history is there"
    );
    assert_eq!(
        frames.last().map(|f| f.data["success"].clone()),
        Some(serde_json::json!(true))
    );
}
