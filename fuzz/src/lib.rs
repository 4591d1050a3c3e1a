//! Checks shared by the fuzz targets.

use std::convert::Infallible;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use stream_core::Event;
use stream_core::sse::encode_event;

/// Parses SSE bytes with `eventsource-stream`, an independent parser.
pub fn parse_sse(bytes: &[u8]) -> Vec<eventsource_stream::Event> {
    let body = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::copy_from_slice(bytes))]);
    futures_executor::block_on(body.eventsource().map(|r| r.expect("valid SSE")).collect())
}

/// Encodes `event` and checks its frame: an `id:` line (none for control events), `data:` lines
/// holding the event's JSON, a blank line, nothing else; an SSE parser reads back exactly that
/// event.
pub fn check_event_frame(event: &Event) {
    let frame = encode_event(event);
    let json = event.to_json();
    let text = std::str::from_utf8(&frame).expect("a frame is UTF-8");
    assert!(!text.contains('\r'), "CR in frame {text:?}");
    assert!(text.ends_with("\n\n"), "frame not ended by a blank line: {text:?}");
    let mut lines: Vec<&str> = text[..text.len() - 1].split_terminator('\n').collect();
    if event.kind.is_control() {
        assert!(!lines[0].starts_with("id:"), "control frame with an id: {text:?}");
    } else {
        assert_eq!(lines[0], format!("id: {}", event.id), "{text:?}");
        lines.remove(0);
    }
    assert!(!lines.is_empty(), "no data line: {text:?}");
    let data: Vec<&str> = lines
        .iter()
        .map(|line| {
            line.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("unexpected line {line:?} in {text:?}"))
        })
        .collect();
    assert_eq!(data.join("\n"), json);

    let parsed = parse_sse(&frame);
    assert_eq!(parsed.len(), 1, "{parsed:?}");
    let got = &parsed[0];
    assert_eq!(got.event, "message");
    assert_eq!(got.retry, None);
    let id = if event.kind.is_control() {
        String::new()
    } else {
        event.id.to_string()
    };
    assert_eq!(got.id, id);
    assert_eq!(got.data, json);
    assert_eq!(&Event::from_json(&got.data).expect("the data is the event"), event);
}
