//! `ChannelConfig::subscribe_timeout`: while Redis does not answer, a subscribe fails after that
//! long (the SSE request gets `503`, the browser retries) instead of hanging; once Redis answers
//! again, subscribing works on the same broker.
//!
//! Redis is made unresponsive with `CLIENT PAUSE … ALL`, which holds every client of the server,
//! so this test has a binary of its own (cargo runs test binaries one after another).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stream_core::conformance::broker::take;
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, EventSubscriber, LogLevel, StreamContext, SubscribeError};
use stream_pubsub::redis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_fails_after_subscribe_timeout_while_redis_does_not_answer() {
    let timeout = Duration::from_millis(300);
    let broker = common::standalone(ChannelConfig {
        subscribe_timeout: timeout,
        ..ChannelConfig::default()
    })
    .await;
    let mut admin = common::admin(&common::redis_url()).await;
    let pause = Duration::from_secs(3);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    let paused_at = Instant::now();

    let started = Instant::now();
    let held = broker.subscribe(&unique_channel("paused"), None).await;
    let took = started.elapsed();
    match held {
        Err(SubscribeError::Backend(e)) => assert!(e.to_string().contains("did not confirm"), "{e}"),
        Err(e) => panic!("expected the subscribe timeout, got {e}"),
        Ok(_) => panic!("a subscribe cannot be confirmed while Redis is paused"),
    }
    assert!(took >= timeout, "failed before subscribe_timeout: {took:?}");
    assert!(
        paused_at.elapsed() < pause,
        "the subscribe waited for the pause to end ({took:?}) instead of subscribe_timeout"
    );

    // After the pause, the same broker subscribes and delivers.
    tokio::time::sleep(pause.saturating_sub(paused_at.elapsed()) + Duration::from_millis(100)).await;
    let ctx = StreamContext::builder().build();
    let mut sub = broker
        .subscribe(ctx.channel_id(), None)
        .await
        .expect("subscribe after the pause");
    let emitter = ctx.bind(Arc::new(broker.clone()));
    emitter.log("after the pause", LogLevel::Info).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].message(), Some("after the pause"));
}
