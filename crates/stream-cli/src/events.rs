//! `events <channel>`: the archive's stored events of a channel, through the OpenSearch store's
//! query ([`EventStore::query`]: one `_search` over `{OPENSEARCH_INDEX_PREFIX}-*`).

use std::process::ExitCode;

use stream_core::{EventQuery, EventStore, SortOrder, StoreError};
use stream_store_opensearch::OpenSearchEventStore;
use time::OffsetDateTime;

use crate::cli::EventsArgs;
use crate::error::{CliError, chain};
use crate::output::Out;
use crate::settings;

/// Runs the query and prints the page, oldest first.
pub(crate) async fn run(args: EventsArgs, out: &mut Out) -> Result<ExitCode, CliError> {
    let mut config = settings::opensearch_config()?;
    // The CLI reads: the index template and deleting expired indices are the apps' business.
    config.retention_days = 0;
    config.install_template = false;
    let url = config.url.clone();
    let store = OpenSearchEventStore::connect(config)
        .await
        .map_err(|e| CliError::Failed(format!("OpenSearch at {url}: {}", chain(&e))))?;
    let query = EventQuery {
        channel_id: Some(args.channel.clone()),
        event_types: args.types,
        from: args.since.map(|since| since.resolve(OffsetDateTime::now_utc())),
        to: None,
        text: args.text,
        limit: args.limit as usize,
        order: SortOrder::Ascending,
        after: None,
    };
    let page = store.query(&query).await.map_err(|e| match e {
        // OpenSearch refused the query itself (a time past what it can store, say).
        StoreError::InvalidQuery(_) => {
            CliError::Usage(format!("the archive at {url} refused the query: {}", chain(&e)))
        }
        e => CliError::Failed(format!("querying the OpenSearch archive at {url}: {}", chain(&e))),
    })?;
    for event in &page.events {
        out.event(event)?;
    }
    if page.events.is_empty() {
        eprintln!("stream-cli: no stored event of channel {} matches", args.channel);
    } else if page.next.is_some() {
        eprintln!(
            "stream-cli: more events match than --limit {} shows: raise it, or narrow with --since or --types",
            args.limit
        );
    }
    Ok(ExitCode::SUCCESS)
}
