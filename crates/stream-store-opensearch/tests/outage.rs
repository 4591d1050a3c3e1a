//! Outages. One test stops a real node mid-run and starts it again: a second node of its own
//! (`scripts/opensearch.sh` with `OPENSEARCH_INSTANCE=restart`, on ports 9252/9352), so that the
//! node the other tests share stays up. The others put a TCP proxy inside the test between the
//! store and the shared node. The proxy's modes:
//! - forwards to the node (up);
//! - refuses connections, as a stopped node does: it closes its listening socket and every open
//!   connection, so a connect gets ECONNREFUSED; later it listens on the same port again;
//! - black-holes: accepts connections, reads requests, never answers (a hung node or a partition);
//! - answers 503 (the writer retries), or 403 (the writer drops without retrying).
//!
//! Not covered: a connection cut while a `_bulk` request is in flight (each outage starts with the
//! writer idle, so that the counters can be checked exactly).

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stream_core::conformance::unique_channel;
use stream_core::memory::MemoryBroker;
use stream_core::{
    AppendError, ChannelId, Event, EventPage, EventPublisher, EventQuery, EventStore, PersistingPublisher, StoreError,
    StoreStats,
};
use stream_store_opensearch::opensearch::http::Url;
use stream_store_opensearch::{OpenSearchConfig, OpenSearchEventStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    Up = 0,
    BlackHole = 1,
    Unavailable = 2,
    Forbidden = 3,
    /// Nothing listens on the proxy's port: connects are refused, as a stopped node's are.
    Refused = 4,
}

struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    /// Bound to `addr` for the proxy's whole life, never listening. While the listener is closed,
    /// a connect to `addr` is refused (RST) as if nothing were bound there, and no other socket
    /// (a `bind` to port 0, or a client's own ephemeral port) can take the port meanwhile.
    _hold: TcpSocket,
    mode: Arc<AtomicU8>,
    /// The connection tasks; the lock also orders a mode switch with the accept loop.
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Requests answered with an error status.
    answered: Arc<AtomicU64>,
    /// The accept loop, which owns the listener; `None` while connects are refused.
    accept: Mutex<Option<JoinHandle<()>>>,
}

