//! The command line: commands, arguments and their validation.

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};
use stream_core::{ChannelId, EventId, EventType, LeaseId, UserId};

use crate::since::Since;

const ENV_HELP: &str = "\
Environment (the same variables as the apps and the worker):
  REDIS_CLUSTER_NODES   comma-separated node URLs of a Redis Cluster (tail, leases, publish);
                        it wins over REDIS_URL (the demo apps read only REDIS_URL)
  REDIS_URL             a standalone Redis, when REDIS_CLUSTER_NODES is unset
  STREAM_HEARTBEAT_MS, STREAM_HISTORY_TTL_SECS, STREAM_HISTORY_MAX_LEN, STREAM_PING_SECS
                        channel settings (history kept by publish, producer checks of tail)
  STREAM_LEASE_LIMIT    the per-user stream limit that leases shows (default 5)
  OPENSEARCH_URL        the archive (events); OPENSEARCH_HOST/PORT/USE_SSL instead of a URL
  OPENSEARCH_INDEX_PREFIX, OPENSEARCH_AUTH_TYPE, OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD, ...
                        every OPENSEARCH_* variable the apps read
  RUST_LOG              log filter for stderr (default warn)

Exit status: 0 success, 1 a service failed, 2 bad input or settings.";

/// `stream-cli`: on-call commands for stream-rs channels, leases and the event archive.
#[derive(Debug, Parser)]
#[command(name = "stream-cli", version, about, after_help = ENV_HELP)]
pub(crate) struct Cli {
    /// Print JSON lines (one object per event or lease) instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Follow a channel's events live until its `done` event (printed) or Ctrl-C.
    Tail(TailArgs),
    /// List a user's stream leases with their expiry, or release one with --release.
    Leases(LeasesArgs),
    /// Query the OpenSearch archive for a channel's stored events, oldest first.
    Events(EventsArgs),
    /// Publish one test event to a channel (it gets the channel's next id).
    Publish(PublishArgs),
}

/// `tail`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The channel id (1 to 128 bytes of A-Z a-z 0-9 _ -).
    pub(crate) channel: ChannelId,
    /// Print the channel's kept history first, then follow it live.
    #[arg(long, conflicts_with = "last_event_id")]
    pub(crate) from_start: bool,
    /// Resume after this event id (a 26-character ULID, the SSE Last-Event-ID): print the kept
    /// events after it, then follow live.
    #[arg(long, value_name = "ID")]
    pub(crate) last_event_id: Option<EventId>,
}

/// `leases`' arguments.
#[derive(Debug, Args)]
pub(crate) struct LeasesArgs {
    /// Release LEASE_ID of USER instead of listing USER's leases.
    #[arg(long, requires = "lease_id")]
    pub(crate) release: bool,
    /// The user id (1 to 128 bytes of A-Z a-z 0-9 _ - . @ +).
    pub(crate) user: UserId,
    /// The lease to release (with --release).
    #[arg(requires = "release")]
    pub(crate) lease_id: Option<LeaseId>,
}

/// `events`' arguments.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// The channel id.
    pub(crate) channel: ChannelId,
    /// Only these event types, comma-separated (for example log,error,done).
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    pub(crate) types: Vec<EventType>,
    /// Only events at or after this time: an RFC 3339 time (2025-01-31T12:00:00Z) or a duration
    /// back from now (90s, 15m, 2h, 7d, 1h30m).
    #[arg(long, value_name = "WHEN")]
    pub(crate) since: Option<Since>,
    /// Only events whose message holds every word of this text (case-insensitive).
    #[arg(long, value_name = "QUERY")]
    pub(crate) text: Option<String>,
    /// At most this many events (1 to 10000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) limit: u32,
}

