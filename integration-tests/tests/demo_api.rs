//! The demo HTTP API (docs/http-api.md), written once and run against both apps, in memory mode
//! and in Redis mode (app and worker as separate processes). Real processes, real sockets.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6399/`) for the Redis mode and
//! OpenSearch at `OPENSEARCH_URL` (default `http://127.0.0.1:9250`) for the archive tests; a
//! missing service fails its tests. The demo binaries are built by the tests themselves.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use stream_core::{ChannelId, StreamTokenSigner, UserId};
use support::{
    App, Frame, JOB_TYPES, Mode, Settings, SseReader, TOKEN_SECRET, Target, assert_increasing, assert_job,
    assert_json_error, assert_sse_headers, unique,
};

/// Opens `stream_url` (no header: the token identifies the user).
async fn open(app: &App, stream_url: &str, last_event_id: Option<&str>) -> SseReader {
    let res = app.get(stream_url, None, last_event_id).await;
    assert_eq!(res.status(), 200, "GET {stream_url}");
    assert_sse_headers(&res);
    SseReader::new(res)
}

/// The whole job of a channel, read from the start once it is done.
async fn replay(app: &App, stream_url: &str) -> Vec<Frame> {
    open(app, stream_url, None).await.until_done().await
}

async fn events_arrive_in_order_and_end_with_done(target: Target) {
    let app = App::start(target);
    let user = unique("order");
    let (channel, stream_url) = app.deploy(&user).await;
    assert!(ChannelId::new(&channel).is_ok());
    assert!(
        stream_url.starts_with(&format!("/streams/{channel}?token=")),
        "{stream_url}"
    );
    let frames = open(&app, &stream_url, None).await.until_done().await;
    assert_job(&frames, &channel);
    // The header works as well as the token, and a late client gets the replay, done, close.
    let res = app.get(&format!("/streams/{channel}"), Some(&user), None).await;
    assert_eq!(res.status(), 200);
    assert_sse_headers(&res);
    let again = SseReader::new(res).until_done().await;
    assert_eq!(again, frames);
}

async fn resume_mid_job_has_no_gap_and_no_duplicate(target: Target) {
    let app = App::start_with(
        target,
        Settings {
            step_ms: 150,
            ..Settings::default()
        },
    );
    let user = unique("resume");
    let (channel, stream_url) = app.deploy(&user).await;
    let mut first = open(&app, &stream_url, None).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(first.next_event().await.unwrap());
    }
    drop(first);
    let last = seen.last().unwrap().id.clone().unwrap();
    // Resume with the header (what EventSource sends).
    let rest = open(&app, &stream_url, Some(&last)).await.until_done().await;
    assert!(rest.len() < JOB_TYPES.len() - 3 + 1, "seen {seen:?}\nrest {rest:?}");
    let mut joined = seen.clone();
    joined.extend(rest);
    let full = replay(&app, &stream_url).await;
    assert_eq!(joined, full, "resume lost or repeated events");
    assert_job(&full, &channel);
    // And with the query parameter.
    let from_query = open(&app, &format!("{stream_url}&last_event_id={last}"), None)
        .await
        .until_done()
        .await;
    assert_eq!(from_query, full[3..]);
    // A bad id is a 400.
    let res = app.get(&stream_url, None, Some("not-an-event-id")).await;
    assert_json_error(res, 400).await;
}

async fn reconnect_after_done_is_204(target: Target) {
    let app = App::start(target);
    let user = unique("after-done");
    let (channel, stream_url) = app.deploy(&user).await;
    let frames = replay(&app, &stream_url).await;
    let done_id = frames.last().unwrap().id.clone().unwrap();
    let res = app.get(&stream_url, None, Some(&done_id)).await;
    assert_eq!(res.status(), 204);
    let res = app
        .get(&format!("/streams/{channel}"), Some(&user), Some(&done_id))
        .await;
    assert_eq!(res.status(), 204);
    let res = app
        .get(&format!("{stream_url}&last_event_id={done_id}"), None, None)
        .await;
    assert_eq!(res.status(), 204);
}

