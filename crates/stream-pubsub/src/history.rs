//! Reading a channel's history.

use redis::Value;
use stream_core::{BoxError, EventId};

use crate::wire;

/// One read of a channel: its done marker, and its history from a stream id on.
#[derive(Debug, Default)]
pub(crate) struct HistoryRead {
    /// The channel's first `done` event id.
    pub(crate) done: Option<EventId>,
    /// Event JSON in channel order.
    pub(crate) entries: Vec<Vec<u8>>,
    /// Whether the channel's owner record exists.
    pub(crate) owner_known: bool,
    /// Whether the channel's history stream exists.
    pub(crate) history_kept: bool,
}

/// The history read script's arguments for a read after `after`: the resume point's millisecond
/// and sequence number, for a broker-made id. Any other id (or none) reads the whole history, and
/// the replay drops what is not after it.
pub(crate) fn resume_point(after: Option<EventId>) -> (String, String) {
    match after.and_then(|id| Some((id.unix_ms(), id.sequence()?))) {
        Some((ms, seq)) => (ms.to_string(), seq.to_string()),
        None => (String::new(), String::new()),
    }
}

fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn bad(what: &str) -> BoxError {
    format!("unexpected reply from the history read script: {what}").into()
}

impl HistoryRead {
    /// Parses the read script's reply: `{done or '', XRANGE entries, owner exists, history exists}`.
    pub(crate) fn parse(reply: Value) -> Result<Self, BoxError> {
        let Value::Array(parts) = reply else {
            return Err(bad("not an array"));
        };
        let [done, entries, owner, history] = <[Value; 4]>::try_from(parts).map_err(|_| bad("not four parts"))?;
        let owner_known = matches!(owner, Value::Int(1));
        let history_kept = matches!(history, Value::Int(1));
        let done = match text(&done) {
            Some([]) | None => None,
            Some(id) => std::str::from_utf8(id).ok().and_then(|s| s.parse().ok()),
        };
        let Value::Array(raw) = entries else {
            return Err(bad("entries are not an array"));
        };
        let mut out = Vec::with_capacity(raw.len());
        for entry in raw {
            let Value::Array(entry) = entry else {
                return Err(bad("an entry is not an array"));
            };
            let Some(Value::Array(fields)) = entry.into_iter().nth(1) else {
                return Err(bad("an entry has no fields"));
            };
            // One entry per chunk of a call (see `wire`): its header `i`, its events in `e`.
            let mut head = None;
            let mut bodies = Vec::with_capacity(1);
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                let value = match value {
                    Value::BulkString(b) => b,
                    Value::SimpleString(s) => s.into_bytes(),
                    _ => return Err(bad("a field is not a string")),
                };
                match text(&name) {
                    Some(b"e") => bodies.push(value),
                    Some(b"i") => head = Some(value),
                    _ => {}
                }
            }
            if bodies.is_empty() {
                return Err(bad("an entry lacks its e field"));
            }
            if let Err(e) = wire::entry_events(head.as_deref(), bodies, &mut out) {
                tracing::warn!(error = %e, "skipping a history entry that is not an event");
            }
        }
        Ok(Self {
            done,
            entries: out,
            owner_known,
            history_kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, json: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk("e"), bulk(json), bulk("t"), bulk("x")]),
        ])
    }

    #[test]
    fn a_read_reply_parses() {
        let done = EventId::from_parts(5, 9);
        let reply = Value::Array(vec![
            bulk(&done.to_string()),
            Value::Array(vec![entry("1-1", "{}"), entry("1-2", "[]")]),
            Value::Int(1),
            Value::Int(1),
        ]);
        let read = HistoryRead::parse(reply).unwrap();
        assert_eq!(read.done, Some(done));
        assert!(read.owner_known && read.history_kept);
        assert_eq!(read.entries, vec![b"{}".to_vec(), b"[]".to_vec()]);
        assert!(HistoryRead::parse(Value::Nil).is_err());
        let empty = HistoryRead::parse(Value::Array(vec![
            bulk(""),
            Value::Array(vec![]),
            Value::Int(0),
            Value::Int(0),
        ]))
        .unwrap();
        assert_eq!(
            (empty.done, empty.entries.len(), empty.owner_known, empty.history_kept),
            (None, 0, false, false)
        );
    }

    #[test]
    fn an_entry_holds_a_calls_events_in_order() {
        let call = Value::Array(vec![
            bulk("3-0"),
            Value::Array(vec![
                bulk("e"),
                bulk("1"),
                bulk("e"),
                bulk("2"),
                bulk("e"),
                bulk("3"),
                bulk("t"),
                bulk("x"),
                bulk("f"),
                bulk("9:1"),
            ]),
        ]);
        let reply = Value::Array(vec![
            bulk(""),
            Value::Array(vec![call, entry("4-0", "4")]),
            Value::Int(1),
            Value::Int(1),
        ]);
        let read = HistoryRead::parse(reply).unwrap();
        assert_eq!(read.entries, [b"1", b"2", b"3", b"4"].map(|b| b.to_vec()));
        let bad = Value::Array(vec![bulk("5-0"), Value::Array(vec![bulk("t"), bulk("x")])]);
        let reply = Value::Array(vec![bulk(""), Value::Array(vec![bad]), Value::Int(1), Value::Int(1)]);
        assert!(HistoryRead::parse(reply).is_err(), "an entry with no event");
    }

    #[test]
    fn resume_starts_right_after_a_broker_id() {
        let point = |ms: &str, seq: &str| (ms.to_owned(), seq.to_owned());
        assert_eq!(resume_point(Some(EventId::from_parts(1234, 7))), point("1234", "7"));
        assert_eq!(resume_point(Some(EventId::min_at(1234))), point("1234", "0"));
        let provisional = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        assert_eq!(
            resume_point(Some(provisional)),
            point("", ""),
            "a provisional id reads it all"
        );
        assert_eq!(resume_point(None), point("", ""));
    }
}
