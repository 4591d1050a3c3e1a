//! Properties over generated inputs (issue 14): SSE framing cannot be broken by a payload, event
//! JSON round-trips, `StreamContext::from_json` never panics, the token verifier accepts only what
//! the signer made, and the identifiers accept exactly their documented alphabets.
//!
//! Each property runs proptest's default 256 cases (`PROPTEST_CASES=10000` for a deeper run). A
//! failure prints the shrunk input and its seed goes into `properties.proptest-regressions`
//! (committed: those cases run first every time); also keep it as an explicit test next to the
//! code it broke.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{StreamExt, stream};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Number, Value};
use stream_core::sse::{encode_event, last_event_id, last_event_id_from_request, push_field};
use stream_core::{
    ChannelId, DebugContext, Event, EventId, EventType, LeaseId, RESERVED_KEYS, StreamContext, StreamTokenSigner,
    TokenError, UserId,
};
use time::{OffsetDateTime, UtcOffset};

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// Pieces that could break a line-based protocol or a JSON encoder if they were passed through.
const HOSTILE: &[&str] = &[
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "\r\r",
    "data: x",
    "id: 01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "event: evil",
    "retry: 1",
    ":",
    ": comment",
    "\0",
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\u{feff}",
    "\u{7f}",
    "\t",
    "\"",
    "\\",
    "\\n",
    "}",
    "{",
    "é",
    "😀",
];

/// Strings made of hostile pieces and arbitrary characters (any Unicode scalar value).
fn hostile_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(HOSTILE).prop_map(str::to_owned),
            any::<char>().prop_map(String::from),
            "[a-z ]{1,8}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// Finite floats only: JSON has no NaN or infinity.
fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(|f| Value::Number(Number::from_f64(f).expect("finite"))),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((hostile_string(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A payload: any keys but the reserved envelope ones (which `Event::new` refuses).
fn payload() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop_oneof![hostile_string(), "[a-z_]{1,10}"], json_value()), 0..5).prop_map(|kv| {
        kv.into_iter()
            .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
            .collect()
    })
}

fn event_type() -> impl Strategy<Value = EventType> {
    prop_oneof![
        prop::sample::select(vec![
            EventType::Log,
            EventType::Progress,
            EventType::Data,
            EventType::Error,
            EventType::Done,
            EventType::Ping,
            EventType::Gap,
            EventType::DeployStart,
            EventType::DeploySuccess,
            EventType::DeployFailure,
        ]),
        "[a-z0-9_.-]{1,64}".prop_map(|s| s.parse().expect("a valid custom type")),
    ]
}

/// Any ULID: 26 Crockford base32 characters, the first at most 7 (128 bits).
fn event_id() -> impl Strategy<Value = EventId> {
    prop_oneof![
        "[0-7][0-9A-HJKMNP-TV-Z]{25}".prop_map(|s| s.parse().expect("a valid ULID")),
        (0u64..(1 << 48), any::<u64>()).prop_map(|(ms, seq)| EventId::from_parts(ms, seq)),
    ]
}

fn channel_id() -> impl Strategy<Value = ChannelId> {
    "[A-Za-z0-9_-]{1,128}".prop_map(|s| ChannelId::new(s).expect("a valid channel id"))
}

fn user_id() -> impl Strategy<Value = UserId> {
    "[A-Za-z0-9_.@+-]{1,128}".prop_map(|s| UserId::new(s).expect("a valid user id"))
}

/// Any instant RFC 3339 can write (years 0000 to 9999), at any whole-minute offset.
fn timestamp() -> impl Strategy<Value = OffsetDateTime> {
    let min = OffsetDateTime::from_unix_timestamp(-62_167_219_200 + 86_400).expect("in range");
    let max = OffsetDateTime::from_unix_timestamp(253_402_300_799 - 86_400).expect("in range");
    (
        min.unix_timestamp_nanos()..max.unix_timestamp_nanos(),
        -(23 * 60 + 59)..=(23 * 60 + 59),
    )
        .prop_map(|(nanos, offset_minutes)| {
            let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).expect("a valid offset");
            OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .expect("in range")
                .to_offset(offset)
        })
}