/// `publish`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The channel id.
    pub(crate) channel: ChannelId,
    /// The event type: log, progress, data, error, done, deploy_start, ... or a name of 1 to 64
    /// bytes of a-z 0-9 _ . - (not the control types ping and gap).
    #[arg(value_name = "TYPE", value_parser = publishable_type)]
    pub(crate) kind: EventType,
    /// The payload: a JSON object, e.g. '{"message":"hello"}'. The envelope keys id, type,
    /// channel_id, timestamp and context are reserved.
    #[arg(value_name = "JSON", value_parser = payload)]
    pub(crate) payload: Map<String, Value>,
}

/// An event type a publish can carry: control types (`ping`, `gap`) are made by the brokers
/// themselves, and a broker ignores them.
fn publishable_type(s: &str) -> Result<EventType, String> {
    let kind: EventType = s.parse().map_err(|e| format!("{e}"))?;
    if kind.is_control() {
        return Err(format!(
            "{kind} is a control event type, made by the broker and never published"
        ));
    }
    Ok(kind)
}

/// A payload: a JSON object without the envelope's keys.
fn payload(s: &str) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err(format!(
            "the payload must be a JSON object such as '{{\"message\":\"hi\"}}', not {}",
            kind_of(&value)
        ));
    };
    if let Some(key) = map.keys().find(|k| stream_core::RESERVED_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "payload key {key:?} is reserved for the event envelope (reserved: {})",
            stream_core::RESERVED_KEYS.join(", ")
        ));
    }
    Ok(map)
}

/// "an array", "a string", ...: what a JSON value is, for errors.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn payloads_must_be_objects_without_envelope_keys() {
        assert!(payload(r#"{"message":"hi","n":1}"#).is_ok());
        assert!(payload("{").unwrap_err().contains("not valid JSON"));
        assert!(payload("[1]").unwrap_err().contains("not an array"));
        assert!(payload(r#"{"id":"x"}"#).unwrap_err().contains("reserved"));
    }

    #[test]
    fn control_types_are_not_published() {
        assert!(publishable_type("ping").is_err());
        assert!(publishable_type("gap").is_err());
        assert!(publishable_type("Bad Type").is_err());
        assert_eq!(publishable_type("log").unwrap(), EventType::Log);
        assert!(publishable_type("my.custom-type_1").is_ok());
    }

    #[test]
    fn release_needs_a_lease_id_and_a_lease_id_needs_release() {
        let parse = |args: &[&str]| Cli::try_parse_from(["stream-cli"].iter().chain(args));
        assert!(parse(&["leases", "alice"]).is_ok());
        assert!(parse(&["leases", "--release", "alice", "L1"]).is_ok());
        assert!(parse(&["leases", "--release", "alice"]).is_err());
        assert!(parse(&["leases", "alice", "L1"]).is_err());
        assert!(parse(&["leases", "no spaces"]).is_err());
    }

    #[test]
    fn tail_takes_one_starting_point() {
        let parse = |args: &[&str]| Cli::try_parse_from(["stream-cli"].iter().chain(args));
        let id = EventId::generate().to_string();
        assert!(parse(&["tail", "c1", "--from-start"]).is_ok());
        assert!(parse(&["tail", "c1", "--last-event-id", &id]).is_ok());
        assert!(parse(&["tail", "c1", "--from-start", "--last-event-id", &id]).is_err());
        assert!(parse(&["tail", "c1", "--last-event-id", "nope"]).is_err());
        assert!(parse(&["tail", "bad:channel"]).is_err());
    }

    #[test]
    fn events_take_a_type_list() {
        let cli = Cli::try_parse_from(["stream-cli", "--json", "events", "c1", "--types", "log,done"]).unwrap();
        let Command::Events(args) = cli.command else {
            panic!("not events")
        };
        assert!(cli.json);
        assert_eq!(args.types, vec![EventType::Log, EventType::Done]);
        assert!(Cli::try_parse_from(["stream-cli", "events", "c1", "--types", "log,BAD"]).is_err());
        assert!(Cli::try_parse_from(["stream-cli", "events", "c1", "--limit", "0"]).is_err());
    }
}
