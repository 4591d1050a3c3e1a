//! The benchmark harness in smoke mode: a few seconds of load against the bench server, in memory
//! and on Redis (`REDIS_URL`, which `scripts/test.sh` sets; a missing Redis fails the test). It
//! checks that the harness works: nothing lost, repeated or reordered, valid JSON records, a
//! report whose charts render. It never asserts a timing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use stream_bench::load::{self, LoadConfig, Target};
use stream_bench::procstat::NamedPids;
use stream_bench::record::{Measurement, Record, read_records, write_records};
use stream_bench::report::{self, ReportMeta};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running bench server, killed on drop.
struct Server {
    child: Child,
    url: String,
}

async fn start_server(args: &[&str], redis_url: Option<&str>) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bench-server"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER_NODES")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = redis_url {
        command.env("REDIS_URL", url);
    }
    let mut child = command.spawn().expect("start bench-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("bench-server announces itself within 60 s")
        .expect("read bench-server's stdout")
        .unwrap_or_else(|| panic!("bench-server {args:?} exited before listening (is Redis up?)"));
    let url = line
        .strip_prefix("bench-server listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected announcement {line:?}"))
        .to_owned();
    // Keep reading stdout so that the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, url }
}

fn redis_port(url: &str) -> u16 {
    url.trim_start_matches("redis://")
        .split(['/', '@'])
        .find(|part| part.contains(':'))
        .and_then(|host_port| host_port.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(6379)
}

/// A short fan-out run: `subscribers` on one channel, one publisher (see the note below).
async fn smoke_run(server: &Server, name: &str, subscribers: usize, redis: Option<u16>) -> Record {
    let pid = server.child.id().expect("server is running");
    let config = LoadConfig {
        base_url: server.url.clone(),
        target: Target::Stream,
        subscribers,
        channels: 1,
        // One publishing worker: concurrent publishers to one channel can today make the
        // subscription drop an event whose id was generated before a newer one that arrived
        // first; the full benchmark measures that, the smoke test checks the harness.
        publishers: 1,
        rate: 200.0,
        duration: Duration::from_millis(1500),
        drain: Duration::from_secs(10),
        pids: vec![NamedPids {
            name: "server".into(),
            pids: vec![pid],
        }],
        redis_port: redis,
        ..LoadConfig::default()
    };
    let result = load::run(config).await.expect("load run");
    assert_eq!(
        result.subscribed, subscribers,
        "{name}: subscriptions open: {:?}",
        result.errors
    );
    assert_eq!(result.publish_errors, 0, "{name}: {:?}", result.errors);
    assert!(result.published > 0, "{name}: nothing published");
    assert_eq!(result.expected, result.published * subscribers as u64, "{name}");
    assert_eq!(result.lost, 0, "{name}: lost deliveries: {result:?}");
    assert_eq!(result.received, result.expected, "{name}: {result:?}");
    assert_eq!((result.duplicates, result.out_of_order), (0, 0), "{name}: {result:?}");
    assert_eq!(result.subscription_errors, 0, "{name}: {:?}", result.errors);
    assert_eq!(
        result.latency.count, result.received,
        "{name}: every delivery has a latency"
    );
    assert!(result.cpu.contains_key("server") && result.cpu.contains_key("load-client"));
    if redis.is_some() {
        assert!(
            result.redis_connections.get("server").is_some_and(|&n| n > 0),
            "{name}: the Redis-backed server's Redis connections are counted: {:?}",
            result.redis_connections
        );
    }
    Record {
        scenario: format!("fanout-{subscribers}-fixed"),
        server: name.to_owned(),
        run: 1,
        measurement: Measurement::Load(Box::new(result)),
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stream-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_smoke_memory_and_redis() {
    let redis_url = std::env::var("REDIS_URL")
        .expect("REDIS_URL must name a running Redis (scripts/test.sh sets redis://127.0.0.1:6399/)");
    let mut records = Vec::new();

    let memory = start_server(&["--memory"], None).await;
    records.push(smoke_run(&memory, "stream-axum-memory", 10, None).await);
    drop(memory);

    let actix = start_server(&["--memory", "--actix"], None).await;
    records.push(smoke_run(&actix, "stream-actix-memory", 10, None).await);
    drop(actix);

    let on_redis = start_server(&[], Some(&redis_url)).await;
    let port = redis_port(&redis_url);
    records.push(smoke_run(&on_redis, report::PROJECT, 10, Some(port)).await);
    records.push(smoke_run(&on_redis, report::PROJECT, 20, Some(port)).await);
    drop(on_redis);

    // The records are valid JSON and read back unchanged.
    let dir = scratch_dir();
    let results = dir.join("results");
    write_records(&results.join("smoke.json"), &records).expect("write records");
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("smoke.json")).unwrap()).expect("valid JSON");
    assert_eq!(raw.as_array().map(Vec::len), Some(records.len()));
    // (Floats may differ in their last bit after a round trip; compare what identifies a run.)
    let key = |r: &Record| {
        let Measurement::Load(l) = &r.measurement else {
            panic!("a load record")
        };
        (
            r.scenario.clone(),
            r.server.clone(),
            r.run,
            l.published,
            l.received,
            l.lost,
        )
    };
    let read_back = read_records(&results).expect("read records");
    assert_eq!(
        read_back.iter().map(key).collect::<Vec<_>>(),
        records.iter().map(key).collect::<Vec<_>>()
    );

    // The report and its charts render.
    let markdown = dir.join("benchmarks.md");
    let charts = report::write_report(
        &records,
        &ReportMeta {
            facts: vec![("mode".into(), "smoke".into())],
            notes: vec!["smoke run".into()],
        },
        &markdown,
        &dir.join("charts"),
        "charts",
    )
    .expect("write report");
    let text = std::fs::read_to_string(&markdown).expect("report written");
    assert!(text.starts_with("# Benchmarks"));
    assert!(text.contains("fanout-20-fixed"));
    assert!(!charts.is_empty(), "the fan-out charts are drawn");
    for chart in &charts {
        let svg = std::fs::read_to_string(chart).expect("chart written");
        assert!(
            svg.contains("<svg") && svg.contains("</svg>"),
            "{chart:?} is an SVG document"
        );
        assert!(svg.contains("stream-axum"), "{chart:?} has the project's series");
        assert!(text.contains(chart.file_name().unwrap().to_str().unwrap()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