fn debug_context() -> impl Strategy<Value = DebugContext> {
    (
        hostile_string(),
        prop::option::of(hostile_string()),
        prop::option::of(hostile_string()),
        prop::option::of(hostile_string()),
        prop::option::of(hostile_string()),
    )
        .prop_map(|(namespace, workspace_id, project, env, service)| DebugContext {
            namespace,
            workspace_id,
            project,
            env,
            service,
        })
}

fn event() -> impl Strategy<Value = Event> {
    (
        event_id(),
        event_type(),
        channel_id(),
        timestamp(),
        prop::option::of(debug_context()),
        payload(),
    )
        .prop_map(|(id, kind, channel_id, timestamp, context, payload)| Event {
            id,
            kind,
            channel_id,
            timestamp,
            context,
            payload,
            persist: false,
        })
}

/// Parses SSE bytes with `eventsource-stream` (an independent parser, as a browser would).
fn parse_sse(bytes: &[u8]) -> Vec<eventsource_stream::Event> {
    let body = stream::iter([Ok::<_, Infallible>(Bytes::copy_from_slice(bytes))]);
    futures_executor::block_on(body.eventsource().map(|r| r.expect("valid SSE")).collect())
}

// ---------------------------------------------------------------------------------------------
// SSE frames
// ---------------------------------------------------------------------------------------------

proptest! {
    /// A frame is an `id:` line (none for control events), `data:` lines and a blank line, and an
    /// SSE parser reads back exactly one event: no `event:`, no `retry:`, the event's id, and the
    /// event's JSON as its data.
    #[test]
    fn a_frame_is_one_id_line_and_data_lines(event in event()) {
        let frame = encode_event(&event);
        let json = event.to_json();
        let text = std::str::from_utf8(&frame).expect("a frame is UTF-8");
        prop_assert!(!text.contains('\r'), "CR in frame {text:?}");
        prop_assert!(text.ends_with("\n\n"), "frame not ended by a blank line: {text:?}");

        let body = &text[..text.len() - 1];
        let mut lines: Vec<&str> = body.split_terminator('\n').collect();
        if event.kind.is_control() {
            prop_assert!(!lines[0].starts_with("id:"), "control frame has an id: {text:?}");
        } else {
            prop_assert_eq!(lines[0], format!("id: {}", event.id));
            lines.remove(0);
        }
        prop_assert!(!lines.is_empty());
        let mut data = Vec::new();
        for line in &lines {
            let value = line.strip_prefix("data: ");
            prop_assert!(value.is_some(), "unexpected line {line:?} in {text:?}");
            data.extend(value);
        }
        prop_assert_eq!(&data.join("\n"), &json);

        let parsed = parse_sse(&frame);
        prop_assert_eq!(parsed.len(), 1, "{:?}", parsed);
        let got = &parsed[0];
        prop_assert_eq!(got.event.as_str(), "message");
        prop_assert_eq!(got.retry, None);
        let want_id = if event.kind.is_control() { String::new() } else { event.id.to_string() };
        prop_assert_eq!(&got.id, &want_id);
        prop_assert_eq!(&got.data, &json);
        prop_assert_eq!(Event::from_json(&got.data).expect("data is the event"), event);
    }

    /// Any value passed to `push_field` stays one field: a `data` value's lines come back joined
    /// with LF; any other field is a single line.
    #[test]
    fn push_field_cannot_add_fields(value in hostile_string()) {
        let mut frame = Vec::new();
        push_field(&mut frame, "data", &value);
        frame.push(b'\n');
        let parsed = parse_sse(&frame);
        prop_assert_eq!(parsed.len(), 1, "{:?}", parsed);
        prop_assert_eq!(parsed[0].event.as_str(), "message");
        prop_assert_eq!(parsed[0].retry, None);
        prop_assert_eq!(parsed[0].id.as_str(), "");
        prop_assert_eq!(&parsed[0].data, &value.replace("\r\n", "\n").replace('\r', "\n"));

        for name in ["id", "event", "retry"] {
            let mut line = Vec::new();
            push_field(&mut line, name, &value);
            let text = String::from_utf8(line).expect("UTF-8");
            prop_assert!(text.ends_with('\n'));
            prop_assert!(!text[..text.len() - 1].contains(['\n', '\r']), "{text:?}");
            let prefix = format!("{name}: ");
            prop_assert!(text.starts_with(&prefix), "{text:?}");
        }
    }

    /// The resume point reads back from the header or the query parameter, whitespace trimmed, the
    /// header first.
    #[test]
    fn last_event_id_reads_back(id in event_id(), other in event_id(), pad in "[ \t]{0,3}") {
        let text = format!("{pad}{id}{pad}");
        prop_assert_eq!(last_event_id(Some(&text), None), Ok(Some(id)));
        prop_assert_eq!(last_event_id(None, Some(&text)), Ok(Some(id)));
        prop_assert_eq!(last_event_id(Some(&text), Some(&other.to_string())), Ok(Some(id)));
        let query = format!("a=1&last_event_id={other}&last_event_id={id}");
        prop_assert_eq!(last_event_id_from_request(None, Some(&query)), Ok(Some(id)));
        prop_assert_eq!(last_event_id_from_request(Some(text.as_bytes()), Some(&query)), Ok(Some(id)));
    }
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

const CONTEXT_KEYS: [&str; 8] = [
    "channel_id",
    "workspace_id",
    "project",
    "env",
    "service",
    "persist_events",
    "extra",
    "unknown",
];

/// Text that looks like a serialized context: objects with its keys (and others) and any values,
/// sometimes cut short.
fn context_like_json() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(CONTEXT_KEYS.to_vec()).prop_map(str::to_owned),
        hostile_string()
    ];
    let value = prop_oneof![
        json_value(),
        "[A-Za-z0-9_-]{1,130}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
    ];
    (prop::collection::vec((key, value), 0..8), any::<Index>(), any::<bool>()).prop_map(|(kv, cut, truncate)| {
        let text = Value::Object(kv.into_iter().collect()).to_string();
        if truncate {
            let at = cut.index(text.len() + 1);
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text[..at].to_owned()
        } else {
            text
        }
    })
}

