//! What every benchmark message carries, how receivers check it, and the open-loop publisher.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::latency;

/// The fields every benchmark message carries, wherever the server puts the payload.
///
/// `w` is the publishing worker and `s` its sequence number on the channel: each worker sends one
/// request at a time, so a receiver must see each worker's `s` strictly increase. `t` is the send
/// time in nanoseconds since the Unix epoch (same machine, same clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Publishing worker.
    pub w: u32,
    /// The worker's sequence number on this channel, from 0.
    pub s: u64,
    /// Send time, ns since the Unix epoch.
    pub t: u64,
}

impl Marker {
    /// The message as a JSON object, with `pad` bytes of filler in a `pad` field.
    pub fn to_object(self, pad: usize) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("w".into(), self.w.into());
        map.insert("s".into(), self.s.into());
        map.insert("t".into(), self.t.into());
        if pad > 0 {
            map.insert("pad".into(), "x".repeat(pad).into());
        }
        map
    }

    /// Finds the marker in a received JSON document: the first object, at most four levels
    /// deep, with numeric `w`, `s` and `t` (the event itself, Nchan's raw body, or Centrifugo's
    /// `pub.data`).
    pub fn find(value: &Value) -> Option<Self> {
        fn walk(value: &Value, depth: u32) -> Option<Marker> {
            let Value::Object(map) = value else {
                return None;
            };
            let field = |k: &str| map.get(k).and_then(Value::as_u64);
            if let (Some(w), Some(s), Some(t)) = (field("w"), field("s"), field("t")) {
                return Some(Marker {
                    w: u32::try_from(w).ok()?,
                    s,
                    t,
                });
            }
            if depth == 0 {
                return None;
            }
            map.values().find_map(|v| walk(v, depth - 1))
        }
        walk(value, MAX_DEPTH)
    }

    /// [`Marker::find`] on a JSON text, with the same answer as parsing it into a [`Value`]
    /// first (`None` for invalid JSON), without building the document: the parser keeps only
    /// the numbers under `w`, `s` and `t` and, per object, which member holds a marker.
    ///
    /// `find` looks into members in key order (serde_json's map is sorted) and keeps the last
    /// of duplicate keys; so does this, so even documents no server sends get the same answer.
    pub fn find_in_json(json: &[u8]) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let scanned = Scan(Some(MAX_DEPTH)).deserialize(&mut de).ok()?;
        de.end().ok()?;
        scanned.found
    }
}

/// How deep below the document [`Marker::find`] looks for the marker object.
const MAX_DEPTH: u32 = 4;

/// What [`Scan`] keeps of a JSON value.
#[derive(Debug, Default)]
struct Scanned {
    /// The value, if it is an integer that fits a `u64` (what `Value::as_u64` answers).
    num: Option<u64>,
    /// The marker `Marker::find`'s walk finds in the value, if it is a searched object.
    found: Option<Marker>,
}

/// Reads any JSON value, building nothing. `Scan(Some(depth))` searches an object value as
/// `Marker::find`'s walk at `depth` does; `Scan(None)` skips objects.
///
/// Every value is parsed as [`Value`]'s deserializer parses it (strings unescaped, numbers
/// converted), so the document is rejected exactly when `serde_json::from_str::<Value>` would
/// reject it.
#[derive(Debug, Clone, Copy)]
struct Scan(Option<u32>);