/// A socket on `addr` that may share the port with the proxy's other sockets.
fn reusable(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("proxy socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind the proxy port");
    socket
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let hold = reusable("127.0.0.1:0".parse().unwrap());
        let proxy = Self {
            addr: hold.local_addr().unwrap(),
            target,
            _hold: hold,
            mode: Arc::new(AtomicU8::new(Mode::Up as u8)),
            conns: Arc::default(),
            answered: Arc::new(AtomicU64::new(0)),
            accept: Mutex::new(None),
        };
        proxy.listen();
        proxy
    }

    /// Listens on `addr` (again) and starts the accept loop.
    fn listen(&self) {
        let listener = reusable(self.addr).listen(1024).expect("listen on the proxy port");
        let (mode, conns, answered, target) = (
            self.mode.clone(),
            self.conns.clone(),
            self.answered.clone(),
            self.target,
        );
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let answered = answered.clone();
                let mut conns = conns.lock().unwrap();
                let task = match mode.load(Ordering::SeqCst) {
                    0 => tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }),
                    1 => tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        while matches!(inbound.read(&mut buf).await, Ok(n) if n > 0) {}
                    }),
                    m => tokio::spawn(async move {
                        let status = if m == 2 {
                            "503 Service Unavailable"
                        } else {
                            "403 Forbidden"
                        };
                        if answer(&mut inbound, status).await {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                    }),
                };
                conns.push(task);
            }
        });
        *self.accept.lock().unwrap() = Some(accept);
    }

    /// Switches the mode and cuts every open connection (pooled keep-alive ones included). For
    /// [`Mode::Refused`] it first closes the listener; leaving it listens on the same port again.
    /// When this returns, no connection of the old mode is left.
    async fn set(&self, mode: Mode) {
        let accept = self.accept.lock().unwrap().take();
        match (mode, accept) {
            (Mode::Refused, Some(accept)) => {
                accept.abort();
                let _ = accept.await;
            }
            (Mode::Refused, None) => {}
            (_, Some(accept)) => *self.accept.lock().unwrap() = Some(accept),
            (_, None) => self.listen(),
        }
        let cut: Vec<_> = {
            let mut conns = self.conns.lock().unwrap();
            self.mode.store(mode as u8, Ordering::SeqCst);
            conns.drain(..).collect()
        };
        for conn in cut {
            conn.abort();
            let _ = conn.await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.lock().unwrap().take() {
            accept.abort();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

/// Reads one HTTP request and answers it with `status` and a JSON error, then closes.
async fn answer(stream: &mut TcpStream, status: &str) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
    let body = format!(
        r#"{{"error":{{"type":"test_proxy","reason":"{status} from the test proxy"}},"status":{}}}"#,
        &status[..3]
    );
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.is_ok() && stream.shutdown().await.is_ok()
}

async fn node_addr() -> SocketAddr {
    let url = Url::parse(&common::opensearch_url()).expect("OPENSEARCH_URL");
    let host = url.host_str().expect("host").trim_matches(['[', ']']).to_owned();
    let port = url.port_or_known_default().expect("port");
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve the node")
        .next()
        .expect("an address")
}

/// An EventStore wrapper that records what `append` answered.
struct Counting {
    inner: Arc<OpenSearchEventStore>,
    /// The events the store took, in order.
    accepted: Mutex<Vec<Event>>,
    /// How many the store dropped on a full queue.
    full: AtomicU64,
}

#[async_trait]
impl EventStore for Counting {
    fn append(&self, event: &Event) -> Result<(), AppendError> {
        let r = self.inner.append(event);
        match &r {
            Ok(()) => self.accepted.lock().unwrap().push(event.clone()),
            Err(AppendError::QueueFull) => {
                self.full.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => panic!("unexpected append error {e}"),
        }
        r
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.inner.query(query).await
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

/// A store that reaches the node through a [`Proxy`] (or directly), and a publisher that persists
/// to it.
struct Fixture {
    proxy: Option<Proxy>,
    store: Arc<OpenSearchEventStore>,
    counting: Arc<Counting>,
    publisher: PersistingPublisher,
}

impl Fixture {
    /// `name` goes into the index prefix; `tune` sets the writer up.
    async fn start(name: &str, tune: impl FnOnce(&mut OpenSearchConfig)) -> Self {
        let proxy = Proxy::start(node_addr().await).await;
        let url = proxy.url();
        Self::on(Some(proxy), &url, name, tune).await
    }

    /// The same, on the node at `url`, with no proxy.
    async fn direct(url: &str, name: &str, tune: impl FnOnce(&mut OpenSearchConfig)) -> Self {
        Self::on(None, url, name, tune).await
    }

    async fn on(proxy: Option<Proxy>, url: &str, name: &str, tune: impl FnOnce(&mut OpenSearchConfig)) -> Self {
        let mut config = common::test_config(name);
        config.url = url.to_owned();
        tune(&mut config);
        let store = Arc::new(common::connect(config).await);
        let counting = Arc::new(Counting {
            inner: store.clone(),
            accepted: Mutex::default(),
            full: AtomicU64::new(0),
        });
        let publisher = PersistingPublisher::new(Arc::new(MemoryBroker::default()), counting.clone());
        Self {
            proxy,
            store,
            counting,
            publisher,
        }
    }

    /// While the node is up: 100 events are published and all written.
    async fn before_the_outage(&self) {
        let a = unique_channel("before");
        let (sent, _) = publish_all(&self.publisher, &a, 100).await;
        self.store.flush().await.expect("flush while up");
        assert_same(&all_of(&self.store, &a).await, &sent, "before the outage");
        assert_eq!(self.store.stats().written, 100, "{:?}", self.store.stats());
    }

    /// Once the node is reachable again: the writer drains what is left (a flush succeeds within
    /// a bounded wait), and 100 new events are written.
    async fn after_the_outage(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = self.store.flush().await {
            assert!(Instant::now() < deadline, "the writer did not recover: {e}");
        }
        let c = unique_channel("after");
        let (sent, _) = publish_all(&self.publisher, &c, 100).await;
        self.store.flush().await.expect("flush after the outage");
        assert_same(&all_of(&self.store, &c).await, &sent, "writes resumed");
    }

    /// In an outage: publishes 2,000 events to `channel`. Each publish returns at once, because
    /// storage is never awaited. The queue fills, and the rest is dropped and counted. Returns how
    /// many were dropped on a full queue.
    async fn publish_in_the_outage(&self, channel: &ChannelId, what: &str) -> u64 {
        let started = Instant::now();
        let (_, slowest) = publish_all(&self.publisher, channel, 2000).await;
        let took = started.elapsed();
        let (full, capacity) = (self.full(), self.store.config().queue_capacity as u64);
        eprintln!("{what}: slowest publish {slowest:?}, 2,000 publishes in {took:?}, {full} dropped on a full queue");
        // Waiting for storage would take a request timeout (1 s and more here); the bound leaves
        // room for a noisy, shared machine.
        assert!(
            slowest < Duration::from_millis(500),
            "a publish waited for storage: {slowest:?}"
        );
        assert!(
            full >= (2000 - capacity) / 2,
            "the queue ({capacity}) filled and later events were dropped: {full} dropped"
        );
        assert_eq!(
            self.accepted(channel).len() as u64 + full,
            2000,
            "every publish was queued or dropped"
        );
        assert!(self.store.stats().dropped >= full, "{:?}", self.store.stats());
        full
    }

    /// How many appends found the queue full.
    fn full(&self) -> u64 {
        self.counting.full.load(Ordering::SeqCst)
    }

    /// The events of `channel` the store took, in order.
    fn accepted(&self, channel: &ChannelId) -> Vec<Event> {
        let accepted = self.counting.accepted.lock().unwrap();
        accepted.iter().filter(|e| &e.channel_id == channel).cloned().collect()
    }

    /// Once drained: every accepted event was either written or dropped by the writer, and
    /// counted (`accepted = written + (dropped − queue-full drops)`). Returns the stats.
    fn check_counters(&self) -> StoreStats {
        let stats = self.store.stats();
        let (ok, full) = (self.counting.accepted.lock().unwrap().len() as u64, self.full());
        assert_eq!(stats.accepted, ok, "{stats:?}");
        assert_eq!(
            stats.accepted - stats.written,
            stats.dropped - full,
            "{stats:?}, {full} dropped on a full queue"
        );
        stats
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("a fixture with a proxy")
    }

    async fn end(self) {
        self.store.shutdown().await.expect("shutdown");
        common::cleanup(&self.store).await;
    }
}

fn persisted(channel: &ChannelId, n: usize) -> Event {
    let mut e = Event::data(channel.clone(), "message", format!("event {n}")).unwrap();
    e.persist = true;
    e
}

/// The writer settings of both outage tests: a queue of `queue_capacity` events, batches of 50
/// sent within 20 ms, retries after 50 to 100 ms.
fn small_batches(config: &mut OpenSearchConfig, queue_capacity: usize) {
    config.queue_capacity = queue_capacity;
    config.bulk_max_events = 50;
    config.flush_interval = Duration::from_millis(20);
    config.retry_initial_backoff = Duration::from_millis(50);
    config.retry_max_backoff = Duration::from_millis(100);
}

/// Publishes `count` persisted events; returns them and the slowest publish.
async fn publish_all(publisher: &PersistingPublisher, channel: &ChannelId, count: usize) -> (Vec<Event>, Duration) {
    let mut slowest = Duration::ZERO;
    let mut sent = Vec::with_capacity(count);
    for n in 0..count {
        let mut e = persisted(channel, n);
        let t = Instant::now();
        // The archive keeps the event under the id the broker gave it.
        e.id = publisher.publish(&e).await.expect("publish");
        slowest = slowest.max(t.elapsed());
        sent.push(e);
    }
    (sent, slowest)
}

/// Asserts that `got` is exactly `want` on the wire (ids, order, every field), whatever `persist`.
fn assert_same(got: &[Event], want: &[Event], what: &str) {
    let ids = |v: &[Event]| v.iter().map(|e| e.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(got), ids(want), "{what}: ids in order");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.to_json(), w.to_json(), "{what}");
    }
}

async fn all_of(store: &OpenSearchEventStore, channel: &ChannelId) -> Vec<Event> {
    let page = store
        .query(&EventQuery {
            limit: 10_000,
            ..EventQuery::channel(channel.clone())
        })
        .await
        .expect("query");
    assert!(page.next.is_none() || page.events.len() == 10_000);
    page.events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_keeps_its_latency_in_an_outage_and_writes_resume() {
    let f = Fixture::start("outage", |config| {
        small_batches(config, 200);
        config.request_timeout = Duration::from_secs(1);
        config.max_retries = 1;
        config.flush_timeout = Duration::from_secs(4);
    })
    .await;
    let flush_timeout = f.store.config().flush_timeout;

    // 1. Up: everything is written.
    f.before_the_outage().await;

    // 2. Down (black hole): every request would hang until the 1 s request timeout, so a publish
    //    that waited for storage would take a second or more. None does; the queue fills, and
    //    the rest is dropped and counted.
    f.proxy().set(Mode::BlackHole).await;
    let b = unique_channel("during");
    f.publish_in_the_outage(&b, "outage").await;

    // A flush in the outage fails within its bound instead of hanging.
    let t = Instant::now();
    let flushed = f.store.flush().await;
    eprintln!("outage: flush during the outage -> {flushed:?} after {:?}", t.elapsed());
    assert!(flushed.is_err(), "flush cannot succeed while the node is unreachable");
    assert!(
        t.elapsed() < flush_timeout + Duration::from_secs(3),
        "flush took {:?}",
        t.elapsed()
    );

    // 3. Back up: the writer drains what is left, and new events are written.
    f.proxy().set(Mode::Up).await;
    f.after_the_outage().await;
    let stats = f.check_counters();
    let written_b = all_of(&f.store, &b).await.len() as u64;
    eprintln!("outage: final {stats:?}; {written_b} events of the outage phase were written after it");
    assert_eq!(written_b, stats.written - 200, "{stats:?}");
    f.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_keeps_its_latency_while_connections_are_refused_and_writes_resume() {
    let f = Fixture::start("refused", |config| {
        small_batches(config, 1000);
        // A refused connect fails at once, whatever this is; it only spares a busy node's answers
        // after the outage from timing out.
        config.request_timeout = Duration::from_secs(10);
        // Three attempts, 75 to 150 ms, per batch: the writer needs seconds to give up the 1,000
        // queued events one batch after the other.
        config.max_retries = 2;
        config.flush_timeout = Duration::from_secs(10);
    })
    .await;

    // 1. Up: everything is written.
    f.before_the_outage().await;

    // 2. Stopped: nothing listens on the port any more, and open connections are closed.
    f.proxy().set(Mode::Refused).await;
    let connect = TcpStream::connect(f.proxy().addr).await.map(|_| ());
    assert!(
        matches!(&connect, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "a connect must be refused: {connect:?}"
    );
    let b = unique_channel("refused");
    // A query fails with a backend error, at once rather than after the request timeout.
    let t = Instant::now();
    let queried = f.store.query(&EventQuery::channel(b.clone())).await;
    let query_took = t.elapsed();
    assert!(matches!(queried, Err(StoreError::Backend(_))), "{queried:?}");
    assert!(query_took < Duration::from_secs(2), "the query took {query_took:?}");

    // Publishing does not wait for storage.
    let full = f.publish_in_the_outage(&b, "refused").await;

    // The writer retries its batch, gives it up once the retries run out, and counts it; nothing
    // reaches the node meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = f.store.stats();
        assert_eq!(
            stats.written, 100,
            "nothing can be written while connects are refused: {stats:?}"
        );
        if stats.dropped > full {
            break;
        }
        assert!(Instant::now() < deadline, "the writer never gave up a batch: {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued = f.store.queued();
    let stats = f.store.stats();
    eprintln!("refused: query failed in {query_took:?}; at the restart {stats:?}, {queued} queued");
    assert!(
        queued > 0,
        "the writer should still hold queued events when the node comes back"
    );

    // 3. Back: the proxy listens on the same port again. Everything the writer had not given up
    //    (the batch it was retrying, the events still queued) is written, then new events.
    f.proxy().set(Mode::Up).await;
    f.after_the_outage().await;
    let stats = f.check_counters();
    let written_b = all_of(&f.store, &b).await;
    let accepted_b = f.accepted(&b);
    eprintln!(
        "refused: final {stats:?}; {} of the {} events accepted in the outage were written after it",
        written_b.len(),
        accepted_b.len()
    );
    assert!(
        stats.dropped > full,
        "the writer gave up batches in the outage and counted them: {stats:?}"
    );
    assert!(
        !written_b.is_empty(),
        "events queued in the outage are written after it: {stats:?}"
    );
    // One batch after the other, in queue order: the dropped events are the oldest, and what was
    // written after the outage is all the rest, in order. Dropped events are not replayed.
    assert_same(
        &written_b,
        &accepted_b[accepted_b.len() - written_b.len()..],
        "the events of the outage that were written",
    );
    assert_eq!(stats.written, 200 + written_b.len() as u64, "{stats:?}");
    f.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_requests_are_retried_through_503s() {
    let f = Fixture::start("retry503", |config| {
        config.flush_interval = Duration::from_millis(10);
        config.max_retries = 20;
        config.retry_initial_backoff = Duration::from_millis(20);
        config.retry_max_backoff = Duration::from_millis(100);
    })
    .await;
    let (proxy, store) = (f.proxy(), &f.store);

    proxy.set(Mode::Unavailable).await;
    let ch = unique_channel("retry503");
    let sent: Vec<Event> = (0..30).map(|n| persisted(&ch, n)).collect();
    for e in &sent {
        store.append(e).unwrap();
    }
    // Wait (bounded) until the writer has been turned away twice, then let it through.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.answered.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the writer never tried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.set(Mode::Up).await;
    store.flush().await.expect("flush");
    let stats = store.stats();
    assert_eq!((stats.accepted, stats.written, stats.dropped), (30, 30, 0), "{stats:?}");
    assert_same(&all_of(store, &ch).await, &sent, "written after the 503s");
    f.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bulk_request_is_dropped_without_retries() {
    let f = Fixture::start("refused403", |config| {
        config.flush_interval = Duration::from_millis(10);
        config.retry_initial_backoff = Duration::from_millis(10);
    })
    .await;
    let (proxy, store) = (f.proxy(), &f.store);

    proxy.set(Mode::Forbidden).await;
    let ch = unique_channel("refused403");
    for n in 0..5 {
        store.append(&persisted(&ch, n)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.stats().dropped < 5 {
        assert!(
            Instant::now() < deadline,
            "the events were not dropped: {:?}",
            store.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = store.stats();
    assert_eq!((stats.accepted, stats.written, stats.dropped), (5, 0, 5), "{stats:?}");
    // Give a retry the time it would need (several backoffs), then check there was none.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.answered.load(Ordering::SeqCst), 1, "one request, no retry");
    proxy.set(Mode::Up).await;
    f.end().await;
}

/// A node of this test's own, started and stopped through `scripts/opensearch.sh`, so that
/// stopping it leaves the node the other tests share alone. Stopped on drop.
struct OwnNode;

impl OwnNode {
    const INSTANCE: &'static str = "restart";
    const HTTP_PORT: u16 = 9252;
    const TRANSPORT_PORT: u16 = 9352;

    /// Starts it on empty data.
    async fn start() -> Self {
        Self::script("start", false).await;
        Self
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", Self::HTTP_PORT)
    }

    /// Stops the node process (SIGTERM, then SIGKILL after 20 s).
    async fn stop(&self) {
        Self::script("stop", false).await;
    }

    /// Starts it again on the data it had.
    async fn restart(&self) {
        Self::script("start", true).await;
    }

    async fn script(action: &'static str, keep_data: bool) {
        let status = tokio::task::spawn_blocking(move || Self::command(action, keep_data).status())
            .await
            .expect("join")
            .expect("run scripts/opensearch.sh");
        assert!(
            status.success(),
            "scripts/opensearch.sh {action} (instance {}) failed",
            Self::INSTANCE
        );
    }

    fn command(action: &str, keep_data: bool) -> std::process::Command {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/opensearch.sh");
        let mut command = std::process::Command::new(script);
        command
            .arg(action)
            .env("OPENSEARCH_INSTANCE", Self::INSTANCE)
            .env("OPENSEARCH_HTTP_PORT", Self::HTTP_PORT.to_string())
            .env("OPENSEARCH_TRANSPORT_PORT", Self::TRANSPORT_PORT.to_string())
            .env("OPENSEARCH_KEEP_DATA", if keep_data { "1" } else { "0" });
        command
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = Self::command("stop", false).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_keeps_its_latency_while_the_node_is_stopped_and_writes_resume_after_its_restart() {
    let node = OwnNode::start().await;
    let f = Fixture::direct(&node.url(), "stopped", |c| {
        small_batches(c, 1000);
        c.request_timeout = Duration::from_secs(5);
        c.flush_timeout = Duration::from_secs(10);
    })
    .await;

    // 1. Up: written and queryable.
    let a = unique_channel("before-stop");
    let (before, _) = publish_all(&f.publisher, &a, 100).await;
    f.store.flush().await.expect("flush while up");
    assert_same(&all_of(&f.store, &a).await, &before, "before the stop");

    // 2. The node process is stopped: publishing does not wait, the queue fills, drops are
    //    counted, and nothing is written.
    node.stop().await;
    let written = f.store.stats().written;
    let b = unique_channel("stopped");
    f.publish_in_the_outage(&b, "node stopped").await;
    assert_eq!(
        f.store.stats().written,
        written,
        "nothing is written while the node is down"
    );

    // 3. The node is started again on its data: the writer recovers, new events are written, and
    //    what was written before the stop is still there.
    node.restart().await;
    f.after_the_outage().await;
    assert_same(&all_of(&f.store, &a).await, &before, "kept across the restart");
    let stats = f.check_counters();
    eprintln!("node stopped and restarted: {stats:?}");
    f.end().await;
    drop(node);
}
