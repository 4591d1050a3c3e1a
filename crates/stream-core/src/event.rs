//! The event model: what travels from an emitter to a browser. The JSON shape is written down in
//! `docs/protocol.md`.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use ulid::Ulid;

use crate::ids::ChannelId;

/// An event id: a ULID, and the SSE `id:` of the event's frame.
///
/// Ids order events: a subscription yields each channel's events in increasing id order, and a
/// client resumes after the last id it saw.
///
/// The broker makes the id of every event it accepts (see `docs/adr/0003-broker-assigned-ids.md`):
/// the ULID's time part is the millisecond at which the broker accepted it (never smaller than the
/// channel's previous one) and its random part is the event's **sequence number** in the channel
/// (1 for the first event, then 2, 3, …). So ids are strictly increasing in the order the broker
/// accepted the events, whoever published them, and a reader can tell from two ids how many events
/// lie between them ([`sequence`](Self::sequence)). [`EventId::generate`] makes provisional ids:
/// the id an [`Event`] carries until a broker accepts it, and the id of events that never pass a
/// broker (a direct stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Ulid);

static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

impl EventId {
    /// A new id, greater than every id this process made before (one mutex, no allocation).
    pub fn generate() -> Self {
        let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        let generator = guard.get_or_insert_with(ulid::Generator::new);
        loop {
            match generator.generate() {
                Ok(id) => return Self(id),
                // 2^80 ids in one millisecond: wait for the next one.
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
    }

    /// The id of the `sequence`-th event of a channel, accepted at `unix_ms`: the form every broker
    /// gives the ids it assigns.
    pub fn from_parts(unix_ms: u64, sequence: u64) -> Self {
        Self(Ulid::from_parts(unix_ms, u128::from(sequence)))
    }

    /// The event's sequence number in its channel, for an id a broker assigned (see the type's
    /// docs); `None` for a provisional id, whose random part does not fit in 64 bits.
    pub fn sequence(&self) -> Option<u64> {
        u64::try_from(self.0.random()).ok()
    }

    /// The smallest id of the given millisecond (for time-based range scans).
    pub fn min_at(unix_ms: u64) -> Self {
        Self(Ulid::from_parts(unix_ms, 0))
    }

    /// The id's millisecond timestamp.
    pub fn unix_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }

    /// The underlying ULID.
    pub fn ulid(&self) -> Ulid {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.0.array_to_str(&mut buf))
    }
}

/// A string that is not a valid event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event id {0:?}: expected a 26-character ULID")]
pub struct InvalidEventId(pub String);

impl FromStr for EventId {
    type Err = InvalidEventId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s.trim())
            .map(Self)
            .map_err(|_| InvalidEventId(s.chars().take(64).collect()))
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; ulid::ULID_LEN];
        s.serialize_str(self.0.array_to_str(&mut buf))
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The kind of an event. It is the `type` field of the JSON envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A log line for the user.
    Log,
    /// A progress update, 0 to 100.
    Progress,
    /// A generic data payload (LLM tokens, results).
    Data,
    /// A recoverable error; the stream goes on.
    Error,
    /// Completion: the last event of a channel. The stream closes after it.
    Done,
    /// A keepalive. It carries no SSE `id:` and is never stored.
    Ping,
    /// In-band notice that a subscriber missed events (see `docs/protocol.md`). No SSE `id:`.
    Gap,
    /// A deployment started.
    DeployStart,
    /// A deployment to one server succeeded.
    DeploySuccess,
    /// A deployment to one server failed.
    DeployFailure,
    /// Any other name given to a raw `emit`: 1 to 64 bytes of `a-z 0-9 _ . -`.
    Custom(Box<str>),
}

impl EventType {
    /// The wire name (`"log"`, `"deploy_start"`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Log => "log",
            Self::Progress => "progress",
            Self::Data => "data",
            Self::Error => "error",
            Self::Done => "done",
            Self::Ping => "ping",
            Self::Gap => "gap",
            Self::DeployStart => "deploy_start",
            Self::DeploySuccess => "deploy_success",
            Self::DeployFailure => "deploy_failure",
            Self::Custom(s) => s,
        }
    }

    /// Whether this type closes the stream (only `done`).
    pub fn closes_stream(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// Whether frames of this type are control frames: no SSE `id:`, not kept in history.
    pub fn is_control(&self) -> bool {
        matches!(self, Self::Ping | Self::Gap)
    }
}

/// A string that is not a valid event type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event type {0:?}: expected 1 to 64 bytes of a-z 0-9 _ . -")]
pub struct InvalidEventType(pub String);

