//! The Last-Event-ID parser: never panics; the header wins over the query; what it returns is the
//! id the text spelled, and prints back to text that parses to it.
//!
//! Input: the header's raw bytes, a NUL, then the raw query string (no NUL: no query; a leading
//! NUL: no header).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stream_core::EventId;
use stream_core::sse::{last_event_id, last_event_id_from_request};

fuzz_target!(|data: &[u8]| {
    let (header, query) = match data.iter().position(|&b| b == 0) {
        Some(0) => (None, Some(&data[1..])),
        Some(at) => (Some(&data[..at]), Some(&data[at + 1..])),
        None => (Some(data), None),
    };
    let query = query.map(String::from_utf8_lossy);
    let result = last_event_id_from_request(header, query.as_deref());

    // A usable header decides alone.
    if let Some(h) = header
        && h.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
    {
        let h = std::str::from_utf8(h).expect("ASCII");
        if !h.trim().is_empty() {
            assert_eq!(result, h.trim().parse::<EventId>().map(Some), "header {h:?}");
        }
        assert_eq!(
            last_event_id(Some(h), None),
            if h.trim().is_empty() { Ok(None) } else { result.clone() }
        );
    }

    if let Ok(Some(id)) = result {
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<EventId>(), Ok(id));
        assert_eq!(last_event_id(Some(&text), None), Ok(Some(id)));
        assert_eq!(
            last_event_id_from_request(None, Some(&format!("last_event_id={text}"))),
            Ok(Some(id))
        );
    }
});
