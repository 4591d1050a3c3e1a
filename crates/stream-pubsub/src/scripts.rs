//! The Lua scripts. Each touches the keys of one channel only (one hash tag), so each runs on one
//! cluster node, and each is one round trip (`EVALSHA`).

use redis::Script;

/// Appends events to the channel history and publishes them.
///
/// KEYS: history stream, done marker. ARGV: pub/sub channel, history max length, TTL in ms,
/// the publish command (`PUBLISH` or `SPUBLISH`), then three values per event: the event id's
/// millisecond, the event id when the event is `done` (else empty), the event JSON.
///
/// Three commands per event on the common path (`XADD`, `PUBLISH`, `PEXPIRE` once per call):
/// every extra `redis.call` costs about as much as a whole `PUBLISH`. The stream entry is
/// `e=<json>` and the message is the JSON itself. The entry id's millisecond is the event id's
/// millisecond when that keeps the stream ordered (`<ms>-*`), else the stream picks one itself
/// (`*`, never smaller than the last). Either way an entry's millisecond is at least its event
/// id's, so a resume after id X can start the scan at X's millisecond. The first `done` event id
/// is kept in the done marker, which expires with the history. Being one script, the history
/// order and the publish order of a channel are the same.
const PUBLISH: &str = r#"
local hist, done = KEYS[1], KEYS[2]
local chan, maxlen, ttl, pub = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 5, #ARGV, 3 do
  local added = redis.pcall('XADD', hist, 'MAXLEN', '~', maxlen, ARGV[i] .. '-*', 'e', ARGV[i + 2])
  if type(added) == 'table' and added.err then
    redis.call('XADD', hist, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i + 2])
  end
  if ARGV[i + 1] ~= '' then
    redis.call('SET', done, ARGV[i + 1], 'NX', 'PX', ttl)
  end
  redis.call(pub, chan, ARGV[i + 2])
end
redis.call('PEXPIRE', hist, ttl)
return 1
"#;

/// Reads the channel's position, done marker and history from a stream id on, atomically.
///
/// KEYS: history stream, done marker. ARGV: the first stream id to return (`-` or `<ms>-0`).
/// Returns `{entries added to the stream ever, done id or '', XRANGE entries}`. The range always
/// ends with the stream's last entry, so the n-th of `k` returned entries is the channel's
/// `added - k + n`-th event: positions are exact without a counter on the publish path.
const READ: &str = r#"
local added = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then
      added = info[i + 1]
      break
    end
  end
end
return { added, redis.call('GET', KEYS[2]) or '', redis.call('XRANGE', KEYS[1], ARGV[1], '+') }
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
