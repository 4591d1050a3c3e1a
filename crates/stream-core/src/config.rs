//! Channel settings shared by the brokers and the SSE pipeline.

use std::time::Duration;

/// Channel settings, with the seed's defaults and the history settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Prefix of Redis keys and channels (default `"stream:"`).
    pub key_prefix: String,
    /// How long opening a subscription may wait for the broker (default 1 s; in the seed, the
    /// wait of one poll of the subscription). The Redis broker waits at most this long for its
    /// shared subscriber connection to confirm a new channel, which only takes long while Redis
    /// is unreachable; then the subscribe fails and the SSE request is answered `503`. The SSE
    /// pipeline itself does not poll: its pings, idle timeout and disconnects are exact.
    pub subscribe_timeout: Duration,
    /// Keepalive ping interval (default 15 s).
    pub ping_interval: Duration,
    /// Close a stream after this long without an event (default 300 s).
    pub max_idle_time: Duration,
    /// Events kept per channel for late subscribers and resume (default 5000).
    pub history_max_len: usize,
    /// How long a channel's history is kept after its last event (default 1 h).
    pub history_ttl: Duration,
    /// Events queued per local subscriber before the slow-subscriber policy applies (default 1024).
    pub subscriber_queue: usize,
    /// Producer liveness (default 5 s): how often a subscription checks, while its channel is
    /// quiet, whether the channel's producer still sends heartbeats; a lost producer ends the
    /// channel with `error` (`producer_lost`) and `done`. An [`Emitter`](crate::Emitter) sends one
    /// heartbeat per [`Emitter::DEFAULT_HEARTBEAT`](crate::Emitter::DEFAULT_HEARTBEAT) unless told
    /// otherwise. `None` turns the check off.
    pub heartbeat_interval: Option<Duration>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            key_prefix: "stream:".into(),
            subscribe_timeout: Duration::from_secs(1),
            ping_interval: Duration::from_secs(15),
            max_idle_time: Duration::from_secs(300),
            history_max_len: 5000,
            history_ttl: Duration::from_secs(3600),
            subscriber_queue: 1024,
            heartbeat_interval: Some(Duration::from_secs(5)),
        }
    }
}
