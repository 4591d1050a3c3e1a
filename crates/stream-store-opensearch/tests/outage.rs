//! Outages, without restarting the real node (that takes ~20 s): the store talks to the node
//! through a TCP proxy inside the test, which forwards, black-holes (accepts connections, reads
//! requests, never answers: a hung node or a partition), answers 503, or answers 403.

mod common;

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
use stream_store_opensearch::OpenSearchEventStore;
use stream_store_opensearch::opensearch::http::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    Up = 0,
    BlackHole = 1,
    Unavailable = 2,
    Forbidden = 3,
}

struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    /// Requests answered with an error status.
    answered: Arc<AtomicU64>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Up as u8));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let answered = Arc::new(AtomicU64::new(0));
        let accept = {
            let (mode, conns, answered) = (mode.clone(), conns.clone(), answered.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    let answered = answered.clone();
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
                    conns.lock().unwrap().push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Self {
            addr,
            mode,
            conns,
            answered,
            accept,
        }
    }

    /// Switches the mode and cuts every open connection (pooled keep-alive ones included).
    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Mode::Up);
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

/// An EventStore wrapper that counts what `append` answered.
struct Counting {
    inner: Arc<OpenSearchEventStore>,
    ok: AtomicU64,
    full: AtomicU64,
}

#[async_trait]
impl EventStore for Counting {
    fn append(&self, event: &Event) -> Result<(), AppendError> {
        let r = self.inner.append(event);
        match &r {
            Ok(()) => self.ok.fetch_add(1, Ordering::SeqCst),
            Err(AppendError::QueueFull) => self.full.fetch_add(1, Ordering::SeqCst),
            Err(e) => panic!("unexpected append error {e}"),
        };
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

fn persisted(channel: &ChannelId, n: usize) -> Event {
    let mut e = Event::data(channel.clone(), "message", format!("event {n}")).unwrap();
    e.persist = true;
    e
}

/// Publishes `count` persisted events; returns them and the slowest publish.
async fn publish_all(publisher: &PersistingPublisher, channel: &ChannelId, count: usize) -> (Vec<Event>, Duration) {
    let mut slowest = Duration::ZERO;
    let mut sent = Vec::with_capacity(count);
    for n in 0..count {
        let e = persisted(channel, n);
        let t = Instant::now();
        publisher.publish(&e).await.expect("publish");
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
    let proxy = Proxy::start(node_addr().await).await;
    let mut config = common::test_config("outage");
    config.url = proxy.url();
    config.queue_capacity = 200;
    config.bulk_max_events = 50;
    config.flush_interval = Duration::from_millis(20);
    config.request_timeout = Duration::from_secs(1);
    config.max_retries = 1;
    config.retry_initial_backoff = Duration::from_millis(50);
    config.retry_max_backoff = Duration::from_millis(100);
    config.flush_timeout = Duration::from_secs(4);
    let flush_timeout = config.flush_timeout;
    let store = Arc::new(common::connect(config).await);
    let counting = Arc::new(Counting {
        inner: store.clone(),
        ok: AtomicU64::new(0),
        full: AtomicU64::new(0),
    });
    let publisher = PersistingPublisher::new(Arc::new(MemoryBroker::default()), counting.clone());

    // 1. Up: everything is written.
    let (a, b, c) = (
        unique_channel("before"),
        unique_channel("during"),
        unique_channel("after"),
    );
    let (sent_a, _) = publish_all(&publisher, &a, 100).await;
    store.flush().await.expect("flush while up");
    assert_same(&all_of(&store, &a).await, &sent_a, "before the outage");

    // 2. Down (black hole): every request would hang until the 1 s request timeout, so a publish
    //    that waited for storage would take a second or more. None does; the queue fills, and
    //    the rest is dropped and counted.
    proxy.set(Mode::BlackHole);
    let started = Instant::now();
    let (_sent_b, slowest) = publish_all(&publisher, &b, 2000).await;
    let took = started.elapsed();
    assert!(
        slowest < Duration::from_millis(500),
        "a publish waited for storage: {slowest:?}"
    );
    assert!(took < Duration::from_secs(5), "2,000 publishes took {took:?}");
    let full = counting.full.load(Ordering::SeqCst);
    assert!(
        full >= 1500,
        "the queue (200) filled and later events were dropped: {full} dropped"
    );
    assert!(store.stats().dropped >= full, "{:?}", store.stats());

    // A flush in the outage fails within its bound instead of hanging.
    let t = Instant::now();
    let flushed = store.flush().await;
    eprintln!("outage: slowest publish {slowest:?}, 2,000 publishes in {took:?}, {full} dropped on a full queue");
    eprintln!("outage: flush during the outage -> {flushed:?} after {:?}", t.elapsed());
    assert!(flushed.is_err(), "flush cannot succeed while the node is unreachable");
    assert!(
        t.elapsed() < flush_timeout + Duration::from_secs(3),
        "flush took {:?}",
        t.elapsed()
    );

    // 3. Back up: the writer drains what is left, and new events are written.
    proxy.set(Mode::Up);
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = store.flush().await {
        assert!(Instant::now() < deadline, "the writer did not recover: {e}");
    }
    let (sent_c, _) = publish_all(&publisher, &c, 100).await;
    store.flush().await.expect("flush after the outage");
    assert_same(&all_of(&store, &c).await, &sent_c, "writes resumed");

    // Every accepted event was either written or dropped by the writer, and counted.
    let stats = store.stats();
    let (ok, full) = (counting.ok.load(Ordering::SeqCst), counting.full.load(Ordering::SeqCst));
    assert_eq!(stats.accepted, ok, "{stats:?}");
    assert_eq!(
        stats.accepted - stats.written,
        stats.dropped - full,
        "{stats:?}, {full} dropped on a full queue"
    );
    let written_b = all_of(&store, &b).await.len() as u64;
    eprintln!("outage: final {stats:?}; {written_b} events of the outage phase were written after it");
    assert_eq!(written_b, stats.written - 200, "{stats:?}");

    store.shutdown().await.expect("shutdown");
    common::cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_requests_are_retried_through_503s() {
    let proxy = Proxy::start(node_addr().await).await;
    let mut config = common::test_config("retry503");
    config.url = proxy.url();
    config.flush_interval = Duration::from_millis(10);
    config.max_retries = 20;
    config.retry_initial_backoff = Duration::from_millis(20);
    config.retry_max_backoff = Duration::from_millis(100);
    let store = common::connect(config).await;

    proxy.set(Mode::Unavailable);
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
    proxy.set(Mode::Up);
    store.flush().await.expect("flush");
    let stats = store.stats();
    assert_eq!((stats.accepted, stats.written, stats.dropped), (30, 30, 0), "{stats:?}");
    assert_eq!(
        all_of(&store, &ch).await,
        sent.into_iter()
            .map(|mut e| {
                e.persist = false;
                e
            })
            .collect::<Vec<_>>()
    );
    common::cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bulk_request_is_dropped_without_retries() {
    let proxy = Proxy::start(node_addr().await).await;
    let mut config = common::test_config("refused403");
    config.url = proxy.url();
    config.flush_interval = Duration::from_millis(10);
    config.retry_initial_backoff = Duration::from_millis(10);
    let store = common::connect(config).await;

    proxy.set(Mode::Forbidden);
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
    proxy.set(Mode::Up);
    common::cleanup(&store).await;
}
