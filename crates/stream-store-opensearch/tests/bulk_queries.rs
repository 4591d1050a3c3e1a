//! 10,000 events written then flushed; queries by channel, types, time range and text return
//! exactly the right events, in order, across pages.

mod common;

use std::time::Duration;

use serde_json::{Map, json};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelId, Event, EventId, EventQuery, EventStore, EventType, SortOrder};
use time::OffsetDateTime;

const COUNT: usize = 10_000;

fn ids<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<EventId> {
    events.into_iter().map(|e| e.id).collect()
}

/// Every page of `query` (`limit` per page), joined.
async fn all_pages(store: &impl EventStore, mut query: EventQuery) -> Vec<Event> {
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.query(&query).await.expect("query");
        assert!(page.events.len() <= query.limit);
        pages += 1;
        assert!(pages <= COUNT, "paging does not end");
        out.extend(page.events);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_are_written_and_queried_exactly() {
    let store = common::connect(common::test_config("bulk")).await;

    // Four channels, five types, one message in ten with "needle", 1 ms apart, two hours ago.
    let channels: Vec<ChannelId> = (0..4).map(|n| unique_channel(&format!("bulk{n}"))).collect();
    let kinds = [
        EventType::Log,
        EventType::Progress,
        EventType::Data,
        EventType::Error,
        "build.step".parse::<EventType>().unwrap(),
    ];
    let base_s = OffsetDateTime::now_utc().unix_timestamp() - 7200;
    let base = OffsetDateTime::from_unix_timestamp(base_s).unwrap();
    let mut sent = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let mut payload = Map::new();
        let message = if i % 10 == 3 {
            format!("Found the NEEDLE number {i}")
        } else {
            format!("hay bale {i}")
        };
        payload.insert("message".into(), json!(message));
        payload.insert("i".into(), json!(i));
        payload.insert(format!("key_{}", i % 50), json!({"nested": [i, "x"]}));
        let mut e = Event::new(channels[i % 4].clone(), kinds[i % 5].clone(), payload).unwrap();
        e.timestamp = base + Duration::from_millis(i as u64);
        sent.push(e);
    }
    for e in &sent {
        store.append(e).expect("append");
    }
    store.flush().await.expect("flush");
    let stats = store.stats();
    assert_eq!(
        (stats.accepted, stats.written, stats.dropped),
        (COUNT as u64, COUNT as u64, 0),
        "{stats:?}"
    );

    // By channel: 2,500 events, pages of 1,000.
    let got = all_pages(
        &store,
        EventQuery {
            limit: 1000,
            ..EventQuery::channel(channels[1].clone())
        },
    )
    .await;
    let want: Vec<&Event> = sent.iter().filter(|e| e.channel_id == channels[1]).collect();
    assert_eq!(got.len(), 2500);
    assert_eq!(ids(&got), ids(want.iter().copied()), "by channel, oldest first");
    assert_eq!(got[17], *want[17], "the event comes back whole");

    // By types (all channels of this test: the index prefix is the test's own).
    let types = vec![EventType::Error, "build.step".parse().unwrap()];
    let got = all_pages(
        &store,
        EventQuery {
            event_types: types.clone(),
            limit: 1500,
            ..EventQuery::default()
        },
    )
    .await;
    let want: Vec<&Event> = sent.iter().filter(|e| types.contains(&e.kind)).collect();
    assert_eq!(got.len(), 4000);
    assert_eq!(ids(&got), ids(want.iter().copied()), "by types");

    // By time range: [base + 1234 ms, base + 4321 ms).
    let (from, to) = (base + Duration::from_millis(1234), base + Duration::from_millis(4321));
    let got = all_pages(
        &store,
        EventQuery {
            from: Some(from),
            to: Some(to),
            limit: 1000,
            ..EventQuery::default()
        },
    )
    .await;
    assert_eq!(ids(&got), ids(&sent[1234..4321]), "by time range");

    // By text, case-insensitive words: 1,000 events, pages of 300.
    let got = all_pages(
        &store,
        EventQuery {
            text: Some("needle".into()),
            limit: 300,
            ..EventQuery::default()
        },
    )
    .await;
    let want: Vec<&Event> = sent
        .iter()
        .filter(|e| e.message().unwrap().contains("NEEDLE"))
        .collect();
    assert_eq!(got.len(), 1000);
    assert_eq!(ids(&got), ids(want.iter().copied()), "by text");

    // Every filter at once, newest first.
    let q = EventQuery {
        channel_id: Some(channels[3].clone()),
        event_types: vec![EventType::Log, EventType::Error],
        from: Some(base + Duration::from_millis(2000)),
        to: Some(base + Duration::from_millis(9000)),
        text: Some("needle".into()),
        limit: 40,
        order: SortOrder::Descending,
        after: None,
    };
    let got = all_pages(&store, q.clone()).await;
    let mut want: Vec<&Event> = sent.iter().filter(|e| q.matches(e)).collect();
    want.reverse();
    assert!(!want.is_empty());
    assert_eq!(ids(&got), ids(want.iter().copied()), "all filters, descending");

    // Descending over a whole channel, pages of 1,000.
    let got = all_pages(
        &store,
        EventQuery {
            order: SortOrder::Descending,
            limit: 1000,
            ..EventQuery::channel(channels[0].clone())
        },
    )
    .await;
    let want: Vec<&Event> = sent.iter().rev().filter(|e| e.channel_id == channels[0]).collect();
    assert_eq!(ids(&got), ids(want.iter().copied()), "by channel, newest first");

    // A limit above the page maximum is cut to it, and the cursor carries on.
    let page = store
        .query(&EventQuery {
            limit: 50_000,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), stream_store_opensearch::MAX_PAGE_SIZE);
    assert!(page.next.is_some());

    store.shutdown().await.expect("shutdown");
    common::cleanup(&store).await;
}
