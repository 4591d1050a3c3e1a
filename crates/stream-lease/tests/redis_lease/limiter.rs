//! The limiter's own surface: seed-named methods, key layout and TTL, scripts, constructors,
//! and recovery from a killed connection.

use std::time::{Duration, SystemTime};

use stream_core::conformance::unique_user;
use stream_lease::deadpool_redis::{self, Runtime};
use stream_lease::{LeaseId, LimiterError, StreamLeaseConfig, StreamLeaseLimiter, redis, scripts};

use crate::common::{cfg, limiter, raw, redis_url, zcard};

async fn redis_time_ms(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    secs * 1000 + micros / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_methods_keys_scores_and_key_ttl() {
    let config = StreamLeaseConfig {
        limit: 2,
        ttl_seconds: 30,
        key_ttl_grace: 10,
        key_namespace: "lease_test".into(),
        ..StreamLeaseConfig::default()
    };
    let limiter = limiter(config).await;
    let mut conn = raw().await;
    let user = unique_user("seed");
    let key = limiter.key(&user);
    assert_eq!(key, format!("lease_test:{{{user}}}"));

    let before = redis_time_ms(&mut conn).await;
    let a = limiter
        .acquire_stream_lease(&user)
        .await
        .expect("acquire")
        .expect("lease");
    // Apart by a few ms, so that the expiries order them (equal scores would order by id).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = limiter
        .acquire_stream_lease(&user)
        .await
        .expect("acquire")
        .expect("lease");
    assert_eq!(limiter.acquire_stream_lease(&user).await.expect("acquire"), None);
    let after = redis_time_ms(&mut conn).await;
    assert_eq!(limiter.get_active_streams(&user).await.expect("count"), 2);

    // Scores are expiries in ms by the Redis clock.
    let score: f64 = redis::cmd("ZSCORE")
        .arg(&key)
        .arg(a.as_str())
        .query_async(&mut conn)
        .await
        .expect("ZSCORE");
    let score = score as u64;
    assert!(score >= before + 30_000 && score <= after + 30_000, "score {score}");
    // The key expires `grace` after the last lease.
    let pttl: u64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.expect("PTTL");
    assert!(pttl > 38_000 && pttl <= 40_000, "key PTTL {pttl}");

    let leases = limiter.get_all_leases(&user).await.expect("list");
    let ids: Vec<&LeaseId> = leases.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [&a, &b], "soonest expiry first");
    assert_eq!(leases[0].1, SystemTime::UNIX_EPOCH + Duration::from_millis(score));

    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(limiter.refresh_stream_lease(&user, &a).await.expect("refresh"));
    let leases = limiter.get_all_leases(&user).await.expect("list");
    assert_eq!(leases[0].0, b, "the refreshed lease now expires last");

    limiter.release_stream_lease(&user, &a).await.expect("release");
    limiter.release_stream_lease(&user, &b).await.expect("release");
    assert!(!limiter.refresh_stream_lease(&user, &a).await.expect("refresh"));
    assert_eq!(limiter.get_active_streams(&user).await.expect("count"), 0);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(!exists, "an empty set leaves no key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_and_acquire_is_idempotent_per_id() {
    let _limiter = limiter(cfg(1, 60)).await;
    let mut conn = raw().await;
    let mut exists = redis::cmd("SCRIPT");
    exists.arg("EXISTS");
    for source in [
        scripts::ACQUIRE,
        scripts::REFRESH,
        scripts::RELEASE,
        scripts::COUNT,
        scripts::LIST,
    ] {
        exists.arg(redis::Script::new(source).get_hash());
    }
    let loaded: Vec<bool> = exists.query_async(&mut conn).await.expect("SCRIPT EXISTS");
    assert_eq!(loaded, [true; 5]);

    // Resending an acquire with the same id (a retry after a lost reply) takes no second slot.
    let key = format!("stream_leases:{{{}}}", unique_user("idem"));
    let acquire = redis::Script::new(scripts::ACQUIRE);
    let run = |id: &'static str| {
        let mut invocation = acquire.key(&key);
        invocation.arg(id).arg(1).arg(60_000).arg(1_000);
        invocation
    };
    let first: u64 = run("L1").invoke_async(&mut conn).await.expect("acquire");
    let again: u64 = run("L1").invoke_async(&mut conn).await.expect("acquire again");
    let other: u64 = run("L2").invoke_async(&mut conn).await.expect("acquire other");
    assert!(first > 0 && again >= first, "{first} {again}");
    assert_eq!(other, 0, "the limit of 1 is taken");
    assert_eq!(zcard(&mut conn, &key).await, 1);
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.expect("DEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_pool_survives_a_killed_connection() {
    let pool = deadpool_redis::Config::from_url(redis_url())
        .create_pool(Some(Runtime::Tokio1))
        .expect("pool");
    let id: i64 = {
        let mut conn = pool.get().await.expect("pooled connection");
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .expect("CLIENT ID")
    };
    // The pool's only connection is the one the limiter will keep.
    let limiter = StreamLeaseLimiter::connect(pool, cfg(2, 60)).await.expect("from_pool");
    let user = unique_user("pool");
    let lease = limiter
        .acquire_stream_lease(&user)
        .await
        .expect("acquire")
        .expect("lease");

    let mut admin = raw().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "the limiter's connection was not the pool's first one");
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The next operations find the connection broken, take a new one and succeed.
    assert_eq!(limiter.get_active_streams(&user).await.expect("count after kill"), 1);
    assert!(limiter.refresh_stream_lease(&user, &lease).await.expect("refresh"));
    limiter.release_stream_lease(&user, &lease).await.expect("release");
    assert_eq!(limiter.get_active_streams(&user).await.expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_and_unreachable_redis_fail_at_construction() {
    let bad = StreamLeaseConfig {
        key_namespace: "a{b}".into(),
        ..StreamLeaseConfig::default()
    };
    assert!(matches!(
        StreamLeaseLimiter::connect(&redis_url(), bad).await,
        Err(LimiterError::InvalidConfig(_))
    ));
    let zero_ttl = cfg(1, 0);
    assert!(matches!(
        StreamLeaseLimiter::connect(&redis_url(), zero_ttl).await,
        Err(LimiterError::InvalidConfig(_))
    ));
    match StreamLeaseLimiter::connect("redis://:secret@127.0.0.1:1/", cfg(1, 60)).await {
        Err(e @ LimiterError::Connect { .. }) => {
            let text = e.to_string();
            assert!(text.contains("127.0.0.1:1") && !text.contains("secret"), "{text}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}
