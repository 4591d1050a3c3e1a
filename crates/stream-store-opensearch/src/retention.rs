//! Archive retention: the writer task deletes the daily indices older than
//! [`retention_days`](OpenSearchConfig::retention_days), every
//! [`retention_interval`](OpenSearchConfig::retention_interval).
//!
//! This is a periodic delete, not an ISM policy: the Index State Management plugin is not
//! published on Maven Central, so the test node (built from Maven Central jars) cannot run it,
//! and the store has to work on clusters without it. A sweep is two kinds of request: one
//! `GET _cat/indices/{prefix}-*` and, when something expired, `DELETE /{index},{index},…`.

use opensearch::OpenSearch;
use opensearch::http::Method;
use opensearch::http::headers::HeaderMap;
use serde::Deserialize;
use time::{Date, Month, OffsetDateTime};

use crate::config::OpenSearchConfig;
use crate::error::OpenSearchError;

/// Index names per `DELETE` request: keeps the URL short (about 30 bytes a name).
const DELETE_CHUNK: usize = 50;

/// The date of a daily index `{prefix}-YYYY.MM.DD`; `None` for any other name.
fn index_date(prefix: &str, name: &str) -> Option<Date> {
    let date = name.strip_prefix(prefix)?.strip_prefix('-')?.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = date.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if date.len() != 10 || date[4] != b'.' || date[7] != b'.' {
        return None;
    }
    let year = i32::try_from(digits(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
    let day = u8::try_from(digits(8..10)?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

/// The daily indices among `names` whose date lies more than `retention_days` days before
/// `today`. Nothing expires when `retention_days` is 0.
pub(crate) fn expired_indices<'a>(
    prefix: &str,
    names: impl IntoIterator<Item = &'a str>,
    today: Date,
    retention_days: u32,
) -> Vec<String> {
    if retention_days == 0 {
        return Vec::new();
    }
    // Too far back for the calendar: nothing can be that old.
    let Some(oldest_kept) = today.checked_sub(time::Duration::days(i64::from(retention_days))) else {
        return Vec::new();
    };
    let mut expired: Vec<String> = names
        .into_iter()
        .filter(|name| index_date(prefix, name).is_some_and(|date| date < oldest_kept))
        .map(str::to_owned)
        .collect();
    expired.sort_unstable();
    expired
}

#[derive(Deserialize)]
struct CatIndex {
    index: String,
}

/// The indices matching `{prefix}-*` (open and closed).
async fn list_indices(client: &OpenSearch, config: &OpenSearchConfig) -> Result<Vec<String>, OpenSearchError> {
    let path = format!("/_cat/indices/{}", config.index_pattern());
    let response = client
        .send::<(), _>(
            Method::Get,
            &path,
            HeaderMap::new(),
            Some(&[("format", "json"), ("h", "index")]),
            None,
            None,
        )
        .await
        .map_err(|e| OpenSearchError::request("_cat/indices", e))?;
    let status = response.status_code().as_u16();
    let answer = response
        .bytes()
        .await
        .map_err(|e| OpenSearchError::request("_cat/indices", e))?;
    if !(200..300).contains(&status) {
        return Err(OpenSearchError::status("_cat/indices", status, &answer));
    }
    let indices: Vec<CatIndex> = serde_json::from_slice(&answer)
        .map_err(|e| OpenSearchError::new(Some(status), format!("unreadable _cat/indices answer: {e}")))?;
    Ok(indices.into_iter().map(|i| i.index).collect())
}

/// Deletes `indices` (an index already gone is not an error).
async fn delete_indices(client: &OpenSearch, indices: &[String]) -> Result<(), OpenSearchError> {
    for chunk in indices.chunks(DELETE_CHUNK) {
        let response = client
            .send::<(), _>(
                Method::Delete,
                &format!("/{}", chunk.join(",")),
                HeaderMap::new(),
                Some(&[("ignore_unavailable", "true")]),
                None,
                None,
            )
            .await
            .map_err(|e| OpenSearchError::request("delete index", e))?;
        let status = response.status_code().as_u16();
        if !(200..300).contains(&status) {
            let answer = response.bytes().await.unwrap_or_default();
            return Err(OpenSearchError::status("delete index", status, &answer));
        }
    }
    Ok(())
}

/// One sweep: lists `{prefix}-*` and deletes the expired daily indices. Returns their names.
pub(crate) async fn sweep(client: &OpenSearch, config: &OpenSearchConfig) -> Result<Vec<String>, OpenSearchError> {
    if config.retention_days == 0 {
        return Ok(Vec::new());
    }
    let names = list_indices(client, config).await?;
    let today = OffsetDateTime::now_utc().date();
    let expired = expired_indices(
        &config.index_prefix,
        names.iter().map(String::as_str),
        today,
        config.retention_days,
    );
    if !expired.is_empty() {
        delete_indices(client, &expired).await?;
    }
    Ok(expired)
}

/// [`sweep`], with the outcome logged: the writer runs it in a task of its own, so that a slow
/// delete never holds up `_bulk` requests. A failed sweep is tried again at the next interval.
pub(crate) async fn sweep_and_log(client: OpenSearch, config: std::sync::Arc<OpenSearchConfig>) {
    match sweep(&client, &config).await {
        Ok(deleted) if deleted.is_empty() => {
            tracing::debug!(prefix = %config.index_prefix, "opensearch retention: no index has expired");
        }
        Ok(deleted) => tracing::info!(
            prefix = %config.index_prefix,
            retention_days = config.retention_days,
            count = deleted.len(),
            indices = ?deleted,
            "opensearch retention: deleted expired daily indices"
        ),
        Err(e) => tracing::warn!(
            prefix = %config.index_prefix,
            error = %e,
            retry_in = ?config.retention_interval,
            "opensearch retention: sweep failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn only_daily_index_names_have_a_date() {
        assert_eq!(index_date("ev", "ev-2024.03.02"), Some(date!(2024 - 03 - 02)));
        for name in [
            "ev-2024.3.02",
            "ev-2024.02.30",
            "ev-2024.13.01",
            "ev-2024.03.02-restored",
            "ev-x-2024.03.02",
            "ev2024.03.02",
            "other-2024.03.02",
            "ev-+024.03.02",
            "ev-2024-03-02",
            "ev-",
        ] {
            assert_eq!(index_date("ev", name), None, "{name}");
        }
    }

    #[test]
    fn indices_more_than_the_retention_back_expire() {
        let names = [
            "ev-2026.12.02", // a day ahead (clock skew): kept
            "ev-2026.12.01", // today
            "ev-2026.11.01", // 30 days back: kept
            "ev-2026.10.31", // 31 days back
            "ev-2025.01.01",
            "ev-old",
            "ev-x-2020.01.01",
        ];
        let today = date!(2026 - 12 - 01);
        assert_eq!(
            expired_indices("ev", names, today, 30),
            vec!["ev-2025.01.01".to_owned(), "ev-2026.10.31".to_owned()]
        );
        assert_eq!(
            expired_indices("ev", names, today, 1),
            vec!["ev-2025.01.01", "ev-2026.10.31", "ev-2026.11.01"]
        );
        assert!(expired_indices("ev", names, today, 0).is_empty());
        assert!(expired_indices("ev", names, today, u32::MAX).is_empty());
    }
}
