//! `events <channel>`: the archive's stored events of a channel, through the OpenSearch store's
//! query ([`EventStore::query`]: one `_search` over `{OPENSEARCH_INDEX_PREFIX}-*`).

use std::process::ExitCode;

use serde_json::Value;
use stream_core::{EventQuery, EventStore, SortOrder, StoreError};
use stream_store_opensearch::opensearch::http::Method;
use stream_store_opensearch::opensearch::http::headers::HeaderMap;
use stream_store_opensearch::{OpenSearchConfig, OpenSearchEventStore, build_client};
use time::OffsetDateTime;

use crate::cli::EventsArgs;
use crate::error::{CliError, chain};
use crate::output::Out;
use crate::settings;

/// Runs the query and prints the page, oldest first.
pub(crate) async fn run(args: EventsArgs, out: &mut Out) -> Result<ExitCode, CliError> {
    let mut config = settings::opensearch_config()?;
    // The CLI reads: deleting expired indices is left to the apps' writers.
    config.retention_days = 0;
    keep_installed_template(&mut config).await?;
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
        e => CliError::Failed(format!("querying the archive at {url}: {}", chain(&e))),
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

/// Connecting a store (re)installs the index template of its prefix from the settings. So that
/// an on-call shell without the apps' `OPENSEARCH_INDEX_SHARDS` / `OPENSEARCH_INDEX_REPLICAS`
/// does not change the template the apps installed, the shard and replica counts are taken from
/// the installed template when there is one. Also the first request: an unreachable node fails
/// here.
async fn keep_installed_template(config: &mut OpenSearchConfig) -> Result<(), CliError> {
    let client = build_client(config).map_err(|e| CliError::Usage(format!("OpenSearch settings: {}", chain(&e))))?;
    let failed = |what: String| CliError::Failed(format!("OpenSearch at {}: {what}", config.url));
    let path = format!("/_index_template/{}", config.template_name());
    let response = client
        .send::<Vec<u8>, ()>(Method::Get, &path, HeaderMap::new(), None, None, None)
        .await
        .map_err(|e| failed(format!("GET {path}: {}", chain(&e))))?;
    let status = response.status_code().as_u16();
    if status == 404 {
        return Ok(());
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| failed(format!("GET {path}: {}", chain(&e))))?;
    if !(200..300).contains(&status) {
        return Err(failed(format!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )));
    }
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| failed(format!("GET {path}: unreadable answer: {e}")))?;
    let index = &answer["index_templates"][0]["index_template"]["template"]["settings"]["index"];
    if let Some(shards) = count(&index["number_of_shards"]) {
        config.number_of_shards = shards;
    }
    if let Some(replicas) = count(&index["number_of_replicas"]) {
        config.number_of_replicas = replicas;
    }
    Ok(())
}

/// A count in index settings: OpenSearch answers `"1"`, a template may hold `1`.
fn count(value: &Value) -> Option<u32> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counts_are_read_as_strings_or_numbers() {
        assert_eq!(count(&json!("2")), Some(2));
        assert_eq!(count(&json!(0)), Some(0));
        assert_eq!(count(&json!(null)), None);
        assert_eq!(count(&json!("x")), None);
    }
}
