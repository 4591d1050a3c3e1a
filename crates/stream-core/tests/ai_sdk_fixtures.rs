//! The UI message streams that `integration-tests/node` reads with the real `ai` npm package:
//! each fixture is the exact bytes the encoder writes for a sample, beside what the package
//! should rebuild from them (`<name>.expected.json`).
//!
//! This test fails when the encoder's output no longer matches the fixtures on disk;
//! `UPDATE_AI_SDK_FIXTURES=1 cargo test -p stream-core --test ai_sdk_fixtures` rewrites them
//! (then run `npm test` in `integration-tests/node`).

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{Value, json};
use stream_core::ai_sdk::{KEEP_ALIVE_FRAME, OtherEvents, UiMessageEncoder};
use stream_core::{ChannelId, Event, EventId, SharedEvent};

fn event(seq: u64, kind: &str, payload: Value) -> SharedEvent {
    let Value::Object(payload) = payload else {
        panic!("an object")
    };
    let mut event = Event::new(ChannelId::new("chat-1").unwrap(), kind.parse().unwrap(), payload).unwrap();
    event.id = EventId::from_parts(1_767_225_600_000 + seq, seq);
    event.timestamp = time::OffsetDateTime::from_unix_timestamp_nanos(event.id.unix_ms() as i128 * 1_000_000).unwrap();
    // As a broker delivers it: from the JSON that came through Redis.
    SharedEvent::from_json(Bytes::from(event.to_json())).unwrap()
}

const TOKENS: [&str; 8] = [
    "You",
    " asked:",
    " \"héllo\".",
    " Tokens",
    " ✓",
    " stream\n",
    " over",
    " SSE.",
];

/// The reply's events: a token per entry of [`TOKENS`], with a progress event and a ping among
/// them, then `done`.
fn reply() -> Vec<SharedEvent> {
    let mut events = Vec::new();
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    for (i, token) in TOKENS.iter().enumerate() {
        events.push(event(next(), "data", json!({ "token": token })));
        if i == 1 {
            events.push(event(next(), "progress", json!({ "percent": 25, "step": "thinking" })));
            events.push(event(0, "ping", json!({})));
        }
    }
    events.push(event(next(), "done", json!({ "success": true })));
    events
}

fn encode(mut encoder: UiMessageEncoder, events: &[SharedEvent], keep_alive_after: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        encoder.encode_into(event, &mut out);
        if keep_alive_after == Some(i) {
            out.extend_from_slice(KEEP_ALIVE_FRAME);
        }
    }
    out
}

struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
    expected: Value,
}

fn fixtures() -> Vec<Fixture> {
    let events = reply();
    let full: String = TOKENS.concat();
    // The client had the first three tokens (events 1, 2 and 3: two tokens and the progress).
    let resume_at = events[2].id();
    let rest: String = TOKENS[2..].concat();
    // The history no longer held the client's next events (3 of them): a gap notice, then the
    // rest.
    let mut with_gap = vec![event(
        0,
        "gap",
        json!({ "missed": 3, "reason": "the channel history no longer holds these events" }),
    )];
    with_gap.extend_from_slice(&events[6..]);
    let after_gap: String = TOKENS[4..].concat();
    let mut with_error = events[..4].to_vec();
    with_error.push(event(20, "error", json!({ "message": "Warning: retrying..." })));
    with_error.push(event(21, "data", json!({ "token": " retried" })));
    with_error.push(event(22, "done", json!({ "success": true })));
    vec![
        Fixture {
            name: "sample",
            bytes: encode(UiMessageEncoder::new("msg-sample"), &events, Some(3)),
            expected: json!({
                "messageId": "msg-sample",
                "text": full,
                "partTypes": ["text"],
                "finished": true,
                "errors": [],
            }),
        },
        Fixture {
            name: "resumed",
            bytes: encode(
                UiMessageEncoder::new("msg-sample").after(Some(resume_at)),
                &events,
                None,
            ),
            expected: json!({
                "messageId": "msg-sample",
                "text": rest,
                "partTypes": ["text"],
                "finished": true,
                "errors": [],
            }),
        },
        Fixture {
            name: "data-parts",
            bytes: encode(
                UiMessageEncoder::new("msg-data").other_events(OtherEvents::DataParts),
                &events,
                None,
            ),
            expected: json!({
                "messageId": "msg-data",
                "text": full,
                "partTypes": ["text", "data-progress"],
                "finished": true,
                "errors": [],
            }),
        },
        Fixture {
            name: "gap",
            bytes: encode(UiMessageEncoder::new("msg-gap"), &with_gap, None),
            expected: json!({
                "messageId": "msg-gap",
                "text": after_gap,
                "partTypes": ["text"],
                "finished": true,
                "errors": ["part of this reply was lost (3 events): the channel history no longer holds these events"],
            }),
        },
        Fixture {
            name: "error",
            bytes: encode(UiMessageEncoder::new("msg-error"), &with_error, None),
            expected: json!({
                "messageId": "msg-error",
                "text": format!("{} retried", TOKENS[..2].concat()),
                "partTypes": ["text"],
                "finished": true,
                "errors": ["Warning: retrying..."],
            }),
        },
    ]
}

#[test]
fn node_fixtures_match_the_encoder() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../integration-tests/node/fixtures");
    let update = std::env::var_os("UPDATE_AI_SDK_FIXTURES").is_some_and(|v| v == "1");
    for fixture in fixtures() {
        let bytes_path = dir.join(format!("{}.txt", fixture.name));
        let expected_path = dir.join(format!("{}.expected.json", fixture.name));
        let expected = format!("{}\n", serde_json::to_string_pretty(&fixture.expected).unwrap());
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&bytes_path, &fixture.bytes).unwrap();
            std::fs::write(&expected_path, &expected).unwrap();
            continue;
        }
        let hint = "run UPDATE_AI_SDK_FIXTURES=1 cargo test -p stream-core --test ai_sdk_fixtures, then npm test in integration-tests/node";
        let on_disk = std::fs::read(&bytes_path).unwrap_or_else(|e| panic!("{}: {e}; {hint}", bytes_path.display()));
        assert!(
            on_disk == fixture.bytes,
            "{} differs from the encoder's output; {hint}",
            bytes_path.display()
        );
        let on_disk = std::fs::read_to_string(&expected_path).unwrap_or_default();
        assert_eq!(on_disk, expected, "{}; {hint}", expected_path.display());
    }
}
