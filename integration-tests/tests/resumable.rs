//! Resumable chats (issue 16), over HTTP, on two app instances in Redis mode (axum-app and
//! actix-app on one Redis, each in turn as the instance that runs the chat):
//! - a chat started on A and cut after 3 tokens is resumed on B with its last id: the joined text
//!   is the whole reply, no token repeated or missing;
//! - a cancel on B stops a chat running on A, with `done` `cancelled: true`; a second cancel is
//!   409;
//! - the AI SDK routes, read by the real `ai` npm package (`integration-tests/node`):
//!   `POST /api/chat` rebuilds the reply, `GET /api/chat/{id}/stream` resumes it mid-answer on the
//!   other instance, and answers 204 once it has finished.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const PROMPT: &str = "how do resumable streams survive a reload";

fn two_instances(first: &'static str, second: &'static str) -> (App, App) {
    let queue = unique("resumable-jobs");
    let settings = || Settings {
        step_ms: 400,
        lease_limit: 10,
        start_worker: false,
        env: vec![("DEMO_JOB_QUEUE".into(), queue.clone())],
        ..Settings::default()
    };
    let a = App::start_with(
        Target {
            app: first,
            mode: Mode::Redis,
        },
        settings(),
    );
    let b = App::start_with(
        Target {
            app: second,
            mode: Mode::Redis,
        },
        settings(),
    );
    (a, b)
}

