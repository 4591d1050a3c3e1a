//! Every connection this test process has open to one Redis server, whoever opened it: the
//! process's TCP sockets (from `/proc`, Linux) matched to the server's `CLIENT LIST` by address.
//! Connections of other processes on the same server are left out, so the count is exact even
//! while other test binaries or services use that server.
//!
//! Every test of a binary runs in this one process: a binary that counts connections to a server
//! must not use that server from another test at the same time.

use std::collections::HashSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use stream_pubsub::redis;

use super::{ClientInfo, admin, client_field, client_list_on};

/// A connection of the test's own to one server, kept open to look at the others.
pub struct Inspector {
    conn: MultiplexedConnection,
    /// This connection's client id, left out of [`Inspector::own`].
    id: u64,
    /// This connection's local address.
    addr: SocketAddr,
    /// The server's address, as this connection reached it.
    server: SocketAddr,
}

/// This process's connections to the server, but the inspector's.
#[derive(Debug)]
pub struct Own {
    /// As the server's `CLIENT LIST` shows them.
    pub clients: Vec<ClientInfo>,
    /// The process's sockets to the server: more than `clients` while one is being opened or
    /// closed.
    pub sockets: usize,
    /// Whether the inspector's own socket was among them, as it must be: a check of the reading.
    pub inspector_seen: bool,
}

impl Inspector {
    pub async fn connect(url: &str) -> Self {
        let mut conn = admin(url).await;
        let info: String = redis::cmd("CLIENT")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .expect("CLIENT INFO");
        let addr = |key| {
            client_field(&info, key)
                .parse()
                .unwrap_or_else(|e| panic!("CLIENT INFO {key}: {e} in {info:?}"))
        };
        Self {
            id: client_field(&info, "id").parse().expect("client id"),
            addr: addr("addr"),
            server: addr("laddr"),
            conn,
        }
    }

    /// This process's connections to the server, but this one.
    pub async fn own(&mut self) -> Own {
        let sockets = process_sockets_to(self.server);
        let clients = client_list_on(&mut self.conn)
            .await
            .into_iter()
            .filter(|c| c.id != self.id && c.addr.parse().is_ok_and(|a| sockets.contains(&a)))
            .collect();
        Own {
            clients,
            sockets: sockets.len().saturating_sub(1),
            inspector_seen: sockets.contains(&self.addr),
        }
    }

    /// Waits (10 s at most: a connection closing takes a moment) until `ok` holds for this
    /// process's connections to the server, which are then returned. Fails with the last look
    /// when it does not.
    pub async fn wait_own(&mut self, what: &str, ok: impl Fn(&[ClientInfo]) -> bool) -> Vec<ClientInfo> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let own = self.own().await;
            if own.inspector_seen && own.sockets == own.clients.len() && ok(&own.clients) {
                return own.clients;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "this process's connections to {} (the inspector at {}): want {what}, have {own:#?}",
                self.server,
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The local addresses of this process's TCP sockets connected to `server`. The kernel writes
/// /proc/net/tcp a page per read, and a socket can be missed while others come and go between
/// two reads: the tables are read until two readings agree.
fn process_sockets_to(server: SocketAddr) -> HashSet<SocketAddr> {
    let mut last = read_process_sockets_to(server);
    for _ in 0..100 {
        let next = read_process_sockets_to(server);
        if next == last {
            return next;
        }
        last = next;
    }
    panic!("this process's sockets to {server} never read the same twice");
}

fn read_process_sockets_to(server: SocketAddr) -> HashSet<SocketAddr> {
    let inodes: HashSet<u64> = fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    let mut found = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        // tcp6 is missing where IPv6 is off.
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields[9].parse().expect("socket inode");
            if inodes.contains(&inode) && proc_addr(fields[2]) == server {
                found.insert(proc_addr(fields[1]));
            }
        }
    }
    found
}

/// An address of /proc/net/tcp{,6}: the IP as native-endian 32-bit words in hex, `:`, the port
/// in hex. IPv4-mapped IPv6 addresses come back as IPv4.
fn proc_addr(text: &str) -> SocketAddr {
    let (ip, port) = text.split_once(':').expect("ip:port");
    let bytes: Vec<u8> = (0..ip.len())
        .step_by(8)
        .flat_map(|i| u32::from_str_radix(&ip[i..i + 8], 16).expect("hex word").to_ne_bytes())
        .collect();
    let ip = match <[u8; 4]>::try_from(bytes.as_slice()) {
        Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        Err(_) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes"))).to_canonical(),
    };
    SocketAddr::new(ip, u16::from_str_radix(port, 16).expect("hex port"))
}
