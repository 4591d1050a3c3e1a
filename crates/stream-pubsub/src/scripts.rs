//! The Lua scripts. Each touches the keys of one channel only (one hash tag), so each runs on one
//! cluster node, and each is one round trip (`EVALSHA`).

use redis::Script;

/// The Lua shared by the scripts that accept events: the broker makes event ids here.
///
/// KEYS: history stream, done marker, sequence, liveness record, owner record (one hash tag).
/// `accept(first, token)` takes the events in ARGV from index `first` on: the 1-based index in
/// the call of its first `done` event (else empty), then one pair per **chunk** of at most
/// `min(64, max)` events: the chunk's event count, and its **body**, the events one per line,
/// each as its JSON after its id: what follows `{"id":"` and the 26-character provisional id,
/// from the closing quote on (compact JSON has no raw line break). The script never looks into
/// a body, so an event costs Redis nothing but the copying of its bytes.
///
/// It takes the channel's next sequence numbers for the events: event `k` of the call (from 0)
/// gets the id `ulid(ms, start + k)` (see `EventId`), which the readers put in front of its
/// JSON. Each chunk is one history entry, keyed `<epoch>-<last seq>`, with the field `i` =
/// `<ms>:<first seq>` and the field `e` = the body; the call's first entry is headed by `t` (the
/// call's token, for a resend) when the call has one. Each chunk is published as one message,
/// `<ms>:<first seq>`, a line break, then the body (see `fanout`). The millisecond is the
/// server's `TIME`, never less than the channel's last one, so ids only grow. A `done` records
/// its id in the done marker and deletes the liveness record. Returns `{ms, first seq}`.
///
/// What it does not do on every call, to keep Redis's CPU per event low (it is shared by every
/// app instance):
/// - **Trimming** (`XTRIM … MINID <epoch>-<seq - max + 1>`) runs when a call crosses a multiple of
///   `min(64, max)`; entries are keyed by their last sequence number, so the history keeps at
///   least the newest `max` events (an entry goes only when its last event is older than those),
///   and fewer than `max + 2 × min(64, max)`.
/// - **TTLs.** The sequence state `<ms>:<seq>:<renewed>` records when the TTLs were last renewed.
///   A call renews them (the state, the history and, with `PEXPIRE … GT`, the owner record) only
///   when a tenth of the TTL has passed since, and then sets them to the TTL plus that tenth
///   (`keep`), so every key still lives at least the TTL after the channel's last event. Otherwise
///   the state is written with `KEEPTTL`. Every other script that sets these TTLs uses `keep` too.
/// - **The epoch** is the millisecond at which the channel's sequence began (its first event, or
///   the first after its state was lost: a Redis restart without persistence starts a new epoch).
///   It keys the history entries, so that trimming by count is exact, and lets a history read tell
///   a resume point of an earlier epoch (see [`READ`]). The sequence state is
///   `<ms>:<seq>:<renewed>:<epoch>`; a state lost apart from the history (evicted) is recovered
///   from the history's last entry, so ids go on where they were.
/// - **Number-to-text conversions**, which cost about half a microsecond each in Redis's Lua (a
///   `sprintf`): the millisecond is put together from `TIME`'s digits, and the epoch and the
///   renewal time are kept as the text they were read as.
const ACCEPT: &str = r#"
local hist, done, seqk, live, owner = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local chan, maxlen, ttl, pub = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local slack = math.ceil(tonumber(ttl) / 10)
local keep = tonumber(ttl) + slack
-- The server's millisecond, as a number and as its digits (put together from TIME's, without a
-- number-to-text conversion, which is costly in Lua).
local function now_ms()
  local t = redis.call('TIME')
  local us = t[2]
  local text = t[1] .. string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
  return tonumber(text), text
