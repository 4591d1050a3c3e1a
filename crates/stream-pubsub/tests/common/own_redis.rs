//! Redis servers of a test's own, to kill and restart: one standalone server, or a 3-node
//! cluster. Each runs Debian's `redis-server` (as `scripts/redis.sh` installs it) on free ports,
//! with its data in a directory of its own, so that killing it touches no other test.
//!
//! Shared by `stream-pubsub`'s restart tests and the integration tests (included with `#[path]`).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that nothing listens on now (the cluster bus needs `port + 10000` free too).
fn free_port(with_bus: bool) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if !with_bus {
            return port;
        }
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A fresh data directory for a server on `port`.
fn data_dir(kind: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stream-own-redis-{kind}-{port}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("a data directory");
    dir
}

/// Starts `redis-server` on `port` with its data in `dir` and waits for it to accept connections.
/// With `persist`, `appendonly yes` and `appendfsync everysec`: a restart loads the append-only
/// file. `extra` are more `--option value` arguments.
fn spawn_server(port: u16, dir: &Path, persist: bool, extra: &[&str]) -> Child {
    let appendonly = if persist { "yes" } else { "no" };
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", appendonly, "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server is required (scripts/redis.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server on port {port} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `redis-cli -p <port> <args>`'s output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli is required (scripts/redis.sh installs it)");
    assert!(out.status.success(), "redis-cli -p {port} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One standalone Redis server of the test's own, killed with SIGKILL on drop.
pub struct OwnRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory.
    pub dir: PathBuf,
    /// Whether it runs with the append-only file.
    pub persist: bool,
    /// The server process.
    pub child: Child,
}

impl OwnRedis {
    /// With persistence on (`appendonly yes`, `appendfsync everysec`) or off.
    pub fn start(persist: bool) -> Self {
        let port = free_port(false);
        let dir = data_dir("standalone", port);
        let child = spawn_server(port, &dir, persist, &[]);
        Self {
            port,
            dir,
            persist,
            child,
        }
    }

    /// A server on `port` with its data in `dir`: on a restart, it loads its append-only file.
    pub fn spawn(port: u16, dir: &Path, persist: bool) -> Child {
        spawn_server(port, dir, persist, &[])
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: no shutdown, no final fsync.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL redis-server");
        self.child.wait().expect("redis-server exits");
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port, &self.dir, self.persist);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-primary Redis Cluster of the test's own (no replicas), with persistence on, killed on
/// drop.
pub struct OwnCluster {
    /// The nodes' ports on 127.0.0.1.
    pub ports: Vec<u16>,
    dirs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
}

impl OwnCluster {
    /// Three nodes with `appendonly yes`, joined with `redis-cli --cluster create`; returns once
    /// every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let ports: Vec<u16> = (0..3).map(|_| free_port(true)).collect();
        let dirs: Vec<PathBuf> = ports.iter().map(|&p| data_dir("cluster", p)).collect();
        let mut cluster = Self {
            children: vec![None, None, None],
            ports,
            dirs,
        };
        for node in 0..3 {
            cluster.restart(node);
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(out.success(), "redis-cli --cluster create: {out:?}");
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.ports.iter().all(|&p| {
                Command::new("redis-cli")
                    .arg("-p")
                    .arg(p.to_string())
                    .args(["cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node URLs, for `RedisSource::cluster`.
    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    /// The index of the node that serves the slot of `hash_tag` (a channel id is its keys' tag).
    pub fn node_of(&self, hash_tag: &str) -> usize {
        let slot: u16 = redis_cli(self.ports[0], &["cluster", "keyslot", hash_tag])
            .trim()
            .parse()
            .expect("a slot number");
        let nodes = redis_cli(self.ports[0], &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("host:port@bus");
                return self.ports.iter().position(|&p| p == port).expect("one of ours");
            }
        }
        panic!("no node serves slot {slot}: {nodes}");
    }

    /// SIGKILLs node `node`.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            child.kill().expect("SIGKILL redis-server");
            child.wait().expect("redis-server exits");
        }
    }

    /// Starts node `node` (again): it reloads its `nodes.conf` and append-only file.
    pub fn restart(&mut self, node: usize) {
        let conf = self.dirs[node].join("nodes.conf");
        let conf = conf.to_str().expect("a UTF-8 path");
        let child = spawn_server(
            self.ports[node],
            &self.dirs[node],
            true,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf,
                "--cluster-node-timeout",
                "5000",
            ],
        );
        self.children[node] = Some(child);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