async fn over_the_lease_limit_is_429_then_ok_after_a_stream_closes(target: Target) {
    // Slow steps keep the streams open; the limit is 2. Pings are 30 s apart, so the server must
    // notice a client that goes away by itself, not through a failed ping.
    let app = App::start_with(
        target,
        Settings {
            step_ms: 3000,
            ping_secs: 30,
            ..Settings::default()
        },
    );
    let user = unique("lease");
    let (_, stream_url) = app.deploy(&user).await;
    let mut a = open(&app, &stream_url, None).await;
    let b = open(&app, &stream_url, None).await;
    assert!(a.next_event().await.is_some());
    let res = app.get(&stream_url, None, None).await;
    assert_eq!(res.headers()["retry-after"], "5");
    let body = assert_json_error(res, 429).await;
    assert_eq!(body["limit"], 2);
    assert_eq!(body["retry_after"], 5);
    // The chat stream counts against the same cap.
    let res = app
        .client
        .post(app.url("/chat/stream"))
        .header("X-User-Id", &user)
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_json_error(res, 429).await;
    // Another user is not affected.
    let res = app
        .client
        .post(app.url("/deployments"))
        .header("X-User-Id", unique("other"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    // One stream closes (the client goes away): a new one is accepted soon after.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let res = app.get(&stream_url, None, None).await;
        if res.status() == 200 {
            assert_sse_headers(&res);
            break;
        }
        assert_eq!(res.status(), 429);
        assert!(Instant::now() < deadline, "the closed stream's lease was not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(a);
}

fn signer() -> StreamTokenSigner {
    StreamTokenSigner::new(TOKEN_SECRET.as_bytes().to_vec())
}

async fn identity_and_ownership_401_403_404(target: Target) {
    let app = App::start(target);
    let alice = unique("alice");
    let (channel, stream_url) = app.deploy(&alice).await;
    let (other_channel, _) = app.deploy(&alice).await;
    let path = format!("/streams/{channel}");

    // 401: neither header nor token, checked before anything about the channel or the request
    // is told: an unknown or malformed channel, a bad Last-Event-ID.
    assert_json_error(app.get(&path, None, None).await, 401).await;
    let unknown = ChannelId::generate();
    for anonymous in [
        format!("/streams/{unknown}"),
        "/streams/not.a.channel".into(),
        "/streams/%FF".into(),
    ] {
        assert_json_error(app.get(&anonymous, None, None).await, 401).await;
    }
    assert_json_error(app.get(&path, None, Some("not-an-id")).await, 401).await;
    let res = app.client.post(app.url("/deployments")).send().await.unwrap();
    assert_json_error(res, 401).await;
    let res = app.client.post(app.url("/deploy")).send().await.unwrap();
    assert_json_error(res, 401).await;
    let res = app
        .client
        .post(app.url("/chat/stream"))
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_json_error(res, 401).await;

    // 403: another user, by header or with their own valid token.
    let bob = unique("bob");
    assert_json_error(app.get(&path, Some(&bob), None).await, 403).await;
    let bob_token = signer().sign(
        &UserId::new(&bob).unwrap(),
        &ChannelId::new(&channel).unwrap(),
        Duration::from_secs(60),
    );
    assert_json_error(app.get(&format!("{path}?token={bob_token}"), None, None).await, 403).await;
    // 403: a bad token, an expired token, a token for another channel.
    assert_json_error(app.get(&format!("{path}?token=garbage"), None, None).await, 403).await;
    let token = stream_url.split("token=").nth(1).unwrap();
    let tampered = format!("{}x", &token[..token.len() - 1]);
    assert_json_error(app.get(&format!("{path}?token={tampered}"), None, None).await, 403).await;
    let past = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 10;
    let expired = signer().sign_with_expiry(&UserId::new(&alice).unwrap(), &ChannelId::new(&channel).unwrap(), past);
    assert_json_error(app.get(&format!("{path}?token={expired}"), None, None).await, 403).await;
    let other_token = stream_url.replace(&format!("/streams/{channel}"), &format!("/streams/{other_channel}"));
    assert_json_error(app.get(&other_token, None, None).await, 403).await;
    let foreign = StreamTokenSigner::new(b"another secret".to_vec()).sign(
        &UserId::new(&alice).unwrap(),
        &ChannelId::new(&channel).unwrap(),
        Duration::from_secs(60),
    );
    assert_json_error(app.get(&format!("{path}?token={foreign}"), None, None).await, 403).await;

    // 404: unknown and malformed channel ids.
    assert_json_error(app.get(&format!("/streams/{unknown}"), Some(&alice), None).await, 404).await;
    for malformed in ["not.a.channel", "a%20b", "x%3Ay", "%FF", &"z".repeat(200)] {
        assert_json_error(app.get(&format!("/streams/{malformed}"), Some(&alice), None).await, 404).await;
    }
    // The owner still gets the stream, by header and by token.
    let res = app.get(&path, Some(&alice), None).await;
    assert_eq!(res.status(), 200);
    drop(res);
    assert_job(&replay(&app, &stream_url).await, &channel);
}

async fn events_are_owner_only_oldest_first_and_filtered(target: Target) {
    let app = App::start(target);
    let owner = unique("owner");
    let (channel, stream_url) = app.deploy(&owner).await;
    let frames = replay(&app, &stream_url).await;
    let path = format!("/events?channel_id={channel}");
    // The archive may trail the stream by a moment (Redis mode archives as it subscribes).
    let deadline = Instant::now() + Duration::from_secs(5);
    let all: Vec<Value> = loop {
        let res = app.get(&path, Some(&owner), None).await;
        assert_eq!(res.status(), 200);
        let all: Vec<Value> = res.json().await.unwrap();
        if all.len() == JOB_TYPES.len() || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let streamed: Vec<Value> = frames.iter().map(|f| f.data.clone()).collect();
    assert_eq!(all, streamed, "stored events differ from the streamed ones");

    let res = app.get(&format!("{path}&types=log,error"), Some(&owner), None).await;
    let logs: Vec<Value> = res.json().await.unwrap();
    assert_eq!(logs.len(), 4);
    assert!(logs.iter().all(|e| e["type"] == "log"));
    let as_frames: Vec<Frame> = logs
        .iter()
        .map(|e| Frame {
            id: e["id"].as_str().map(str::to_owned),
            data: e.clone(),
        })
        .collect();
    assert_increasing(&as_frames);
    let res = app
        .get(&format!("{path}&types=progress&limit=2"), Some(&owner), None)
        .await;
    let two: Vec<Value> = res.json().await.unwrap();
    let percents: Vec<i64> = two.iter().map(|e| e["percent"].as_i64().unwrap()).collect();
    assert_eq!(percents, [10, 40]);

    assert_json_error(app.get(&path, Some(&unique("intruder")), None).await, 403).await;
    assert_json_error(app.get(&path, None, None).await, 401).await;
    let unknown = ChannelId::generate();
    assert_json_error(
        app.get(&format!("/events?channel_id={unknown}"), Some(&owner), None)
            .await,
        404,
    )
    .await;
    assert_json_error(app.get("/events", Some(&owner), None).await, 400).await;
    assert_json_error(app.get(&format!("{path}&types=NOPE!"), Some(&owner), None).await, 400).await;
    assert_json_error(app.get(&format!("{path}&limit=0"), Some(&owner), None).await, 400).await;
}

async fn direct_deploy_chat_health_and_page(target: Target) {
    let app = App::start(target);
    let user = unique("direct");
    // POST /deploy answers with the job's SSE stream.
    let res = app
        .client
        .post(app.url("/deploy"))
        .header("X-User-Id", &user)
        .body(r#"{"project":"p","environment":"e","service":"s"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_sse_headers(&res);
    let frames = SseReader::new(res).until_done().await;
    let channel = frames[0].data["channel_id"].as_str().unwrap().to_owned();
    assert_job(&frames, &channel);
    assert_eq!(frames[0].data["context"]["workspace_id"], user.as_str());

    // POST /chat/stream: token events, then done, then close.
    let res = app
        .client
        .post(app.url("/chat/stream"))
        .header("X-User-Id", &user)
        .header("Content-Type", "application/json")
        .body(r#"{"prompt":"why is the sky blue?"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_sse_headers(&res);
    let frames = SseReader::new(res).until_done().await;
    let (done, tokens) = frames.split_last().unwrap();
    assert_eq!(done.kind(), "done");
    assert!(tokens.len() > 3);
    assert!(tokens.iter().all(|f| f.kind() == "data" && f.data["token"].is_string()));
    let text: String = tokens.iter().map(|f| f.data["token"].as_str().unwrap()).collect();
    assert!(text.contains("why is the sky blue?"), "{text}");
    assert_increasing(&frames);
    let res = app
        .client
        .post(app.url("/chat/stream"))
        .header("X-User-Id", &user)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_json_error(res, 400).await;

    let res = app.get("/healthz", None, None).await;
    assert_eq!(res.status(), 200);
    let health: Value = res.json().await.unwrap();
    let mode = match target.mode {
        Mode::Memory => "memory",
        Mode::Redis => "redis",
        Mode::RedisCluster => "redis-cluster",
    };
    assert_eq!(health, serde_json::json!({"status": "ok", "mode": mode}));
    let res = app.get("/", None, None).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = res.text().await.unwrap();
    assert!(page.contains("id=\"progress\"") && page.contains("EventSource"));
}

async fn shutdown_ends_open_streams(target: Target) {
    let mut app = App::start_with(
        target,
        Settings {
            step_ms: 5000,
            ..Settings::default()
        },
    );
    let user = unique("shutdown");
    let (_, stream_url) = app.deploy(&user).await;
    let mut stream = open(&app, &stream_url, None).await;
    assert!(stream.next_event().await.is_some());
    let started = Instant::now();
    app.proc.terminate();
    // The open stream ends cleanly (no done: the job was cut short), and the process exits.
    while let Some(frame) = stream.next_within(Duration::from_secs(5)).await {
        assert_ne!(frame.kind(), "done");
    }
    let status = app.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// `POST path` as `user` (when given) with a JSON `body`.
async fn post(app: &App, path: &str, user: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(user) = user {
        req = req.header("X-User-Id", user);
    }
    req.send().await.unwrap()
}

/// Asserts a JSON error answer with this status and code; returns the body.
async fn assert_error_code(res: reqwest::Response, status: u16, code: &str) -> Value {
    let body = assert_json_error(res, status).await;
    assert_eq!(body["error"], code, "{body}");
    body
}

/// The routes that take a JSON body.
const JSON_ROUTES: [&str; 3] = ["/deployments", "/deploy", "/chat/stream"];

async fn bodies_and_prompts_over_their_limits_are_413_json(target: Target) {
    let app = App::start(target);
    let user = unique("limits");
    // The prompt: 16 KiB by default (CHAT_MAX_PROMPT_BYTES).
    let over = json!({"prompt": "a".repeat(16 * 1024 + 1)}).to_string();
    let body = assert_error_code(
        post(&app, "/chat/stream", Some(&user), over).await,
        413,
        "payload_too_large",
    )
    .await;
    assert_eq!(body["limit"], 16384);
    let at = json!({"prompt": "a".repeat(16 * 1024)}).to_string();
    let res = post(&app, "/chat/stream", Some(&user), at).await;
    assert_eq!(res.status(), 200);
    let frames = SseReader::new(res).until_done().await;
    assert_eq!(frames.last().unwrap().kind(), "done");
    // JSON bodies: 64 KiB by default (DEMO_MAX_BODY_BYTES), on every route that takes one, with a
    // length up front or chunked.
    let big = json!({"prompt": "p".repeat(64 * 1024)}).to_string();
    for path in JSON_ROUTES {
        let res = post(&app, path, Some(&user), big.clone()).await;
        let body = assert_error_code(res, 413, "payload_too_large").await;
        assert_eq!(body["limit"], 65536, "{path}");
        let chunks: Vec<Result<String, std::io::Error>> =
            vec![Ok(big[..40_000].to_owned()), Ok(big[40_000..].to_owned())];
        let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let res = post(&app, path, Some(&user), chunked).await;
        assert_error_code(res, 413, "payload_too_large").await;
        // Bad JSON is still 400.
        assert_error_code(post(&app, path, Some(&user), "{not json").await, 400, "invalid_body").await;
    }
    drop(app);

    // Both limits are configurable.
    let app = App::start_with(
        target,
        Settings {
            env: vec![
                ("DEMO_MAX_BODY_BYTES".into(), "100".into()),
                ("CHAT_MAX_PROMPT_BYTES".into(), "10".into()),
            ],
            ..Settings::default()
        },
    );
    let body = json!({"project": "x".repeat(100)}).to_string();
    let res = post(&app, "/deployments", Some(&user), body).await;
    assert_eq!(assert_error_code(res, 413, "payload_too_large").await["limit"], 100);
    let res = post(&app, "/chat/stream", Some(&user), r#"{"prompt":"eleven byte"}"#).await;
    assert_eq!(assert_error_code(res, 413, "payload_too_large").await["limit"], 10);
    let res = post(&app, "/chat/stream", Some(&user), r#"{"prompt":"ten bytes!"}"#).await;
    assert_eq!(res.status(), 200);
    SseReader::new(res).until_done().await;
}

async fn a_429_from_the_lease_starts_nothing(target: Target) {
    // Slow steps keep the chats open. In Redis mode no worker runs, so that a queued job stays in
    // the queue, where the test can count it.
    let app = App::start_with(
        target,
        Settings {
            step_ms: 3000,
            start_worker: false,
            env: vec![("DEMO_MAX_CHANNELS_PER_USER".into(), "3".into())],
            ..Settings::default()
        },
    );
    let user = unique("lease-first");
    let prompt = r#"{"prompt":"hold the lease"}"#;
    // Two chats hold the user's two leases, and two of the three live-channel slots.
    let a = post(&app, "/chat/stream", Some(&user), prompt).await;
    assert_eq!(a.status(), 200);
    let b = post(&app, "/chat/stream", Some(&user), prompt).await;
    assert_eq!(b.status(), 200);
    for path in ["/deploy", "/chat/stream", "/deploy"] {
        let res = post(&app, path, Some(&user), prompt).await;
        let body = assert_error_code(res, 429, "stream_limit_exceeded").await;
        assert_eq!(body["limit"], 2);
    }
    // The refused requests took no slot: the third is still free for a deployment (which takes
    // no lease), and then the user is at the cap.
    let res = post(&app, "/deployments", Some(&user), "{}").await;
    assert_eq!(res.status(), 202);
    let res = post(&app, "/deployments", Some(&user), "{}").await;
    assert_error_code(res, 429, "channel_limit_exceeded").await;
    if target.mode == Mode::Redis {
        // One job was queued: the 202's. The refused /deploy queued none.
        let queue = app
            .env
            .iter()
            .find(|(name, _)| name == "DEMO_JOB_QUEUE")
            .map(|(_, queue)| queue.clone())
            .unwrap();
        let client = stream_pubsub::stream_redis::redis::Client::open(support::redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let queued: i64 = stream_pubsub::stream_redis::redis::cmd("LLEN")
            .arg(worker::queue_key(&queue))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(queued, 1, "a refused /deploy queued a job");
    }
    drop((a, b));
}

async fn the_live_channel_cap_is_per_user_and_frees_at_done(target: Target) {
    let app = App::start_with(
        target,
        Settings {
            step_ms: 250,
            env: vec![("DEMO_MAX_CHANNELS_PER_USER".into(), "2".into())],
            ..Settings::default()
        },
    );
    let user = unique("cap");
    let (_, first) = app.deploy(&user).await;
    let (_, second) = app.deploy(&user).await;
    // A third live channel is refused: a deployment, a direct deploy, a chat.
    for path in JSON_ROUTES {
        let res = post(&app, path, Some(&user), r#"{"prompt":"hi"}"#).await;
        let body = assert_error_code(res, 429, "channel_limit_exceeded").await;
        assert_eq!(body["limit"], 2, "{path}");
    }
    // Another user is not affected.
    app.deploy(&unique("other")).await;
    // Once a channel is done its slot is free again (released right after its done).
    replay(&app, &first).await;
    let created_after_done = async {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let res = post(&app, "/deployments", Some(&user), "{}").await;
            if res.status() == 202 {
                return;
            }
            assert_error_code(res, 429, "channel_limit_exceeded").await;
            assert!(Instant::now() < deadline, "a done channel still counts");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    created_after_done.await;
    replay(&app, &second).await;

    // Chats count too, and free their slot with their done.
    let user = unique("cap-chat");
    let mut a = SseReader::new(post(&app, "/chat/stream", Some(&user), r#"{"prompt":"one"}"#).await);
    let b = post(&app, "/chat/stream", Some(&user), r#"{"prompt":"two"}"#).await;
    assert_eq!(b.status(), 200);
    let res = post(&app, "/deployments", Some(&user), "{}").await;
    assert_error_code(res, 429, "channel_limit_exceeded").await;
    a.until_done().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let res = post(&app, "/deployments", Some(&user), "{}").await;
        if res.status() == 202 {
            break;
        }
        assert_error_code(res, 429, "channel_limit_exceeded").await;
        assert!(Instant::now() < deadline, "a done chat still counts");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(b);
}

/// Runs the suite against one app in one mode.
/// One sample line of the Prometheus text format: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the Prometheus text exposition format (version 0.0.4) strictly: `# HELP`/`# TYPE`
/// lines, and samples `name{label="value",…} value`. Panics on a line that is neither.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let is_name = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(
                matches!(kind, "HELP" | "TYPE") && is_name(name),
                "bad comment line: {line}"
            );
            if kind == "TYPE" {
                let ty = parts.next().unwrap_or("");
                assert!(
                    matches!(ty, "counter" | "gauge" | "histogram" | "summary" | "untyped"),
                    "bad type: {line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels: {line}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                        assert!(is_name(k), "bad label name: {line}");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(is_name(name), "bad metric name: {line}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// `GET /metrics` is Prometheus text holding the crates' metrics, and they moved: a finished
/// stream (opened 200, events delivered, closed for `done`), a 204, a 404 and a 429.
async fn metrics_are_prometheus_text(target: Target) {
    let app = App::start_with(
        target,
        Settings {
            step_ms: 10,
            lease_limit: 1,
            ..Settings::default()
        },
    );
    let user = unique("metrics");
    let (channel, stream_url) = app.deploy(&user).await;
    let frames = open(&app, &stream_url, None).await.until_done().await;
    let done_id = frames.last().unwrap().id.clone().unwrap();
    let res = app
        .get(&format!("/streams/{channel}"), Some(&user), Some(&done_id))
        .await;
    assert_eq!(res.status(), 204);
    let unknown = stream_core::ChannelId::generate();
    assert_json_error(app.get(&format!("/streams/{unknown}"), Some(&user), None).await, 404).await;
    let (other, _) = app.deploy(&user).await;
    let held = app.get(&format!("/streams/{other}"), Some(&user), None).await;
    assert_eq!(held.status(), 200);
    assert_json_error(app.get(&format!("/streams/{other}"), Some(&user), None).await, 429).await;

    let res = app.get("/metrics", None, None).await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let samples = parse_prometheus(&res.text().await.unwrap());
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
            .sum()
    };
    use stream_core::metrics as m;
    assert!(value(m::OPENS, &[(m::ANSWER, "200")]) >= 2.0);
    assert!(value(m::OPENS, &[(m::ANSWER, "204")]) >= 1.0);
    assert!(value(m::OPENS, &[(m::ANSWER, "4xx")]) >= 1.0);
    assert!(value(m::OPENS, &[(m::ANSWER, "429")]) >= 1.0);
    assert!(value(m::EVENTS_DELIVERED, &[]) >= 11.0);
    assert!(value(m::CLOSES, &[(m::REASON, "done")]) >= 1.0);
    assert_eq!(value(m::OPEN_STREAMS, &[]), 1.0, "the held stream");
    assert!(value(m::LEASES_ACQUIRED, &[]) >= 2.0);
    let bucket = format!("{}_bucket", m::PUBLISH_TO_DELIVER);
    assert!(
        samples
            .iter()
            .any(|s| s.name == bucket && s.labels.iter().any(|(k, _)| k == "le")),
        "the latency is a histogram with buckets"
    );
    if target.mode.is_redis() {
        assert!(value(m::REDIS_SCRIPT_CALLS, &[]) >= 1.0);
    } else {
        assert!(value(m::EVENTS_PUBLISHED, &[(m::BACKEND, "memory")]) >= 11.0);
    }
    drop(held);
}

macro_rules! suite {
    ($module:ident, $app:literal, $mode:expr) => {
        mod $module {
            use super::*;
            const TARGET: Target = Target {
                app: $app,
                mode: $mode,
            };

            #[tokio::test]
            async fn events_arrive_in_order_and_end_with_done() {
                super::events_arrive_in_order_and_end_with_done(TARGET).await;
            }
            #[tokio::test]
            async fn resume_mid_job_has_no_gap_and_no_duplicate() {
                super::resume_mid_job_has_no_gap_and_no_duplicate(TARGET).await;
            }
            #[tokio::test]
            async fn reconnect_after_done_is_204() {
                super::reconnect_after_done_is_204(TARGET).await;
            }
            #[tokio::test]
            async fn over_the_lease_limit_is_429_then_ok_after_a_stream_closes() {
                super::over_the_lease_limit_is_429_then_ok_after_a_stream_closes(TARGET).await;
            }
            #[tokio::test]
            async fn identity_and_ownership_401_403_404() {
                super::identity_and_ownership_401_403_404(TARGET).await;
            }
            #[tokio::test]
            async fn events_are_owner_only_oldest_first_and_filtered() {
                super::events_are_owner_only_oldest_first_and_filtered(TARGET).await;
            }
            #[tokio::test]
            async fn direct_deploy_chat_health_and_page() {
                super::direct_deploy_chat_health_and_page(TARGET).await;
            }
            #[tokio::test]
            async fn shutdown_ends_open_streams() {
                super::shutdown_ends_open_streams(TARGET).await;
            }
            #[tokio::test]
            async fn bodies_and_prompts_over_their_limits_are_413_json() {
                super::bodies_and_prompts_over_their_limits_are_413_json(TARGET).await;
            }
            #[tokio::test]
            async fn a_429_from_the_lease_starts_nothing() {
                super::a_429_from_the_lease_starts_nothing(TARGET).await;
            }
            #[tokio::test]
            async fn the_live_channel_cap_is_per_user_and_frees_at_done() {
                super::the_live_channel_cap_is_per_user_and_frees_at_done(TARGET).await;
            }
            #[tokio::test]
            async fn metrics_are_prometheus_text() {
                super::metrics_are_prometheus_text(TARGET).await;
            }
        }
    };
}

suite!(axum_memory, "axum-app", Mode::Memory);
suite!(actix_memory, "actix-app", Mode::Memory);
suite!(axum_redis, "axum-app", Mode::Redis);
suite!(actix_redis, "actix-app", Mode::Redis);
suite!(axum_cluster, "axum-app", Mode::RedisCluster);
suite!(actix_cluster, "actix-app", Mode::RedisCluster);

/// Multi-process: in Redis mode the job runs in the worker process, not in the app. With no
/// worker running nothing happens; once one starts, the events arrive, through Redis.
async fn the_worker_process_runs_the_job(app_name: &'static str) {
    let mut app = App::start_with(
        Target {
            app: app_name,
            mode: Mode::Redis,
        },
        Settings {
            start_worker: false,
            ..Settings::default()
        },
    );
    let user = unique("multi");
    let (channel, stream_url) = app.deploy(&user).await;
    let mut stream = open(&app, &stream_url, None).await;
    // Only pings while no worker runs (STREAM_PING_SECS=1).
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_millis(1500) {
        let frame = stream.next_within(Duration::from_secs(3)).await.unwrap();
        assert_eq!(frame.kind(), "ping", "an event arrived with no worker running");
    }
    app.start_worker();
    let frames = stream.until_done().await;
    assert_job(&frames, &channel);
    // The worker's events carry the context the app serialized into the job.
    assert_eq!(frames[0].data["context"]["workspace_id"], user.as_str());
    assert_eq!(frames[0].data["context"]["project"], "shop");
}

#[tokio::test]
async fn axum_app_and_worker_in_separate_processes() {
    the_worker_process_runs_the_job("axum-app").await;
}

#[tokio::test]
async fn actix_app_and_worker_in_separate_processes() {
    the_worker_process_runs_the_job("actix-app").await;
}

/// Redis mode across instances: a stream started on one app instance resumes on another (the
/// history and the channel owner are in Redis).
#[tokio::test]
async fn resume_on_another_instance_in_redis_mode() {
    let axum = App::start_with(
        Target {
            app: "axum-app",
            mode: Mode::Redis,
        },
        Settings {
            step_ms: 150,
            ..Settings::default()
        },
    );
    let actix = App::start_with(
        Target {
            app: "actix-app",
            mode: Mode::Redis,
        },
        Settings {
            start_worker: false,
            ..Settings::default()
        },
    );
    let user = unique("instances");
    let (channel, stream_url) = axum.deploy(&user).await;
    let mut first = open(&axum, &stream_url, None).await;
    let seen = [first.next_event().await.unwrap(), first.next_event().await.unwrap()];
    drop(first);
    let last = seen[1].id.clone().unwrap();
    let rest = open(&actix, &stream_url, Some(&last)).await.until_done().await;
    let mut joined = seen.to_vec();
    joined.extend(rest);
    assert_job(&joined, &channel);
}

/// With `OPENSEARCH_URL`, the job's events are archived in OpenSearch, always by the app (in
/// memory mode its publisher writes them; in Redis mode it subscribes to the channel that the
/// worker, which writes to no store, emits on) and `GET /events` reads them back from there.
async fn events_are_archived_in_opensearch(target: Target) {
    let prefix = unique("demo-test-events").to_lowercase();
    let app = App::start_with(
        target,
        Settings {
            opensearch_prefix: Some(prefix.clone()),
            ..Settings::default()
        },
    );
    let owner = unique("archived");
    let (channel, stream_url) = app.deploy(&owner).await;
    let frames = replay(&app, &stream_url).await;
    let streamed: Vec<Value> = frames.iter().map(|f| f.data.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let stored: Vec<Value> = loop {
        let res = app
            .get(&format!("/events?channel_id={channel}"), Some(&owner), None)
            .await;
        assert_eq!(res.status(), 200);
        let stored: Vec<Value> = res.json().await.unwrap();
        if stored.len() == streamed.len() || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stored.len(), streamed.len());
    let ids = |events: &[Value]| events.iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&stored),
        ids(&streamed),
        "stored events differ from the streamed ones"
    );
    // They really are in OpenSearch, under the app's index prefix.
    let os = support::opensearch_url();
    let count: Value = app
        .client
        .get(format!("{os}/{prefix}-*/_count?q=channel_id:{channel}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["count"], JOB_TYPES.len(), "{count}");
    let _ = app.client.delete(format!("{os}/{prefix}-*")).send().await;
}

#[tokio::test]
async fn axum_memory_events_are_archived_in_opensearch() {
    events_are_archived_in_opensearch(Target {
        app: "axum-app",
        mode: Mode::Memory,
    })
    .await;
}

#[tokio::test]
async fn actix_redis_events_are_archived_in_opensearch_by_the_app() {
    events_are_archived_in_opensearch(Target {
        app: "actix-app",
        mode: Mode::Redis,
    })
    .await;
}

/// Redis mode: the live-channel cap counts a user's channels on every instance.
#[tokio::test]
async fn the_live_channel_cap_holds_across_instances_in_redis_mode() {
    let settings = Settings {
        step_ms: 3000,
        env: vec![("DEMO_MAX_CHANNELS_PER_USER".into(), "2".into())],
        ..Settings::default()
    };
    let axum = App::start_with(
        Target {
            app: "axum-app",
            mode: Mode::Redis,
        },
        settings.clone(),
    );
    let actix = App::start_with(
        Target {
            app: "actix-app",
            mode: Mode::Redis,
        },
        settings,
    );
    let user = unique("cap-instances");
    axum.deploy(&user).await;
    actix.deploy(&user).await;
    for app in [&axum, &actix] {
        let res = post(app, "/deployments", Some(&user), "{}").await;
        let body = assert_error_code(res, 429, "channel_limit_exceeded").await;
        assert_eq!(body["limit"], 2);
    }
}

/// Starts `app` with `env` (and without the variables in `remove`), stderr piped.
fn spawn_app(app: &str, env: &[(&str, &str)], remove: &[&str]) -> support::Proc {
    let mut cmd = Command::new(support::binary(app));
    for var in remove {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {app}: {e}"));
    support::Proc {
        child,
        name: app.to_owned(),
    }
}

/// A `STREAM_TOKEN_SECRET` shorter than 32 bytes stops the app at start-up, with a message that
/// names the variable (and not the secret).
fn a_short_token_secret_stops_the_app(app: &str) {
    let mut proc = spawn_app(
        app,
        &[("STREAM_TOKEN_SECRET", "too-short-a-secret")],
        &["REDIS_URL", "REDIS_CLUSTER_NODES", "OPENSEARCH_URL"],
    );
    let status = proc.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{app} started with a short secret: {status:?}");
    let mut stderr = String::new();
    proc.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("STREAM_TOKEN_SECRET"), "{stderr}");
    assert!(stderr.contains("32 bytes"), "{stderr}");
    assert!(
        !stderr.contains("too-short-a-secret"),
        "the secret was printed: {stderr}"
    );
}

#[test]
fn axum_app_refuses_a_short_token_secret() {
    a_short_token_secret_stops_the_app("axum-app");
}

#[test]
fn actix_app_refuses_a_short_token_secret() {
    a_short_token_secret_stops_the_app("actix-app");
}

/// Redis mode without `STREAM_TOKEN_SECRET`: the app starts, with a warning that names the
/// variable and the consequence. Needs Redis (fails without it).
fn an_unset_secret_in_redis_mode_warns(app: &str) {
    let queue = unique("demo-test-jobs");
    let redis = support::redis_url();
    let mut proc = spawn_app(
        app,
        &[("REDIS_URL", &redis), ("DEMO_JOB_QUEUE", &queue)],
        &["STREAM_TOKEN_SECRET", "REDIS_CLUSTER_NODES", "OPENSEARCH_URL"],
    );
    let stderr = proc.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("STREAM_TOKEN_SECRET is unset") => {
                assert!(line.contains("only on the instance that made it"), "{line}");
                break;
            }
            Ok(line) => seen.push(line),
            Err(_) => panic!("no warning about STREAM_TOKEN_SECRET from {app}; stderr: {seen:?}"),
        }
    }
    assert!(proc.child.try_wait().unwrap().is_none(), "{app} exited: {seen:?}");
}

#[test]
fn axum_app_warns_of_an_unset_secret_in_redis_mode() {
    an_unset_secret_in_redis_mode_warns("axum-app");
}

#[test]
fn actix_app_warns_of_an_unset_secret_in_redis_mode() {
    an_unset_secret_in_redis_mode_warns("actix-app");
}