impl<'de> DeserializeSeed<'de> for Scan {
    type Value = Scanned;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Scanned, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan {
    type Value = Scanned;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scanned, E> {
        Ok(Scanned {
            num: u64::try_from(v).ok(),
            found: None,
        })
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scanned, E> {
        Ok(Scanned {
            num: Some(v),
            found: None,
        })
    }

    fn visit_f64<E>(self, _: f64) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }

    fn visit_unit<E>(self) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scanned, A::Error> {
        // `find` does not look into arrays.
        while seq.next_element_seed(Scan(None))?.is_some() {}
        Ok(Scanned::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scanned, A::Error> {
        let Some(depth) = self.0 else {
            while map.next_key_seed(Scan(None))?.is_some() {
                map.next_value_seed(Scan(None))?;
            }
            return Ok(Scanned::default());
        };
        // Members are searched at depth - 1; at depth 0 only this object's own fields count.
        let member = Scan(depth.checked_sub(1));
        let (mut w, mut s, mut t) = (None, None, None);
        let mut candidates = Candidates::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(member)?;
            match &*key {
                "w" => w = value.num,
                "s" => s = value.num,
                "t" => t = value.num,
                _ => {}
            }
            candidates.set(key, value.found);
        }
        let found = match (w, s, t) {
            (Some(w), Some(s), Some(t)) => u32::try_from(w).ok().map(|w| Marker { w, s, t }),
            _ => candidates.first(),
        };
        Ok(Scanned { num: None, found })
    }
}

/// An object key, borrowed from the input unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// The members of one object that hold a marker, by key, the last one winning for duplicate
/// keys. One is kept inline: an allocation only for two or more.
#[derive(Debug, Default)]
struct Candidates<'de> {
    first: Option<(Cow<'de, str>, Marker)>,
    more: Vec<(Cow<'de, str>, Marker)>,
}

impl<'de> Candidates<'de> {
    /// Records what member `key` holds, replacing an earlier member with the same key.
    fn set(&mut self, key: Cow<'de, str>, found: Option<Marker>) {
        if self.first.is_none() && found.is_none() {
            return;
        }
        if self.first.as_ref().is_some_and(|(k, _)| *k == key) {
            self.first = self.more.pop();
        } else if !self.more.is_empty() {
            self.more.retain(|(k, _)| *k != key);
        }
        if let Some(m) = found {
            if self.first.is_none() {
                self.first = Some((key, m));
            } else {
                self.more.push((key, m));
            }
        }
    }

    /// The marker of the member with the smallest key: the one `find` meets first.
    fn first(self) -> Option<Marker> {
        let first = self.first?;
        let best = self
            .more
            .into_iter()
            .fold(first, |best, c| if c.0 < best.0 { c } else { best });
        Some(best.1)
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What one subscription received: loss, duplicate and order checks and its latency histogram.
#[derive(Debug, Clone)]
pub struct SubTracker {
    last: Vec<Option<u64>>,
    /// Messages with a marker.
    pub received: u64,
    /// Messages whose `s` equals the worker's previous one.
    pub duplicates: u64,
    /// Messages whose `s` is below the worker's previous one (reordered or an older duplicate).
    pub out_of_order: u64,
    /// Frames without a marker (pings, connect replies).
    pub other: u64,
    /// Messages the transport reported as dropped (a lagging in-process receiver).
    pub lagged: u64,
    /// Publish-to-receive latency in µs.
    pub latency: Histogram<u64>,
    /// When the last marker arrived.
    pub last_at: Option<Instant>,
    /// Why the subscription failed or ended before it was stopped, if it did.
    pub error: Option<String>,
}

impl SubTracker {
    /// A tracker for messages from `workers` publishing workers.
    pub fn new(workers: usize) -> Self {
        Self {
            last: vec![None; workers],
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            other: 0,
            lagged: 0,
            latency: latency::new_histogram(),
            last_at: None,
            error: None,
        }
    }

    /// Records a message received at `now_ns`.
    pub fn record(&mut self, m: Marker, now_ns: u64) {
        self.received += 1;
        self.last_at = Some(Instant::now());
        latency::record(&mut self.latency, now_ns.saturating_sub(m.t) / 1_000);
        let Some(last) = self.last.get_mut(m.w as usize) else {
            self.out_of_order += 1;
            return;
        };
        match *last {
            Some(prev) if m.s == prev => self.duplicates += 1,
            Some(prev) if m.s < prev => self.out_of_order += 1,
            _ => *last = Some(m.s),
        }
    }

    /// Distinct messages received (duplicates not counted).
    pub fn distinct(&self) -> u64 {
        self.received - self.duplicates
    }
}

/// An open-loop publishing plan: message `n` is due at `n / rate` seconds after the start,
/// whatever the answers to earlier ones, and goes to channel `n % channels`. Publishing stops
/// at the end of `duration` even if the workers are behind.
#[derive(Debug, Clone, Copy)]
pub struct PublishPlan {
    /// Concurrent publishing workers (one request at a time each: K keep-alive connections).
    pub workers: usize,
    /// Offered messages per second, in total.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Number of channels.
    pub channels: usize,
    /// Filler bytes per message.
    pub pad: usize,
}

/// What the publishers did.
#[derive(Debug, Clone)]
pub struct PublishOutcome {
    /// Successful publishes, by worker then channel.
    pub ok: Vec<Vec<u64>>,
    /// Failed publishes.
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// When publishing started.
    pub started: Instant,
    /// From the start until the last answer.
    pub elapsed: Duration,
    /// Publish request latency (send to answer), µs.
    pub latency: Histogram<u64>,
}

impl PublishOutcome {
    /// Successful publishes to channel `c`, all workers.
    pub fn ok_on(&self, c: usize) -> u64 {
        self.ok.iter().map(|w| w.get(c).copied().unwrap_or(0)).sum()
    }

    /// Successful publishes, all channels.
    pub fn total_ok(&self) -> u64 {
        self.ok.iter().flatten().sum()
    }
}

/// Runs `plan`, calling `send(worker, channel, message)` for every message. `send` answers
/// `Err(reason)` for a failed publish.
pub async fn open_loop<F, Fut>(plan: PublishPlan, send: F) -> PublishOutcome
where
    F: Fn(usize, usize, Map<String, Value>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tokio_start = tokio::time::Instant::from_std(started);
    let mut tasks = Vec::with_capacity(plan.workers);
    for worker in 0..plan.workers {
        let next = next.clone();
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = vec![0u64; plan.channels];
            let mut seq = vec![0u64; plan.channels];
            let mut errors = 0;
            let mut first_error = None;
            let mut hist = latency::new_histogram();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let due = Duration::from_secs_f64(n as f64 / plan.rate);
                // Stop at the end of the window even when behind: what was due but not sent by
                // then is offered load the server did not take.
                if due >= plan.duration || started.elapsed() >= plan.duration {
                    break;
                }
                tokio::time::sleep_until(tokio_start + due).await;
                let channel = (n % plan.channels as u64) as usize;
                let marker = Marker {
                    w: worker as u32,
                    s: seq[channel],
                    t: now_nanos(),
                };
                seq[channel] += 1;
                let sent = Instant::now();
                match send(worker, channel, marker.to_object(plan.pad)).await {
                    Ok(()) => ok[channel] += 1,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                latency::record(&mut hist, sent.elapsed().as_micros() as u64);
            }
            (ok, errors, first_error, hist)
        }));
    }
    let mut outcome = PublishOutcome {
        ok: Vec::new(),
        errors: 0,
        first_error: None,
        started,
        elapsed: Duration::ZERO,
        latency: latency::new_histogram(),
    };
    for task in tasks {
        match task.await {
            Ok((ok, errors, first_error, hist)) => {
                outcome.ok.push(ok);
                outcome.errors += errors;
                if outcome.first_error.is_none() {
                    outcome.first_error = first_error;
                }
                let _ = outcome.latency.add(&hist);
            }
            Err(e) => {
                outcome.ok.push(vec![0; plan.channels]);
                outcome.errors += 1;
                outcome.first_error.get_or_insert(format!("publisher task failed: {e}"));
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_markers_where_each_server_puts_them() {
        let m = Marker { w: 2, s: 7, t: 99 };
        let flat = Value::Object(m.to_object(3));
        assert_eq!(Marker::find(&flat), Some(m));
        let event = json!({"id": "x", "type": "data", "w": 2, "s": 7, "t": 99});
        assert_eq!(Marker::find(&event), Some(m));
        let centrifugo = json!({"channel": "c", "pub": {"data": {"w": 2, "s": 7, "t": 99}, "offset": 3}});
        assert_eq!(Marker::find(&centrifugo), Some(m));
        assert_eq!(Marker::find(&json!({"type": "ping"})), None);
    }

    /// `find_in_json`'s answer, after checking it is `find`'s on the parsed document.
    fn scan(json: &str) -> Option<Marker> {
        let found = Marker::find_in_json(json.as_bytes());
        let reference = serde_json::from_str::<Value>(json).ok().as_ref().and_then(Marker::find);
        assert_eq!(found, reference, "{json}");
        found
    }

    #[test]
    fn find_in_json_agrees_with_find() {
        let m = Some(Marker { w: 2, s: 7, t: 99 });
        // Top level, as serde_json writes the bench server's events (sorted keys) and with
        // other key orders and whitespace.
        assert_eq!(scan(r#"{"s":7,"t":99,"w":2}"#), m);
        assert_eq!(scan(r#" { "w" : 2 , "s" : 7 , "t" : 99 } "#), m);
        assert_eq!(
            scan(r#"{"channel":"c","id":"01J","pad":"xxxxxxxx","s":7,"t":99,"ts":"2025","type":"data","w":2}"#),
            m
        );
        // Nested in `payload`, in Centrifugo's `pub.data`, in Nchan's raw body.
        assert_eq!(
            scan(r#"{"id":"x","payload":{"pad":"xx","s":7,"t":99,"w":2},"type":"data"}"#),
            m
        );
        assert_eq!(
            scan(r#"{"channel":"c","pub":{"data":{"pad":"xx","s":7,"t":99,"w":2},"offset":3}}"#),
            m
        );
        assert_eq!(scan(r#"{"pad":"","s":7,"t":99,"w":2}"#), m);
        // No marker: pings, connect replies, other JSON, not JSON.
        assert_eq!(scan(r#"{"type":"ping"}"#), None);
        assert_eq!(
            scan(r#"{"connect":{"client":"abc","version":"6.1.0","ping":25,"pong":true}}"#),
            None
        );
        assert_eq!(scan("{}"), None);
        assert_eq!(scan("[]"), None);
        assert_eq!(scan("7"), None);
        assert_eq!(scan(r#""w""#), None);
        assert_eq!(scan(""), None);
        assert_eq!(scan("[DONE]"), None);
        assert_eq!(scan(r#"{"w":2,"s":7}"#), None);
        // Four levels below the document is the deepest.
        assert_eq!(scan(r#"{"a":{"b":{"c":{"d":{"w":2,"s":7,"t":99}}}}}"#), m);
        assert_eq!(scan(r#"{"a":{"b":{"c":{"d":{"e":{"w":2,"s":7,"t":99}}}}}}"#), None);
        // Arrays are not searched.
        assert_eq!(scan(r#"{"a":[{"w":2,"s":7,"t":99}]}"#), None);
        assert_eq!(scan(r#"[{"w":2,"s":7,"t":99}]"#), None);
        // Non-numeric, negative, fractional, too large fields.
        assert_eq!(scan(r#"{"w":"2","s":7,"t":99}"#), None);
        assert_eq!(scan(r#"{"w":2,"s":7,"t":null}"#), None);
        assert_eq!(scan(r#"{"w":2,"s":-7,"t":99}"#), None);
        assert_eq!(scan(r#"{"w":2,"s":7.0,"t":99}"#), None);
        assert_eq!(scan(r#"{"w":2,"s":-0,"t":99}"#), None);
        assert_eq!(scan(r#"{"w":2,"s":7e0,"t":99}"#), None);
        assert_eq!(scan(r#"{"w":4294967296,"s":7,"t":99}"#), None);
        assert_eq!(scan(r#"{"w":18446744073709551616,"s":7,"t":99}"#), None);
        assert_eq!(
            scan(r#"{"w":4294967295,"s":18446744073709551615,"t":0}"#),
            Some(Marker {
                w: u32::MAX,
                s: u64::MAX,
                t: 0
            })
        );
        // A marker-like object whose `w` is too large hides the markers below it.
        assert_eq!(
            scan(r#"{"a":{"w":4294967296,"s":7,"t":99,"x":{"w":2,"s":7,"t":99}}}"#),
            None
        );
        // Escapes: in other fields, in the pad, in keys.
        assert_eq!(
            scan(r#"{"msg":"a \"quoted\" \\ {\"w\":1,\"s\":1,\"t\":1} \u00e9\n","s":7,"t":99,"w":2}"#),
            m
        );
        assert_eq!(scan(r#"{"pad":"\"}{\"","s":7,"t":99,"w":2}"#), m);
        assert_eq!(scan(r#"{"\u0077":2,"\u0073":7,"t":99}"#), m);
        assert_eq!(scan(r#"{"payload":{"\u0077":2,"s":7,"t":99}}"#), m);
        // Invalid JSON anywhere, even after the marker, means no marker.
        assert_eq!(scan(r#"{"w":2,"s":7,"t":99,"x":}"#), None);
        assert_eq!(scan(r#"{"w":2,"s":7,"t":99} x"#), None);
        assert_eq!(scan(r#"{"w":2,"s":7,"t":99,"x":1e400}"#), None);
        assert_eq!(scan(r#"{"w":2,"s":7,"t":99,"x":"\ud800"}"#), None);
        assert_eq!(scan(r#"{"w":2,"s":7,"t":99,"x":"\q"}"#), None);
        assert_eq!(
            scan(&format!(
                "{{\"w\":2,\"s\":7,\"t\":99,\"x\":{}1{}}}",
                "[".repeat(200),
                "]".repeat(200)
            )),
            None
        );
        // Duplicate keys: the last one counts.
        assert_eq!(scan(r#"{"w":1,"s":7,"t":99,"w":2}"#), m);
        assert_eq!(scan(r#"{"w":2,"s":7,"t":99,"w":"2"}"#), None);
        assert_eq!(scan(r#"{"a":{"w":1,"s":7,"t":99},"a":{"w":2,"s":7,"t":99}}"#), m);
        assert_eq!(scan(r#"{"a":{"w":1,"s":7,"t":99},"b":{"w":2,"s":7,"t":99},"a":0}"#), m);
        // Several members with markers: the first in key order, whatever the document order.
        assert_eq!(scan(r#"{"b":{"w":1,"s":7,"t":99},"a":{"w":2,"s":7,"t":99}}"#), m);
        assert_eq!(
            scan(r#"{"d":{"w":5,"s":7,"t":99},"c":{"x":{"w":2,"s":7,"t":99}},"e":{"w":1,"s":7,"t":99}}"#),
            m
        );
        // A member named like a field can hold the marker.
        assert_eq!(scan(r#"{"w":{"w":2,"s":7,"t":99}}"#), m);
    }

    #[test]
    fn find_in_json_agrees_with_find_on_random_documents() {
        // Random documents from a small grammar, with a deterministic xorshift generator.
        struct Gen(u64);
        impl Gen {
            fn below(&mut self, n: u64) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 % n
            }
            fn value(&mut self, out: &mut String, depth: u32) {
                const SCALARS: [&str; 10] = [
                    "0",
                    "1",
                    "2",
                    "-1",
                    "1.5",
                    "4294967296",
                    "\"x\"",
                    "\"\\\"\"",
                    "null",
                    "true",
                ];
                match self.below(if depth == 0 { 1 } else { 4 }) {
                    0 => out.push_str(SCALARS[self.below(SCALARS.len() as u64) as usize]),
                    1 => {
                        out.push('[');
                        for i in 0..self.below(3) {
                            if i > 0 {
                                out.push(',');
                            }
                            self.value(out, depth - 1);
                        }
                        out.push(']');
                    }
                    _ => {
                        const KEYS: [&str; 7] = ["w", "s", "t", "a", "b", "pad", "\\u0077"];
                        out.push('{');
                        let marker = self.below(2) == 0;
                        if marker {
                            // Mostly valid fields, which later members may override.
                            const FIELDS: [&str; 5] = ["1", "2", "3", "-1", "\"1\""];
                            for (i, key) in ["w", "s", "t"].into_iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                out.push_str(&format!("\"{key}\":"));
                                out.push_str(FIELDS[self.below(FIELDS.len() as u64) as usize]);
                            }
                        }
                        for i in 0..self.below(5) {
                            if i > 0 || marker {
                                out.push(',');
                            }
                            out.push('"');
                            out.push_str(KEYS[self.below(KEYS.len() as u64) as usize]);
                            out.push_str("\":");
                            self.value(out, depth - 1);
                        }
                        out.push('}');
                    }
                }
            }
        }
        let mut generator = Gen(0x2545_F491_4F6C_DD1D);
        let (mut found, mut valid) = (0, 0);
        for _ in 0..20_000 {
            let mut doc = String::new();
            generator.value(&mut doc, 7);
            found += usize::from(scan(&doc).is_some());
            valid += usize::from(serde_json::from_str::<Value>(&doc).is_ok());
        }
        // The grammar does produce markers, so both answers were exercised.
        assert!(found > 1000 && valid == 20_000, "{found} markers");
    }

    #[test]
    fn tracker_counts_duplicates_and_reordering() {
        let mut t = SubTracker::new(2);
        let now = now_nanos();
        for (w, s) in [(0, 0), (0, 1), (1, 0), (0, 1), (0, 0), (1, 1)] {
            t.record(Marker { w, s, t: now }, now);
        }
        assert_eq!((t.received, t.duplicates, t.out_of_order, t.distinct()), (6, 1, 1, 5));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn open_loop_sends_every_message_once() {
        let plan = PublishPlan {
            workers: 3,
            rate: 1000.0,
            duration: Duration::from_millis(100),
            channels: 4,
            pad: 0,
        };
        let outcome = open_loop(plan, |_, _, _| async { Ok(()) }).await;
        assert_eq!(outcome.total_ok(), 100);
        assert_eq!(outcome.ok_on(0), 25);
        assert_eq!(outcome.errors, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn open_loop_stops_at_the_deadline_when_behind() {
        let plan = PublishPlan {
            workers: 1,
            rate: 10_000.0,
            duration: Duration::from_millis(100),
            channels: 1,
            pad: 0,
        };
        let outcome = open_loop(plan, |_, _, _| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        })
        .await;
        assert!(outcome.total_ok() < 100, "{} sent", outcome.total_ok());
        assert!(outcome.elapsed < Duration::from_millis(500));
    }
}
