//! The demo page in headless Chromium (Debian's `chromium`, installed by the test script): it
//! loads `/`, starts a deployment through `EventSource`, and must show the progress bar at 100%
//! and the done state; its chat box must stream the fake LLM's tokens through `fetch`.
//!
//! Fails when `/usr/bin/chromium` (or `$CHROMIUM`) is missing.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{App, Mode, Settings, Target, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (`apt-get install -y chromium`)",
        path.display()
    );
    path
}

/// Loads `url` in a fresh headless Chromium and returns the DOM after a virtual time budget of
/// 300,000 ms: about 150 of the status line's 2 s polls, 1.3 s of real time on the test machine
/// (see the chat test for how the budget is spent).
fn dump_dom(url: &str) -> String {
    dump_dom_with_budget(url, 300_000)
}

fn dump_dom_with_budget(url: &str, budget_ms: u64) -> String {
    let profile = std::env::temp_dir().join(unique("chromium-profile"));
    std::fs::create_dir_all(&profile).unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        // Virtual time runs the page's timers ahead while network requests (the SSE stream) are
        // waited for; the DOM is dumped when the budget is spent.
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(status.success(), "chromium failed: {status:?}");
    dom
}

/// The opening tag of the element with this id.
fn tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in {dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The text of the element with this id (up to its closing tag).
fn text<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = tag(dom, id);
    let start = dom.find(open).unwrap() + open.len();
    let end = start + dom[start..].find("</").unwrap();
    &dom[start..end]
}

fn page_shows_a_finished_deployment(target: Target) {
    let app = App::start_with(
        target,
        Settings {
            step_ms: 100,
            ..Settings::default()
        },
    );
    let user = unique("browser");
    let dom = dump_dom(&app.url(&format!("/?autostart=1&autochat=1&user={user}")));

    let progress = tag(&dom, "progress");
    assert!(progress.contains("value=\"100\""), "{progress}");
    assert!(progress.contains("aria-valuenow=\"100\""), "{progress}");
    assert_eq!(text(&dom, "percent"), "100%");
    let status = text(&dom, "status");
    assert!(
        status.contains("done") && status.contains("success"),
        "status: {status}"
    );
    let log = text(&dom, "log");
    for expected in [
        "Starting deployment",
        "progress 10% building",
        "progress 70% deploying",
        "✔ api-2",
        "done: success",
    ] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
    let reply = text(&dom, "reply");
    assert!(reply.starts_with("You asked:"), "chat reply: {reply:?}");
    assert_eq!(text(&dom, "chat-status"), "done");
    assert_eq!(text(&dom, "user"), user);
    // The status line reads GET /metrics: by now the deployment's and the chat's events went out.
    let server = text(&dom, "server");
    let delivered: u64 = server
        .rsplit(", ")
        .next()
        .and_then(|d| d.strip_suffix(" delivered"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("status line: {server:?}"));
    assert!(
        server.contains("open streams") && server.contains("events/s") && delivered >= 11,
        "status line: {server:?}"
    );
}

#[test]
fn axum_app_page_in_chromium() {
    page_shows_a_finished_deployment(Target {
        app: "axum-app",
        mode: Mode::Memory,
    });
}

#[test]
fn actix_app_page_in_chromium() {
    page_shows_a_finished_deployment(Target {
        app: "actix-app",
        mode: Mode::Memory,
    });
}

#[test]
fn axum_app_page_in_chromium_redis_mode() {
    page_shows_a_finished_deployment(Target {
        app: "axum-app",
        mode: Mode::Redis,
    });
}

#[test]
fn actix_app_page_in_chromium_redis_cluster_mode() {
    page_shows_a_finished_deployment(Target {
        app: "actix-app",
        mode: Mode::RedisCluster,
    });
}

/// A deployment that finished before the page opened it, on a channel that keeps only its last
/// three events: the page shows the gap notice, then the kept events and the done state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_a_gap_notice() {
    let app = App::start_with(
        Target {
            app: "axum-app",
            mode: Mode::Memory,
        },
        Settings {
            step_ms: 1,
            env: vec![("STREAM_HISTORY_MAX_LEN".into(), "3".into())],
            ..Settings::default()
        },
    );
    let user = unique("browser-gap");
    let (channel, stream_url) = app.deploy(&user).await;
    // Wait for the whole job: 11 events, of which the history keeps the last 3.
    let res = app.get(&format!("/streams/{channel}"), Some(&user), None).await;
    support::SseReader::new(res).until_done().await;
    let page = app.url(&format!("/?user={user}&watch={}", encode(&stream_url)));
    let dom = tokio::task::spawn_blocking(move || dump_dom(&page)).await.unwrap();
    let notice = tag(&dom, "gap");
    assert!(notice.contains("display: block"), "the notice is visible: {notice}");
    let text_of_notice = text(&dom, "gap");
    assert!(text_of_notice.contains("8 events"), "notice: {text_of_notice}");
    let status = text(&dom, "status");
    assert!(
        status.contains("done") && status.contains("success"),
        "status: {status}"
    );
}

