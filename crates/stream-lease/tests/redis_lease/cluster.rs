//! Redis Cluster layout: a user's key carries the user id as its hash tag, so all of one user's
//! keys are in one slot whatever the namespace, on the node that owns that slot.

use std::collections::HashSet;

use stream_core::conformance::unique_user;
use stream_lease::{StreamLeaseConfig, redis};

use crate::common::{cfg, cluster_limiter, cluster_nodes, raw_cluster, zcard};

async fn keyslot(conn: &mut redis::cluster_async::ClusterConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .expect("CLUSTER KEYSLOT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_of_a_user_share_the_users_slot() {
    let limiter = cluster_limiter(cfg(5, 60)).await;
    let other_namespace = limiter
        .with_config(StreamLeaseConfig {
            key_namespace: "other_leases".into(),
            ..cfg(5, 60)
        })
        .expect("config");
    let mut conn = raw_cluster().await;
    let user = unique_user("slot");

    for _ in 0..3 {
        assert!(limiter.acquire_stream_lease(&user).await.expect("acquire").is_some());
    }
    assert!(
        other_namespace
            .acquire_stream_lease(&user)
            .await
            .expect("acquire")
            .is_some()
    );
    let key = limiter.key(&user);
    let other_key = other_namespace.key(&user);
    assert_eq!(key, format!("stream_leases:{{{user}}}"));

    let slot = keyslot(&mut conn, user.as_str()).await;
    assert_eq!(keyslot(&mut conn, &key).await, slot, "{key}");
    assert_eq!(keyslot(&mut conn, &other_key).await, slot, "{other_key}");
    assert_eq!(zcard(&mut conn, &key).await, 3);
    assert_eq!(zcard(&mut conn, &other_key).await, 1);

    // The set lives on exactly one node, the slot's owner; the others redirect.
    let mut owners = 0;
    for node in cluster_nodes() {
        let mut direct = redis::Client::open(node.as_str())
            .expect("node url")
            .get_multiplexed_async_connection()
            .await
            .expect("node connection");
        match redis::cmd("EXISTS").arg(&key).query_async::<i64>(&mut direct).await {
            Ok(1) => owners += 1,
            Ok(n) => panic!("{node} answered EXISTS with {n}"),
            Err(e) => assert_eq!(
                e.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::Moved),
                "{node}: {e}"
            ),
        }
    }
    assert_eq!(owners, 1);

    // Different users spread over the slots (the tag is the user, not the namespace).
    let mut slots = HashSet::new();
    for _ in 0..16 {
        let user = unique_user("spread");
        slots.insert(keyslot(&mut conn, &limiter.key(&user)).await);
    }
    assert!(slots.len() > 1, "every user landed in one slot");
}
