//! The per-user cap on live channels (`DEMO_MAX_CHANNELS_PER_USER`): deployments and chats that
//! have not emitted `done` yet. Each live channel holds a slot, scored by its expiry (the
//! channel's history TTL), so that a slot whose release was lost (a crashed app) expires with
//! the channel. In memory mode the slots are a map of this process; in Redis mode they are one
//! sorted set per user, trimmed and counted atomically by a script, so the cap holds across app
//! instances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stream_core::{BoxError, ChannelId, UserId};
use stream_pubsub::stream_redis::{self, SharedConnection, redis};

/// Takes a slot: `KEYS[1]` the user's sorted set; `ARGV[1]` the channel, `ARGV[2]` the slot's
/// lifetime in milliseconds, `ARGV[3]` the cap. Drops the expired slots first (by the server's
/// clock, the same for every instance). Returns 1 when the channel holds a slot (also when it
/// already did: a resend after a lost reply takes nothing twice), 0 at the cap.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// The Redis key prefix of the users' slot sets.
const KEY_PREFIX: &str = "stream-demo:live-channels:";

/// The Redis key of an AI SDK chat's active stream: `stream-demo:chat:<chat id>` → the channel.
const CHAT_PREFIX: &str = "stream-demo:chat:";

/// Deletes a chat's record only while it still names ARGV[1] (a newer message may have replaced it).
const FORGET_CHAT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Where the slots are kept. Built by [`app_backends`](crate::app_backends).
pub struct ChannelCap {
    inner: Inner,
}

/// Every this many reservations, the memory cap forgets the users whose slots all expired.
const SWEEP_EVERY: u64 = 1024;

#[derive(Default)]
struct MemorySlots {
    users: HashMap<UserId, HashMap<ChannelId, Instant>>,
    reservations: u64,
    /// AI SDK chat id → its active stream's channel, until it ends (or the history TTL).
    chats: HashMap<String, (ChannelId, Instant)>,
}

enum Inner {
    Memory(Mutex<MemorySlots>),
    Redis {
        connection: Arc<SharedConnection>,
        reserve: redis::Script,
        forget_chat: redis::Script,
    },
}

impl std::fmt::Debug for ChannelCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Memory(_) => "ChannelCap::Memory",
            Inner::Redis { .. } => "ChannelCap::Redis",
        })
    }
}

impl ChannelCap {
    /// Slots in this process.
    pub fn memory() -> Self {
        Self {
            inner: Inner::Memory(Mutex::new(MemorySlots::default())),
        }
    }

    /// Slots in the Redis at `source` (a server or a cluster: each user's slots are one key),
    /// shared by every instance on it. One `PING`, now.
    pub async fn redis(
        source: impl Into<stream_redis::RedisSource>,
        response_timeout: Duration,
    ) -> Result<Self, BoxError> {
        let connection = source.into().into_shared()?;
        connection.set_response_timeout(response_timeout);
        let _: String = connection.run(&redis::cmd("PING"), None).await?;
        Ok(Self {
            inner: Inner::Redis {
                connection: Arc::new(connection),
                reserve: redis::Script::new(RESERVE),
                forget_chat: redis::Script::new(FORGET_CHAT),
            },
        })
    }

    /// Takes a slot of `user` for `channel`, living `ttl`: `false` when the user already has
    /// `limit` live ones.
    pub(crate) async fn reserve(
        &self,
        user: &UserId,
        channel: &ChannelId,
        ttl: Duration,
        limit: usize,
    ) -> Result<bool, BoxError> {
        match &self.inner {
            Inner::Memory(memory) => {
                let now = Instant::now();
                let mut memory = memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                memory.reservations += 1;
                if memory.reservations.is_multiple_of(SWEEP_EVERY) {
                    // Now and then, forget the users whose slots all expired, so that the map
                    // does not grow forever; each reservation only prunes its own user's slots.
                    memory.users.retain(|_, slots| {
                        slots.retain(|_, expiry| *expiry > now);
                        !slots.is_empty()
                    });
                }
                let slots = memory.users.entry(user.clone()).or_default();
                slots.retain(|_, expiry| *expiry > now);
                if slots.contains_key(channel) {
                    return Ok(true);
                }
                if slots.len() >= limit {
                    return Ok(false);
                }
                slots.insert(channel.clone(), now + ttl);
                Ok(true)
            }
            Inner::Redis {
                connection, reserve, ..
            } => {
                let key = format!("{KEY_PREFIX}{user}");
                let mut cmd = stream_redis::evalsha(reserve, &[&key]);
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                cmd.arg(channel.as_str()).arg(ttl_ms).arg(limit);
                let taken: i64 = connection.run(&cmd, Some(reserve)).await?;
                Ok(taken == 1)
            }
        }
    }