end
-- The id of an event: its millisecond in 10 Crockford base32 characters, its sequence number in 16.
local function ulid(ms, seq)
  local B32, out = '0123456789ABCDEFGHJKMNPQRSTVWXYZ', {}
  for k = 26, 11, -1 do
    local d = seq % 32
    out[k] = string.sub(B32, d + 1, d + 1)
    seq = (seq - d) / 32
  end
  for k = 10, 1, -1 do
    local d = ms % 32
    out[k] = string.sub(B32, d + 1, d + 1)
    ms = (ms - d) / 32
  end
  return table.concat(out)
end
local function accept(first, token)
  local ms, msarg = now_ms()
  local seq, renewed, rtext, epoch = 0, 0, '0', nil
  local state = redis.call('GET', seqk)
  if state then
    local last, s, r, e = string.match(state, '^(%d+):(%d+):?(%d*):?(%d*)$')
    local lastms = tonumber(last)
    if lastms > ms then
      ms, msarg = lastms, last
    end
    seq = tonumber(s)
    if r ~= '' then
      renewed, rtext = tonumber(r), r
    end
    -- A state written before epochs: the last millisecond keeps the entry ids growing.
    epoch = e ~= '' and e or last
  else
    -- Lost apart from the history (evicted): go on from the history's last entry.
    local top = redis.call('XREVRANGE', hist, '+', '-', 'COUNT', 1)[1]
    if top then
      local e, s = string.match(top[1], '^(%d+)-(%d+)$')
      epoch, seq = e, tonumber(s)
      local epochms = tonumber(e)
      if epochms > ms then
        ms, msarg = epochms, e
      end
    else
      epoch = msarg
    end
  end
  local start = seq + 1
  local doneat = tonumber(ARGV[first])
  local msgs, b, seqtext = {}, 0, nil
  for i = first + 1, #ARGV, 2 do
    local count = tonumber(ARGV[i])
    if not count or count < 1 then
      return redis.error_reply('a chunk must be sent as its event count and its body')
    end
    local head = msarg .. ':' .. (seq + 1)
    seq = seq + count
    -- Integers below 10^14 print exactly with Lua's %.14g; made once, for the id and the state.
    seqtext = tostring(seq)
    if b == 0 and token ~= '' then
      redis.call('XADD', hist, epoch .. '-' .. seqtext, 't', token, 'i', head, 'e', ARGV[i + 1])
    else
      redis.call('XADD', hist, epoch .. '-' .. seqtext, 'i', head, 'e', ARGV[i + 1])
    end
    b = b + 1
    msgs[b] = head .. '\n' .. ARGV[i + 1]
  end
  if b == 0 then
    return { ms, start }
  end
  if doneat then
    redis.call('SET', done, ulid(ms, start + doneat - 1), 'NX', 'PX', keep)
    redis.call('DEL', live)
  end
  local max = tonumber(maxlen)
  local trim = math.min(64, math.max(1, max))
  if math.floor(seq / trim) ~= math.floor((start - 1) / trim) and seq > max then
    redis.call('XTRIM', hist, 'MINID', epoch .. '-' .. (seq - max + 1))
  end
  for k = 1, b do
    redis.call(pub, chan, msgs[k])
  end
  if ms - renewed >= slack then
    redis.call('SET', seqk, msarg .. ':' .. seqtext .. ':' .. msarg .. ':' .. epoch, 'PX', keep)
    redis.call('PEXPIRE', hist, keep)
    redis.call('PEXPIRE', owner, keep, 'GT')
  else
    redis.call('SET', seqk, msarg .. ':' .. seqtext .. ':' .. rtext .. ':' .. epoch, 'KEEPTTL')
  end
  return { ms, start }
end
"#;

