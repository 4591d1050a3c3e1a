//! [`SharedEvent`]: an event as a broker delivers it, encoded once per process.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Deserialize;

use crate::event::{Event, EventId, EventType};
use crate::sse::push_field;

/// An event as a broker delivers it: its id and type, and its SSE frame, encoded **once** per
/// process and shared by every local subscriber (cloning is two reference counts, no copy).
///
/// A broker makes one when an event arrives: [`from_json`](Self::from_json) from the bytes that
/// travelled through Redis (the frame's `data:` is those very bytes), or
/// [`from_event`](Self::from_event) in process. The SSE pipeline writes [`frame`](Self::frame) as
/// it is; the full [`Event`] is decoded only when somebody asks for it ([`event`](Self::event)),
/// at most once.
#[derive(Clone)]
pub struct SharedEvent(Arc<Inner>);

struct Inner {
    id: EventId,
    kind: EventType,
    /// `id: <id>\n` (not for control events), `data: <json>\n`, then a blank line.
    frame: Bytes,
    /// The event JSON (a slice of `frame` when the event was encoded here).
    json: Bytes,
    /// The event's `persist` flag, which is not part of the JSON.
    persist: bool,
    event: OnceLock<Event>,
}

/// The envelope fields the pipeline needs, read without decoding the payload.
#[derive(Deserialize)]
struct Envelope {
    id: EventId,
    #[serde(rename = "type")]
    kind: EventType,
}

/// The SSE frame of an event whose JSON is `json`: one buffer. Also where in it the JSON stands
/// whole, when it went out as one `data:` line (always for serde's JSON, which has no raw line
/// break; push_field still splits any that another publisher's bytes might carry, so no payload
/// can end the frame early).
fn frame(id: EventId, kind: &EventType, json: &str) -> (Bytes, Option<Range<usize>>) {
    let mut buf = Vec::with_capacity(json.len() + 40);
    if !kind.is_control() {
        push_field(&mut buf, "id", &id.to_string());
    }
    let start = buf.len() + "data: ".len();
    push_field(&mut buf, "data", json);
    let one_line = buf.len() == start + json.len() + 1;
    buf.push(b'\n');
    (Bytes::from(buf), one_line.then(|| start..start + json.len()))
}

impl SharedEvent {
    /// Encodes `event` once (one JSON serialization and one frame buffer) and keeps only the
    /// frame: the JSON is the frame's `data:` line, and the event is decoded again from it only
    /// if [`event`](Self::event) is called. A history of small events then costs little more
    /// than their frames.
    pub fn from_event(event: Event) -> Self {
        let json = event.to_json();
        let (frame, at) = frame(event.id, &event.kind, &json);
        // The JSON's bytes are shared with the frame rather than kept twice.
        let json = match at {
            Some(at) => frame.slice(at),
            None => Bytes::from(json),
        };
        Self(Arc::new(Inner {
            id: event.id,
            kind: event.kind,
            frame,
            json,
            persist: event.persist,
            event: OnceLock::new(),
        }))
    }

    /// Takes an event's JSON as it came (from Redis, say): reads only its `id` and `type`, builds
    /// the frame around the same bytes, and decodes the rest only if [`event`](Self::event) is
    /// called. Fails when the JSON is not an event envelope.
    pub fn from_json(json: Bytes) -> Result<Self, serde_json::Error> {
        let Envelope { id, kind } = serde_json::from_slice(&json)?;
        let (frame, _) = frame(id, &kind, &String::from_utf8_lossy(&json));
        Ok(Self(Arc::new(Inner {
            id,
            kind,
            frame,
            json,
            persist: false,
            event: OnceLock::new(),
        })))
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.0.id
    }

    /// The event's type.
    pub fn kind(&self) -> &EventType {
        &self.0.kind
    }

    /// The event's SSE frame, shared: what the pipeline writes to every subscriber.
    pub fn frame(&self) -> &Bytes {
        &self.0.frame
    }

    /// The event's JSON, as it came (shared with the frame when it was encoded here): what
    /// [`crate::ai_sdk`] reads single fields from without decoding the whole event.
    pub(crate) fn json(&self) -> &Bytes {
        &self.0.json
    }

    /// The whole event, decoded on first use.
    ///
    /// # Panics
    ///
    /// Never for a value made by [`from_event`](Self::from_event). For one made by
    /// [`from_json`](Self::from_json) whose envelope parsed but whose payload does not (a foreign
    /// publisher's bytes), the event holds the envelope with an empty payload instead.
    pub fn event(&self) -> &Event {
        self.0.event.get_or_init(|| {
            let mut decoded = Event::from_json(&String::from_utf8_lossy(&self.0.json)).unwrap_or_else(|e| {
                tracing::warn!(id = %self.0.id, error = %e, "an event's payload does not decode");
                let mut event = Event::new(
                    crate::ids::ChannelId::generate(),
                    self.0.kind.clone(),
                    serde_json::Map::new(),
                )
                .expect("an empty payload has no reserved key");
                event.id = self.0.id;
                event
            });
            decoded.persist = self.0.persist;
            decoded
        })
    }
}

impl From<Event> for SharedEvent {
    fn from(event: Event) -> Self {
        Self::from_event(event)
    }
}

impl fmt::Debug for SharedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedEvent")
            .field("id", &self.0.id)
            .field("kind", &self.0.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChannelId;

    #[test]
    fn json_from_elsewhere_frames_as_is_and_decodes_on_demand() {
        let mut event = Event::data(ChannelId::new("c").unwrap(), "token", "hi").unwrap();
        event.id = EventId::from_parts(1, 7);
        let json = Bytes::from(event.to_json());
        let shared = SharedEvent::from_json(json.clone()).unwrap();
        assert_eq!((shared.id(), shared.kind()), (event.id, &EventType::Data));
        let mut want = format!("id: {}\ndata: ", event.id).into_bytes();
        want.extend_from_slice(&json);
        want.extend_from_slice(b"\n\n");
        assert_eq!(shared.frame().as_ref(), want.as_slice());
        assert_eq!(shared.event(), &event);
        assert_eq!(SharedEvent::from_event(event).frame(), shared.frame());
        assert!(SharedEvent::from_json(Bytes::from_static(b"{\"x\":1}")).is_err());
    }
}
