//! Shared helpers of the demo tests: spawn the built app and worker binaries, and read SSE.
//!
//! The binaries are found next to this test's executable (`target/<profile>/<name>`); the first
//! test that needs one runs `cargo build --bins -p axum-app -p actix-app -p worker` with the same
//! cargo, profile and target dir, so they are never stale.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The two apps under test.
pub const APPS: [&str; 2] = ["axum-app", "actix-app"];

/// Where the app keeps its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No `REDIS_URL`: everything in memory, the job in-process.
    Memory,
    /// `REDIS_URL` set: the job runs in a separate worker process.
    Redis,
    /// `REDIS_CLUSTER_NODES` set (the test cluster, [`cluster_nodes`]): the same on a Redis Cluster.
    RedisCluster,
}

impl Mode {
    /// Redis or Redis Cluster: the job runs in a worker process.
    pub fn is_redis(self) -> bool {
        matches!(self, Self::Redis | Self::RedisCluster)
    }
}

/// The test cluster's node URLs, comma-separated (`REDIS_CLUSTER_NODES`, as `scripts/redis.sh`
/// starts it).
pub fn cluster_nodes() -> String {
    std::env::var("REDIS_CLUSTER_NODES")
        .unwrap_or_else(|_| "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".into())
}

/// One app to test: which binary, which mode.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// `axum-app` or `actix-app`.
    pub app: &'static str,
    /// Memory or Redis.
    pub mode: Mode,
}

/// The shared secret the tests give the apps, so that they can sign their own tokens (at least
/// 32 bytes: the apps refuse a shorter one).
pub const TOKEN_SECRET: &str = "integration-test-secret-of-32-bytes-or-more";

pub fn opensearch_url() -> String {
    std::env::var("OPENSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9250".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

/// A name unique to this test process and call: for users and job queues.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The binaries the tests spawn.
pub const BINARIES: [&str; 3] = ["axum-app", "actix-app", "worker"];

/// Builds the demo binaries once per test process, with the cargo that runs the tests and the
/// same profile, so that the tests never run stale binaries. Cheap when they are up to date.
fn build_binaries_once() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&workspace).args(["build", "--bins"]);
        for name in BINARIES {
            cmd.args(["-p", name]);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the demo binaries failed: {status:?}");
    });
}

/// The path of a workspace binary built next to this test executable (built first if needed).
pub fn binary(name: &str) -> PathBuf {
    build_binaries_once();
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing after the build", path.display());
    path
}

