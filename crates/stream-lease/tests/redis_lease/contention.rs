//! 64 tasks race for one user's 5 slots, round after round: never more than 5 win, and the set
//! never holds more than 5 members (checked after each round and by a monitor sampling `ZCARD`
//! all along).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::future::join_all;
use stream_core::conformance::unique_user;
use stream_lease::StreamLeaseLimiter;
use stream_lease::redis::aio::ConnectionLike;

use crate::common::{cfg, cluster_limiter, limiter, raw, raw_cluster, zcard};

const TASKS: usize = 64;
const LIMIT: usize = 5;

/// Runs `rounds` rounds over `limiters` (each its own connection; tasks take turns). `watch` is
/// a connection for the checks and `monitor` one for the sampler.
async fn contend<C>(limiters: Vec<StreamLeaseLimiter>, mut watch: C, mut monitor: C, rounds: usize, label: &str)
where
    C: ConnectionLike + Send + 'static,
{
    let user = unique_user("contention");
    let key = limiters[0].key(&user);
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_seen, key) = (stop.clone(), max_seen.clone(), key.clone());
        tokio::spawn(async move {
            let mut samples = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let n = zcard(&mut monitor, &key).await;
                max_seen.fetch_max(n, Ordering::Relaxed);
                samples += 1;
            }
            samples
        })
    };

    let started = Instant::now();
    for round in 0..rounds {
        let attempts = (0..TASKS).map(|i| {
            let (limiter, user) = (limiters[i % limiters.len()].clone(), user.clone());
            tokio::spawn(async move { limiter.acquire_stream_lease(&user).await.expect("acquire") })
        });
        let mut winners = Vec::new();
        for attempt in join_all(attempts).await {
            if let Some(lease) = attempt.expect("task") {
                winners.push(lease);
            }
        }
        assert!(
            winners.len() <= LIMIT,
            "round {round}: {} acquires succeeded",
            winners.len()
        );
        // The set is empty at the start of each round, so exactly the limit must win.
        assert_eq!(winners.len(), LIMIT, "round {round}: too few winners");
        let card = zcard(&mut watch, &key).await;
        assert!(card <= LIMIT, "round {round}: the set holds {card} members");
        assert_eq!(card, winners.len(), "round {round}");

        let releases = winners.iter().enumerate().map(|(i, lease)| {
            let (limiter, user) = (&limiters[i % limiters.len()], &user);
            async move { limiter.release_stream_lease(user, lease).await.expect("release") }
        });
        join_all(releases).await;
        assert_eq!(
            zcard(&mut watch, &key).await,
            0,
            "round {round}: released leases left behind"
        );
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler");
    let max = max_seen.load(Ordering::Relaxed);
    assert!(max <= LIMIT, "the monitor saw {max} members");
    let ops = rounds * (TASKS + LIMIT);
    println!(
        "{label}: {rounds} rounds x {TASKS} tasks: {ops} lease ops in {elapsed:.2?} ({:.0} ops/s); \
         monitor: {samples} ZCARD samples, max {max}",
        ops as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_64_tasks_never_exceed_the_limit_over_1000_rounds() {
    let mut limiters = Vec::new();
    for _ in 0..4 {
        limiters.push(limiter(cfg(LIMIT, 60)).await);
    }
    contend(limiters, raw().await, raw().await, 1000, "standalone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_64_tasks_never_exceed_the_limit_over_300_rounds() {
    let mut limiters = Vec::new();
    for _ in 0..4 {
        limiters.push(cluster_limiter(cfg(LIMIT, 60)).await);
    }
    contend(limiters, raw_cluster().await, raw_cluster().await, 300, "cluster").await;
}
