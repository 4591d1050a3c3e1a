//! The Lua scripts. Each touches the keys of one channel only (one hash tag), so each runs on one
//! cluster node, and each is one round trip (`EVALSHA`).

use redis::Script;

/// Appends events to the channel history and publishes them.
///
/// KEYS: history stream, metadata hash. ARGV: pub/sub channel, history max length, TTL in ms,
/// the publish command (`PUBLISH` or `SPUBLISH`), then three values per event: the event id's
/// millisecond, the event id when the event is `done` (else empty), the event JSON.
///
/// Each event gets the next sequence number of the channel (`HINCRBY meta s`). The stream entry
/// is `s=<seq> e=<json>`; the pub/sub message is `<seq> <json>`. The entry id's millisecond is the
/// event id's millisecond when that keeps the stream ordered (`<ms>-*`), else the stream picks one
/// itself (`*`, never smaller than the last). Either way an entry's millisecond is at least its
/// event id's, so a resume after id X can start the scan at X's millisecond. The first `done`
/// event id is kept in `meta d`. Both keys expire `ttl` after the last publish.
const PUBLISH: &str = r#"
local hist, meta = KEYS[1], KEYS[2]
local chan, maxlen, ttl, pub = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local seq = 0
for i = 5, #ARGV, 3 do
  seq = redis.call('HINCRBY', meta, 's', 1)
  local added = redis.pcall('XADD', hist, 'MAXLEN', '~', maxlen, ARGV[i] .. '-*', 's', seq, 'e', ARGV[i + 2])
  if type(added) == 'table' and added.err then
    redis.call('XADD', hist, 'MAXLEN', '~', maxlen, '*', 's', seq, 'e', ARGV[i + 2])
  end
  if ARGV[i + 1] ~= '' then
    redis.call('HSETNX', meta, 'd', ARGV[i + 1])
  end
  redis.call(pub, chan, seq .. ' ' .. ARGV[i + 2])
end
redis.call('PEXPIRE', hist, ttl)
redis.call('PEXPIRE', meta, ttl)
return seq
"#;

/// Reads the channel's metadata and its history from a stream id on, atomically.
///
/// KEYS: history stream, metadata hash. ARGV: the first stream id to return (`-` or `<ms>-0`).
/// Returns `{last seq, done id or '', XRANGE entries}`.
const READ: &str = r#"
local m = redis.call('HMGET', KEYS[2], 's', 'd')
return { m[1] or '0', m[2] or '', redis.call('XRANGE', KEYS[1], ARGV[1], '+') }
"#;

/// Records a channel owner: set when absent or already this owner (renewing the TTL), else 0.
///
/// KEYS: owner key. ARGV: owner, TTL in ms.
const REGISTER: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// The three scripts, with their SHA1 computed once.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) read: Script,
    pub(crate) register: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            register: Script::new(REGISTER),
        }
    }
}
