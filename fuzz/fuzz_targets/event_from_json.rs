//! `Event::from_json`: never panics; what it accepts writes back to JSON that reads back as the
//! same event, and frames as one event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stream_core::Event;
use stream_fuzz::check_event_frame;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(event) = Event::from_json(text) else {
        return;
    };
    let json = event.to_json();
    assert!(!json.contains(['\n', '\r']), "{json:?}");
    let again = Event::from_json(&json).expect("an event's own JSON reads back");
    assert_eq!(again, event);
    assert_eq!(again.to_json(), json);
    check_event_frame(&event);
});
