//! Who owns a channel.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::BoxError;
use crate::ids::{ChannelId, UserId};

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The channel is already registered to another user.
    #[error("channel {channel} already belongs to another user")]
    AlreadyOwned {
        /// The channel.
        channel: ChannelId,
    },
    /// The backend failed.
    #[error("channel registry backend failed: {0}")]
    Backend(#[source] BoxError),
}

/// Records the owner of each channel, so that users cannot read each other's streams.
///
/// The app registers the owner when it creates the channel; the record expires after its TTL.
#[async_trait]
pub trait ChannelRegistry: Send + Sync + 'static {
    /// Records `owner` for `channel`. Registering the same owner again renews the TTL; another
    /// owner gets [`RegistryError::AlreadyOwned`]. One round trip.
    async fn register(&self, channel: &ChannelId, owner: &UserId, ttl: Duration) -> Result<(), RegistryError>;

    /// The channel's owner, or `None` for an unknown or expired channel. One round trip.
    async fn owner(&self, channel: &ChannelId) -> Result<Option<UserId>, RegistryError>;
}

#[async_trait]
impl<T: ChannelRegistry + ?Sized> ChannelRegistry for Arc<T> {
    async fn register(&self, channel: &ChannelId, owner: &UserId, ttl: Duration) -> Result<(), RegistryError> {
        (**self).register(channel, owner, ttl).await
    }
    async fn owner(&self, channel: &ChannelId) -> Result<Option<UserId>, RegistryError> {
        (**self).owner(channel).await
    }
}
