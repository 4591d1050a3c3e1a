//! Refresh racing release: whatever the interleaving, a released lease stays released.

use std::time::Instant;

use futures_util::future::join_all;
use stream_core::conformance::unique_user;
use stream_lease::redis;

use crate::common::{cfg, limiter, raw, zcard};

const ROUNDS: usize = 300;
const REFRESHERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_racing_release_never_revives_the_lease() {
    // Releaser and refreshers on different connections, so that their scripts interleave freely.
    let releaser = limiter(cfg(5, 60)).await;
    let refresher = limiter(cfg(5, 60)).await;
    let mut conn = raw().await;
    let user = unique_user("race");
    let key = releaser.key(&user);
    let (mut refreshed_before, mut refused_first) = (0usize, 0usize);
    let started = Instant::now();

    for round in 0..ROUNDS {
        let lease = releaser
            .acquire_stream_lease(&user)
            .await
            .expect("acquire")
            .expect("lease");
        let refreshes = (0..REFRESHERS).map(|_| {
            let (refresher, user, lease) = (refresher.clone(), user.clone(), lease.clone());
            tokio::spawn(async move {
                // Refresh until the release wins; every refresh after that must say `false`.
                let mut ok = 0usize;
                while refresher.refresh_stream_lease(&user, &lease).await.expect("refresh") {
                    ok += 1;
                    assert!(ok < 100_000, "the release never took effect");
                }
                ok
            })
        });
        let release = {
            let (releaser, user, lease) = (releaser.clone(), user.clone(), lease.clone());
            tokio::spawn(async move { releaser.release_stream_lease(&user, &lease).await.expect("release") })
        };
        let (counts, released) = tokio::join!(join_all(refreshes), release);
        released.expect("release task");
        for ok in counts {
            match ok.expect("refresh task") {
                0 => refused_first += 1,
                _ => refreshed_before += 1,
            }
        }

        assert_eq!(
            releaser.get_active_streams(&user).await.expect("count"),
            0,
            "round {round}"
        );
        assert!(
            !refresher.refresh_stream_lease(&user, &lease).await.expect("refresh"),
            "round {round}: a released lease was revived"
        );
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&key)
            .arg(lease.as_str())
            .query_async(&mut conn)
            .await
            .expect("ZSCORE");
        assert_eq!(score, None, "round {round}: the member is back");
        assert_eq!(zcard(&mut conn, &key).await, 0, "round {round}");
    }
    println!(
        "{ROUNDS} rounds in {:.2?}: {refreshed_before} refreshers won at least once before the release, \
         {refused_first} lost from the start",
        started.elapsed()
    );
}