fn stream_context() -> impl Strategy<Value = StreamContext> {
    (
        channel_id(),
        prop::option::of(hostile_string()),
        prop::option::of(hostile_string()),
        prop::option::of(hostile_string()),
        prop::option::of(hostile_string()),
        any::<bool>(),
        prop::collection::vec((hostile_string(), json_value()), 0..3),
    )
        .prop_map(|(channel, workspace, project, env, service, persist, extra)| {
            let mut b = StreamContext::builder().channel_id(channel).persist_events(persist);
            if let Some(v) = workspace {
                b = b.workspace_id(v);
            }
            if let Some(v) = project {
                b = b.project(v);
            }
            if let Some(v) = env {
                b = b.env(v);
            }
            if let Some(v) = service {
                b = b.service(v);
            }
            for (k, v) in extra {
                b = b.extra(k, v);
            }
            b.build()
        })
}

proptest! {
    /// `Event` JSON round-trips, and is one line (it is the SSE `data:` value).
    #[test]
    fn event_json_round_trips(event in event()) {
        let json = event.to_json();
        prop_assert!(!json.contains(['\n', '\r']), "{json:?}");
        prop_assert_eq!(&Event::from_json(&json).expect("reads back"), &event);
        prop_assert_eq!(Event::from_json(&json).expect("reads back").to_json(), json);
    }

    /// `StreamContext::from_json` never panics, on any text or on context-like JSON; what it
    /// accepts round-trips.
    #[test]
    fn context_from_json_never_panics(text in prop_oneof![hostile_string(), context_like_json()]) {
        if let Ok(context) = StreamContext::from_json(&text) {
            let again = StreamContext::from_json(&context.to_json()).expect("its own JSON reads back");
            prop_assert_eq!(&again, &context);
            prop_assert_eq!(StreamContext::from_dict(context.to_dict()).expect("its own dict reads back"), context);
        }
    }

    /// A context round-trips through JSON and through a dict.
    #[test]
    fn context_json_round_trips(context in stream_context()) {
        prop_assert_eq!(&StreamContext::from_json(&context.to_json()).expect("reads back"), &context);
        prop_assert_eq!(StreamContext::from_dict(context.to_dict()).expect("reads back"), context);
    }
}

