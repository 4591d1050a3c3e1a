//! A publish whose reply does not come in time is resent, and the resend finds its first run: the
//! event is stored and delivered exactly once, with the id `publish` returned. A TCP proxy in the
//! test holds back the reply to one `EVALSHA` past the broker's response timeout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stream_core::conformance::broker::{assert_quiet, numbered, take};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, EventPublisher, EventSubscriber};
use stream_pubsub::RedisBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOLD: Duration = Duration::from_millis(800);
const TIMEOUT: Duration = Duration::from_millis(200);

/// Forwards every connection to `upstream`. Once `armed`, the next connection that sends an
/// `EVALSHA` gets that command's reply `HOLD` late.
async fn proxy(upstream: String, armed: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = TcpStream::connect(&upstream).await.expect("connect upstream");
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            let hold = Arc::new(AtomicBool::new(false));
            let (armed, hold_up) = (armed.clone(), hold.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = client_rx.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if buf[..n].windows(7).any(|w| w == b"EVALSHA") && armed.swap(false, Ordering::SeqCst) {
                        hold_up.store(true, Ordering::SeqCst);
                    }
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = server_rx.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if hold.swap(false, Ordering::SeqCst) {
                        tokio::time::sleep(HOLD).await;
                    }
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("redis://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_resent_after_a_timeout_is_delivered_once() {
    let url = common::redis_url();
    let upstream = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .rsplit('@')
        .next()
        .expect("host:port")
        .to_owned();
    let armed = Arc::new(AtomicBool::new(false));
    let proxied = proxy(upstream, armed.clone()).await;
    let broker = RedisBroker::standalone(proxied)
        .config(ChannelConfig::default())
        .response_timeout(TIMEOUT)
        .connect()
        .await
        .expect("connect through the proxy");
    let reader = common::standalone(ChannelConfig::default()).await;
    let ch = unique_channel("resend");
    let mut sub = reader.subscribe(&ch, None).await.expect("subscribe");

    let first = broker.publish(&numbered(&ch, 0)).await.expect("publish");
    armed.store(true, Ordering::SeqCst);
    let held = broker
        .publish(&numbered(&ch, 1))
        .await
        .expect("the resent publish succeeds");
    assert!(!armed.load(Ordering::SeqCst), "the proxy held a reply back");
    let last = broker.publish(&numbered(&ch, 2)).await.expect("publish");

    let got = take(&mut sub, 3).await;
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [first, held, last]);
    assert_eq!(got[1].payload["n"], 1);
    assert_quiet(&mut sub).await;
    let mut late = reader.subscribe(&ch, None).await.expect("subscribe");
    assert_eq!(take(&mut late, 3).await.len(), 3);
    assert_quiet(&mut late).await;
}
