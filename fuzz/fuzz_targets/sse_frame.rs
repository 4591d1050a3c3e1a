//! The frame encoder: any text, as a `data` field value or as an event's payload, stays inside
//! its frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use stream_core::sse::push_field;
use stream_core::{ChannelId, Event, EventType, RESERVED_KEYS};
use stream_fuzz::{check_event_frame, parse_sse};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);

    // A `data` value: its lines come back joined with LF, and it adds no field.
    let mut frame = Vec::new();
    push_field(&mut frame, "data", &text);
    frame.push(b'\n');
    let parsed = parse_sse(&frame);
    assert_eq!(parsed.len(), 1, "{parsed:?}");
    assert_eq!(parsed[0].event, "message");
    assert_eq!(parsed[0].retry, None);
    assert_eq!(parsed[0].id, "");
    assert_eq!(parsed[0].data, text.replace("\r\n", "\n").replace('\r', "\n"));

    // Any other field is one line.
    for name in ["id", "event", "retry"] {
        let mut line = Vec::new();
        push_field(&mut line, name, &text);
        let line = String::from_utf8(line).expect("UTF-8");
        assert!(
            line.starts_with(&format!("{name}: ")) && line.ends_with('\n'),
            "{line:?}"
        );
        assert!(!line[..line.len() - 1].contains(['\r', '\n']), "{line:?}");
    }

    // An event: the text as its payload when it is a JSON object, else as its message.
    let payload = match serde_json::from_str::<Map<String, Value>>(&text) {
        Ok(mut map) => {
            map.retain(|k, _| !RESERVED_KEYS.contains(&k.as_str()));
            map
        }
        Err(_) => Map::from_iter([("message".to_owned(), Value::String(text.clone().into_owned()))]),
    };
    let kind = match selector % 5 {
        0 => EventType::Log,
        1 => EventType::Data,
        2 => EventType::Done,
        3 => EventType::Ping,
        _ => EventType::Gap,
    };
    let channel = ChannelId::new("fuzz-channel").expect("valid");
    let event = Event::new(channel, kind, payload).expect("no reserved keys");
    check_event_frame(&event);
});
