//! The short soak (issue 14): 2,000 concurrent SSE streams, each on its own channel and held by
//! its own user, against one `axum-app` in Redis mode, with one event per stream every 5 s for
//! 60 s, published through Redis (`stream_bench::soak`, the harness of `just soak`). Asserts:
//!
//! - nothing is lost: every stream gets exactly its channel's events, in order, no duplicate;
//! - the app's RSS grows by less than 10 % between the 20 s and 60 s marks;
//! - the app's open fds return to their baseline (±10) after every client closed.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6399/`): without it the test fails.
//! It takes about 80 s. The figures are printed (`--nocapture`).

use std::time::Duration;

use stream_bench::procstat;
use stream_bench::soak::{self, SoakConfig};

mod support;

use support::{App, Mode, Settings, Target};

const STREAMS: usize = 2_000;

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_streams_for_a_minute_lose_nothing_and_leak_nothing() {
    // One socket per stream in this process and one in the app (which inherits this limit),
    // plus room for everything else.
    let want = u64::try_from(STREAMS).unwrap() + 1024;
    if let Err(e) = procstat::raise_fd_limit(want) {
        panic!("the soak test needs {want} open files: {e}");
    }
    let app = App::start_with(
        Target {
            app: "axum-app",
            mode: Mode::Redis,
        },
        Settings {
            // The defaults of a real deployment: a ping every 15 s and 5 streams per user (the
            // soak uses one user per stream).
            ping_secs: 15,
            lease_limit: 5,
            // The harness publishes; no deploy job runs.
            start_worker: false,
            ..Settings::default()
        },
    );
    let config = SoakConfig {
        base_url: app.base.clone(),
        redis_url: support::redis_url(),
        streams: STREAMS,
        period: Duration::from_secs(5),
        duration: Duration::from_secs(60),
        samples: vec![Duration::from_secs(20), Duration::from_secs(60)],
        app_pid: Some(app.proc.child.id()),
        prefix: support::unique("soak"),
        ..SoakConfig::default()
    };
    let report = soak::run(config).await.expect("the soak runs");
    println!("{}", report.to_text());

    let failures = report.delivery_failures();
    assert!(failures.is_empty(), "events were lost: {}", failures.join("; "));
    assert_eq!(report.published, STREAMS as u64 * 12, "12 events per stream");
    assert_eq!(report.delivered, report.expected);

    let rss = |label: &str| {
        report
            .sample(label)
            .and_then(|s| s.rss_bytes)
            .unwrap_or_else(|| panic!("no RSS at {label}"))
    };
    let (at_20, at_60) = (rss("20 s"), rss("60 s"));
    let growth = at_60 as f64 / at_20 as f64 - 1.0;
    assert!(
        growth < 0.10,
        "the app's RSS grew by {:.1} % between 20 s ({at_20} B) and 60 s ({at_60} B)",
        growth * 100.0
    );

    let fds = |label: &str| report.sample(label).and_then(|s| s.open_fds).unwrap();
    assert!(
        report.fds_returned() == Some(true),
        "the app's fds did not return to the baseline (±{}): {} before the streams, {} with them open, {} after they closed",
        report.fd_tolerance,
        fds("baseline"),
        fds("open"),
        fds("closed")
    );
    assert!(
        fds("open") >= fds("baseline") + STREAMS,
        "the fds count the streams' sockets"
    );
}
