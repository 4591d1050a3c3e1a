//! The Lua scripts, one per operation. Each runs atomically on the Redis node that owns the
//! user's key and takes the time from Redis `TIME`, so client clocks never matter.
//!
//! They are public so that operators and benchmarks can load and run exactly what the limiter
//! runs (`redis-cli SCRIPT LOAD "$(…)"`, `redis-benchmark … EVALSHA <sha> 1 <key> …`). Scores are
//! lease expiries in milliseconds since the Unix epoch, by the Redis clock. A lease is live while
//! its score is greater than the current Redis time.

/// Takes a lease if the user is under the limit.
///
/// `KEYS[1]` the user's lease set; `ARGV[1]` the new lease id, `ARGV[2]` the limit, `ARGV[3]` the
/// lease TTL in ms, `ARGV[4]` the key grace in ms. Drops expired members, counts, adds the lease
/// if under the limit, and makes the key expire `grace` after its last lease. Returns the new
/// lease's expiry in ms, or 0 when the user is at the limit.
///
/// An id that is already a live member is extended instead of counted again, so resending the
/// same acquire after a lost reply never takes a second slot.
pub const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
local expires = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], string.format('%d', tonumber(last[2]) + tonumber(ARGV[4])))
return expires
";

/// Extends a live lease by the TTL.
///
/// `KEYS[1]` the user's lease set; `ARGV[1]` the lease id, `ARGV[2]` the lease TTL in ms,
/// `ARGV[3]` the key grace in ms. Only a member that exists and has not expired is extended, so a
/// released or expired lease is never revived. Returns the new expiry in ms, or 0.
pub const REFRESH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  return 0
end
local expires = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], string.format('%d', tonumber(last[2]) + tonumber(ARGV[3])))
return expires
";

/// Gives a lease back.
///
/// `KEYS[1]` the user's lease set; `ARGV[1]` the lease id. Returns 1 if it was there, else 0.
/// Redis deletes the key with its last member.
pub const RELEASE: &str = r"
return redis.call('ZREM', KEYS[1], ARGV[1])
";

/// Counts the live leases (read-only: expired members are ignored, not removed).
///
/// `KEYS[1]` the user's lease set. Returns the number of members scored after the Redis time.
pub const COUNT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], string.format('(%d', now), '+inf')
";

/// Lists the live leases, soonest expiry first (read-only).
///
/// `KEYS[1]` the user's lease set. Returns `[id, expiry_ms, id, expiry_ms, …]`.
pub const LIST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%d', now), '+inf', 'WITHSCORES')
";

/// The scripts, hashed once; each call is an `EVALSHA` (with one `SCRIPT LOAD` and retry if the
/// server lost its script cache).
pub(crate) struct Scripts {
    pub(crate) acquire: redis::Script,
    pub(crate) refresh: redis::Script,
    pub(crate) release: redis::Script,
    pub(crate) count: redis::Script,
    pub(crate) list: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: redis::Script::new(ACQUIRE),
            refresh: redis::Script::new(REFRESH),
            release: redis::Script::new(RELEASE),
            count: redis::Script::new(COUNT),
            list: redis::Script::new(LIST),
        }
    }

    pub(crate) fn all(&self) -> [&redis::Script; 5] {
        [&self.acquire, &self.refresh, &self.release, &self.count, &self.list]
    }

    /// Each script with its name in `stream_redis_script_calls_total{script}`.
    pub(crate) fn named(&self) -> [(&redis::Script, &'static str); 5] {
        [
            (&self.acquire, "acquire"),
            (&self.refresh, "refresh"),
            (&self.release, "release"),
            (&self.count, "count"),
            (&self.list, "list"),
        ]
    }
}
