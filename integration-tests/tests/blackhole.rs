//! Blackhole, not close (issue 14): a TCP proxy between the app (or the library's broker) and
//! Redis stops forwarding for 10 s without closing a socket, as a network partition does.
//!
//! - The broker's subscriber connection notices through its health check (a `PING` every
//!   `ping_interval` that must be answered within the response timeout), reconnects once the
//!   link is back, and its subscribers refill from history: nothing lost, nothing twice.
//! - Both demo apps, each behind a proxy of its own while its worker talks to Redis directly:
//!   a deploy job's SSE stream, followed by a client that resumes with `Last-Event-ID` whenever
//!   its body ends, ends with every event once, in order, and `done`.
//!
//! Every test here needs the real Redis (`REDIS_URL`) and fails without it.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use stream_core::conformance::broker::numbered;
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, Event, EventPublisher, EventSubscriber, EventType};
use stream_pubsub::{RedisBroker, redis};
use support::proxy::{self, Proxy};
use support::{APPS, App, Frame, Mode, Settings, SseReader, Target, assert_job, redis_url, unique};
use tokio::time::Instant;

/// How long the link is blackholed.
const BLACKHOLE: Duration = Duration::from_secs(10);
/// The health check (and SSE ping) interval under test.
const PING: Duration = Duration::from_secs(1);
/// The broker's response timeout (its default): a health check `PING` waits this long.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack on every time bound, for a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(2);

/// The broker's subscriber connection (by its `CLIENT SETNAME`), as Redis lists it: `(id, sub)`.
async fn named_connections(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> Vec<(u64, u64)> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("CLIENT LIST");
    let field = |line: &str, key: &str| {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("")
            .to_owned()
    };
    list.lines()
        .filter(|line| field(line, "name") == name)
        .map(|line| {
            (
                field(line, "id").parse().expect("a client id"),
                field(line, "sub").parse().unwrap_or(0),
            )
        })
        .collect()
}

