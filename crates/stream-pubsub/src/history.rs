//! Reading a channel's history.

use redis::Value;
use stream_core::{BoxError, EventId};

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

/// The first stream id a read after `after` must return. A broker-made id names its entry
/// (`<ms>-<seq>`), so the read starts right after it; any other id starts at its millisecond, and
/// the replay drops what is not after it.
pub(crate) fn start_after(after: Option<EventId>) -> String {
    match after {
        Some(id) => match id.sequence() {
            Some(seq) => format!("({}-{seq}", id.unix_ms()),
            None => format!("{}-0", id.unix_ms()),
        },
        None => "-".to_owned(),
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
            let mut json = None;
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if text(&name) == Some(b"e") {
                    json = match value {
                        Value::BulkString(b) => Some(b),
                        Value::SimpleString(s) => Some(s.into_bytes()),
                        _ => None,
                    };
                }
            }
            out.push(json.ok_or_else(|| bad("an entry lacks its e field"))?);
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
    fn resume_starts_right_after_a_broker_id() {
        assert_eq!(start_after(Some(EventId::from_parts(1234, 7))), "(1234-7");
        assert_eq!(start_after(Some(EventId::min_at(1234))), "(1234-0");
        assert_eq!(start_after(None), "-");
    }
}
