//! The Redis names of a channel.
//!
//! Every name of one channel carries the hash tag `{<channel id>}`, so in a Redis Cluster the
//! history, the done marker, the owner record and the sharded pub/sub channel all live in one slot:
//! the publish script may touch them together, and `SPUBLISH` from the script is allowed. A
//! [`ChannelId`] has no brace or colon, and the key prefix is checked for braces at connect time.

use std::io::Write;

use redis::{RedisWrite, ToRedisArgs};
use stream_core::ChannelId;

/// The names one publish or one history read touches.
#[derive(Debug, Clone)]
pub(crate) struct ChannelKeys {
    /// The pub/sub channel: `{prefix}{<channel>}`.
    pub(crate) pubsub: String,
    /// The history stream: `{prefix}{<channel>}:h`.
    pub(crate) history: String,
    /// The id of the channel's first `done` event: `{prefix}{<channel>}:d`.
    pub(crate) done: String,
    /// The channel's id state, `<ms>:<seq>:<renewed>:<epoch>`: `{prefix}{<channel>}:n`.
    pub(crate) seq: String,
    /// The producer's liveness record: `{prefix}{<channel>}:l`.
    pub(crate) live: String,
    /// The owner record: `{prefix}{<channel>}:owner`.
    pub(crate) owner: String,
}

impl ChannelKeys {
    pub(crate) fn new(prefix: &str, channel: &ChannelId) -> Self {
        let pubsub = format!("{prefix}{{{channel}}}");
        Self {
            history: format!("{pubsub}:h"),
            done: format!("{pubsub}:d"),
            seq: format!("{pubsub}:n"),
            live: format!("{pubsub}:l"),
            owner: format!("{pubsub}:owner"),
            pubsub,
        }
    }

    /// The keys of the scripts that accept events, in their order.
    pub(crate) fn accept_keys(&self) -> [&str; 5] {
        [&self.history, &self.done, &self.seq, &self.live, &self.owner]
    }
}

/// The suffixes of [`ChannelKeys::accept_keys`], for keys written straight into a command.
pub(crate) const ACCEPT_SUFFIXES: [&str; 5] = [":h", ":d", ":n", ":l", ":owner"];

/// A key of a channel written straight into a command's buffer (no `String` per publish):
/// `{prefix}{<channel>}{suffix}`.
pub(crate) struct KeyArg<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) channel: &'a ChannelId,
    pub(crate) suffix: &'static str,
}

impl ToRedisArgs for KeyArg<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        // Writing to a command buffer cannot fail.
        let _ = write!(arg, "{}{{{}}}{}", self.prefix, self.channel, self.suffix);
    }
}

/// The cancel request record of a channel: `{prefix}{<channel>}:c`.
pub(crate) fn cancel_key(prefix: &str, channel: &ChannelId) -> String {
    format!("{prefix}{{{channel}}}:c")
}

/// The owner record of a channel: `{prefix}{<channel>}:owner`.
pub(crate) fn owner_key(prefix: &str, channel: &ChannelId) -> String {
    format!("{prefix}{{{channel}}}:owner")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_of_a_channel_shares_one_hash_tag() {
        let ch = ChannelId::new("job-42").unwrap();
        let keys = ChannelKeys::new("stream:", &ch);
        assert_eq!(keys.pubsub, "stream:{job-42}");
        assert_eq!(keys.history, "stream:{job-42}:h");
        assert_eq!(keys.done, "stream:{job-42}:d");
        assert_eq!(keys.seq, "stream:{job-42}:n");
        assert_eq!(keys.live, "stream:{job-42}:l");
        assert_eq!(keys.owner, "stream:{job-42}:owner");
        assert_eq!(owner_key("stream:", &ch), "stream:{job-42}:owner");
        let arg = KeyArg {
            prefix: "stream:",
            channel: &ch,
            suffix: ":h",
        };
        assert_eq!(arg.to_redis_args(), vec![keys.history.into_bytes()]);
    }
}
