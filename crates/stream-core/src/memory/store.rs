use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::event::{Event, EventId};
use crate::store::{AppendError, EventPage, EventQuery, EventStore, PageCursor, SortOrder, StoreError, StoreStats};

/// An in-process event archive: the embedded default. It keeps the newest `capacity` events
/// (default 100,000) and drops the oldest beyond that, counting them as dropped.
#[derive(Debug)]
pub struct MemoryEventStore {
    capacity: usize,
    events: Mutex<Vec<Event>>,
    accepted: AtomicU64,
    dropped: AtomicU64,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::with_capacity(100_000)
    }
}

type SortKey = (OffsetDateTime, EventId);

fn key(e: &Event) -> SortKey {
    (e.timestamp, e.id)
}

fn encode_cursor(k: &SortKey) -> PageCursor {
    PageCursor(format!("{}:{}", k.0.unix_timestamp_nanos(), k.1))
}

fn decode_cursor(c: &PageCursor) -> Result<SortKey, StoreError> {
    let bad = || StoreError::InvalidQuery(format!("bad page cursor {:?}", c.0));
    let (nanos, id) = c.0.split_once(':').ok_or_else(bad)?;
    let nanos: i128 = nanos.parse().map_err(|_| bad())?;
    let ts = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
    Ok((ts, id.parse().map_err(|_| bad())?))
}

impl MemoryEventStore {
    /// A store that keeps at most `capacity` events.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            events: Mutex::default(),
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    fn append(&self, event: &Event) -> Result<(), AppendError> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(event);
        let at = events.partition_point(|e| key(e) <= k);
        events.insert(at, event.clone());
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if events.len() > self.capacity {
            let excess = events.len() - self.capacity;
            events.drain(..excess);
            self.dropped.fetch_add(excess as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let after = query.after.as_ref().map(decode_cursor).transpose()?;
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let limit = query.limit;
        let past_cursor = |e: &&Event| match (&after, query.order) {
            (None, _) => true,
            (Some(c), SortOrder::Ascending) => key(e) > *c,
            (Some(c), SortOrder::Descending) => key(e) < *c,
        };
        let page: Vec<Event> = match query.order {
            SortOrder::Ascending => events
                .iter()
                .filter(|e| query.matches(e))
                .filter(past_cursor)
                .take(limit)
                .cloned()
                .collect(),
            SortOrder::Descending => events
                .iter()
                .rev()
                .filter(|e| query.matches(e))
                .filter(past_cursor)
                .take(limit)
                .cloned()
                .collect(),
        };
        let next = (page.len() == limit && limit > 0).then(|| encode_cursor(&key(&page[limit - 1])));
        Ok(EventPage { events: page, next })
    }

    fn stats(&self) -> StoreStats {
        let accepted = self.accepted.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        StoreStats {
            accepted,
            written: accepted,
            dropped,
        }
    }
}
