//! The event store suite.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, json};
use time::OffsetDateTime;

use super::unique_channel;
use crate::event::{Event, EventId, EventType};
use crate::store::{EventQuery, EventStore, SortOrder};

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// Runs every check.
pub async fn run(store: Arc<dyn EventStore>) {
    let a = unique_channel("store-a");
    let b = unique_channel("store-b");
    // Whole milliseconds, one second apart, an hour ago: exact time ranges on every backend.
    let now_ms = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let base = OffsetDateTime::from_unix_timestamp(now_ms / 1000 - 3600).expect("time");
    let kinds = [EventType::Log, EventType::Progress, EventType::Error];
    let mut sent = Vec::new();
    for n in 0..30usize {
        let mut payload = Map::new();
        let text = if n % 7 == 0 {
            format!("found the needle {n}")
        } else {
            format!("plain message {n}")
        };
        payload.insert("message".into(), json!(text));
        payload.insert("n".into(), json!(n));
        payload.insert("nested".into(), json!({"deep": {"list": [n, "x"]}}));
        let mut e = Event::new(a.clone(), kinds[n % 3].clone(), payload).expect("event");
        e.timestamp = base + Duration::from_secs(n as u64);
        sent.push(e);
    }
    for e in &sent {
        store.append(e).expect("append");
    }
    for n in 0..5usize {
        let mut e = Event::data(b.clone(), "message", format!("needle in b {n}")).expect("event");
        e.timestamp = base + Duration::from_secs(n as u64);
        store.append(&e).expect("append");
    }
    store.flush().await.expect("flush");

    let all = store
        .query(&EventQuery {
            limit: 1000,
            ..EventQuery::channel(a.clone())
        })
        .await
        .expect("query");
    assert_eq!(ids(&all.events), ids(&sent), "all events of the channel, oldest first");
    assert_eq!(all.events[8].payload, sent[8].payload, "payload kept exactly");
    assert_eq!(all.events[8].kind, sent[8].kind);
    assert_eq!(all.events[8].timestamp, sent[8].timestamp);

    let types = vec![EventType::Log, EventType::Error];
    let q = EventQuery {
        event_types: types.clone(),
        limit: 1000,
        ..EventQuery::channel(a.clone())
    };
    let got = store.query(&q).await.expect("query by types");
    let want: Vec<_> = sent.iter().filter(|e| types.contains(&e.kind)).cloned().collect();
    assert_eq!(ids(&got.events), ids(&want));

    let q = EventQuery {
        from: Some(base + Duration::from_secs(10)),
        to: Some(base + Duration::from_secs(20)),
        ..EventQuery::channel(a.clone())
    };
    assert_eq!(
        ids(&store.query(&q).await.expect("query by time").events),
        ids(&sent[10..20])
    );

    let q = EventQuery {
        text: Some("needle".into()),
        ..EventQuery::channel(a.clone())
    };
    let want: Vec<_> = sent
        .iter()
        .filter(|e| e.message().is_some_and(|m| m.contains("needle")))
        .cloned()
        .collect();
    assert_eq!(ids(&store.query(&q).await.expect("query by text").events), ids(&want));

    let mut paged = Vec::new();
    let mut q = EventQuery {
        limit: 7,
        ..EventQuery::channel(a.clone())
    };
    loop {
        let page = store.query(&q).await.expect("page");
        assert!(page.events.len() <= 7);
        paged.extend(page.events);
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
        assert!(paged.len() <= 30, "paging does not end");
    }
    assert_eq!(ids(&paged), ids(&sent), "pages join up with no gap and no repeat");

    let q = EventQuery {
        order: SortOrder::Descending,
        limit: 5,
        ..EventQuery::channel(a.clone())
    };
    let newest: Vec<_> = sent.iter().rev().take(5).cloned().collect();
    assert_eq!(ids(&store.query(&q).await.expect("descending").events), ids(&newest));

    let q = EventQuery {
        limit: 3,
        ..EventQuery::channel(a.clone())
    };
    assert_eq!(store.query(&q).await.expect("limit").events.len(), 3);

    let got_b = store.query(&EventQuery::channel(b.clone())).await.expect("query b");
    assert_eq!(got_b.events.len(), 5);
    assert!(got_b.events.iter().all(|e| e.channel_id == b));
}
