//! The form events take in Redis: what the publish script is sent, what a pub/sub message holds,
//! and what a history entry holds (see the scripts' `ACCEPT`).
//!
//! Events travel as their JSON **after the id**: what follows `{"id":"` and the 26-character id,
//! from the closing quote on. The script never looks into it; it takes sequence numbers for the
//! events and sends the millisecond and the first one along, as the header `<ms>:<first seq>`.
//! Event `k` of a chunk has the id `EventId::from_parts(ms, first + k)`, and the reader puts
//! `{"id":"<id>` back in front: the JSON it gets is byte for byte what the publisher serialized,
//! with the broker's id.
//!
//! A chunk is at most `min(64, history_max_len)` events, one per line (compact JSON has no raw
//! line break): one history entry (`i` = the header, `e` = the events) and one pub/sub message
//! (the header, a line break, the events). Entries and messages of the earlier form (an `e` field
//! per event, a message of whole JSON lines) are still read.

use bytes::Bytes;
use stream_core::{BoxError, EventId, SharedEvent};

/// What the scripts take of an event's JSON: everything after `{"id":"` and the 26-character
/// provisional id. An event always serializes with its id first.
pub(crate) fn after_id(json: &[u8]) -> &[u8] {
    const ID_END: usize = "{\"id\":\"".len() + 26;
    debug_assert!(json.starts_with(b"{\"id\":\""), "an event's JSON starts with its id");
    json.get(ID_END..).unwrap_or_default()
}

/// The events of one script call as its arguments: the 1-based index of the first `done` (else
/// empty), then per chunk of at most `chunk` events its count and its body (the events' JSON
/// after the id, one per line). `events` are each event's whole JSON and whether it is a `done`.
pub(crate) fn event_args<'a>(events: impl ExactSizeIterator<Item = (bool, &'a [u8])>, chunk: usize) -> Vec<Vec<u8>> {
    let chunk = chunk.max(1);
    let count = events.len();
    let mut done_at = None;
    let mut args = Vec::with_capacity(1 + 2 * count.div_ceil(chunk));
    args.push(Vec::new());
    let mut body = Vec::new();
    let mut in_body = 0;
    for (index, (done, json)) in events.enumerate() {
        if done && done_at.is_none() {
            done_at = Some(index + 1);
        }
        if in_body > 0 {
            body.push(b'\n');
        }
        body.extend_from_slice(after_id(json));
        in_body += 1;
        if in_body == chunk || index + 1 == count {
            args.push(in_body.to_string().into_bytes());
            args.push(std::mem::take(&mut body));
            in_body = 0;
        }
    }
    if let Some(at) = done_at {
        args[0] = at.to_string().into_bytes();
    }
    args
}

/// Parses a chunk header, `<ms>:<first seq>`.
fn header(head: &[u8]) -> Option<(u64, u64)> {
    let (ms, seq) = std::str::from_utf8(head).ok()?.split_once(':')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// An event's whole JSON: `{"id":"<id>` and its JSON after the id.
fn whole(id: EventId, tail: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut json = Vec::with_capacity(33 + tail.len());
    // Writing into a `Vec` cannot fail.
    let _ = write!(json, "{{\"id\":\"{id}");
    json.extend_from_slice(tail);
    json
}

/// Calls `each` with the byte range of every line of `bytes`.
fn lines(bytes: &[u8], mut each: impl FnMut(std::ops::Range<usize>)) {
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |n| start + n);
        each(start..end);
        start = end + 1;
    }
}

fn bad(what: &str) -> BoxError {
    format!("not a chunk of events: {what}").into()
}

/// The events of a pub/sub message, in order, each framed once here and shared by every local
/// subscriber. A message of the earlier form (whole JSON lines) is sliced without a copy.
pub(crate) fn message_events(payload: Bytes) -> Result<Vec<SharedEvent>, BoxError> {
    // Where the events start, and the next one's id (none in the earlier form: it is inside).
    let (start, mut next) = if payload.first() == Some(&b'{') {
        (0, None)
    } else {
        let split = payload
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header"))?;
        (
            split + 1,
            Some(header(&payload[..split]).ok_or_else(|| bad("a bad header"))?),
        )
    };
    let mut events = Vec::with_capacity(1);
    let mut failed = None;
    lines(&payload[start..], |range| {
        let range = start + range.start..start + range.end;
        let json = match &mut next {
            None => payload.slice(range),
            Some((ms, seq)) => {
                *seq += 1;
                whole(EventId::from_parts(*ms, *seq - 1), &payload[range]).into()
            }
        };
        match SharedEvent::from_json(json) {
            Ok(event) => events.push(event),
            Err(e) => failed = Some(e),
        }
    });
    failed.map_or(Ok(events), |e| Err(e.into()))
}

