//! Drop on disconnect: a lease held by an SSE body is released within a second of the body being
//! dropped mid-stream, which is what a web server does when the client goes away.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use stream_core::Event;
use stream_core::conformance::unique_user;
use stream_core::sse::{SseOptions, sse_stream};
use stream_lease::{LeaseStore, StreamLease, StreamLeaseLimiter, UserId};

use crate::common::{cfg, limiter};

async fn wait_released(limiter: &StreamLeaseLimiter, user: &UserId, since: Instant) -> Duration {
    while limiter.get_active_streams(user).await.expect("count") != 0 {
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "the lease of a dropped stream was not released within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_the_serving_task_releases_the_lease() {
    let limiter = limiter(cfg(1, 60)).await;
    let store: Arc<dyn LeaseStore> = Arc::new(limiter.clone());
    let user = unique_user("disconnect");
    let lease = StreamLease::acquire(store.clone(), user.clone())
        .await
        .expect("lease")
        .auto_refresh();
    let body = sse_stream(
        futures_util::stream::pending::<Result<Event, Infallible>>(),
        SseOptions::default().lease(lease),
    );
    // The "server" polls the body until the client goes away.
    let served = tokio::spawn(async move {
        let mut body = body;
        while body.next().await.is_some() {}
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!served.is_finished(), "the stream ended by itself");
    assert_eq!(limiter.get_active_streams(&user).await.expect("count"), 1);
    assert!(
        limiter.acquire_stream_lease(&user).await.expect("acquire").is_none(),
        "the held lease counts"
    );

    served.abort(); // The client disconnected: the body is dropped mid-stream.
    let took = wait_released(&limiter, &user, Instant::now()).await;
    println!("released {took:?} after the disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_polled_body_releases_the_lease() {
    let limiter = limiter(cfg(1, 60)).await;
    let store: Arc<dyn LeaseStore> = Arc::new(limiter.clone());
    let user = unique_user("drop-body");
    let lease = StreamLease::acquire(store, user.clone()).await.expect("lease");
    let mut body = sse_stream(
        futures_util::stream::pending::<Result<Event, Infallible>>(),
        SseOptions::default().lease(lease),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), body.next())
            .await
            .is_err(),
        "a pending stream yielded a frame"
    );
    assert_eq!(limiter.get_active_streams(&user).await.expect("count"), 1);
    drop(body);
    wait_released(&limiter, &user, Instant::now()).await;
}
