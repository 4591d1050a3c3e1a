//! Redis servers of a test's own, to kill and restart: one standalone server, or a cluster of 3
//! primaries (with or without one replica each, for failovers). Each runs Debian's `redis-server` (as `scripts/redis.sh` installs it) on free ports,
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

/// `redis-cli -p <port> <args>`'s output, or `None` when it fails (a node that is down).
fn try_redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli is required (scripts/redis.sh installs it)");
    (out.status.success() && !out.stdout.starts_with(b"Could not connect"))
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
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

/// A Redis Cluster of the test's own: 3 primaries, with no replicas ([`start`](Self::start)) or
/// one each ([`start_with_replicas`](Self::start_with_replicas)), with persistence on, killed on
/// drop. Nodes are known by their index in [`ports`](Self::ports); after a failover a replica's
/// index serves the slots.
pub struct OwnCluster {
    /// The nodes' ports on 127.0.0.1: the 3 primaries first, then their replicas (if any).
    pub ports: Vec<u16>,
    dirs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
    /// `cluster-node-timeout`, in ms: how long a primary may be unreachable before its replica
    /// takes over.
    node_timeout_ms: u64,
}

/// The `name:value` field `name` of `INFO`/`CLUSTER INFO` output.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':'))
}

impl OwnCluster {
    /// Three nodes with `appendonly yes`, joined with `redis-cli --cluster create`; returns once
    /// every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        Self::create(0, 5000)
    }

    /// Three primaries with one replica each (nodes 3, 4, 5 replicate 0, 1, 2, in some order:
    /// see [`replica_of`](Self::replica_of)), `appendonly yes`, `cluster-node-timeout` 2000 ms so
    /// that a killed primary's replica takes over within a few seconds. Returns once every node
    /// reports `cluster_state:ok` and sees every replica, and every replica's link to its primary
    /// is up (the initial sync done).
    pub fn start_with_replicas() -> Self {
        Self::create(1, 2000)
    }

    fn create(replicas: usize, node_timeout_ms: u64) -> Self {
        let count = 3 * (1 + replicas);
        let ports: Vec<u16> = (0..count).map(|_| free_port(true)).collect();
        let dirs: Vec<PathBuf> = ports.iter().map(|&p| data_dir("cluster", p)).collect();
        let mut cluster = Self {
            children: (0..count).map(|_| None).collect(),
            ports,
            dirs,
            node_timeout_ms,
        };
        for node in 0..count {
            cluster.restart(node);
        }
        // redis-cli makes the first three nodes listed the primaries, the rest their replicas.
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(out.success(), "redis-cli --cluster create: {out:?}");
        cluster.wait_ok(Duration::from_secs(20));
        if replicas > 0 {
            // Generous: on a loaded 2-core machine the syncs and the gossip of the roles are slow.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !cluster.replicas_ready(3 * replicas) {
                assert!(Instant::now() < deadline, "the replicas did not get in sync");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// Whether every running node sees `replicas` replicas, and each running replica's link to
    /// its primary is up.
    fn replicas_ready(&self, replicas: usize) -> bool {
        self.running().all(|node| {
            let port = self.ports[node];
            let Some(nodes) = try_redis_cli(port, &["cluster", "nodes"]) else {
                return false;
            };
            let seen = nodes
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(2)
                        .is_some_and(|f| f.split(',').any(|f| f == "slave"))
                })
                .count();
            let info = try_redis_cli(port, &["info", "replication"]).unwrap_or_default();
            seen == replicas
                && (info_field(&info, "role") != Some("slave") || info_field(&info, "master_link_status") == Some("up"))
        })
    }

    /// The indexes of the nodes that run (not killed).
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.ports.len()).filter(|&n| self.children[n].is_some())
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.running().all(|node| {
                try_redis_cli(self.ports[node], &["cluster", "info"])
                    .is_some_and(|info| info_field(&info, "cluster_state") == Some("ok"))
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

    /// A running node's port, to ask about the cluster.
    fn any_port(&self) -> u16 {
        let node = self.running().next().expect("a running node");
        self.ports[node]
    }

    /// The index of the node at `address` (a `CLUSTER NODES` `host:port@bus` field).
    fn index_of_address(&self, address: &str) -> usize {
        let port: u16 = address
            .split(['@', ':'])
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("host:port@bus");
        self.ports.iter().position(|&p| p == port).expect("one of ours")
    }

    /// The index of the (primary) node that serves the slot of `hash_tag` (a channel id is its
    /// keys' tag), as a running node sees it.
    pub fn node_of(&self, hash_tag: &str) -> usize {
        let port = self.any_port();
        let slot: u16 = redis_cli(port, &["cluster", "keyslot", hash_tag])
            .trim()
            .parse()
            .expect("a slot number");
        let nodes = redis_cli(port, &["cluster", "nodes"]);
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
                return self.index_of_address(fields[1]);
            }
        }
        panic!("no node serves slot {slot}: {nodes}");
    }

    /// The same as [`node_of`](Self::node_of): the primary that serves `hash_tag`'s slot.
    pub fn primary_of(&self, hash_tag: &str) -> usize {
        self.node_of(hash_tag)
    }

    /// The index of a replica of node `primary`, as a running node sees it.
    pub fn replica_of(&self, primary: usize) -> usize {
        let id = self.node_id(primary);
        let nodes = redis_cli(self.any_port(), &["cluster", "nodes"]);
        nodes
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2].split(',').any(|flag| flag == "slave") && f[3] == id)
            .map(|f| self.index_of_address(f[1]))
            .unwrap_or_else(|| panic!("node {primary} has no replica: {nodes}"))
    }

    /// Node `node`'s cluster id (`CLUSTER MYID`).
    pub fn node_id(&self, node: usize) -> String {
        redis_cli(self.ports[node], &["cluster", "myid"]).trim().to_owned()
    }

    /// Whether node `node` is a primary that serves slots, as every running node sees it, and
    /// every running node reports `cluster_state:ok`.
    pub fn is_serving_primary(&self, node: usize) -> bool {
        let Some(id) = try_redis_cli(self.ports[node], &["cluster", "myid"]) else {
            return false;
        };
        let id = id.trim();
        self.running().all(|other| {
            let port = self.ports[other];
            let ok = try_redis_cli(port, &["cluster", "info"])
                .is_some_and(|info| info_field(&info, "cluster_state") == Some("ok"));
            ok && try_redis_cli(port, &["cluster", "nodes"]).is_some_and(|nodes| {
                nodes.lines().any(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    f.len() > 8 && f[0] == id && f[2].split(',').any(|flag| flag == "master")
                })
            })
        })
    }

    /// Waits until node `node` is a primary serving slots in every running node's view, with the
    /// cluster ok; returns how long that took.
    pub fn wait_primary(&self, node: usize, limit: Duration) -> Duration {
        let started = Instant::now();
        while !self.is_serving_primary(node) {
            assert!(
                started.elapsed() < limit,
                "node {node} did not become a serving primary within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    /// `CLUSTER FAILOVER` on `replica` (a coordinated handover: the primary stops taking writes
    /// until the replica has caught up, then the replica takes its slots); waits until `replica`
    /// is the serving primary and the cluster is ok. Returns the time from the command to then.
    pub fn cluster_failover(&self, replica: usize) -> Duration {
        let started = Instant::now();
        let reply = redis_cli(self.ports[replica], &["cluster", "failover"]);
        assert_eq!(reply.trim(), "OK", "CLUSTER FAILOVER on node {replica}");
        self.wait_primary(replica, Duration::from_secs(30));
        started.elapsed()
    }

    /// SIGKILLs primary `primary` and waits until `replica` has been promoted (after
    /// `cluster-node-timeout`, the other primaries mark it failed and elect the replica). Returns
    /// the time from the kill to the promotion seen by every running node.
    pub fn kill_and_wait_promotion(&mut self, primary: usize, replica: usize) -> Duration {
        let started = Instant::now();
        self.kill(primary);
        let limit = Duration::from_millis(self.node_timeout_ms * 10).max(Duration::from_secs(30));
        self.wait_primary(replica, limit);
        started.elapsed()
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
                &self.node_timeout_ms.to_string(),
                // A replica's first sync starts at once (the default waits 5 s for more replicas).
                "--repl-diskless-sync-delay",
                "0",
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