/// Publishes events: [`ACCEPT`], after a check for a resend.
///
/// ARGV: pub/sub channel, history max length, TTL in ms, the publish command (`PUBLISH` or
/// `SPUBLISH`), the call's token (its first event's provisional id), `'1'` when this is a resend
/// of a call whose outcome is unknown (else empty), then the events. The token heads the call's
/// first history entry; a resend looks for it among the newest entries and, when the first send
/// went through, answers its ids again (that entry's `i`) instead of appending a second copy.
const PUBLISH: &str = r#"
local token, resend = ARGV[5], ARGV[6]
if resend == '1' then
  for _, entry in ipairs(redis.call('XREVRANGE', hist, '+', '-', 'COUNT', 1000)) do
    local fields = entry[2]
    if fields[1] == 't' and fields[2] == token then
      local m, s = string.match(fields[4], '^(%d+):(%d+)$')
      return { tonumber(m), tonumber(s) }
    end
  end
end
return accept(7, token)
"#;

/// Keeps a channel's producer liveness record, or withdraws it.
///
/// ARGV: pub/sub channel, history max length, TTL in ms (as for [`PUBLISH`]), then the liveness
/// TTL in ms, or empty to withdraw. The record holds the server time at which it lapses, and lives
/// as long as the history; each heartbeat also renews the history, the sequence and the owner (to
/// [`ACCEPT`]'s `keep`), so a long quiet job keeps its stream. Nothing is written for a channel that has its `done`.
const HEARTBEAT: &str = r#"
if ARGV[5] == '' then
  return redis.call('DEL', live)
end
if redis.call('EXISTS', done) == 1 then
  return 0
end
redis.call('SET', live, string.format('%.0f', now_ms() + tonumber(ARGV[5])), 'PX', keep)
redis.call('PEXPIRE', hist, keep)
redis.call('PEXPIRE', seqk, keep)
redis.call('PEXPIRE', owner, keep, 'GT')
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

/// Reads the channel's done marker and history after an event, atomically.
///
/// KEYS: history stream, done marker, owner record, sequence state. ARGV: the resume point's
/// millisecond and sequence number (both empty for the whole history). A resume point of the
/// channel's current epoch (its millisecond is not before the epoch's start) reads from the entry
/// holding the next event on (`XRANGE (<epoch>-<seq> +`: the broker drops the events up to the
/// resume point from that entry). One from before (the channel started over since: a Redis
/// restart without persistence), or with no state to tell, reads the whole history, and the
/// replay announces what it cannot account for. Returns
/// `{done id or '', XRANGE entries, whether the owner record exists, whether the history exists}`.
const READ: &str = r#"
local start = '-'
if ARGV[1] ~= '' then
  local state = redis.call('GET', KEYS[4])
  if state then
    local last, e = string.match(state, '^(%d+):%d+:?%d*:?(%d*)$')
    local epoch = tonumber(e) or tonumber(last)
    if epoch and tonumber(ARGV[1]) >= epoch then
      start = '(' .. string.format('%.0f', epoch) .. '-' .. ARGV[2]
    end
  end
end
return {
  redis.call('GET', KEYS[2]) or '',
  redis.call('XRANGE', KEYS[1], start, '+'),
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

/// Records a cancel request unless the channel has its `done`: KEYS done marker, cancel record;
/// ARGV the record's TTL in milliseconds. Returns 1 when recorded, 0 when the channel is done.
const CANCEL: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 1
"#;

/// The scripts, with their SHA1 computed once.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) heartbeat: Script,
    pub(crate) check: Script,
    pub(crate) read: Script,
    pub(crate) register: Script,
    pub(crate) cancel: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(&format!("{ACCEPT}{PUBLISH}")),
            heartbeat: Script::new(&format!("{ACCEPT}{HEARTBEAT}")),
            check: Script::new(&format!("{ACCEPT}{CHECK}")),
            read: Script::new(READ),
            register: Script::new(REGISTER),
            cancel: Script::new(CANCEL),
        }
    }

    /// Each script with its name in `stream_redis_script_calls_total{script}`.
    pub(crate) fn named(&self) -> [(&Script, &'static str); 6] {
        [
            (&self.publish, "publish"),
            (&self.heartbeat, "heartbeat"),
            (&self.check, "check"),
            (&self.read, "read"),
            (&self.register, "register"),
            (&self.cancel, "cancel"),
        ]
    }
}