/// A child process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Waits for the process to exit, for at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {limit:?}", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Spawns `name` with `env`, and waits (at most 30 s) for a stdout line starting with `ready`.
/// Returns the process and that line.
fn spawn(name: &str, env: &[(String, String)], remove: &[&str], ready: &str) -> (Proc, String) {
    let mut cmd = Command::new(binary(name));
    for var in remove {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .env(
            "RUST_LOG",
            std::env::var("DEMO_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut proc = Proc {
        child,
        name: name.to_owned(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            if line.starts_with(&ready) {
                let _ = tx.send(line);
                break;
            }
        }
        // Keep draining so that the child never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => (proc, line),
        Err(_) => {
            let status = proc.child.try_wait().unwrap();
            panic!("{name} did not become ready (exit status: {status:?}); is Redis running?");
        }
    }
}

/// A running app (and, in Redis mode, its worker).
pub struct App {
    pub base: String,
    pub target: Target,
    pub proc: Proc,
    pub worker: Option<Proc>,
    pub env: Vec<(String, String)>,
    pub client: reqwest::Client,
}

/// Settings of one app start; the defaults suit most tests.
#[derive(Debug, Clone)]
pub struct Settings {
    pub step_ms: u64,
    pub lease_limit: u64,
    pub ping_secs: u64,
    /// Start the worker (Redis mode) with the app.
    pub start_worker: bool,
    /// Archive to OpenSearch (`OPENSEARCH_URL`) under this index prefix.
    pub opensearch_prefix: Option<String>,
    /// More environment variables for the app and its worker.
    pub env: Vec<(String, String)>,
    /// The app's `REDIS_URL` in Redis mode (default [`redis_url`]): a fault-injection proxy's,
    /// say. The worker gets the same unless the test changes [`App::env`] before
    /// [`App::start_worker`].
    pub redis_url: Option<String>,
    /// Redis Cluster mode: the node URLs, comma-separated (default: [`cluster_nodes`]).
    pub cluster_nodes: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            step_ms: 60,
            lease_limit: 2,
            ping_secs: 1,
            start_worker: true,
            opensearch_prefix: None,
            env: Vec::new(),
            redis_url: None,
            cluster_nodes: None,
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        // A dropped response closes its connection: the server sees the disconnect.
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

impl App {
    pub fn start(target: Target) -> Self {
        Self::start_with(target, Settings::default())
    }

    pub fn start_with(target: Target, settings: Settings) -> Self {
        let mut env: Vec<(String, String)> = vec![
            ("HOST".into(), "127.0.0.1".into()),
            ("PORT".into(), "0".into()),
            ("DEMO_STEP_MS".into(), settings.step_ms.to_string()),
            ("STREAM_LEASE_LIMIT".into(), settings.lease_limit.to_string()),
            ("STREAM_PING_SECS".into(), settings.ping_secs.to_string()),
            ("STREAM_TOKEN_SECRET".into(), TOKEN_SECRET.into()),
        ];
        env.extend(settings.env.iter().cloned());
        let mut remove = vec!["OPENSEARCH_URL"];
        if let Some(prefix) = &settings.opensearch_prefix {
            env.push(("OPENSEARCH_URL".into(), opensearch_url()));
            env.push(("OPENSEARCH_INDEX_PREFIX".into(), prefix.clone()));
            env.push(("OPENSEARCH_INDEX_REPLICAS".into(), "0".into()));
            env.push(("OPENSEARCH_FLUSH_INTERVAL_MS".into(), "100".into()));
        }
        match target.mode {
            Mode::Memory => remove.extend(["REDIS_URL", "REDIS_CLUSTER_NODES"]),
            Mode::Redis | Mode::RedisCluster => {
                if target.mode == Mode::RedisCluster {
                    remove.push("REDIS_URL");
                    let nodes = settings.cluster_nodes.clone().unwrap_or_else(cluster_nodes);
                    env.push(("REDIS_CLUSTER_NODES".into(), nodes));
                } else {
                    remove.push("REDIS_CLUSTER_NODES");
                    env.push(("REDIS_URL".into(), settings.redis_url.clone().unwrap_or_else(redis_url)));
                }
                // A queue of its own, so that parallel tests never take each other's jobs (unless
                // the test gives one: instances that share a queue), and a worker name of its own.
                for (name, prefix) in [
                    ("DEMO_JOB_QUEUE", "demo-test-jobs"),
                    ("DEMO_WORKER_ID", "demo-test-worker"),
                ] {
                    if !settings.env.iter().any(|(n, _)| n == name) {
                        env.push((name.into(), unique(prefix)));
                    }
                }
            }
        }
        let (proc, line) = spawn(target.app, &env, &remove, "listening on ");
        let base = line.trim_start_matches("listening on ").trim().to_owned();
        let mut app = Self {
            base,
            target,
            proc,
            worker: None,
            env,
            client: client(),
        };
        if target.mode.is_redis() && settings.start_worker {
            app.start_worker();
        }
        app
    }

    /// Starts the worker process on this app's queue (Redis mode).
    pub fn start_worker(&mut self) {
        assert!(self.target.mode.is_redis());
        // The worker writes to no event store (the app archives), so it gets no OpenSearch
        // settings: the archive tests show that nothing depends on it for the archive.
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(name, _)| !name.starts_with("OPENSEARCH_"))
            .cloned()
            .collect();
        // The variable of the other Redis mode is left out too, as for the app.
        let other = if self.target.mode == Mode::RedisCluster {
            "REDIS_URL"
        } else {
            "REDIS_CLUSTER_NODES"
        };
        let (worker, _) = spawn("worker", &env, &["OPENSEARCH_URL", other], "worker ready");
        self.worker = Some(worker);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /deployments` as `user`: returns `(channel_id, stream_url)`.
    pub async fn deploy(&self, user: &str) -> (String, String) {
        let res = self
            .client
            .post(self.url("/deployments"))
            .header("X-User-Id", user)
            .header("Content-Type", "application/json")
            .body(r#"{"project":"shop","environment":"staging","service":"api"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "POST /deployments");
        let body: Value = res.json().await.unwrap();
        let channel = body["channel_id"].as_str().expect("channel_id").to_owned();
        let url = body["stream_url"].as_str().expect("stream_url").to_owned();
        (channel, url)
    }

    /// `GET path` with optional `X-User-Id` and `Last-Event-ID` headers.
    pub async fn get(&self, path: &str, user: Option<&str>, last_event_id: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(user) = user {
            req = req.header("X-User-Id", user);
        }
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        req.send().await.unwrap()
    }
}

/// One SSE frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The `id:` field.
    pub id: Option<String>,
    /// The JSON of the `data:` lines.
    pub data: Value,
}

impl Frame {
    pub fn kind(&self) -> &str {
        self.data["type"].as_str().unwrap_or("")
    }
}

/// Reads SSE frames from a response body.
pub struct SseReader {
    res: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(res: reqwest::Response) -> Self {
        Self {
            res,
            buf: String::new(),
        }
    }

    /// The next frame, `None` when the body ends. Fails after `limit` without one.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Frame> {
        match self.try_next_within(limit).await {
            Ok(frame) => frame,
            Err(e) => panic!("{e}"),
        }
    }

    /// The next frame, `None` when the body ends cleanly; an error when no frame comes within
    /// `limit`, when the body fails, or when it ends mid-frame: for a client that reconnects
    /// then.
    pub async fn try_next_within(&mut self, limit: Duration) -> Result<Option<Frame>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = Vec::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // a retry: line or a comment
                }
                let data = serde_json::from_str(&data.join("\n")).expect("data is JSON");
                return Ok(Some(Frame { id, data }));
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .map_err(|_| format!("no SSE frame within {limit:?}; so far: {:?}", self.buf))?
                .map_err(|e| format!("the body failed: {e}"))?;
            match chunk {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None if self.buf.trim().is_empty() => return Ok(None),
                None => return Err(format!("the body ended mid-frame: {:?}", self.buf)),
            }
        }
    }

    /// The next frame that is not a ping.
    pub async fn next_event(&mut self) -> Option<Frame> {
        loop {
            let frame = self.next_within(Duration::from_secs(10)).await?;
            if frame.kind() != "ping" {
                return Some(frame);
            }
        }
    }

    /// Every event (pings left out) up to and including `done`; then checks that the body ends.
    pub async fn until_done(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next_event().await.expect("the stream ended before done");
            let done = frame.kind() == "done";
            frames.push(frame);
            if done {
                break;
            }
        }
        assert!(
            self.next_within(Duration::from_secs(5)).await.is_none(),
            "the stream did not close after done"
        );
        frames
    }
}

/// Asserts the three SSE headers.
pub fn assert_sse_headers(res: &reqwest::Response) {
    let h = res.headers();
    assert_eq!(h["content-type"], "text/event-stream", "{h:?}");
    assert_eq!(h["cache-control"], "no-cache", "{h:?}");
    assert_eq!(h["x-accel-buffering"], "no", "{h:?}");
}

/// Asserts a JSON error answer with this status; returns the body.
pub async fn assert_json_error(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status, "{:?}", res.headers());
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
    // Every error carries a request id, which the log line of a backend failure carries too.
    assert!(body["request_id"].as_str().is_some_and(|id| id.len() == 26), "{body}");
    body
}

/// The deploy job's event types, in order.
pub const JOB_TYPES: [&str; 11] = [
    "log",
    "progress",
    "log",
    "progress",
    "log",
    "progress",
    "log",
    "deploy_start",
    "deploy_success",
    "deploy_success",
    "done",
];

/// Asserts a whole deploy job: the types in order, the progress steps, `done` with success, ids
/// strictly increasing and equal to the JSON ids.
pub fn assert_job(frames: &[Frame], channel: &str) {
    let kinds: Vec<&str> = frames.iter().map(Frame::kind).collect();
    assert_eq!(kinds, JOB_TYPES);
    let progress: Vec<(i64, &str)> = frames
        .iter()
        .filter(|f| f.kind() == "progress")
        .map(|f| (f.data["percent"].as_i64().unwrap(), f.data["step"].as_str().unwrap()))
        .collect();
    assert_eq!(progress, [(10, "building"), (40, "pushing"), (70, "deploying")]);
    let done = frames.last().unwrap();
    assert_eq!(done.data["success"], true);
    assert_eq!(frames.iter().filter(|f| f.kind() == "deploy_success").count(), 2);
    assert_increasing(frames);
    for f in frames {
        assert_eq!(f.data["channel_id"], channel);
    }
}

/// Asserts that every frame has an `id:` equal to its JSON id, strictly increasing.
pub fn assert_increasing(frames: &[Frame]) {
    let ids: Vec<&str> = frames
        .iter()
        .map(|f| {
            let id = f.id.as_deref().expect("every event frame has an id");
            assert_eq!(f.data["id"], id);
            id
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing: {ids:?}");
}
