//! `StreamContext::from_json`: never panics; what it accepts round-trips through JSON and a dict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stream_core::StreamContext;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(context) = StreamContext::from_json(text) else {
        return;
    };
    let json = context.to_json();
    assert_eq!(
        StreamContext::from_json(&json).expect("its own JSON reads back"),
        context
    );
    assert_eq!(
        StreamContext::from_dict(context.to_dict()).expect("its own dict reads back"),
        context
    );
    let _ = context.namespace();
    let _ = context.debug_context();
});
