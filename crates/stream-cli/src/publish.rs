//! `publish <channel> <type> <json>`: one test event through the Redis broker, as an emitter
//! publishes it (the channel's next id, its history, its subscribers everywhere).

use std::process::ExitCode;

use serde_json::json;
use stream_core::{Event, EventPublisher};

use crate::cli::PublishArgs;
use crate::error::{CliError, chain};
use crate::output::Out;
use crate::settings;

/// Publishes the event and prints the id the broker gave it.
pub(crate) async fn run(args: PublishArgs, out: &mut Out) -> Result<ExitCode, CliError> {
    // The command line checked the channel, the type and the payload; this checks them again
    // (reserved keys) before anything connects.
    let mut event = Event::new(args.channel, args.kind, args.payload).map_err(|e| CliError::Usage(e.to_string()))?;
    let broker = settings::broker().await?;
    let id = broker
        .publish(&event)
        .await
        .map_err(|e| CliError::Failed(format!("publishing to {}: {}", event.channel_id, chain(&e))))?;
    event.id = id;
    if out.is_json() {
        out.json_line(&json!({
            "id": id,
            "type": event.kind,
            "channel_id": event.channel_id,
            "published": true,
        }))?;
    } else {
        out.line(&format!(
            "published {} {id} to channel {}",
            event.kind, event.channel_id
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