/// `POST /chat/stream` as `user`: the response, with its `X-Stream-Channel` and `X-Stream-Url`.
async fn start_chat(app: &App, user: &str, prompt: &str) -> (reqwest::Response, String, String) {
    let res = app
        .client
        .post(app.url("/chat/stream"))
        .header("X-User-Id", user)
        .header("Content-Type", "application/json")
        .body(json!({ "prompt": prompt }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "POST /chat/stream");
    assert_sse_headers(&res);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .unwrap_or_else(|| panic!("{name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (channel, url) = (header("x-stream-channel"), header("x-stream-url"));
    assert_eq!(
        url,
        format!("/streams/{channel}?token={}", url.split("token=").nth(1).unwrap())
    );
    (res, channel, url)
}

fn token(frame: &Frame) -> &str {
    frame.data["token"].as_str().unwrap_or("")
}

async fn cut_and_resume(a: &App, b: &App) {
    let user = unique("resume");
    let (res, _channel, url) = start_chat(a, &user, PROMPT).await;
    let mut sse = SseReader::new(res);
    let mut text = String::new();
    let mut last = String::new();
    for _ in 0..3 {
        let frame = sse.next_event().await.expect("a token");
        assert_eq!(frame.kind(), "data");
        text.push_str(token(&frame));
        last = frame.id.clone().unwrap();
    }
    // The client goes: the reply goes on without it.
    drop(sse);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = b.get(&url, None, Some(&last)).await;
    assert_eq!(res.status(), 200, "resume on the other instance");
    let frames = SseReader::new(res).until_done().await;
    assert_increasing(&frames);
    for frame in &frames {
        text.push_str(token(frame));
    }
    let done = frames.last().unwrap();
    assert_eq!(done.data["success"], true);
    assert_eq!(text, demo_service::reply_tokens(PROMPT).concat());
}

async fn cancel_on_the_other_instance(a: &App, b: &App) {
    let user = unique("cancel");
    let long = "please tell me everything ".repeat(12);
    let (res, channel, _url) = start_chat(a, &user, &long).await;
    let mut sse = SseReader::new(res);
    for _ in 0..2 {
        assert_eq!(sse.next_event().await.expect("a token").kind(), "data");
    }
    // Someone else may not cancel it.
    let other = b
        .client
        .post(b.url(&format!("/streams/{channel}/cancel")))
        .header("X-User-Id", unique("mallory"))
        .send()
        .await
        .unwrap();
    assert_json_error(other, 403).await;
    let asked = std::time::Instant::now();
    let res = b
        .client
        .post(b.url(&format!("/streams/{channel}/cancel")))
        .header("X-User-Id", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "POST /streams/{{id}}/cancel");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "cancelling");
    let frames = sse.until_done().await;
    let took = asked.elapsed();
    let done = frames.last().unwrap();
    assert_eq!(done.data["success"], false);
    assert_eq!(done.data["cancelled"], true);
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    assert!(
        frames.iter().filter(|f| f.kind() == "data").count() < 20,
        "the reply stopped early"
    );
    // Once done, a cancel changes nothing: 409.
    let again = b
        .client
        .post(b.url(&format!("/streams/{channel}/cancel")))
        .header("X-User-Id", &user)
        .send()
        .await
        .unwrap();
    let body = assert_json_error(again, 409).await;
    assert_eq!(body["error"], "stream_finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_cut_on_one_instance_resumes_on_the_other_and_a_cancel_there_stops_it() {
    for (first, second) in [("axum-app", "actix-app"), ("actix-app", "axum-app")] {
        let (a, b) = two_instances(first, second);
        cut_and_resume(&a, &b).await;
        cancel_on_the_other_instance(&a, &b).await;
    }
}

/// The Node harness, with its packages installed (`npm ci`, once per test process).
fn node_dir() -> PathBuf {
    static READY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
            if !dir.join("node_modules/ai").exists() {
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .status()
                    .expect("npm is required (Node 18 or later)");
                assert!(status.success(), "npm ci in {}: {status:?}", dir.display());
            }
            dir
        })
        .clone()
}

/// Reads `url` with the `ai` package's own UI message stream reader: its JSON summary.
async fn read_with_ai_sdk(url: String, options: Value) -> Value {
    let dir = node_dir();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("read-ui-stream.mjs")
            .arg(&url)
            .arg(options.to_string())
            .current_dir(dir)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the ai package rejected the stream: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn chat_request(chat: &str, prompt: &str) -> Value {
    json!({
        "id": chat,
        "messages": [
            {"id": "m1", "role": "user", "parts": [{"type": "text", "text": prompt}]}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_reads_a_chat_and_resumes_it_on_the_other_instance() {
    let (a, b) = two_instances("axum-app", "actix-app");
    let user = unique("aisdk");
    let expected = demo_service::reply_tokens(PROMPT).concat();

    // POST /api/chat, read by the package.
    let chat = unique("chat");
    let read = read_with_ai_sdk(
        a.url("/api/chat"),
        json!({
            "method": "POST",
            "headers": {"x-user-id": user, "content-type": "application/json"},
            "body": chat_request(&chat, PROMPT),
        }),
    )
    .await;
    assert_eq!(read["status"], 200, "{read}");
    assert_eq!(read["header"], "v1", "{read}");
    assert_eq!(read["text"], expected, "{read}");
    assert_eq!(read["finished"], true, "{read}");

    // A second chat: its client goes after a moment; the package resumes it on B mid-answer.
    let chat = unique("chat");
    let res = a
        .client
        .post(a.url("/api/chat"))
        .header("X-User-Id", &user)
        .header("Content-Type", "application/json")
        .body(chat_request(&chat, PROMPT).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-vercel-ai-ui-message-stream"], "v1");
    let mut res = res;
    let first = res.chunk().await.unwrap().expect("a first part");
    assert!(std::str::from_utf8(&first).unwrap().starts_with("data: "), "{first:?}");
    drop(res);
    let resumed = read_with_ai_sdk(
        b.url(&format!("/api/chat/{chat}/stream")),
        json!({"headers": {"x-user-id": user}}),
    )
    .await;
    assert_eq!(resumed["status"], 200, "{resumed}");
    assert_eq!(
        resumed["text"], expected,
        "the whole reply, replayed then live: {resumed}"
    );
    assert_eq!(resumed["finished"], true, "{resumed}");

    // Finished: no active stream, 204 (on either instance).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = b.get(&format!("/api/chat/{chat}/stream"), Some(&user), None).await;
        if res.status() == 204 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {}", res.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An unknown chat is 204; a malformed id is 400; no identity is 401.
    let res = a
        .get(&format!("/api/chat/{}/stream", unique("nochat")), Some(&user), None)
        .await;
    assert_eq!(res.status(), 204);
    assert_json_error(a.get("/api/chat/bad%20id/stream", Some(&user), None).await, 400).await;
    assert_json_error(a.get(&format!("/api/chat/{chat}/stream"), None, None).await, 401).await;
}
