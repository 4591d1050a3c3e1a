//! `stream-cli` as a process, against the real services: Redis at `REDIS_URL` (default
//! `redis://127.0.0.1:6399/`), the Redis Cluster at `REDIS_CLUSTER_NODES` (default ports
//! 7101-7103) and OpenSearch at `OPENSEARCH_URL` (default `http://127.0.0.1:9250`). A missing
//! service fails the tests that need it; nothing is skipped. Every test uses channels, users and
//! index prefixes of its own.
//!
//! The events, leases and archived documents are made with the library (the worker's deploy job
//! on the Redis broker, the lease limiter, the OpenSearch store); the CLI runs with a cleared
//! environment plus the variables each test gives it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use stream_core::{
    ChannelId, Event, EventId, EventPublisher, EventStore, EventSubscriber, EventType, StreamContext,
    StreamLeaseConfig, Subscription, UserId,
};
use stream_lease::StreamLeaseLimiter;
use stream_pubsub::{RedisBroker, RedisSource};
use stream_store_opensearch::opensearch::http::Method;
use stream_store_opensearch::opensearch::http::headers::HeaderMap;
use stream_store_opensearch::{OpenSearchConfig, OpenSearchEventStore};
use tokio::runtime::Runtime;

/// How long any one step may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

fn cluster_nodes() -> String {
    std::env::var("REDIS_CLUSTER_NODES")
        .unwrap_or_else(|_| "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".into())
}

fn opensearch_url() -> String {
    std::env::var("OPENSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9250".into())
}

/// A name no other test or run uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", EventId::generate())
}

fn channel(prefix: &str) -> ChannelId {
    ChannelId::new(unique(prefix)).unwrap()
}

/// The runtime the library's clients run on while the test thread waits for the process.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The Redis broker at `REDIS_URL`, as the apps connect it.
fn broker(rt: &Runtime) -> RedisBroker {
    let url = redis_url();
    rt.block_on(
        RedisBroker::builder(url.as_str())
            .client_name(unique("cli-test"))
            .connect(),
    )
    .unwrap_or_else(|e| panic!("Redis must run at {url}: {e}"))
}

/// `stream-cli` with a cleared environment: only `REDIS_URL` and `OPENSEARCH_URL` (the standalone
/// Redis, the test node), so that no variable of the test's own environment (a
/// `REDIS_CLUSTER_NODES`, say) picks another backend.
fn cli(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stream-cli"));
    command
        .args(args)
        .env_clear()
        .env("REDIS_URL", redis_url())
        .env("OPENSEARCH_URL", opensearch_url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A finished run.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
}

impl Finished {
    /// The stdout lines as JSON.
    fn json(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}")))
            .collect()
    }

    #[track_caller]
    fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "expected success: {self:#?}");
        self
    }

    /// Asserts the exit status and that stderr names every one of `needles`.
    #[track_caller]
    fn assert_fails(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.status.code(), Some(code), "{self:#?}");
        for needle in needles {
            assert!(self.stderr.contains(needle), "stderr lacks {needle:?}: {self:#?}");
        }
    }
}

/// A running `stream-cli`: its stdout lines as they come, its stderr collected.
struct Running {
    child: Child,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("the stream-cli binary runs");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr holds `needle` (the CLI says it is following the channel).
    fn wait_for_stderr(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader take the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                panic!("stream-cli exited ({status}) before {needle:?}: {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "no {needle:?} on stderr: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next stdout line.
    fn next_line(&mut self) -> String {
        match self.stdout.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!("no output line within {WAIT:?}; stderr: {}", self.stderr())
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("stdout closed; stderr: {}", self.stderr())
            }
        }
    }

    /// The next stdout line, as JSON.
    fn next_json(&mut self) -> Value {
        let line = self.next_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Waits for the process to exit by itself; the rest of its stdout.
    fn finish(mut self) -> Finished {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("stream-cli did not exit within {WAIT:?}; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            stdout.push(line);
        }
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().unwrap();
        }
        Finished {
            status,
            stdout,
            stderr: self.stderr(),
        }
    }