    /// Gives the slot of `user` for `channel` back (nothing when it has none).
    /// Records `channel` as the active stream of the AI SDK chat `chat`, for `ttl`.
    pub(crate) async fn set_chat(&self, chat: &str, channel: &ChannelId, ttl: Duration) -> Result<(), BoxError> {
        match &self.inner {
            Inner::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                memory.chats.retain(|_, (_, expiry)| *expiry > now);
                memory.chats.insert(chat.to_owned(), (channel.clone(), now + ttl));
                Ok(())
            }
            Inner::Redis { connection, .. } => {
                let mut cmd = redis::cmd("SET");
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                cmd.arg(format!("{CHAT_PREFIX}{chat}"))
                    .arg(channel.as_str())
                    .arg("PX")
                    .arg(ttl_ms);
                let _: String = connection.run(&cmd, None).await?;
                Ok(())
            }
        }
    }

    /// The active stream of the AI SDK chat `chat`, while it has one.
    pub(crate) async fn chat(&self, chat: &str) -> Result<Option<ChannelId>, BoxError> {
        let name = match &self.inner {
            Inner::Memory(memory) => {
                let memory = memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                memory
                    .chats
                    .get(chat)
                    .filter(|(_, expiry)| *expiry > Instant::now())
                    .map(|(channel, _)| channel.to_string())
            }
            Inner::Redis { connection, .. } => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(format!("{CHAT_PREFIX}{chat}"));
                connection.run::<Option<String>>(&cmd, None).await?
            }
        };
        Ok(name.and_then(|n| ChannelId::new(n).ok()))
    }

    /// Forgets that `channel` is the active stream of chat `chat` (its stream ended).
    pub(crate) async fn forget_chat(&self, chat: &str, channel: &ChannelId) -> Result<(), BoxError> {
        match &self.inner {
            Inner::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if memory.chats.get(chat).is_some_and(|(c, _)| c == channel) {
                    memory.chats.remove(chat);
                }
                Ok(())
            }
            Inner::Redis {
                connection,
                forget_chat,
                ..
            } => {
                let key = format!("{CHAT_PREFIX}{chat}");
                let mut cmd = stream_redis::evalsha(forget_chat, &[&key]);
                cmd.arg(channel.as_str());
                let _: i64 = connection.run(&cmd, Some(forget_chat)).await?;
                Ok(())
            }
        }
    }

    pub(crate) async fn release(&self, user: &UserId, channel: &ChannelId) -> Result<(), BoxError> {
        match &self.inner {
            Inner::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(slots) = memory.users.get_mut(user) {
                    slots.remove(channel);
                    if slots.is_empty() {
                        memory.users.remove(user);
                    }
                }
                Ok(())
            }
            Inner::Redis { connection, .. } => {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(format!("{KEY_PREFIX}{user}")).arg(channel.as_str());
                let _: i64 = connection.run(&cmd, None).await?;
                Ok(())
            }
        }
    }

    /// How many live slots `user` holds (memory mode; for tests).
    #[cfg(test)]
    pub(crate) fn memory_count(&self, user: &UserId) -> usize {
        match &self.inner {
            Inner::Memory(users) => {
                let now = Instant::now();
                let memory = users.lock().unwrap();
                memory
                    .users
                    .get(user)
                    .map_or(0, |slots| slots.values().filter(|e| **e > now).count())
            }
            Inner::Redis { .. } => unreachable!("memory mode only"),
        }
    }
}

/// A held slot: given back when dropped (from a task), unless [`keep`](Self::keep) was called.
/// Holders drop it once the channel's `done` is out, or when what they were setting up fails.
#[derive(Debug)]
pub(crate) struct ChannelSlot {
    cap: Arc<ChannelCap>,
    user: UserId,
    channel: ChannelId,
    armed: bool,
}

impl ChannelSlot {
    pub(crate) fn new(cap: Arc<ChannelCap>, user: UserId, channel: ChannelId) -> Self {
        Self {
            cap,
            user,
            channel,
            armed: true,
        }
    }

    /// Leaves the slot to expire with the channel's history: for a channel that may still be
    /// live although its holder stops watching it.
    pub(crate) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime: the slot expires with the channel.
        };
        let (cap, user, channel) = (self.cap.clone(), self.user.clone(), self.channel.clone());
        runtime.spawn(async move {
            if let Err(e) = cap.release(&user, &channel).await {
                tracing::warn!(user = %user, channel = %channel, error = %e, "channel slot not released; it expires with the channel");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_slots_cap_expire_and_release() {
        let cap = ChannelCap::memory();
        let user = UserId::new("u").unwrap();
        let ttl = Duration::from_secs(60);
        let (a, b, c) = (ChannelId::generate(), ChannelId::generate(), ChannelId::generate());
        assert!(cap.reserve(&user, &a, ttl, 2).await.unwrap());
        assert!(
            cap.reserve(&user, &a, ttl, 2).await.unwrap(),
            "taking it again is a no-op"
        );
        assert!(cap.reserve(&user, &b, ttl, 2).await.unwrap());
        assert!(!cap.reserve(&user, &c, ttl, 2).await.unwrap());
        assert!(cap.reserve(&UserId::new("v").unwrap(), &c, ttl, 2).await.unwrap());
        cap.release(&user, &a).await.unwrap();
        assert!(cap.reserve(&user, &c, ttl, 2).await.unwrap());
        assert_eq!(cap.memory_count(&user), 2);
        // Expired slots do not count.
        let short = ChannelCap::memory();
        assert!(short.reserve(&user, &a, Duration::from_millis(1), 1).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(short.reserve(&user, &b, ttl, 1).await.unwrap());
    }

    #[tokio::test]
    async fn a_dropped_slot_is_released_unless_kept() {
        let cap = Arc::new(ChannelCap::memory());
        let user = UserId::new("u").unwrap();
        let (a, b) = (ChannelId::generate(), ChannelId::generate());
        let ttl = Duration::from_secs(60);
        assert!(cap.reserve(&user, &a, ttl, 5).await.unwrap());
        assert!(cap.reserve(&user, &b, ttl, 5).await.unwrap());
        drop(ChannelSlot::new(cap.clone(), user.clone(), a));
        ChannelSlot::new(cap.clone(), user.clone(), b).keep();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cap.memory_count(&user), 1);
    }
}
