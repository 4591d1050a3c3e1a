//! Reading a channel's history.

use redis::Value;
use stream_core::{BoxError, EventId};

/// One read of a channel: its position, its done marker, and its history from a stream id on.
#[derive(Debug, Default)]
pub(crate) struct HistoryRead {
    /// How many events the channel's history stream ever received (0 when it has none or
    /// expired). It is the position of the stream's last entry.
    pub(crate) added: u64,
    /// The channel's first `done` event id.
    pub(crate) done: Option<EventId>,
    /// Event JSON in publish order, ending with the stream's last entry.
    pub(crate) entries: Vec<Vec<u8>>,
}

impl HistoryRead {
    /// The channel position of the `index`-th returned entry (1 is the channel's first event).
    pub(crate) fn position(&self, index: usize) -> u64 {
        (self.added + 1 + index as u64).saturating_sub(self.entries.len() as u64)
    }
}

/// The first stream id a read after `after` must return: the entry ids' milliseconds are at least
/// their event ids' (see the publish script), so every event after `after` is at or after it.
pub(crate) fn start_after(after: Option<EventId>) -> String {
    match after {
        Some(id) => format!("{}-0", id.unix_ms()),
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
    /// Parses the read script's reply: `{added, done or '', XRANGE entries}`.
    pub(crate) fn parse(reply: Value) -> Result<Self, BoxError> {
        let Value::Array(parts) = reply else {
            return Err(bad("not an array"));
        };
        let [added, done, entries] = <[Value; 3]>::try_from(parts).map_err(|_| bad("not three parts"))?;
        let added = match added {
            Value::Int(n) => u64::try_from(n).ok(),
            other => text(&other)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse().ok()),
        }
        .ok_or_else(|| bad("bad entries-added count"))?;
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
            added,
            done,
            entries: out,
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
        Value::Array(vec![bulk(id), Value::Array(vec![bulk("e"), bulk(json)])])
    }

    #[test]
    fn a_read_reply_parses_and_numbers_its_entries() {
        let done = EventId::generate();
        let reply = Value::Array(vec![
            Value::Int(7),
            bulk(&done.to_string()),
            Value::Array(vec![entry("1-1", "{}"), entry("1-2", "[]")]),
        ]);
        let read = HistoryRead::parse(reply).unwrap();
        assert_eq!(read.added, 7);
        assert_eq!(read.done, Some(done));
        assert_eq!(read.entries, vec![b"{}".to_vec(), b"[]".to_vec()]);
        assert_eq!((read.position(0), read.position(1)), (6, 7));
        assert!(HistoryRead::parse(Value::Nil).is_err());
        let empty = HistoryRead::parse(Value::Array(vec![Value::Int(0), bulk(""), Value::Array(vec![])])).unwrap();
        assert_eq!((empty.added, empty.done, empty.entries.len()), (0, None, 0));
    }

    #[test]
    fn resume_starts_at_the_ids_millisecond() {
        let id = EventId::min_at(1234);
        assert_eq!(start_after(Some(id)), "1234-0");
        assert_eq!(start_after(None), "-");
    }
}