/// The events of a history entry, in order, as their whole JSON: `head` is its `i` field (none
/// for an entry of the earlier form), `bodies` its `e` fields.
pub(crate) fn entry_events(head: Option<&[u8]>, bodies: Vec<Vec<u8>>, out: &mut Vec<Vec<u8>>) -> Result<(), BoxError> {
    let Some(head) = head else {
        out.extend(bodies);
        return Ok(());
    };
    let (ms, mut seq) = header(head).ok_or_else(|| bad("a bad header"))?;
    for body in bodies {
        lines(&body, |range| {
            out.push(whole(EventId::from_parts(ms, seq), &body[range]));
            seq += 1;
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use stream_core::{ChannelId, Event};

    fn event(n: u64, done: bool) -> Event {
        let ch = ChannelId::new("ch").unwrap();
        if done {
            return Event::done(ch, true, Map::new()).unwrap();
        }
        let mut payload = Map::new();
        payload.insert("n".into(), n.into());
        payload.insert("text".into(), "two\nlines".into());
        Event::new(ch, stream_core::EventType::Data, payload).unwrap()
    }

    fn args_of(events: &[Event], chunk: usize) -> Vec<Vec<u8>> {
        let json: Vec<(bool, String)> = events.iter().map(|e| (e.kind.closes_stream(), e.to_json())).collect();
        event_args(json.iter().map(|(d, j)| (*d, j.as_bytes())), chunk)
    }

    #[test]
    fn events_go_in_chunks_of_the_given_size() {
        let events: Vec<Event> = (0..5).map(|n| event(n, n == 3)).collect();
        let args = args_of(&events, 2);
        assert_eq!(args[0], b"4", "the first done is the fourth event");
        let counts: Vec<&[u8]> = args[1..].iter().step_by(2).map(Vec::as_slice).collect();
        assert_eq!(counts, [b"2".as_slice(), b"2", b"1"]);
        let first = String::from_utf8(args[2].clone()).unwrap();
        let (a, b) = first.split_once('\n').unwrap();
        assert_eq!(a.as_bytes(), after_id(events[0].to_json().as_bytes()));
        assert_eq!(b.as_bytes(), after_id(events[1].to_json().as_bytes()));
        assert!(args_of(&events[..2], 64)[0].is_empty(), "no done");
    }

    #[test]
    fn a_message_gives_the_published_json_with_the_brokers_ids() {
        let events: Vec<Event> = (0..3).map(|n| event(n, false)).collect();
        let args = args_of(&events, 64);
        let mut message = b"1700000000000:41\n".to_vec();
        message.extend_from_slice(&args[2]);
        let got = message_events(message.into()).unwrap();
        assert_eq!(got.len(), 3);
        for (k, (got, sent)) in got.iter().zip(&events).enumerate() {
            let id = EventId::from_parts(1_700_000_000_000, 41 + k as u64);
            assert_eq!(got.id(), id);
            let mut want = sent.clone();
            want.id = id;
            assert_eq!(
                got.frame().as_ref(),
                format!("id: {id}\ndata: {}\n\n", want.to_json()).as_bytes()
            );
        }
        assert!(message_events(Bytes::from_static(b"12:x\n\"}")).is_err());
        assert!(message_events(Bytes::from_static(b"no header")).is_err());
    }

    #[test]
    fn a_message_of_the_earlier_form_is_sliced_without_a_copy() {
        let joined = Bytes::from(format!("{}\n{}", event(1, false).to_json(), event(2, false).to_json()));
        let got = message_events(joined.clone()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id(), event_id(&joined, 0));
    }

    fn event_id(joined: &Bytes, line: usize) -> EventId {
        let text = std::str::from_utf8(joined).unwrap().lines().nth(line).unwrap();
        Event::from_json(text).unwrap().id
    }

    #[test]
    fn an_entry_gives_its_events_in_order() {
        let events: Vec<Event> = (0..4).map(|n| event(n, false)).collect();
        let args = args_of(&events, 2);
        let mut out = Vec::new();
        entry_events(Some(b"5:7"), vec![args[2].clone(), args[4].clone()], &mut out).unwrap();
        let ids: Vec<EventId> = out
            .iter()
            .map(|j| Event::from_json(std::str::from_utf8(j).unwrap()).unwrap().id)
            .collect();
        assert_eq!(ids, (7..11).map(|s| EventId::from_parts(5, s)).collect::<Vec<_>>());
        let mut legacy = Vec::new();
        entry_events(None, vec![b"{}".to_vec()], &mut legacy).unwrap();
        assert_eq!(legacy, [b"{}".to_vec()]);
        assert!(entry_events(Some(b"x"), vec![], &mut legacy).is_err());
    }
}