/// The page's chat survives a reload: it reloads itself once after a few tokens
/// (`?reloadafter=3`), shows the text it had and resumes after its last id from
/// `sessionStorage`; the final text is the reply made without a reload. Then Stop
/// (`?stopafter=3`) ends a chat with `done` `cancelled`: the status says "stopped" and the text is
/// short of the reply. Redis mode, so the reply's generation runs apart from the page's requests.
#[test]
fn the_page_resumes_a_chat_after_a_reload_and_stop_ends_one() {
    let app = App::start_with(
        Target {
            app: "actix-app",
            mode: Mode::Redis,
        },
        Settings {
            // 25 ms per token (a quarter step): a reload after 3 tokens lands mid-answer, and the
            // whole reply (about 0.7 s) fits well in the virtual time budget below.
            step_ms: 100,
            lease_limit: 5,
            ..Settings::default()
        },
    );
    let full = demo_service::reply_tokens("What does this demo do?").concat();

    // Virtual time does not wait for a streaming body: it runs on from one page timer to the next
    // (the status line's 2 s `/metrics` poll), waiting only for each poll's request. So a budget
    // buys about budget / 2 s polls of real time: 1,200,000 ms is about 600 polls, 5 s on the
    // test machine, against about 0.7 s for the reply (120,000 ms, about 0.6 s, was too close).
    let user = unique("browser-reload");
    let dom = dump_dom_with_budget(&app.url(&format!("/?autochat=1&reloadafter=3&user={user}")), 1_200_000);
    assert_eq!(
        text(&dom, "reply"),
        full,
        "the reply after a reload; status {:?}",
        text(&dom, "chat-status")
    );
    assert_eq!(text(&dom, "chat-status"), "done");
    assert!(
        tag(&dom, "reply").contains("data-resumed=\"after-reload\""),
        "the page did reload mid-answer: {}",
        tag(&dom, "reply")
    );

    let user = unique("browser-stop");
    let dom = dump_dom_with_budget(&app.url(&format!("/?autochat=1&stopafter=3&user={user}")), 1_200_000);
    assert_eq!(text(&dom, "chat-status"), "stopped");
    let reply = text(&dom, "reply");
    assert!(
        !reply.is_empty() && reply.len() < full.len() && full.starts_with(reply),
        "a stopped reply is a beginning of the reply: {reply:?}"
    );
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A TCP proxy in front of the app that cuts the first SSE stream after its third event, as a
/// network drop would, and records whether a later stream request carried `Last-Event-ID`.
struct DroppingProxy {
    addr: std::net::SocketAddr,
    cuts: Arc<AtomicUsize>,
    resumed_with_last_event_id: Arc<AtomicBool>,
}

async fn dropping_proxy(upstream: std::net::SocketAddr) -> DroppingProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = DroppingProxy {
        addr: listener.local_addr().unwrap(),
        cuts: Arc::new(AtomicUsize::new(0)),
        resumed_with_last_event_id: Arc::new(AtomicBool::new(false)),
    };
    let (cuts, resumed) = (proxy.cuts.clone(), proxy.resumed_with_last_event_id.clone());
    let first_stream = Arc::new(AtomicBool::new(true));
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let (cuts, resumed, first_stream) = (cuts.clone(), resumed.clone(), first_stream.clone());
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = inbound.into_split();
                let (mut app_read, mut app_write) = outbound.into_split();
                // The browser may send several requests on one connection: look at every byte.
                let upstream_copy = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if String::from_utf8_lossy(&buf[..n])
                            .to_lowercase()
                            .contains("\r\nlast-event-id:")
                        {
                            resumed.store(true, Ordering::SeqCst);
                        }
                        if app_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = vec![0u8; 16 * 1024];
                let mut cut_this = false;
                let mut ids = 0;
                loop {
                    let n = match app_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let chunk = &buf[..n];
                    if !cut_this
                        && String::from_utf8_lossy(chunk)
                            .to_lowercase()
                            .contains("content-type: text/event-stream")
                    {
                        // The first event stream through the proxy is the one to cut.
                        cut_this = first_stream.swap(false, Ordering::SeqCst);
                    }
                    if cut_this {
                        ids += chunk.windows(4).filter(|w| w == b"id: ").count();
                        if ids >= 3 {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                }
                // Both sockets close here: the browser sees the stream break mid-body.
                upstream_copy.abort();
            });
        }
    });
    proxy
}

/// The page survives a network drop mid-job: `EventSource` reconnects with `Last-Event-ID`, the
/// server resumes after it, and the log shows every event exactly once.
async fn page_resumes_after_a_network_drop(target: Target) {
    let app = App::start_with(
        target,
        Settings {
            step_ms: 250,
            ..Settings::default()
        },
    );
    let upstream = app.base.trim_start_matches("http://").parse().unwrap();
    let proxy = dropping_proxy(upstream).await;
    let url = format!("http://{}/?autostart=1&user={}", proxy.addr, unique("drop"));
    let dom = tokio::task::spawn_blocking(move || dump_dom_with_budget(&url, 60_000))
        .await
        .unwrap();
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the stream was never cut");
    assert!(
        proxy.resumed_with_last_event_id.load(Ordering::SeqCst),
        "the browser did not reconnect with Last-Event-ID"
    );
    let status = text(&dom, "status");
    assert!(
        status.contains("done") && status.contains("success"),
        "status: {status}"
    );
    assert!(tag(&dom, "progress").contains("value=\"100\""));
    let log = text(&dom, "log");
    for line in [
        "Starting deployment",
        "progress 10% building",
        "Building image",
        "progress 40% pushing",
        "progress 70% deploying",
        "deploying to",
        "✔ api-1",
        "✔ api-2",
        "done: success",
    ] {
        assert_eq!(log.matches(line).count(), 1, "{line:?} not exactly once in:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_app_page_resumes_after_a_network_drop() {
    page_resumes_after_a_network_drop(Target {
        app: "axum-app",
        mode: Mode::Memory,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_app_page_resumes_after_a_network_drop() {
    page_resumes_after_a_network_drop(Target {
        app: "actix-app",
        mode: Mode::Memory,
    })
    .await;
}
