//! Shared test helpers: the servers (from REDIS_URL / REDIS_CLUSTER_NODES, which must be up: a
//! missing server fails the test), brokers with unique subscriber names, and CLIENT LIST access.

#![allow(dead_code, unreachable_pub)]

pub mod child;
pub mod mid_stream;
pub mod own;

use redis::aio::MultiplexedConnection;
use stream_core::ChannelConfig;
use stream_pubsub::{RedisBroker, RedisSource, redis};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

pub fn cluster_nodes() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_NODES")
        .unwrap_or_else(|_| "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A subscriber connection name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", stream_core::EventId::generate())
}

pub async fn standalone(config: ChannelConfig) -> RedisBroker {
    standalone_named(config, &unique_name("sp-test")).await
}

pub async fn standalone_named(config: ChannelConfig, name: &str) -> RedisBroker {
    let url = redis_url();
    RedisBroker::builder(url.as_str())
        .config(config)
        .client_name(name)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("standalone Redis at {url} is required: {e}"))
}

pub async fn cluster(config: ChannelConfig) -> RedisBroker {
    cluster_named(config, &unique_name("sp-test")).await
}

pub async fn cluster_named(config: ChannelConfig, name: &str) -> RedisBroker {
    let nodes = cluster_nodes();
    RedisBroker::builder(RedisSource::cluster(nodes.clone()))
        .config(config)
        .client_name(name)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("Redis Cluster at {nodes:?} is required: {e}"))
}

/// A plain connection to one server (or one cluster node), for admin commands.
pub async fn admin(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is required: {e}"))
}

/// A cluster connection, for key commands on the cluster.
pub async fn cluster_admin() -> redis::cluster_async::ClusterConnection {
    let nodes = cluster_nodes();
    redis::cluster::ClusterClient::new(nodes.clone())
        .expect("cluster urls")
        .get_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis Cluster at {nodes:?} is required: {e}"))
}

/// One `CLIENT LIST` line, as `key=value` fields.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    /// The client's address: this end's local address for a connection of this process.
    pub addr: String,
    pub name: String,
    pub flags: String,
    pub sub: u64,
    pub ssub: u64,
}

/// The value of `key` in one `CLIENT LIST` / `CLIENT INFO` line ("" when absent).
pub fn client_field(line: &str, key: &str) -> String {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
        .to_owned()
}

pub async fn client_list(url: &str) -> Vec<ClientInfo> {
    client_list_on(&mut admin(url).await).await
}

/// `CLIENT LIST` over a connection the caller keeps.
pub async fn client_list_on(conn: &mut MultiplexedConnection) -> Vec<ClientInfo> {
    let text: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .expect("CLIENT LIST");
    text.lines()
        .map(|line| {
            let field = |key: &str| client_field(line, key);
            ClientInfo {
                id: field("id").parse().expect("client id"),
                addr: field("addr"),
                name: field("name"),
                flags: field("flags"),
                sub: field("sub").parse().unwrap_or(0),
                ssub: field("ssub").parse().unwrap_or(0),
            }
        })
        .collect()
}

/// The connections named `name` on one server.
pub async fn named(url: &str, name: &str) -> Vec<ClientInfo> {
    client_list(url).await.into_iter().filter(|c| c.name == name).collect()
}

/// Kills one client by id; returns how many were killed.
pub async fn kill(url: &str, id: u64) -> u64 {
    kill_where(url, "ID", id).await
}

/// `CLIENT KILL TYPE pubsub`: kills every pub/sub client of the server, whoever opened it;
/// returns how many were killed.
pub async fn kill_type_pubsub(url: &str) -> u64 {
    kill_where(url, "TYPE", "pubsub").await
}

async fn kill_where(url: &str, filter: &str, value: impl redis::ToRedisArgs) -> u64 {
    let mut conn = admin(url).await;
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg(filter)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CLIENT KILL {filter} on {url}: {e}"))
}
