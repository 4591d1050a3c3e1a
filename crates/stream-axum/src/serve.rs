//! [`serve`]: an axum app served the way long-lived SSE streams want it.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, tuned for SSE:
///
/// - **`TCP_NODELAY`** on every accepted socket: an SSE frame is a small write that must leave at
///   once, not wait for Nagle's algorithm (which cost 20–40 ms at p99 in the benchmarks).
/// - **HTTP/1.1 only**, through hyper's HTTP/1 connection builder: an idle stream costs about
///   18 KiB of allocations in all, against about 30 KiB with `axum::serve` (which also detects
///   HTTP/2 and watches each connection for shutdown), measured by
///   `integration-tests/tests/idle_memory.rs`. Browsers speak HTTP/2 to the TLS proxy in front
///   (see `docs/operations.md`); cleartext HTTP/2 (h2c) is not served.
/// - Frames that are ready together leave in one vectored write (hyper queues up to 16 buffers
///   per `writev`).
/// - A client gets 30 s to send its request head.
///
/// On `shutdown` it stops accepting, asks every connection to close once its response is done,
/// and returns when all have: end the open streams with the same signal
/// (`SseOptions::shutdown`), or this waits for them.
///
/// An error accepting a connection is logged and retried after 100 ms (running out of file
/// descriptors, say); it never ends the server.
pub async fn serve<F>(listener: TcpListener, app: Router, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A socket that refuses it still serves, only with Nagle's delay.
        let _ = socket.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(socket), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
