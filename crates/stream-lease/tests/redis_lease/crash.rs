//! Crash recovery: another OS process holds leases (refreshing them) and is killed with SIGKILL.
//! Nothing releases the leases; with a 2 s TTL they free themselves, and the key goes away after
//! the grace.
//!
//! The holder is this same test binary, re-executed with `--exact` on this same test and the user
//! id in `HOLDER_USER_ENV` (as `<parent pid>:<user>`). With that variable the test is the holder,
//! which runs until it is killed; without it (a normal test run), it is the crash test.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stream_core::conformance::unique_user;
use stream_lease::{LeaseId, LeaseStore, StreamLease, StreamLeaseConfig, UserId, redis};

use crate::common::{limiter, raw, redis_url};

const HOLDER_USER_ENV: &str = "STREAM_LEASE_TEST_HOLDER_USER";
const TEST: &str = "crash::leases_of_a_killed_process_free_themselves";
const HELD: usize = 3;

fn short_ttl() -> StreamLeaseConfig {
    StreamLeaseConfig {
        limit: 5,
        ttl_seconds: 2,
        key_ttl_grace: 1,
        ..StreamLeaseConfig::default()
    }
}

/// The crash test in this process; or, in the child process, the holder, which never returns.
#[test]
fn leases_of_a_killed_process_free_themselves() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match holder_user() {
        Some(user) => runtime.block_on(hold(user)),
        None => runtime.block_on(crash_a_holder()),
    }
}

/// The holder's user, when this process is the holder: `HOLDER_USER_ENV` is `<parent pid>:<user>`,
/// set by this process's parent. A variable set by anyone else fails the test instead of turning
/// it into a holder that checks nothing.
fn holder_user() -> Option<UserId> {
    let value = std::env::var(HOLDER_USER_ENV).ok()?;
    let (parent, user) = value
        .split_once(':')
        .unwrap_or_else(|| panic!("{HOLDER_USER_ENV}={value:?}: want <parent pid>:<user>"));
    assert_eq!(
        parent.parse::<u32>().ok(),
        Some(std::os::unix::process::parent_id()),
        "{HOLDER_USER_ENV} is set, but not by this process's parent: this is not the crash test's holder"
    );
    Some(UserId::new(user).expect("user id"))
}

/// The holder side, run only in the child process: acquires `HELD` auto-refreshed leases, prints
/// their ids, then waits to be killed.
async fn hold(user: UserId) {
    let store: Arc<dyn LeaseStore> = Arc::new(limiter(short_ttl()).await);
    let mut held = Vec::new();
    for _ in 0..HELD {
        let lease = StreamLease::acquire(store.clone(), user.clone())
            .await
            .expect("holder lease")
            .auto_refresh();
        println!("LEASE {}", lease.lease_id());
        held.push(lease);
    }
    println!("READY");
    use std::io::Write as _;
    std::io::stdout().flush().expect("flush");
    std::future::pending::<()>().await;
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The crash test, in this process: starts the holder, checks its leases, kills it and waits for
/// the leases to free themselves.
async fn crash_a_holder() {
    let user = unique_user("crash");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = KillOnDrop(
        Command::new(exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(HOLDER_USER_ENV, format!("{}:{}", std::process::id(), user.as_str()))
            .env("REDIS_URL", redis_url())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the holder"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let read = tokio::task::spawn_blocking(move || {
        let mut ids = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("holder output");
            // libtest may print "test crash::leases_of_a_killed_process_free_themselves ... " in
            // front of the first line.
            if let Some((_, id)) = line.split_once("LEASE ") {
                ids.push(LeaseId::new(id.trim()).expect("lease id"));
            } else if line.ends_with("READY") {
                return ids;
            }
        }
        panic!("the holder exited before holding its leases");
    });
    let mut held = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the holder took too long")
        .expect("reader");
    assert_eq!(held.len(), HELD);

    let limiter = limiter(short_ttl()).await;
    let key = limiter.key(&user);
    let mut listed: Vec<LeaseId> = limiter
        .get_all_leases(&user)
        .await
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    listed.sort();
    held.sort();
    assert_eq!(listed, held, "Redis holds the holder's leases");

    // Past a TTL the leases are still there: the live holder refreshes them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(limiter.get_active_streams(&user).await.expect("count"), HELD);
    let mut conn = raw().await;
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.expect("PTTL");
    assert!(
        pttl > 0 && pttl <= 3000,
        "key TTL is {pttl} ms, want at most ttl + grace = 3000"
    );

    child.0.kill().expect("SIGKILL");
    let status = child.0.wait().expect("wait");
    assert_eq!(status.signal(), Some(9), "the holder died of SIGKILL: {status:?}");
    let killed = Instant::now();

    while limiter.get_active_streams(&user).await.expect("count") != 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "the killed holder's leases did not expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("leases freed {:?} after SIGKILL", killed.elapsed());
    // Counting only reads; the key itself expires `key_ttl_grace` after its last lease.
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        if !exists {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(9), "the key outlived its grace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No refresh brings a dead holder's lease back.
    for lease in &held {
        assert!(
            !limiter.refresh_stream_lease(&user, lease).await.expect("refresh"),
            "an expired lease of the dead holder was revived"
        );
    }

    // And the slots are free again.
    for _ in 0..5 {
        assert!(limiter.acquire_stream_lease(&user).await.expect("acquire").is_some());
    }
}
