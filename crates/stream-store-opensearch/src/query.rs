//! Queries: the search body, the page cursor and the answer.

use serde::Deserialize;
use serde_json::{Value, json};
use stream_core::{Event, EventId, EventQuery, PageCursor, SortOrder, StoreError};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::document::StoredDocument;

/// The largest page one search returns (OpenSearch's default `index.max_result_window`). A larger
/// limit is cut to it; the page then carries a cursor for the rest.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// Query parameters of every search: a pattern matching no index gives an empty page.
pub(crate) const SEARCH_PARAMS: [(&str, &str); 4] = [
    ("ignore_unavailable", "true"),
    ("allow_no_indices", "true"),
    ("filter_path", "hits.hits._source,hits.hits.sort"),
    ("track_total_hits", "false"),
];

/// A cursor is the last hit's sort values: the timestamp in nanoseconds and the event id.
fn encode_cursor(nanos: i64, id: &str) -> PageCursor {
    PageCursor(format!("{nanos}:{id}"))
}

fn decode_cursor(cursor: &PageCursor) -> Result<(i64, EventId), StoreError> {
    let bad = || StoreError::InvalidQuery(format!("bad page cursor {:?}", cursor.0));
    let (nanos, id) = cursor.0.split_once(':').ok_or_else(bad)?;
    Ok((nanos.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

fn rfc3339(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| StoreError::InvalidQuery(format!("time {t} cannot be formatted: {e}")))
}

/// The `_search` body for `query`, asking for `size` hits.
pub(crate) fn search_body(query: &EventQuery, size: usize) -> Result<Vec<u8>, StoreError> {
    let mut filter = Vec::new();
    if let Some(channel) = &query.channel_id {
        filter.push(json!({"term": {"channel_id": channel.as_str()}}));
    }
    if !query.event_types.is_empty() {
        let types: Vec<&str> = query.event_types.iter().map(|t| t.as_str()).collect();
        filter.push(json!({"terms": {"type": types}}));
    }
    if query.from.is_some() || query.to.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(from) = query.from {
            range.insert("gte".into(), rfc3339(from)?.into());
        }
        if let Some(to) = query.to {
            range.insert("lt".into(), rfc3339(to)?.into());
        }
        filter.push(json!({"range": {"timestamp": range}}));
    }
    if let Some(text) = query.text.as_deref().filter(|t| !t.trim().is_empty()) {
        // Every word of `text` must be in the message (standard analyzer: case-insensitive).
        filter.push(json!({"match": {"message": {"query": text, "operator": "and"}}}));
    }
    let order = match query.order {
        SortOrder::Ascending => "asc",
        SortOrder::Descending => "desc",
    };
    let mut body = json!({
        "size": size,
        "query": {"bool": {"filter": filter}},
        "sort": [
            {"timestamp": {"order": order, "unmapped_type": "date_nanos"}},
            {"id": {"order": order, "unmapped_type": "keyword"}},
        ],
        "_source": {"excludes": ["message", "level"]},
    });
    if let Some(cursor) = &query.after {
        let (nanos, id) = decode_cursor(cursor)?;
        body["search_after"] = json!([nanos, id.to_string()]);
    }
    Ok(serde_json::to_vec(&body).expect("a JSON value always serializes"))
}

#[derive(Deserialize, Default)]
struct SearchResponse {
    #[serde(default)]
    hits: Hits,
}

#[derive(Deserialize, Default)]
struct Hits {
    #[serde(default)]
    hits: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    _source: StoredDocument,
    #[serde(default)]
    sort: Vec<Value>,
}

/// Reads a `_search` answer into a page; `size` is the number of hits asked for.
pub(crate) fn read_page(answer: &[u8], size: usize) -> Result<stream_core::EventPage, StoreError> {
    let response: SearchResponse = serde_json::from_slice(answer)
        .map_err(|e| StoreError::Backend(format!("unreadable _search response: {e}").into()))?;
    let mut hits = response.hits.hits;
    let next = if hits.len() == size && size > 0 {
        let last = hits.last().expect("a full page has a last hit");
        match (
            last.sort.first().and_then(Value::as_i64),
            last.sort.get(1).and_then(Value::as_str),
        ) {
            (Some(nanos), Some(id)) => Some(encode_cursor(nanos, id)),
            _ => {
                return Err(StoreError::Backend(
                    format!("a search hit has unexpected sort values {:?}", last.sort).into(),
                ));
            }
        }
    } else {
        None
    };
    let events: Vec<Event> = hits.drain(..).map(|h| h._source.into()).collect();
    Ok(stream_core::EventPage { events, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stream_core::{ChannelId, EventType};
    use time::macros::datetime;

    #[test]
    fn the_body_has_every_filter_and_the_cursor() {
        let id = EventId::generate();
        let q = EventQuery {
            channel_id: Some(ChannelId::new("c1").unwrap()),
            event_types: vec![EventType::Log, EventType::Error],
            from: Some(datetime!(2024-03-01 12:00 +01:00)),
            to: Some(datetime!(2024-03-01 12:00:00.5 UTC)),
            text: Some("needle".into()),
            limit: 7,
            order: SortOrder::Descending,
            after: Some(encode_cursor(1_709_294_400_000_000_001, &id.to_string())),
        };
        let body: Value = serde_json::from_slice(&search_body(&q, 7).unwrap()).unwrap();
        let filter = &body["query"]["bool"]["filter"];
        assert_eq!(filter[0]["term"]["channel_id"], "c1");
        assert_eq!(filter[1]["terms"]["type"], json!(["log", "error"]));
        assert_eq!(filter[2]["range"]["timestamp"]["gte"], "2024-03-01T11:00:00Z");
        assert_eq!(filter[2]["range"]["timestamp"]["lt"], "2024-03-01T12:00:00.5Z");
        assert_eq!(filter[3]["match"]["message"]["query"], "needle");
        assert_eq!(body["sort"][0]["timestamp"]["order"], "desc");
        assert_eq!(
            body["search_after"],
            json!([1_709_294_400_000_000_001i64, id.to_string()])
        );
        assert_eq!(body["size"], 7);
    }

    #[test]
    fn bad_cursors_are_invalid_queries() {
        for bad in ["", "12", "x:01J0000000000000000000000", "12:not-an-id"] {
            let q = EventQuery {
                after: Some(PageCursor(bad.into())),
                ..EventQuery::default()
            };
            assert!(
                matches!(search_body(&q, 10), Err(StoreError::InvalidQuery(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_empty_answer_is_an_empty_page() {
        let page = read_page(b"{}", 10).unwrap();
        assert!(page.events.is_empty());
        assert!(page.next.is_none());
    }
}