impl FromStr for EventType {
    type Err = InvalidEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "log" => Self::Log,
            "progress" => Self::Progress,
            "data" => Self::Data,
            "error" => Self::Error,
            "done" => Self::Done,
            "ping" => Self::Ping,
            "gap" => Self::Gap,
            "deploy_start" => Self::DeployStart,
            "deploy_success" => Self::DeploySuccess,
            "deploy_failure" => Self::DeployFailure,
            other => {
                let valid = !other.is_empty()
                    && other.len() <= 64
                    && other
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
                if !valid {
                    return Err(InvalidEventType(other.chars().take(80).collect()));
                }
                Self::Custom(other.into())
            }
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Debugging context copied into every event that a [`StreamContext`](crate::StreamContext) emits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugContext {
    /// `workspace_project_env_service`; see [`StreamContext::namespace`](crate::StreamContext::namespace).
    pub namespace: String,
    /// The workspace (usually the user or tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// The project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Envelope keys that a payload may not use.
pub const RESERVED_KEYS: [&str; 5] = ["id", "type", "channel_id", "timestamp", "context"];

/// One event.
///
/// On the wire it is one JSON object: the envelope keys (`id`, `type`, `channel_id`, `timestamp`,
/// `context`) and the payload's own keys beside them, for example
/// `{"id":"01J…","type":"progress","channel_id":"…","timestamp":"…","percent":40,"step":"pushing"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's id.
    pub id: EventId,
    /// The event's type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The channel it belongs to.
    pub channel_id: ChannelId,
    /// When it was made (UTC, RFC 3339 on the wire).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The emitting context's debug fields, when it came from a [`StreamContext`](crate::StreamContext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<DebugContext>,
    /// The payload fields, flattened into the envelope on the wire.
    #[serde(flatten)]
    pub payload: Map<String, Value>,
    /// Whether a [`PersistingPublisher`](crate::PersistingPublisher) should store the event. It is
    /// not part of the wire format.
    #[serde(skip)]
    pub persist: bool,
}

/// A payload used a reserved envelope key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload key {0:?} is reserved for the event envelope (reserved: id, type, channel_id, timestamp, context)")]
pub struct ReservedKey(pub String);

impl Event {
    /// A new event with a fresh id and the current time.
    ///
    /// Fails when the payload uses a reserved envelope key.
    pub fn new(channel_id: ChannelId, kind: EventType, payload: Map<String, Value>) -> Result<Self, ReservedKey> {
        if let Some(key) = payload.keys().find(|k| RESERVED_KEYS.contains(&k.as_str())) {
            return Err(ReservedKey(key.clone()));
        }
        Ok(Self {
            id: EventId::generate(),
            kind,
            channel_id,
            timestamp: OffsetDateTime::now_utc(),
            context: None,
            payload,
            persist: false,
        })
    }

    /// A `data` event with one field (`{"token": "…"}` for LLM streams, say).
    pub fn data(channel_id: ChannelId, key: &str, value: impl Into<Value>) -> Result<Self, ReservedKey> {
        let mut payload = Map::new();
        payload.insert(key.to_owned(), value.into());
        Self::new(channel_id, EventType::Data, payload)
    }

    /// A `done` event: `{"success": …}` plus the given result fields.
    pub fn done(channel_id: ChannelId, success: bool, result: Map<String, Value>) -> Result<Self, ReservedKey> {
        let mut payload = result;
        payload.insert("success".into(), Value::Bool(success));
        Self::new(channel_id, EventType::Done, payload)
    }

    /// The payload's `message` field, if it is a string.
    pub fn message(&self) -> Option<&str> {
        self.payload.get("message").and_then(Value::as_str)
    }

    /// The event as one line of JSON (the SSE `data:` value and the history entry).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }

    /// Parses an event from its JSON form.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_monotonic_within_a_process() {
        let ids: Vec<EventId> = (0..10_000).map(|_| EventId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let parsed: EventId = ids[5].to_string().parse().unwrap();
        assert_eq!(parsed, ids[5]);
        assert!("not-an-id".parse::<EventId>().is_err());
    }

    #[test]
    fn event_json_round_trips_and_flattens_the_payload() {
        let ch = ChannelId::new("c1").unwrap();
        let mut payload = Map::new();
        payload.insert("percent".into(), json!(40));
        payload.insert("step".into(), json!("pushing"));
        let ev = Event::new(ch, EventType::Progress, payload).unwrap();
        let v: Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["type"], "progress");
        assert_eq!(v["percent"], 40);
        assert_eq!(v["channel_id"], "c1");
        assert_eq!(Event::from_json(&ev.to_json()).unwrap(), ev);
    }

    #[test]
    fn floats_round_trip_exactly() {
        // Without serde_json's `float_roundtrip` this read back one ULP off (tests/properties.rs).
        let ch = ChannelId::new("a").unwrap();
        for f in [
            -1.5406959933012634e-156,
            -9.06339803050115e-273,
            0.1,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let ev = Event::data(ch.clone(), "x", f).unwrap();
            assert_eq!(Event::from_json(&ev.to_json()).unwrap(), ev, "{f:e}");
        }
    }

    #[test]
    fn reserved_keys_are_refused() {
        let ch = ChannelId::new("c1").unwrap();
        let err = Event::data(ch, "type", "x").unwrap_err();
        assert_eq!(err, ReservedKey("type".into()));
    }

    #[test]
    fn event_types_parse_and_validate() {
        assert_eq!("deploy_start".parse::<EventType>().unwrap(), EventType::DeployStart);
        assert_eq!(
            "build.step".parse::<EventType>().unwrap(),
            EventType::Custom("build.step".into())
        );
        assert!("Bad Type".parse::<EventType>().is_err());
        assert!("".parse::<EventType>().is_err());
    }
}
