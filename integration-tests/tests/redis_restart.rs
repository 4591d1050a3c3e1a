//! Redis SIGKILLed mid-job and restarted, on whole processes: two app instances (axum-app and
//! actix-app) and one worker share a Redis server of the test's own. SSE clients on both
//! instances follow one deployment; when a stream breaks they reconnect, to either instance, with
//! `Last-Event-ID`.
//!
//! - With persistence on (`appendonly yes`, `appendfsync everysec`) the worker's emits ride out
//!   the outage (retried within `STREAM_REDIS_RETRY_SECS`), and every client ends with every
//!   event exactly once, in order, and `done`.
//! - With persistence off the restart loses the channel's history: every client still ends with
//!   `done`, and the events it missed are announced with a `gap` event, never skipped silently.

mod support;

#[path = "../../crates/stream-pubsub/tests/common/own_redis.rs"]
mod own_redis;

use std::time::Duration;

use own_redis::OwnRedis;
use support::*;

/// What one client saw, joined over its connections.
#[derive(Debug, Default)]
struct Seen {
    /// The events (pings and fatal stream errors left out), in order.
    frames: Vec<Frame>,
    /// How many connections it took.
    connections: usize,
    /// Fatal `error` frames (the stream ended on a backend failure; the client reconnects).
    fatal: Vec<Frame>,
    /// Refused reconnects (status and body), each retried.
    refused: Vec<String>,
}

/// How a client proves who it is.
#[derive(Debug, Clone)]
enum Auth {
    /// The `X-User-Id` header, on `/streams/{channel}`.
    Header(String),
    /// The deployment's `stream_url` (`/streams/{channel}?token=…`), as an `EventSource` uses it.
    Token(String),
}

/// Follows `channel` until `done`, over as many connections as it takes: a stream that
/// ends early or breaks is resumed with `Last-Event-ID`, on the next instance of `bases` in turn.
/// The client also hangs up once by itself after `start + 4` events (after the restart), so that
/// every client resumes on the other instance at least once.
async fn follow(
    bases: Vec<String>,
    channel: String,
    auth: Auth,
    start: usize,
    ready: tokio::sync::mpsc::UnboundedSender<usize>,
) -> Seen {
    let mut hang_up_after = Some(start + 4);
    let client = client();
    let mut seen = Seen::default();
    let mut last_id: Option<String> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for attempt in start.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client {start}: no done within 60 s: {seen:?}"
        );
        let base = &bases[attempt % bases.len()];
        let mut req = match &auth {
            Auth::Header(user) => client
                .get(format!("{base}/streams/{channel}"))
                .header("X-User-Id", user),
            Auth::Token(stream_url) => client.get(format!("{base}{stream_url}")),
        };
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                seen.refused.push(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if res.status() != 200 {
            let status = res.status();
            seen.refused
                .push(format!("{status}: {}", res.text().await.unwrap_or_default()));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        seen.connections += 1;
        let mut sse = SseReader::new(res);
        loop {
            match sse.try_next_within(Duration::from_secs(10)).await {
                Ok(Some(frame)) if frame.kind() == "ping" => {}
                Ok(Some(frame)) if frame.kind() == "error" && frame.data["fatal"] == true => {
                    seen.fatal.push(frame);
                }
                Ok(Some(frame)) => {
                    if let Some(id) = &frame.id {
                        last_id = Some(id.clone());
                    }
                    let done = frame.kind() == "done";
                    seen.frames.push(frame);
                    if seen.frames.len() == 1 {
                        let _ = ready.send(start);
                    }
                    if done {
                        return seen;
                    }
                    if hang_up_after == Some(seen.frames.len()) {
                        hang_up_after = None;
                        break;
                    }
                }
                // Ended or broke before done: resume.
                Ok(None) | Err(_) => break,
            }
        }
    }
    unreachable!()
}

