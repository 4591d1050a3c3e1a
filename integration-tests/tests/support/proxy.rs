//! A TCP proxy for fault injection: it sits between a client under test and a real server
//! (Redis, OpenSearch) and can be switched at run time between four modes ([`Mode`]):
//!
//! - **pass**: forwards bytes both ways;
//! - **blackhole**: forwards nothing in either direction and closes nothing, as a network
//!   partition does. Bytes already read are held, and reading stops, so the peers' kernels buffer
//!   the rest; new connections are accepted (the kernel would complete the handshake anyway) but
//!   not connected to the server until the blackhole ends. When it ends, everything held flows
//!   on in order, as TCP retransmissions would deliver it: no byte is lost or reordered;
//! - **delay**: holds each client→server chunk for the given time before forwarding it (the
//!   chunks are stamped when read, so a request of several chunks costs the delay once, not
//!   per chunk); server→client bytes pass at once;
//! - **down**: closes every open connection and refuses new ones (`ECONNREFUSED`), as a stopped
//!   server does. The port stays reserved meanwhile, so that leaving the mode listens on it again.
//!
//! Every accepted connection is logged with the time it was accepted: a client that reconnects
//! shows up there even while nothing reaches the server ([`Proxy::accepted_after`]).
//!
//! The proxy runs on a runtime of its own (one thread), like a process apart: its work does not
//! queue behind the test's tasks, nor the test's behind its, and a test that blocks its own
//! runtime (starting an app, say) does not stall it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does with the bytes of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward nothing, close nothing; accept new connections but forward nothing on them.
    Blackhole,
    /// Hold each client→server chunk this long before forwarding it.
    Delay(Duration),
    /// Close every connection and refuse new ones.
    Down,
}

/// The proxy. Dropping it closes every connection and the listener.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    /// Bound to `addr` for the proxy's whole life and never listening: while the listener is
    /// closed ([`Mode::Down`]) a connect to `addr` is refused, and no other socket can take the
    /// port meanwhile.
    _hold: TcpSocket,
    shared: Arc<Shared>,
    /// The accept loop, which owns the listener; `None` while down.
    accept: Mutex<Option<JoinHandle<()>>>,
    /// The proxy's own runtime; taken on drop (shut down without waiting).
    runtime: Option<Runtime>,
}

struct Shared {
    mode: watch::Sender<Mode>,
    /// The connection tasks. The lock also orders a switch to [`Mode::Down`] with the accept
    /// loop, so that no connection of the old mode survives the switch.
    conns: Mutex<Vec<JoinHandle<()>>>,
    /// When each connection was accepted, in order.
    accepted: Mutex<Vec<Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A socket on `addr` that may share its port with the proxy's other sockets.
fn reusable(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("a proxy socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind the proxy's port");
    socket
}

/// The `host:port` of a URL such as `redis://127.0.0.1:6399/` or `http://127.0.0.1:9250`,
/// resolved.
pub async fn url_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    tokio::net::lookup_host(authority)
        .await
        .unwrap_or_else(|e| panic!("cannot resolve {authority:?} (from {url}): {e}"))
        .next()
        .unwrap_or_else(|| panic!("{authority:?} resolves to no address"))
}

