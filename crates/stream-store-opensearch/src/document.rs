//! The stored document, the `_bulk` lines that carry it, daily index names and the index template.
//!
//! An event is stored as
//! `{id, type, channel_id, timestamp, message?, level?, context?, payload}`: the envelope and the
//! searchable fields at the top, mapped one by one, and the payload object kept whole in
//! `_source` but not indexed (`"enabled": false`), so arbitrary payload keys never add mappings.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stream_core::{ChannelId, DebugContext, Event, EventId, EventType};
use time::{OffsetDateTime, UtcOffset};

use crate::config::OpenSearchConfig;

#[derive(Serialize)]
struct DocumentRef<'a> {
    id: EventId,
    #[serde(rename = "type")]
    kind: &'a EventType,
    channel_id: &'a ChannelId,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a DebugContext>,
    payload: &'a Map<String, Value>,
}

/// The fields of a stored document that rebuild the event (`message` and `level` are copies).
#[derive(Deserialize)]
pub(crate) struct StoredDocument {
    id: EventId,
    #[serde(rename = "type")]
    kind: EventType,
    channel_id: ChannelId,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    #[serde(default)]
    context: Option<DebugContext>,
    #[serde(default)]
    payload: Map<String, Value>,
}

impl From<StoredDocument> for Event {
    fn from(d: StoredDocument) -> Self {
        // The stored event is exactly the appended one: the payload is the original object from
        // `_source`. `persist` is not part of the wire format.
        Event {
            id: d.id,
            kind: d.kind,
            channel_id: d.channel_id,
            timestamp: d.timestamp,
            context: d.context,
            payload: d.payload,
            persist: false,
        }
    }
}

/// Appends `YYYY.MM.DD` (the UTC date of `timestamp`) to `out`.
fn push_date(out: &mut Vec<u8>, timestamp: OffsetDateTime) {
    let date = timestamp.to_offset(UtcOffset::UTC).date();
    let (y, m, d) = (date.year(), u8::from(date.month()), date.day());
    write!(out, "{y:04}.{m:02}.{d:02}").expect("writing to a Vec cannot fail");
}

/// The daily index for an event at `timestamp`: `{prefix}-YYYY.MM.DD`, the date in UTC.
///
/// ```
/// use stream_store_opensearch::daily_index_name;
/// use time::macros::datetime;
///
/// let at = datetime!(2024-03-01 23:30 -02:00); // 2024-03-02 01:30 UTC
/// assert_eq!(daily_index_name("stream_events", at), "stream_events-2024.03.02");
/// ```
pub fn daily_index_name(prefix: &str, timestamp: OffsetDateTime) -> String {
    let mut out = Vec::with_capacity(prefix.len() + 11);
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'-');
    push_date(&mut out, timestamp);
    String::from_utf8(out).expect("ASCII")
}

/// The two `_bulk` lines for `event` (action and document), newline-terminated. This is the only
/// time an event is serialized: one allocation (sized by `capacity_hint`) and one serde_json pass.
///
/// `prefix` must be a valid index prefix (checked by [`OpenSearchConfig::validate`]): it is
/// written without JSON escaping.
pub(crate) fn bulk_lines(prefix: &str, event: &Event, capacity_hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity_hint);
    out.extend_from_slice(b"{\"index\":{\"_index\":\"");
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'-');
    push_date(&mut out, event.timestamp);
    out.extend_from_slice(b"\",\"_id\":\"");
    write!(out, "{}", event.id).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b"\"}}\n");
    let doc = DocumentRef {
        id: event.id,
        kind: &event.kind,
        channel_id: &event.channel_id,
        timestamp: event.timestamp,
        message: event.message(),
        level: event.payload.get("level").and_then(Value::as_str),
        context: event.context.as_ref(),
        payload: &event.payload,
    };
    serde_json::to_writer(&mut out, &doc).expect("an event always serializes");
    out.push(b'\n');
    out
}

/// The composable index template (`PUT _index_template/{prefix}`) that every daily index gets.
///
/// - `id`, `type`, `channel_id`, `level` and the `context` fields are `keyword`s;
/// - `timestamp` is `date_nanos`, so events sort and page exactly as they were stamped;
/// - `message` is `text` (standard analyzer) for full-text queries;
/// - `payload` is an object with `"enabled": false`: kept in `_source` for display, never indexed;
/// - `"dynamic": false` at the top: unknown fields stay in `_source` but are never mapped.
///
/// Its pattern is `{prefix}-*` at priority 100; two prefixes whose patterns overlap (`a` and
/// `a-b`) would clash, so pick prefixes that are not `-`-extensions of each other.
pub fn index_template(config: &OpenSearchConfig) -> Value {
    let keyword = json!({"type": "keyword"});
    json!({
        "index_patterns": [config.index_pattern()],
        "priority": 100,
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": config.number_of_shards,
                    "number_of_replicas": config.number_of_replicas,
                }
            },
            "mappings": {
                "dynamic": false,
                "properties": {
                    "id": keyword,
                    "type": keyword,
                    "channel_id": keyword,
                    "timestamp": {"type": "date_nanos"},
                    "message": {"type": "text"},
                    "level": keyword,
                    "context": {
                        "type": "object",
                        "dynamic": false,
                        "properties": {
                            "namespace": keyword,
                            "workspace_id": keyword,
                            "project": keyword,
                            "env": keyword,
                            "service": keyword,
                        }
                    },
                    "payload": {"type": "object", "enabled": false},
                }
            }
        },
        "_meta": {"managed_by": "stream-store-opensearch"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn index_names_use_the_utc_date() {
        assert_eq!(
            daily_index_name("p", datetime!(2024-12-31 23:59:59.999 UTC)),
            "p-2024.12.31"
        );
        assert_eq!(daily_index_name("p", datetime!(2025-01-01 00:00 UTC)), "p-2025.01.01");
        assert_eq!(
            daily_index_name("p", datetime!(2025-01-01 01:00 +02:00)),
            "p-2024.12.31"
        );
    }

    #[test]
    fn bulk_lines_round_trip_the_event() {
        let ch = ChannelId::new("c1").unwrap();
        let mut payload = Map::new();
        payload.insert("message".into(), json!("hello \"world\"\n"));
        payload.insert("level".into(), json!("info"));
        payload.insert("nested".into(), json!({"a": [1, {"b": null}]}));
        let mut event = Event::new(ch, EventType::Log, payload).unwrap();
        event.timestamp = datetime!(2024-03-01 12:00:00.123456789 UTC);
        event.context = Some(DebugContext {
            namespace: "ws_p_e_s".into(),
            workspace_id: Some("ws".into()),
            ..DebugContext::default()
        });
        let lines = bulk_lines("stream_events", &event, 64);
        let text = std::str::from_utf8(&lines).unwrap();
        let (action, rest) = text.split_once('\n').unwrap();
        let (doc, tail) = rest.split_once('\n').unwrap();
        assert_eq!(tail, "");
        let action: Value = serde_json::from_str(action).unwrap();
        assert_eq!(action["index"]["_index"], "stream_events-2024.03.01");
        assert_eq!(action["index"]["_id"], event.id.to_string());
        let doc_value: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(doc_value["message"], "hello \"world\"\n");
        assert_eq!(doc_value["level"], "info");
        assert_eq!(doc_value["context"]["workspace_id"], "ws");
        assert_eq!(doc_value["payload"]["nested"]["a"][1]["b"], Value::Null);
        let back: Event = serde_json::from_str::<StoredDocument>(doc).unwrap().into();
        assert_eq!(back, event);
        assert_eq!(back.to_json(), event.to_json());
    }
}
