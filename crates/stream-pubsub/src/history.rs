//! Reading a channel's history.

use redis::Value;
use stream_core::{BoxError, EventId};

/// One read of a channel: its metadata and its history entries from a stream id on.
#[derive(Debug, Default)]
pub(crate) struct HistoryRead {
    /// The channel's last sequence number (0 when the channel has none or expired).
    pub(crate) seq: u64,
    /// The channel's first `done` event id.
    pub(crate) done: Option<EventId>,
    /// `(seq, event JSON)` in publish order.
    pub(crate) entries: Vec<(u64, Vec<u8>)>,
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
    /// Parses the read script's reply: `{seq, done or '', XRANGE entries}`.
    pub(crate) fn parse(reply: Value) -> Result<Self, BoxError> {
        let Value::Array(parts) = reply else {
            return Err(bad("not an array"));
        };
        let [seq, done, entries] = <[Value; 3]>::try_from(parts).map_err(|_| bad("not three parts"))?;
        let seq = text(&seq)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad sequence number"))?;
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
            let mut seq = None;
            let mut json = None;
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                match text(&name) {
                    Some(b"s") => seq = text(&value).and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok()),
                    Some(b"e") => {
                        json = match value {
                            Value::BulkString(b) => Some(b),
                            Value::SimpleString(s) => Some(s.into_bytes()),
                            _ => None,
                        }
                    }
                    _ => {}
                }
            }
            match (seq, json) {
                (Some(seq), Some(json)) => out.push((seq, json)),
                _ => return Err(bad("an entry lacks its s or e field")),
            }
        }
        Ok(Self {
            seq,
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

    #[test]
    fn a_read_reply_parses() {
        let done = EventId::generate();
        let reply = Value::Array(vec![
            bulk("7"),
            bulk(&done.to_string()),
            Value::Array(vec![Value::Array(vec![
                bulk("1-1"),
                Value::Array(vec![bulk("s"), bulk("7"), bulk("e"), bulk("{}")]),
            ])]),
        ]);
        let read = HistoryRead::parse(reply).unwrap();
        assert_eq!(read.seq, 7);
        assert_eq!(read.done, Some(done));
        assert_eq!(read.entries, vec![(7, b"{}".to_vec())]);
        assert!(HistoryRead::parse(Value::Nil).is_err());
    }

    #[test]
    fn resume_starts_at_the_ids_millisecond() {
        let id = EventId::min_at(1234);
        assert_eq!(start_after(Some(id)), "1234-0");
        assert_eq!(start_after(None), "-");
    }
}