impl Proxy {
    /// A proxy on `127.0.0.1:<free port>` in [`Mode::Pass`], forwarding to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        let hold = reusable(SocketAddr::from(([127, 0, 0, 1], 0)));
        let proxy = Self {
            addr: hold.local_addr().expect("the proxy's address"),
            target,
            _hold: hold,
            shared: Arc::new(Shared {
                mode: watch::channel(Mode::Pass).0,
                conns: Mutex::default(),
                accepted: Mutex::default(),
            }),
            accept: Mutex::new(None),
            runtime: Some(runtime),
        };
        proxy.listen();
        proxy
    }

    /// A proxy forwarding to the server of `url` (see [`url_addr`]).
    pub async fn start_for(url: &str) -> Self {
        Self::start(url_addr(url).await)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `scheme://<proxy address>/`: the URL a client uses to reach the server through the proxy.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/", self.addr)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// When each connection was accepted (in order), from `since` on.
    pub fn accepted_after(&self, since: Instant) -> Vec<Instant> {
        lock(&self.shared.accepted)
            .iter()
            .copied()
            .filter(|at| *at >= since)
            .collect()
    }

    /// How many connections the proxy has accepted.
    pub fn accepted(&self) -> usize {
        lock(&self.shared.accepted).len()
    }

    /// Listens on `addr` (again) and starts the accept loop.
    fn listen(&self) {
        let runtime = self.runtime.as_ref().expect("the proxy's runtime");
        // The listener registers with the proxy's runtime, and its tasks run there.
        let _entered = runtime.enter();
        let listener = reusable(self.addr).listen(1024).expect("listen on the proxy's port");
        let (shared, target) = (self.shared.clone(), self.target);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    // Out of file descriptors, say: try again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut conns = lock(&shared.conns);
                lock(&shared.accepted).push(Instant::now());
                conns.retain(|task| !task.is_finished());
                conns.push(tokio::spawn(serve(inbound, target, shared.mode.subscribe())));
            }
        });
        *lock(&self.accept) = Some(accept);
    }

    /// Switches the mode. Into [`Mode::Down`]: closes the listener, then every connection; when
    /// this returns, connects are refused and no connection is left. Out of it: listens again.
    /// The other switches take effect on the open connections at once.
    pub async fn set(&self, mode: Mode) {
        let accept = lock(&self.accept).take();
        match (mode, accept) {
            (Mode::Down, Some(accept)) => {
                accept.abort();
                let _ = accept.await;
            }
            (Mode::Down, None) => {}
            (_, Some(accept)) => *lock(&self.accept) = Some(accept),
            (_, None) => self.listen(),
        }
        let cut: Vec<JoinHandle<()>> = {
            let mut conns = lock(&self.shared.conns);
            self.shared.mode.send_replace(mode);
            if mode == Mode::Down {
                conns.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for conn in cut {
            conn.abort();
            let _ = conn.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(accept) = lock(&self.accept).take() {
            accept.abort();
        }
        for conn in lock(&self.shared.conns).drain(..) {
            conn.abort();
        }
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime waits for its tasks, which an async test must not do.
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

/// Waits while the proxy is blackholed. (In [`Mode::Down`] the connection's task is aborted.)
async fn released(mode: &mut watch::Receiver<Mode>) {
    // The `Ref` is dropped at once: nothing borrowed is held across an await.
    let _ = mode.wait_for(|m| *m != Mode::Blackhole).await.map(drop);
}

/// One accepted connection: connects to the server once not blackholed, then forwards both
/// ways until both sides have closed, or either fails (then both sockets are dropped).
async fn serve(inbound: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    released(&mut mode).await;
    let Ok(outbound) = TcpStream::connect(target).await else {
        return; // the client sees its connection closed, as if the server had refused it
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (client_read, client_write) = inbound.into_split();
    let (server_read, server_write) = outbound.into_split();
    let _ = tokio::try_join!(
        pipe(client_read, server_write, mode.clone(), true),
        pipe(server_read, client_write, mode, false),
    );
}

/// One direction of a connection: a reader that stamps each chunk with the time it may leave
/// (now, plus the delay when `delayed` and the proxy delays), and a writer that sends each chunk
/// at that time, once not blackholed. Neither reads nor writes while blackholed. The end of the
/// input (EOF) is passed on as a write shutdown, in its turn after the held chunks.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    delayed: bool,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut read_mode = mode.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            released(&mut read_mode).await;
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(()); // dropping `tx` ends the writer
            }
            let delay = match *read_mode.borrow() {
                Mode::Delay(delay) if delayed => delay,
                _ => Duration::ZERO,
            };
            if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                return Ok(());
            }
        }
    };
    let mut write_mode = mode;
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            released(&mut write_mode).await;
            to.write_all(&chunk).await?;
        }
        released(&mut write_mode).await;
        to.shutdown().await
    };
    tokio::try_join!(reader, writer).map(drop)
}
