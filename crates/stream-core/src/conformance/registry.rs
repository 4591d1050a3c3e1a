//! The channel registry suite.

use std::time::Duration;

use super::{unique_channel, unique_user};
use crate::registry::{ChannelRegistry, RegistryError};

/// Runs every check.
pub async fn run(registry: &dyn ChannelRegistry) {
    let ch = unique_channel("owned");
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    assert_eq!(registry.owner(&ch).await.expect("owner"), None);
    registry
        .register(&ch, &alice, Duration::from_secs(60))
        .await
        .expect("register");
    assert_eq!(registry.owner(&ch).await.expect("owner"), Some(alice.clone()));
    registry
        .register(&ch, &alice, Duration::from_secs(60))
        .await
        .expect("re-register by the owner");
    match registry.register(&ch, &bob, Duration::from_secs(60)).await {
        Err(RegistryError::AlreadyOwned { channel }) => assert_eq!(channel, ch),
        other => panic!("expected AlreadyOwned, got {other:?}"),
    }
    assert_eq!(registry.owner(&ch).await.expect("owner"), Some(alice));

    let short = unique_channel("short");
    registry
        .register(&short, &bob, Duration::from_secs(1))
        .await
        .expect("register");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        registry.owner(&short).await.expect("owner"),
        None,
        "the record should expire"
    );
}