/// Starts the two instances and the worker on `redis`, one deployment with clients on both, and
/// SIGKILLs Redis after the clients have each seen three events; restarts it 1.5 s later.
/// Returns the channel and what each client saw.
async fn deploy_through_a_restart(redis: &mut OwnRedis) -> (String, Vec<Seen>) {
    let queue = unique("restart-jobs");
    let settings = |worker| Settings {
        step_ms: 400,
        ping_secs: 1,
        // Four clients and a probe, with room for the leases of broken connections.
        lease_limit: 20,
        start_worker: worker,
        redis_url: Some(redis.url()),
        env: vec![
            ("DEMO_JOB_QUEUE".into(), queue.clone()),
            ("DEMO_WORKER_ID".into(), unique("restart-worker")),
            ("STREAM_REDIS_RETRY_SECS".into(), "10".into()),
        ],
        ..Settings::default()
    };
    let a = App::start_with(
        Target {
            app: "axum-app",
            mode: Mode::Redis,
        },
        settings(true),
    );
    let b = App::start_with(
        Target {
            app: "actix-app",
            mode: Mode::Redis,
        },
        settings(false),
    );
    let bases = vec![a.base.clone(), b.base.clone()];
    let user = unique("restart");
    let (channel, stream_url) = a.deploy(&user).await;

    // Two clients per instance, each moving to the other instance when it reconnects; two with
    // the header, two with the token.
    let (ready, mut readiness) = tokio::sync::mpsc::unbounded_channel();
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let auth = if n < 2 {
                Auth::Header(user.clone())
            } else {
                Auth::Token(stream_url.clone())
            };
            tokio::spawn(follow(bases.clone(), channel.clone(), auth, n, ready.clone()))
        })
        .collect();
    // Every client is reading the job before the kill (on a loaded machine one could otherwise
    // first connect after the restart, to a channel that then looks new from its first event).
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(30), readiness.recv())
            .await
            .expect("every client gets its first event")
            .expect("a client");
    }
    // Kill once the job is under way: three events in.
    let res = client()
        .get(a.url(&format!("/streams/{channel}")))
        .header("X-User-Id", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut probe = SseReader::new(res);
    for _ in 0..3 {
        let frame = probe.next_event().await.expect("an event");
        assert_ne!(frame.kind(), "done", "the job ended before the kill");
    }
    drop(probe);
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();

    let mut seen = Vec::new();
    for (n, client) in clients.into_iter().enumerate() {
        let client = client.await.expect("a client task");
        let kinds: Vec<&str> = client.frames.iter().map(Frame::kind).collect();
        eprintln!(
            "client {n}: {} connections, {} fatal frames, refused: {:?}; {kinds:?}",
            client.connections,
            client.fatal.len(),
            client.refused
        );
        seen.push(client);
    }
    drop((a, b));
    (channel, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_persistence_every_client_gets_every_event_once_through_a_redis_restart() {
    let mut redis = OwnRedis::start(true);
    let (channel, seen) = deploy_through_a_restart(&mut redis).await;
    for (n, client) in seen.iter().enumerate() {
        assert!(client.connections >= 2, "client {n} resumed at least once");
        assert_job(&client.frames, &channel);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_a_client_is_told_of_what_the_restart_lost() {
    let mut redis = OwnRedis::start(false);
    let (channel, seen) = deploy_through_a_restart(&mut redis).await;
    for (n, client) in seen.iter().enumerate() {
        let kinds: Vec<&str> = client.frames.iter().map(Frame::kind).collect();
        let done = client.frames.last().expect("frames");
        assert_eq!(done.kind(), "done", "client {n}: {kinds:?}");
        if kinds.contains(&"gap") {
            // What came is in order and from the job; what did not is announced (a gap notice
            // is a control frame, without an id).
            let events: Vec<Frame> = client.frames.iter().filter(|f| f.kind() != "gap").cloned().collect();
            assert_increasing(&events);
            let expected: Vec<&str> = JOB_TYPES.to_vec();
            let got: Vec<&str> = kinds.iter().copied().filter(|k| *k != "gap").collect();
            assert!(
                is_subsequence(&got, &expected),
                "client {n}: {kinds:?} is not the job's events in order"
            );
        } else {
            assert_job(&client.frames, &channel);
        }
    }
}

/// Whether `sub` appears in `all` in order (not necessarily adjacent).
fn is_subsequence(sub: &[&str], all: &[&str]) -> bool {
    let mut rest = all.iter();
    sub.iter().all(|k| rest.any(|a| a == k))
}
