//! The demo page in headless Chromium (Debian's `chromium`, installed by the test script): it
//! loads `/`, starts a deployment through `EventSource`, and must show the progress bar at 100%
//! and the done state; its chat box must stream the fake LLM's tokens through `fetch`.
//!
//! Fails when `/usr/bin/chromium` (or `$CHROMIUM`) is missing.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{App, Mode, Settings, Target, unique};

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (`apt-get install -y chromium`)",
        path.display()
    );
    path
}

/// Loads `url` in a fresh headless Chromium and returns the DOM once the page has settled.
fn dump_dom(url: &str) -> String {
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
            // Virtual time runs the page's timers ahead while network requests (the SSE stream)
            // are waited for; the DOM is dumped when the budget is spent.
            "--virtual-time-budget=30000",
        ])
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
