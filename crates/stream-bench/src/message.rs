//! What every benchmark message carries, how receivers check it, and the open-loop publisher.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
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
        walk(value, 4)
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
