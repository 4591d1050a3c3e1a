//! One checkout at a time, against a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6399/`;
//! a missing server fails the test): the commands under way when there is no connection share
//! one new connection, a connection given up on leaves the pool, and a checkout that fails fails
//! for everyone who waited on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use stream_redis::deadpool_redis::{self, Runtime};
use stream_redis::redis;
use stream_redis::{RedisSource, SharedConnection};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

/// A shared connection over a pool of the test's own, so that the pool can be looked at.
fn shared_over(url: &str) -> (SharedConnection, deadpool_redis::Pool) {
    let pool = deadpool_redis::Config::from_url(url)
        .create_pool(Some(Runtime::Tokio1))
        .expect("a pool for the URL");
    let shared = RedisSource::from(pool.clone()).into_shared().expect("a pool source");
    (shared, pool)
}

/// Sends `cmd` from `tasks` commands at once.
async fn at_once<T: redis::FromRedisValue>(
    shared: &SharedConnection,
    cmd: &redis::Cmd,
    tasks: usize,
) -> Vec<Result<T, stream_redis::BoxError>> {
    join_all((0..tasks).map(|_| shared.run::<T>(cmd, None))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_share_one_checkout_and_a_connection_given_up_on_leaves_the_pool() {
    let url = redis_url();
    let (shared, pool) = shared_over(&url);

    // 200 commands find no connection: they share the one the first of them checks out.
    for pong in at_once::<String>(&shared, &redis::cmd("PING"), 200).await {
        let pong = pong.unwrap_or_else(|e| panic!("no Redis at {url} (scripts/redis.sh start): {e}"));
        assert_eq!(pong, "PONG");
    }
    assert_eq!(
        pool.status().size,
        1,
        "one connection for them all: {:?}",
        pool.status()
    );

    // 50 commands get no reply in time, three times each: BLPOP on a key nobody pushes to,
    // blocking for 1 s, against a response timeout of 100 ms and no retry window. Each round of
    // timeouts closes the connection and the next round shares a fresh one.
    shared.set_response_timeout(Duration::from_millis(100));
    shared.set_retry_window(Duration::ZERO);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let mut blpop = redis::cmd("BLPOP");
    blpop.arg(format!("test-redis-checkout-{nanos}")).arg(1);
    for reply in at_once::<Option<(String, String)>>(&shared, &blpop, 50).await {
        let err = reply.expect_err("BLPOP cannot answer within 100 ms");
        assert!(err.to_string().contains("gave up after 3 tries"), "{err}");
    }
    assert!(
        pool.status().size <= 1,
        "the connections given up on left the pool: {:?}",
        pool.status()
    );

    shared.set_response_timeout(stream_redis::DEFAULT_RESPONSE_TIMEOUT);
    for pong in at_once::<String>(&shared, &redis::cmd("PING"), 200).await {
        assert_eq!(pong.expect("PING after the timeouts"), "PONG");
    }
    assert_eq!(pool.status().size, 1, "one connection again: {:?}", pool.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkout_fails_for_everyone_who_waited_on_it() {
    // A server that accepts and hangs up at once, and counts the connections it was asked for.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });

    let (shared, _pool) = shared_over(&format!("redis://127.0.0.1:{port}/"));
    shared.set_retry_window(Duration::ZERO);
    const TASKS: usize = 100;
    for reply in at_once::<String>(&shared, &redis::cmd("PING"), TASKS).await {
        let err = reply.expect_err("nothing answers there");
        assert!(err.to_string().contains("gave up after 3 tries"), "{err}");
    }
    // Three tries of 100 commands: one connection attempt per round, not one per command.
    let accepted = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=10).contains(&accepted),
        "{accepted} connections asked for by {TASKS} commands of 3 tries each"
    );
    server.abort();
}