/// Waits (at most `limit`) until `check` gives `Some`; returns it and how long it took.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = check().await {
            return (found, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Library level: a broker whose subscriber connection goes through the proxy, a publisher that
/// talks to Redis directly. The proxy blackholes 10 s while events flow.
///
/// - The broker notices within `ping_interval` + its response timeout (+ slack): its first
///   reconnect attempt reaches the proxy then, long before the link is back. Nothing else of
///   that broker opens connections here (no producer check, no command), so the proxy's accept
///   log is the health check's doing.
/// - Once the link is back, a new subscriber connection of that name, subscribed to the channel,
///   shows in Redis's `CLIENT LIST` within the hub's longest backoff (5 s) plus a connect
///   timeout (1 s) (+ slack), and the blackholed one is gone.
/// - The subscriber gets every event once, in order, with no `gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_notices_a_blackhole_by_its_health_check_and_loses_nothing() {
    const EVENTS: usize = 300;
    const EVERY: Duration = Duration::from_millis(50);
    let proxy = Proxy::start_for(&redis_url()).await;
    let name = unique("blackhole-sub");
    let config = ChannelConfig {
        ping_interval: PING,
        heartbeat_interval: None,
        ..ChannelConfig::default()
    };
    let subscriber = RedisBroker::builder(proxy.url("redis"))
        .config(config)
        .client_name(&name)
        .health_check_interval(PING)
        .response_timeout(RESPONSE_TIMEOUT)
        .connect()
        .await
        .expect("connect the subscriber's broker through the proxy (is Redis running?)");
    let publisher = RedisBroker::connect(redis_url(), ChannelConfig::default())
        .await
        .expect("connect the publisher's broker to Redis");
    let mut admin = redis::Client::open(redis_url())
        .expect("REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .expect("an admin connection to Redis");

    let channel = unique_channel("blackhole");
    let mut sub = subscriber.subscribe(&channel, None).await.expect("subscribe");
    let before = named_connections(&mut admin, &name).await;
    assert_eq!(before.len(), 1, "one subscriber connection: {before:?}");
    assert_eq!(before[0].1, 1, "subscribed to the channel: {before:?}");
    let old_id = before[0].0;

    let publishing = tokio::spawn({
        let channel = channel.clone();
        async move {
            let mut sent = Vec::with_capacity(EVENTS);
            for n in 0..EVENTS {
                let mut event = numbered(&channel, n);
                event.id = publisher.publish(&event).await.expect("publish, straight to Redis");
                sent.push(event);
                tokio::time::sleep(EVERY).await;
            }
            sent
        }
    });
    let reading = tokio::spawn(async move {
        let mut got: Vec<Event> = Vec::with_capacity(EVENTS);
        while got.len() < EVENTS {
            // Events published during the blackhole come once the link is back.
            let limit = BLACKHOLE + Duration::from_secs(15);
            match tokio::time::timeout(limit, sub.next()).await {
                Ok(Some(Ok(event))) => got.push(event),
                Ok(Some(Err(e))) => panic!("the subscription failed after {} events: {e}", got.len()),
                Ok(None) => panic!("the subscription ended after {} events", got.len()),
                Err(_) => panic!("no event within {limit:?} after {} events", got.len()),
            }
        }
        got
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set(proxy::Mode::Blackhole).await;
    let cut = Instant::now();
    let notice_bound = PING + RESPONSE_TIMEOUT + SLACK;
    let (first, _) = wait_for(BLACKHOLE, "a reconnect attempt during the blackhole", || {
        let found = proxy.accepted_after(cut).first().copied();
        async move { found }
    })
    .await;
    let noticed = first - cut;
    eprintln!(
        "broker: noticed the blackhole after {noticed:?} (ping interval {PING:?}, response timeout \
         {RESPONSE_TIMEOUT:?})"
    );
    assert!(
        noticed <= notice_bound,
        "the health check noticed after {noticed:?}, more than {notice_bound:?}"
    );
    let still = named_connections(&mut admin, &name).await;
    assert_eq!(
        still.iter().map(|c| c.0).collect::<Vec<_>>(),
        [old_id],
        "during the blackhole Redis still sees only the old connection, open"
    );
    tokio::time::sleep_until(cut + BLACKHOLE).await;
    proxy.set(proxy::Mode::Pass).await;
    let attempts = proxy.accepted_after(cut).len();

    let reconnect_bound = Duration::from_secs(5) + Duration::from_secs(1) + SLACK;
    let (new, reconnected) = wait_for(reconnect_bound, "a new subscriber connection in CLIENT LIST", || {
        let (mut admin, name) = (admin.clone(), name.clone());
        async move {
            named_connections(&mut admin, &name)
                .await
                .into_iter()
                .find(|&(id, sub)| id != old_id && sub == 1)
        }
    })
    .await;
    eprintln!(
        "broker: {attempts} connection attempt(s) during the blackhole; subscribed again on connection {} \
         {reconnected:?} after the link came back",
        new.0
    );
    let (_, closed) = wait_for(SLACK * 2, "the old subscriber connection closes", || {
        let (mut admin, name) = (admin.clone(), name.clone());
        async move {
            let ids: Vec<u64> = named_connections(&mut admin, &name)
                .await
                .into_iter()
                .map(|c| c.0)
                .collect();
            (!ids.contains(&old_id)).then_some(())
        }
    })
    .await;
    eprintln!("broker: the blackholed connection closed {:?} after that", closed);

    let sent = publishing.await.expect("the publisher");
    let got = reading.await.expect("the subscriber");
    assert!(
        got.iter().all(|e| e.kind == EventType::Log),
        "no gap or other control event: {:?}",
        got.iter().filter(|e| e.kind != EventType::Log).collect::<Vec<_>>()
    );
    let ns: Vec<u64> = got.iter().map(|e| e.payload["n"].as_u64().expect("n")).collect();
    assert_eq!(ns, (0..EVENTS as u64).collect::<Vec<_>>(), "every event once, in order");
    let sent_ids: Vec<_> = sent.iter().map(|e| e.id).collect();
    let got_ids: Vec<_> = got.iter().map(|e| e.id).collect();
    assert_eq!(got_ids, sent_ids, "the ids the publisher was given");
}

/// What a reconnecting SSE client saw.
#[derive(Debug, Default)]
struct Followed {
    /// The events (frames with an id), in order, up to `done`.
    events: Vec<Frame>,
    /// Control frames other than pings: `gap`, the pipeline's fatal `error`.
    notices: Vec<Frame>,
    /// Requests answered 200.
    streams: usize,
    /// Other answers (503 while Redis is unreachable), which the client retried.
    refused: Vec<u16>,
    /// Why a stream or request ended before `done`.
    breaks: Vec<String>,
    /// The longest wait for any frame (ping or event) on one open stream.
    longest_silence: Duration,
}

/// Follows `channel` until `done`: a new request with `Last-Event-ID` whenever the body ends or
/// fails, or no frame comes for 5 s (the app pings every second); a non-200 answer is retried.
async fn follow(app: &App, user: &str, channel: &str, limit: Duration) -> Followed {
    let deadline = Instant::now() + limit;
    let mut seen = Followed::default();
    let mut last: Option<String> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{}: no done within {limit:?}: {seen:?}",
            app.target.app
        );
        let mut req = app
            .client
            .get(app.url(&format!("/streams/{channel}")))
            .header("X-User-Id", user);
        if let Some(id) = &last {
            req = req.header("Last-Event-ID", id);
        }
        let res = match tokio::time::timeout(Duration::from_secs(15), req.send()).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                seen.breaks.push(format!("request failed: {e}"));
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(_) => {
                seen.breaks.push("no answer within 15 s".into());
                continue;
            }
        };
        let status = res.status().as_u16();
        if status != 200 {
            assert!(
                matches!(status, 429 | 500..=599),
                "{}: answered {status} to a resume after {last:?}",
                app.target.app
            );
            seen.refused.push(status);
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        seen.streams += 1;
        let mut sse = SseReader::new(res);
        let mut since = Instant::now();
        loop {
            let frame = sse.try_next_within(Duration::from_secs(5)).await;
            seen.longest_silence = seen.longest_silence.max(since.elapsed());
            since = Instant::now();
            match frame {
                Ok(Some(frame)) if frame.kind() == "ping" => {}
                Ok(Some(frame)) if frame.id.is_none() => seen.notices.push(frame),
                Ok(Some(frame)) => {
                    last = frame.id.clone();
                    let done = frame.kind() == "done";
                    seen.events.push(frame);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => {
                    seen.breaks.push("the body ended".into());
                    break;
                }
                Err(e) => {
                    seen.breaks.push(e);
                    break;
                }
            }
        }
    }
}

/// Both apps in Redis mode, each reaching Redis through a proxy of its own (its worker talks to
/// Redis directly, so the job goes on). A deploy job of 15 s; 2 s in, both links are blackholed
/// for 10 s.
///
/// - Each app's broker notices within `ping_interval` + the response timeout (+ slack): its
///   first new connection reaches its proxy then (what else the app sends through it is a
///   command only when the producer check runs, later).
/// - Each SSE client ends with every event of the job once, in order, then `done`, and no `gap`;
///   it resumes with `Last-Event-ID` if its stream ends (an `error` frame, a 503 on the way
///   back are allowed). Whether the stream stayed open through the blackhole is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apps_stream_every_event_through_a_blackholed_redis_link() {
    const STEP_MS: u64 = 1_500;
    let mut proxies = Vec::new();
    let mut apps = Vec::new();
    for app in APPS {
        let proxy = Proxy::start_for(&redis_url()).await;
        let settings = Settings {
            step_ms: STEP_MS,
            // A stream cut off while Redis is away may keep its lease until the lease's TTL: room
            // for the client to come back meanwhile.
            lease_limit: 10,
            ping_secs: PING.as_secs(),
            start_worker: false,
            redis_url: Some(proxy.url("redis")),
            ..Settings::default()
        };
        // Blocking (it waits for the ready line): off the runtime, which runs the proxy.
        let mut demo =
            tokio::task::spawn_blocking(move || App::start_with(Target { app, mode: Mode::Redis }, settings))
                .await
                .expect("the app starts");
        // The worker talks to Redis directly: only the app's link is cut.
        for (name, value) in &mut demo.env {
            if name == "REDIS_URL" {
                *value = redis_url();
            }
        }
        let demo = tokio::task::spawn_blocking(move || {
            demo.start_worker();
            demo
        })
        .await
        .expect("the worker starts");
        proxies.push(proxy);
        apps.push(demo);
    }

    let mut jobs = Vec::new();
    for demo in &apps {
        let user = unique("blackhole");
        let (channel, _) = demo.deploy(&user).await;
        jobs.push((user, channel));
    }
    let limit = Duration::from_millis(STEP_MS * 10) + BLACKHOLE + Duration::from_secs(15);
    let followers = join_all(
        apps.iter()
            .zip(&jobs)
            .map(|(demo, (user, channel))| follow(demo, user, channel, limit)),
    );
    let faults = async {
        tokio::time::sleep(Duration::from_millis(STEP_MS + 500)).await;
        for proxy in &proxies {
            proxy.set(proxy::Mode::Blackhole).await;
        }
        let cut = Instant::now();
        tokio::time::sleep(BLACKHOLE).await;
        let noticed: Vec<Option<Duration>> = proxies
            .iter()
            .map(|p| p.accepted_after(cut).first().map(|at| *at - cut))
            .collect();
        for proxy in &proxies {
            proxy.set(proxy::Mode::Pass).await;
        }
        noticed
    };
    let (followed, noticed) = tokio::join!(followers, faults);

    let notice_bound = PING + RESPONSE_TIMEOUT + SLACK;
    for ((demo, (_, channel)), (seen, noticed)) in apps.iter().zip(&jobs).zip(followed.iter().zip(&noticed)) {
        let app = demo.target.app;
        eprintln!(
            "{app}: noticed after {noticed:?}; {} stream(s), refused {:?}, breaks {:?}, notices {:?}, \
             longest silence on an open stream {:?}",
            seen.streams,
            seen.refused,
            seen.breaks,
            seen.notices.iter().map(|f| f.data.to_string()).collect::<Vec<_>>(),
            seen.longest_silence
        );
        let noticed = noticed.unwrap_or_else(|| panic!("{app}: no reconnect attempt during the blackhole"));
        assert!(
            noticed <= notice_bound,
            "{app}: the broker noticed after {noticed:?}, more than {notice_bound:?}"
        );
        assert!(
            seen.notices.iter().all(|f| f.kind() != "gap"),
            "{app}: a gap: {:?}",
            seen.notices
        );
        assert_job(&seen.events, channel);
    }
}
