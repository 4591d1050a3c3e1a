//! What the commands print on stdout: JSON lines with `--json`, else a table. Notes for people
//! (what is being followed, why nothing was found) go to stderr, so stdout holds only the data.

use std::io::Write;
use std::time::Duration;

use serde_json::{Map, Value};
use stream_core::Event;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use crate::error::CliError;

/// UTC, to the millisecond: `2025-01-31T12:00:00.123Z`.
const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The widths of the event table's columns before the last (time, id, type).
const EVENT_COLUMNS: [usize; 3] = [24, 26, 14];

/// Standard output, in the chosen format. Every line is flushed as it is written, so that `tail`
/// shows each event at once, also through a pipe.
#[derive(Debug)]
pub(crate) struct Out {
    json: bool,
    header_done: bool,
}

impl Out {
    /// Output as JSON lines (`json`) or a table.
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            header_done: false,
        }
    }

    /// Whether the output is JSON lines.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Writes one line and flushes it.
    pub(crate) fn line(&mut self, line: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(line.as_bytes())?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        Ok(())
    }

    /// Writes a JSON value as one line.
    pub(crate) fn json_line(&mut self, value: &Value) -> Result<(), CliError> {
        self.line(&value.to_string())
    }

    /// Writes a table's header once, however often it is called.
    pub(crate) fn header(&mut self, header: &str) -> Result<(), CliError> {
        if self.header_done || self.json {
            return Ok(());
        }
        self.header_done = true;
        self.line(header)
    }

    /// Writes one event: its wire JSON (the SSE `data:` of its frame), or a table row.
    pub(crate) fn event(&mut self, event: &Event) -> Result<(), CliError> {
        if self.json {
            return self.line(&event.to_json());
        }
        self.header(&row(&["TIME", "ID", "TYPE", "DETAILS"]))?;
        let id = if event.kind.is_control() {
            "-".to_owned()
        } else {
            event.id.to_string()
        };
        self.line(&row(&[
            &time(event.timestamp),
            &id,
            event.kind.as_str(),
            &details(event),
        ]))
    }
}

/// One row of the event table: the first columns padded to their widths.
fn row(cells: &[&str; 4]) -> String {
    let mut line = String::with_capacity(128);
    for (cell, width) in cells.iter().zip(EVENT_COLUMNS) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    line.push_str(cells[3]);
    line.trim_end().to_owned()
}

/// An event's payload for the table: its `message` first, then the other fields as JSON.
fn details(event: &Event) -> String {
    let rest: Map<String, Value> = event
        .payload
        .iter()
        .filter(|(key, _)| event.message().is_none() || key.as_str() != "message")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    match (event.message(), rest.is_empty()) {
        (Some(message), true) => message.to_owned(),
        (Some(message), false) => format!("{message}  {}", Value::Object(rest)),
        (None, _) => Value::Object(rest).to_string(),
    }
}

/// A time in UTC to the millisecond, as the tables show it.
pub(crate) fn time(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(TIME_FORMAT)
        .unwrap_or_else(|_| at.to_string())
}

/// A short duration for people: `45s`, `2m 57s`, `1h 02m`, `3d 4h`.
pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stream_core::ChannelId;
    use time::macros::datetime;

    use super::*;

    fn event(payload: Value) -> Event {
        let Value::Object(map) = payload else { panic!() };
        Event::new(ChannelId::new("c1").unwrap(), "log".parse().unwrap(), map).unwrap()
    }

    #[test]
    fn details_put_the_message_first() {
        assert_eq!(details(&event(json!({"message": "hi"}))), "hi");
        assert_eq!(
            details(&event(json!({"message": "hi", "level": "info"}))),
            r#"hi  {"level":"info"}"#
        );
        assert_eq!(details(&event(json!({"percent": 40}))), r#"{"percent":40}"#);
        assert_eq!(details(&event(json!({}))), "{}");
    }

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(
            time(datetime!(2025-01-31 13:00:00.1234 +01:00)),
            "2025-01-31T12:00:00.123Z"
        );
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(177)), "2m 57s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h 02m");
        assert_eq!(duration(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }

    #[test]
    fn rows_line_up() {
        let r = row(&["a", "b", "c", "d"]);
        assert_eq!(r.find('b'), Some(26));
        assert_eq!(r.find('c'), Some(54));
        assert_eq!(r.find('d'), Some(70));
    }
}