    /// Stops it as Ctrl-C in a terminal would (SIGINT), then waits for it.
    fn interrupt(self) -> Finished {
        // The shell's own `kill`: no procps needed.
        let kill = format!("kill -INT {}", self.child.id());
        let sent = Command::new("sh").args(["-c", &kill]).status().unwrap();
        assert!(sent.success());
        self.finish()
    }
}

/// Runs `command` to its end.
fn run(command: Command) -> Finished {
    Running::start(command).finish()
}

fn payload(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

/// Publishes `kind` with `value` as its payload; the id the broker gave it.
fn publish(rt: &Runtime, broker: &RedisBroker, channel: &ChannelId, kind: &str, value: Value) -> EventId {
    let event = Event::new(channel.clone(), kind.parse().unwrap(), payload(value)).unwrap();
    rt.block_on(broker.publish(&event)).unwrap()
}

/// Every event of a subscription up to its end (`done`).
fn collect(rt: &Runtime, mut sub: Subscription) -> Vec<Event> {
    rt.block_on(async {
        tokio::time::timeout(WAIT, async {
            let mut events = Vec::new();
            while let Some(event) = sub.next_shared().await {
                events.push(event.unwrap().event().clone());
            }
            events
        })
        .await
        .expect("the subscription ended")
    })
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn tail_prints_what_the_workers_deploy_job_emits_live_until_done() {
    let rt = runtime();
    let broker = broker(&rt);
    let channel = channel("cli-tail-job");
    // Already in the history when the tail starts: a live tail does not show these.
    publish(&rt, &broker, &channel, "log", json!({"message": "before the tail"}));
    publish(&rt, &broker, &channel, "log", json!({"message": "also before"}));
    let mut tail = Running::start(cli(&["--json", "tail", channel.as_str()]));
    tail.wait_for_stderr("following channel");
    assert!(
        tail.stderr().contains("2 earlier event(s) not shown"),
        "{}",
        tail.stderr()
    );

    // What the library sees of the job, for comparison.
    let sub = rt.block_on(broker.subscribe(&channel, None)).unwrap();
    let publisher: Arc<dyn EventPublisher> = Arc::new(broker);
    let emitter = StreamContext::builder()
        .channel_id(channel.clone())
        .project("demo")
        .build()
        .bind(publisher);
    let job = rt.spawn(async move {
        worker::run_deploy_job(&emitter, &worker::DeployRequest::default(), Duration::from_millis(5)).await
    });
    let seen = collect(&rt, sub);
    rt.block_on(job).unwrap().unwrap();

    let finished = tail.finish();
    finished.assert_success();
    let lines = finished.json();
    assert_eq!(
        ids(&lines),
        seen[2..].iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
        "the tail printed the job's events, in order: {lines:#?}"
    );
    assert!(
        lines[0]["message"].as_str().unwrap().contains("Starting deployment"),
        "{lines:#?}"
    );
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    for kind in ["log", "progress", "deploy_start", "deploy_success"] {
        assert!(types.contains(&kind), "{kind} missing: {types:?}");
    }
    assert_eq!(types.last(), Some(&"done"), "it ends on done: {types:?}");
    assert_eq!(lines.last().unwrap()["success"], true);
    assert_eq!(lines[0]["channel_id"], channel.as_str());
}

#[test]
fn tail_from_start_replays_the_history_then_follows_live() {
    let rt = runtime();
    let broker = broker(&rt);
    let channel = channel("cli-tail-start");
    let first = publish(&rt, &broker, &channel, "log", json!({"message": "one"}));
    let second = publish(&rt, &broker, &channel, "progress", json!({"percent": 50}));
    let mut tail = Running::start(cli(&["--json", "tail", channel.as_str(), "--from-start"]));
    tail.wait_for_stderr("following channel");
    let replayed = [tail.next_json(), tail.next_json()];
    assert_eq!(ids(&replayed), [first.to_string(), second.to_string()]);
    assert_eq!(replayed[0]["message"], "one");
    assert_eq!(replayed[1]["percent"], 50);

    let live = publish(&rt, &broker, &channel, "log", json!({"message": "three"}));
    assert_eq!(tail.next_json()["id"], live.to_string());
    let done = publish(&rt, &broker, &channel, "done", json!({"success": true}));
    let finished = tail.finish();
    finished.assert_success();
    assert_eq!(ids(&finished.json()), [done.to_string()], "done, and nothing after it");
}

#[test]
fn tail_last_event_id_resumes_after_that_event() {
    let rt = runtime();
    let broker = broker(&rt);
    let channel = channel("cli-tail-resume");
    let first = publish(&rt, &broker, &channel, "log", json!({"message": "seen already"}));
    let second = publish(&rt, &broker, &channel, "log", json!({"message": "missed while away"}));
    // The table, this time.
    let mut tail = Running::start(cli(&["tail", channel.as_str(), "--last-event-id", &first.to_string()]));
    tail.wait_for_stderr(&format!("after {first}"));
    let header = tail.next_line();
    assert!(header.starts_with("TIME") && header.contains("TYPE"), "{header:?}");
    let row = tail.next_line();
    assert!(
        row.contains(&second.to_string()) && row.contains("log") && row.contains("missed while away"),
        "{row:?}"
    );
    let done = publish(
        &rt,
        &broker,
        &channel,
        "done",
        json!({"success": false, "error": "stopped"}),
    );
    let finished = tail.finish();
    finished.assert_success();
    assert_eq!(finished.stdout.len(), 1, "{finished:#?}");
    assert!(finished.stdout[0].contains(&done.to_string()) && finished.stdout[0].contains("done"));
    assert!(!finished.stdout[0].contains("seen already"));

    // At or after the channel's done there is nothing to follow.
    let after_done = run(cli(&["tail", channel.as_str(), "--last-event-id", &done.to_string()]));
    after_done.assert_success();
    assert!(after_done.stdout.is_empty(), "{after_done:#?}");
    assert!(after_done.stderr.contains("ended"), "{after_done:#?}");
}

#[test]
fn a_live_tail_of_an_ended_channel_prints_its_done_and_exits() {
    let rt = runtime();
    let broker = broker(&rt);
    let channel = channel("cli-tail-ended");
    publish(&rt, &broker, &channel, "log", json!({"message": "work"}));
    let done = publish(&rt, &broker, &channel, "done", json!({"success": true}));
    let finished = run(cli(&["--json", "tail", channel.as_str()]));
    finished.assert_success();
    assert_eq!(ids(&finished.json()), [done.to_string()]);
    assert!(finished.stderr.contains("already ended"), "{finished:#?}");
}

#[test]
fn ctrl_c_stops_a_tail_cleanly() {
    let rt = runtime();
    let broker = broker(&rt);
    let channel = channel("cli-tail-sigint");
    let mut tail = Running::start(cli(&["--json", "tail", channel.as_str()]));
    tail.wait_for_stderr("following channel");
    let id = publish(&rt, &broker, &channel, "log", json!({"message": "live"}));
    assert_eq!(tail.next_json()["id"], id.to_string());
    let finished = tail.interrupt();
    finished.assert_success();
    assert!(finished.stderr.contains("stopped"), "{finished:#?}");
}

#[test]
fn leases_shows_a_held_lease_and_release_frees_it() {
    let rt = runtime();
    let url = redis_url();
    let config = StreamLeaseConfig {
        ttl_seconds: 120,
        ..StreamLeaseConfig::default()
    };
    let limiter = rt
        .block_on(StreamLeaseLimiter::connect(url.as_str(), config))
        .unwrap_or_else(|e| panic!("Redis must run at {url}: {e}"));
    let user = UserId::new(unique("cli-user")).unwrap();
    let lease = rt.block_on(limiter.acquire_stream_lease(&user)).unwrap().unwrap();

    let listed = run(cli(&["--json", "leases", user.as_str()]));
    listed.assert_success();
    let lines = listed.json();
    assert_eq!(lines.len(), 1, "{listed:#?}");
    assert_eq!(lines[0]["lease_id"], lease.as_str());
    assert_eq!(lines[0]["user_id"], user.as_str());
    let left = lines[0]["expires_in_ms"].as_i64().unwrap();
    assert!(
        (100_000..=121_000).contains(&left),
        "expires in about two minutes: {left}"
    );
    assert!(lines[0]["expires_at"].as_str().unwrap().ends_with('Z'));

    let mut table = cli(&["leases", user.as_str()]);
    table.env("STREAM_LEASE_LIMIT", "7");
    let table = run(table);
    table.assert_success();
    assert!(table.stdout[0].starts_with("LEASE ID"), "{table:#?}");
    assert!(table.stdout[1].starts_with(lease.as_str()), "{table:#?}");
    assert!(table.stdout[2].contains("holds 1 of 7"), "{table:#?}");

    let released = run(cli(&["leases", "--release", user.as_str(), lease.as_str()]));
    released.assert_success();
    assert!(
        released.stdout[0].contains(&format!("released lease {lease}")),
        "{released:#?}"
    );
    assert!(
        rt.block_on(limiter.get_all_leases(&user)).unwrap().is_empty(),
        "the lease is gone"
    );
    let empty = run(cli(&["--json", "leases", user.as_str()]));
    empty.assert_success();
    assert!(empty.stdout.is_empty(), "{empty:#?}");

    // A lease the user does not hold (any more) is an error, not a silent success.
    run(cli(&["leases", "--release", user.as_str(), lease.as_str()])).assert_fails(1, &["holds no lease"]);
}

/// Deletes the test's indices and template.
fn drop_indices(rt: &Runtime, store: &OpenSearchEventStore, prefix: &str) {
    rt.block_on(async {
        for path in [format!("/{prefix}-*"), format!("/_index_template/{prefix}")] {
            let _ = store
                .client()
                .send::<Vec<u8>, ()>(Method::Delete, &path, HeaderMap::new(), None, None, None)
                .await;
        }
    });
}

#[test]
fn events_finds_a_stored_event_by_text_type_and_time() {
    let rt = runtime();
    let url = opensearch_url();
    let prefix = unique("stream-cli-test").to_lowercase();
    let mut config = OpenSearchConfig::new(url.as_str());
    config.index_prefix = prefix.clone();
    config.number_of_replicas = 0;
    config.flush_interval = Duration::from_millis(50);
    let store = rt
        .block_on(OpenSearchEventStore::connect(config))
        .unwrap_or_else(|e| panic!("OpenSearch must run at {url}: {e}"));
    let other = channel("cli-events-other");
    let channel = channel("cli-events");
    let word = format!("needle{}", EventId::generate().to_string().to_lowercase());
    let event = |channel: &ChannelId, kind: &str, message: &str| {
        Event::new(
            channel.clone(),
            kind.parse().unwrap(),
            payload(json!({"message": message})),
        )
        .unwrap()
    };
    let wanted = event(&channel, "log", &format!("found the {word} here"));
    let error = event(&channel, "error", &format!("an error with the {word}"));
    for e in [
        &wanted,
        &error,
        &event(&channel, "log", "nothing to see"),
        &event(&other, "log", &format!("another channel's {word}")),
    ] {
        store.append(e).unwrap();
    }
    rt.block_on(store.flush()).unwrap();

    let query = |args: &[&str]| {
        let mut command = cli(&[&["--json", "events", channel.as_str()][..], args].concat());
        command.env("OPENSEARCH_INDEX_PREFIX", &prefix);
        let finished = run(command);
        finished.assert_success();
        finished.json()
    };
    let by_text = query(&["--text", &word]);
    assert_eq!(
        ids(&by_text),
        [wanted.id.to_string(), error.id.to_string()],
        "both events of the channel with the word, oldest first"
    );
    assert_eq!(by_text[0]["message"], wanted.message().unwrap());
    assert_eq!(by_text[0]["channel_id"], channel.as_str());
    assert_eq!(
        ids(&query(&["--text", &word, "--types", "error,done"])),
        [error.id.to_string()]
    );
    assert_eq!(query(&[]).len(), 3, "every event of the channel");
    assert_eq!(query(&["--since", "1h", "--text", &word]).len(), 2);
    assert!(query(&["--since", "2200-01-01T00:00:00Z"]).is_empty());
    // Past what a date_nanos field holds (2262): OpenSearch refuses the query, and says so.
    let mut too_late = cli(&["events", channel.as_str(), "--since", "2999-01-01T00:00:00Z"]);
    too_late.env("OPENSEARCH_INDEX_PREFIX", &prefix);
    run(too_late).assert_fails(2, &["refused the query"]);
    assert_eq!(query(&["--limit", "1"]).len(), 1);

    // The table.
    let mut command = cli(&["events", channel.as_str(), "--text", &word, "--types", "log"]);
    command.env("OPENSEARCH_INDEX_PREFIX", &prefix);
    let table = run(command);
    table.assert_success();
    assert_eq!(table.stdout.len(), 2, "{table:#?}");
    assert!(table.stdout[0].starts_with("TIME"));
    assert!(
        table.stdout[1].contains(&wanted.id.to_string()) && table.stdout[1].contains(&format!("found the {word} here"))
    );

    // The CLI left the template the store installed alone (no replica for the single test node),
    // though its environment does not say OPENSEARCH_INDEX_REPLICAS=0: it installs none.
    let template: Value = rt.block_on(async {
        let response = store
            .client()
            .send::<Vec<u8>, ()>(
                Method::Get,
                &format!("/_index_template/{prefix}"),
                HeaderMap::new(),
                None,
                None,
                None,
            )
            .await
            .unwrap();
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    });
    assert_eq!(
        template["index_templates"][0]["index_template"]["template"]["settings"]["index"]["number_of_replicas"],
        "0"
    );
    drop_indices(&rt, &store, &prefix);
}

#[test]
fn publish_reaches_a_subscriber_and_the_history() {
    let rt = runtime();
    let broker = broker(&rt);
    let channel = channel("cli-publish");
    let sub = rt.block_on(broker.subscribe(&channel, None)).unwrap();

    let published = run(cli(&[
        "--json",
        "publish",
        channel.as_str(),
        "log",
        r#"{"message":"from the cli","level":"info","n":[1,2]}"#,
    ]));
    published.assert_success();
    let answer = &published.json()[0];
    assert_eq!(answer["type"], "log");
    assert_eq!(answer["channel_id"], channel.as_str());
    let id: EventId = answer["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.sequence(), Some(1), "the broker gave it the channel's first id");

    let done = run(cli(&["publish", channel.as_str(), "done", r#"{"success":true}"#]));
    done.assert_success();
    assert!(done.stdout[0].starts_with("published done "), "{done:#?}");

    let live = collect(&rt, sub);
    assert_eq!(live.len(), 2, "{live:#?}");
    assert_eq!(live[0].id, id);
    assert_eq!(live[0].message(), Some("from the cli"));
    assert_eq!(live[0].payload["n"], json!([1, 2]));
    assert_eq!(live[1].kind, EventType::Done);
    let history = collect(&rt, rt.block_on(broker.subscribe(&channel, None)).unwrap());
    assert_eq!(history, live, "the history holds what was delivered live");
}

#[test]
fn publish_and_tail_work_on_the_redis_cluster() {
    let rt = runtime();
    let nodes = cluster_nodes();
    let cluster = rt
        .block_on(
            RedisBroker::builder(RedisSource::cluster(nodes.split(',').map(str::trim)))
                .client_name(unique("cli-test"))
                .connect(),
        )
        .unwrap_or_else(|e| panic!("the Redis Cluster must run at {nodes}: {e}"));
    let channel = channel("cli-cluster");
    let on_cluster = |args: &[&str]| {
        let mut command = cli(args);
        command.env("REDIS_CLUSTER_NODES", &nodes).env_remove("REDIS_URL");
        command
    };
    let first = publish(&rt, &cluster, &channel, "log", json!({"message": "on the cluster"}));
    let mut tail = Running::start(on_cluster(&["--json", "tail", channel.as_str(), "--from-start"]));
    tail.wait_for_stderr("following channel");
    assert_eq!(tail.next_json()["id"], first.to_string());
    run(on_cluster(&[
        "publish",
        channel.as_str(),
        "done",
        r#"{"success":true}"#,
    ]))
    .assert_success();
    let finished = tail.finish();
    finished.assert_success();
    let lines = finished.json();
    assert_eq!(lines.len(), 1, "{finished:#?}");
    assert_eq!(lines[0]["type"], "done");
    let id: EventId = lines[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.sequence(), Some(2), "published on the same channel's sequence");
}

#[test]
fn bad_input_fails_clearly_before_connecting() {
    // None of these needs a service: the input is refused first (exit status 2).
    let fails = |args: &[&str], needles: &[&str]| run(cli(args)).assert_fails(2, needles);
    fails(
        &["publish", "bad:channel", "log", "{}"],
        &["<CHANNEL>", "channel id contains ':'"],
    );
    fails(&["publish", "c1", "log", "{not json"], &["<JSON>", "not valid JSON"]);
    fails(
        &["publish", "c1", "log", "[1,2]"],
        &["must be a JSON object", "not an array"],
    );
    fails(&["publish", "c1", "log", r#"{"type":"x"}"#], &["\"type\" is reserved"]);
    fails(&["publish", "c1", "ping", "{}"], &["control event type"]);
    fails(&["publish", "c1", "Not A Type", "{}"], &["invalid event type"]);
    fails(&["tail", "c1", "--last-event-id", "42"], &["--last-event-id", "ULID"]);
    fails(
        &[
            "tail",
            "c1",
            "--from-start",
            "--last-event-id",
            &EventId::generate().to_string(),
        ],
        &["cannot be used with"],
    );
    fails(&["leases", "--release", "alice"], &["<LEASE_ID>"]);
    fails(&["leases", "bad user"], &["user id contains ' '"]);
    fails(&["events", "c1", "--since", "yesterday"], &["RFC 3339", "15m"]);
    fails(&["events", "c1", "--types", "log,BAD"], &["invalid event type"]);
    fails(&["frobnicate"], &["unrecognized subcommand"]);

    // Settings: named, before any connection.
    let mut no_redis = cli(&["publish", "c1", "log", "{}"]);
    no_redis.env_remove("REDIS_URL");
    run(no_redis).assert_fails(2, &["REDIS_URL"]);
    let mut bad_history = cli(&["publish", "c1", "log", "{}"]);
    bad_history.env("STREAM_HISTORY_MAX_LEN", "0");
    run(bad_history).assert_fails(2, &["STREAM_HISTORY_MAX_LEN"]);
    let mut no_archive = cli(&["events", "c1"]);
    no_archive.env_remove("OPENSEARCH_URL");
    run(no_archive).assert_fails(2, &["OPENSEARCH_URL is not set"]);
    let mut bad_prefix = cli(&["events", "c1"]);
    bad_prefix.env("OPENSEARCH_INDEX_PREFIX", "Bad Prefix");
    run(bad_prefix).assert_fails(2, &["OPENSEARCH_INDEX_PREFIX"]);

    // A service that is not there: exit status 1, naming it.
    let mut nowhere = cli(&["publish", "c1", "log", "{}"]);
    nowhere.env("REDIS_URL", "redis://127.0.0.1:1/");
    run(nowhere).assert_fails(1, &["Redis", "127.0.0.1:1"]);
    let mut nowhere = cli(&["leases", "alice"]);
    nowhere.env("REDIS_URL", "redis://127.0.0.1:1/");
    run(nowhere).assert_fails(1, &["Redis", "127.0.0.1:1"]);
    let mut nowhere = cli(&["events", "c1"]);
    nowhere.env("OPENSEARCH_URL", "http://127.0.0.1:1");
    run(nowhere).assert_fails(1, &["OpenSearch", "127.0.0.1:1"]);
}