// ---------------------------------------------------------------------------------------------
// Stream tokens
// ---------------------------------------------------------------------------------------------

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// HMAC pads keys shorter than its block with zeros, so `k` and `k\0` are the same key.
fn same_hmac_key(a: &[u8], b: &[u8]) -> bool {
    let trim = |k: &[u8]| k.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    a == b || (a.len() <= 64 && b.len() <= 64 && a[..trim(a)] == b[..trim(b)])
}

/// One edit of a token: a character replaced, inserted or removed anywhere, or text put before or
/// after one of its five dot-separated fields.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, char),
    Insert(Index, char),
    Remove(Index),
    Field { field: usize, text: String, before: bool },
    Truncate(Index),
}

/// Characters that are meaningful in a token: its base64url alphabet, digits, the dot, and what a
/// lenient parser might skip (sign, padding, space).
fn token_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec!['.', '+', '-', '_', '=', '0', '1', '9', ' ', 'A', 'a', 'z', '/']),
        any::<char>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), token_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<Index>(), token_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<Index>().prop_map(Edit::Remove),
        (
            0..5usize,
            prop_oneof!["[+0 ]{1,2}", "[=.A-Za-z0-9_-]{1,3}"],
            any::<bool>()
        )
            .prop_map(|(field, text, before)| Edit::Field { field, text, before }),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(token: &str, edit: &Edit) -> String {
    let chars: Vec<char> = token.chars().collect();
    let mut out = chars.clone();
    if chars.is_empty() && !matches!(edit, Edit::Insert(..) | Edit::Field { .. }) {
        return String::new();
    }
    match edit {
        Edit::Replace(i, c) => out[i.index(chars.len())] = *c,
        Edit::Insert(i, c) => out.insert(i.index(chars.len() + 1), *c),
        Edit::Remove(i) => {
            out.remove(i.index(chars.len()));
        }
        Edit::Truncate(i) => out.truncate(i.index(chars.len())),
        Edit::Field { field, text, before } => {
            let mut fields: Vec<String> = token.split('.').map(str::to_owned).collect();
            let n = fields.len();
            let f = &mut fields[*field % n];
            if *before {
                f.insert_str(0, text);
            } else {
                f.push_str(text);
            }
            return fields.join(".");
        }
    }
    out.into_iter().collect()
}

