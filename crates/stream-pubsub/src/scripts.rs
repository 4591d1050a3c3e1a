//! The Lua scripts. Each touches the keys of one channel only (one hash tag), so each runs on one
//! cluster node, and each is one round trip (`EVALSHA`).

use redis::Script;

/// The Lua shared by the scripts that accept events: the broker makes event ids here.
///
/// KEYS: history stream, done marker, sequence, liveness record, owner record (one hash tag).
/// `accept(first, ms_min)` takes the events in ARGV from index `first` on, two values each: `'1'`
/// for a `done` event (else empty), and the event JSON, which starts with `{"id":"` and a
/// 26-character provisional id. For each event it takes the channel's next sequence number,
/// writes the id (`ulid(ms, seq)`, see `EventId`) into the JSON, appends the entry `<ms>-<seq>`
/// to the history (`XADD MAXLEN ~`) and publishes the JSON. The millisecond is the server's
/// `TIME`, never less than the channel's last one, so ids only grow. The sequence state
/// `<ms>:<seq>` and the history share the history TTL; publishing also renews the owner record
/// (`PEXPIRE … GT`: never shortened). A `done` records its id in the done marker and deletes the
/// liveness record. Returns `{ms, first seq}`.
const ACCEPT: &str = r#"
local hist, done, seqk, live, owner = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local chan, maxlen, ttl, pub = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local B32 = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function b32(n, len)
  local out = {}
  for i = len, 1, -1 do
    local d = n % 32
    out[i] = string.sub(B32, d + 1, d + 1)
    n = (n - d) / 32
  end
  return table.concat(out)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function accept(first, token)
  local ms, seq = now_ms(), 0
  local state = redis.call('GET', seqk)
  if state then
    local sep = string.find(state, ':', 1, true)
    ms = math.max(ms, tonumber(string.sub(state, 1, sep - 1)))
    seq = tonumber(string.sub(state, sep + 1))
  end
  local start = seq + 1
  local msid, msarg = b32(ms, 10), string.format('%.0f', ms)
  for i = first, #ARGV, 2 do
    seq = seq + 1
    local id = msid .. b32(seq, 16)
    local json = ARGV[i + 1]
    if string.sub(json, 1, 7) ~= '{"id":"' then
      return redis.error_reply('event JSON must start with its id')
    end
    json = '{"id":"' .. id .. string.sub(json, 34)
    local entry = msarg .. '-' .. string.format('%.0f', seq)
    if i == first and token ~= '' then
      redis.call('XADD', hist, 'MAXLEN', '~', maxlen, entry, 'e', json, 't', token)
    else
      redis.call('XADD', hist, 'MAXLEN', '~', maxlen, entry, 'e', json)
    end
    if ARGV[i] == '1' then
      redis.call('SET', done, id, 'NX', 'PX', ttl)
      redis.call('DEL', live)
    end
    redis.call(pub, chan, json)
  end
  redis.call('SET', seqk, msarg .. ':' .. string.format('%.0f', seq), 'PX', ttl)
  redis.call('PEXPIRE', hist, ttl)
  redis.call('PEXPIRE', owner, ttl, 'GT')
  return { ms, start }
end
"#;

/// Publishes events: [`ACCEPT`], after a check for a resend.
///
/// ARGV: pub/sub channel, history max length, TTL in ms, the publish command (`PUBLISH` or
/// `SPUBLISH`), the call's token (its first event's provisional id), `'1'` when this is a resend
/// of a call whose outcome is unknown (else empty), then the events. The token is kept on the
/// call's first history entry; a resend looks for it among the newest entries and, when the first
/// send went through, answers its ids again instead of appending a second copy.
const PUBLISH: &str = r#"
local token, resend = ARGV[5], ARGV[6]
if resend == '1' then
  for _, entry in ipairs(redis.call('XREVRANGE', hist, '+', '-', 'COUNT', 1000)) do
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 't' and fields[j + 1] == token then
        local sep = string.find(entry[1], '-', 1, true)
        return { tonumber(string.sub(entry[1], 1, sep - 1)), tonumber(string.sub(entry[1], sep + 1)) }
      end
    end
  end
end
return accept(7, token)
"#;

/// Keeps a channel's producer liveness record, or withdraws it.
///
/// ARGV: pub/sub channel, history max length, TTL in ms (as for [`PUBLISH`]), then the liveness
/// TTL in ms, or empty to withdraw. The record holds the server time at which it lapses, and lives
/// as long as the history; each heartbeat also renews the history, the sequence and the owner, so a
/// long quiet job keeps its stream. Nothing is written for a channel that has its `done`.
const HEARTBEAT: &str = r#"
if ARGV[5] == '' then
  return redis.call('DEL', live)
end
if redis.call('EXISTS', done) == 1 then
  return 0
end
redis.call('SET', live, string.format('%.0f', now_ms() + tonumber(ARGV[5])), 'PX', ttl)
redis.call('PEXPIRE', hist, ttl)
redis.call('PEXPIRE', seqk, ttl)
redis.call('PEXPIRE', owner, ttl, 'GT')
return 1
"#;

/// Checks a channel's producer: `-1` when the channel has its `done`, `-2` when it has no liveness
/// record, the milliseconds left when the record is alive, else `0` after ending the channel with
/// the events in ARGV (from index 5: the `producer_lost` error and done, in [`ACCEPT`]'s form).
/// Being one script, only one checker ends a channel.
const CHECK: &str = r#"
if redis.call('EXISTS', done) == 1 then
  return -1
end
local lapses = redis.call('GET', live)
if not lapses then
  return -2
end
local left = tonumber(lapses) - now_ms()
if left > 0 then
  return left
end
accept(5, '')
redis.call('DEL', live)
return 0
"#;

/// Reads the channel's done marker and history from a stream id on, atomically.
///
/// KEYS: history stream, done marker, owner record. ARGV: the first stream id to return (`-`,
/// `<ms>-0`, or `(<ms>-<seq>` for the entries after an event). Returns
/// `{done id or '', XRANGE entries, whether the owner record exists, whether the history exists}`.
const READ: &str = r#"
return {
  redis.call('GET', KEYS[2]) or '',
  redis.call('XRANGE', KEYS[1], ARGV[1], '+'),
  redis.call('EXISTS', KEYS[3]),
  redis.call('EXISTS', KEYS[1]),
}
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

/// The scripts, with their SHA1 computed once.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) heartbeat: Script,
    pub(crate) check: Script,
    pub(crate) read: Script,
    pub(crate) register: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(&format!("{ACCEPT}{PUBLISH}")),
            heartbeat: Script::new(&format!("{ACCEPT}{HEARTBEAT}")),
            check: Script::new(&format!("{ACCEPT}{CHECK}")),
            read: Script::new(READ),
            register: Script::new(REGISTER),
        }
    }
}