proptest! {
    /// A token the signer made verifies, for its channel, to its user, and only under an
    /// equivalent key.
    #[test]
    fn signed_tokens_verify_for_their_channel_only(
        user in user_id(),
        channel in channel_id(),
        other_channel in channel_id(),
        key_id in "[A-Za-z0-9_-]{1,32}",
        secret in prop::collection::vec(any::<u8>(), 0..80),
        other_secret in prop::collection::vec(any::<u8>(), 0..80),
        ttl in 60u64..(1 << 40),
    ) {
        let signer = StreamTokenSigner::with_key(&key_id, secret.clone());
        let token = signer.sign_with_expiry(&user, &channel, now_unix() + ttl);
        prop_assert_eq!(signer.verify(&token, &channel), Ok(user.clone()));
        if other_channel != channel {
            prop_assert_eq!(signer.verify(&token, &other_channel), Err(TokenError::BadSignature));
        }
        let stranger = StreamTokenSigner::with_key(&key_id, other_secret.clone());
        prop_assert_eq!(
            stranger.verify(&token, &channel).is_ok(),
            same_hmac_key(&secret, &other_secret)
        );
        let expired = signer.sign_with_expiry(&user, &channel, now_unix().saturating_sub(ttl));
        prop_assert_eq!(signer.verify(&expired, &channel), Err(TokenError::Expired));
    }

    /// Any edit of a real token that changes its text is refused: the verifier accepts only the
    /// exact strings the signer made.
    #[test]
    fn edited_tokens_are_refused(
        user in user_id(),
        channel in channel_id(),
        secret in prop::collection::vec(any::<u8>(), 1..40),
        ttl in 60u64..(1 << 30),
        edits in prop::collection::vec(edit(), 1..3),
    ) {
        let signer = StreamTokenSigner::new(secret);
        let token = signer.sign(&user, &channel, Duration::from_secs(ttl));
        let mut edited = token.clone();
        for e in &edits {
            edited = apply(&edited, e);
        }
        prop_assume!(edited != token);
        let result = signer.verify(&edited, &channel);
        prop_assert!(result.is_err(), "{edited:?} (from {token:?}) verified as {result:?}");
    }

    /// Arbitrary text never verifies, and never panics the verifier.
    #[test]
    fn arbitrary_text_never_verifies(text in prop_oneof![hostile_string(), "v1\\.k1\\.[0-9+]{0,12}\\.[A-Za-z0-9_-]{0,12}\\.[A-Za-z0-9_-]{0,50}"]) {
        let signer = StreamTokenSigner::new(b"fixed secret".to_vec());
        let channel = ChannelId::new("chan").expect("valid");
        prop_assert!(signer.verify(&text, &channel).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------------------------

/// The alphabets as documented on the types, written out rather than derived from the code.
const CHANNEL_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const USER_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.@+";

/// Characters just outside the alphabets: ASCII punctuation and controls, and non-ASCII letters
/// and digits that `char::is_alphanumeric` would let through.
const OUTSIDERS: &[char] = &[
    ' ', ':', '{', '}', '.', '@', '+', '/', '\\', '\n', '\r', '\t', '\0', '*', '?', '#', '%', '=', '~', '\u{7f}', 'é',
    'Ж', '٣', 'ﬁ', '\u{212a}', 'İ', '\u{ff21}', '\u{2028}', '😀',
];

/// Strings mostly from `alphabet`, with outsiders mixed in, of 0 to 140 bytes or so (around the
/// 128-byte limit).
fn id_candidate(alphabet: &'static str) -> impl Strategy<Value = String> {
    let inside: Vec<char> = alphabet.chars().collect();
    let ch = prop_oneof![
        8 => prop::sample::select(inside),
        1 => prop::sample::select(OUTSIDERS),
        1 => any::<char>(),
    ];
    prop_oneof![
        prop::collection::vec(ch.clone(), 0..12),
        prop::collection::vec(ch, 60..140),
    ]
    .prop_map(String::from_iter)
}

fn documented(s: &str, alphabet: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| alphabet.contains(c))
}

proptest! {
    /// `ChannelId`: 1 to 128 bytes of `A-Z a-z 0-9 _ -`, by every way in.
    #[test]
    fn channel_ids_accept_exactly_their_alphabet(s in id_candidate(USER_ALPHABET)) {
        let ok = documented(&s, CHANNEL_ALPHABET, 128);
        let parsed = ChannelId::new(&s);
        prop_assert_eq!(parsed.is_ok(), ok, "{:?}: {:?}", s, parsed);
        prop_assert_eq!(s.parse::<ChannelId>().is_ok(), ok);
        prop_assert_eq!(ChannelId::try_from(s.clone()).is_ok(), ok);
        prop_assert_eq!(serde_json::from_value::<ChannelId>(Value::String(s.clone())).is_ok(), ok);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }

    /// `UserId`: 1 to 128 bytes of `A-Z a-z 0-9 _ - . @ +`, by every way in.
    #[test]
    fn user_ids_accept_exactly_their_alphabet(s in id_candidate(USER_ALPHABET)) {
        let ok = documented(&s, USER_ALPHABET, 128);
        let parsed = UserId::new(&s);
        prop_assert_eq!(parsed.is_ok(), ok, "{:?}: {:?}", s, parsed);
        prop_assert_eq!(s.parse::<UserId>().is_ok(), ok);
        prop_assert_eq!(UserId::try_from(s.clone()).is_ok(), ok);
        prop_assert_eq!(serde_json::from_value::<UserId>(Value::String(s.clone())).is_ok(), ok);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }

    /// `LeaseId`: 1 to 64 bytes of `A-Z a-z 0-9 _ -`.
    #[test]
    fn lease_ids_accept_exactly_their_alphabet(s in id_candidate(USER_ALPHABET)) {
        prop_assert_eq!(LeaseId::new(&s).is_ok(), documented(&s, CHANNEL_ALPHABET, 64), "{:?}", s);
    }
}
