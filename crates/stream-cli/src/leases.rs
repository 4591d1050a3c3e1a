//! `leases <user>`: a user's stream leases and when each expires; `leases --release <user>
//! <lease-id>`: gives one back, so that the user can open another stream at once.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::json;
use stream_core::{LeaseId, UserId};
use stream_lease::StreamLeaseLimiter;
use time::OffsetDateTime;

use crate::cli::LeasesArgs;
use crate::error::{CliError, chain};
use crate::output::{self, Out};
use crate::settings;

/// Lists or releases.
pub(crate) async fn run(args: LeasesArgs, out: &mut Out) -> Result<ExitCode, CliError> {
    let limiter = settings::lease_limiter().await?;
    match (args.release, args.lease_id) {
        (true, Some(lease)) => release(&limiter, &args.user, &lease, out).await,
        _ => list(&limiter, &args.user, out).await,
    }
}

/// The user's live leases, with their expiry by the Redis clock (`get_all_leases`).
async fn leases(limiter: &StreamLeaseLimiter, user: &UserId) -> Result<Vec<(LeaseId, SystemTime)>, CliError> {
    limiter
        .get_all_leases(user)
        .await
        .map_err(|e| CliError::Failed(format!("reading the leases of {user}: {}", chain(&e))))
}

/// Milliseconds from now until `at` (negative once past; the expiry is by the Redis clock).
fn millis_until(at: SystemTime, now: SystemTime) -> i64 {
    match at.duration_since(now) {
        Ok(left) => i64::try_from(left.as_millis()).unwrap_or(i64::MAX),
        Err(past) => -i64::try_from(past.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

async fn list(limiter: &StreamLeaseLimiter, user: &UserId, out: &mut Out) -> Result<ExitCode, CliError> {
    let held = leases(limiter, user).await?;
    let now = SystemTime::now();
    let limit = limiter.config().limit;
    for (lease, expires) in &held {
        let expires_at = output::time(OffsetDateTime::from(*expires));
        let left = millis_until(*expires, now);
        if out.is_json() {
            out.json_line(&json!({
                "user_id": user,
                "lease_id": lease,
                "expires_at": expires_at,
                "expires_in_ms": left,
            }))?;
        } else {
            out.header(&format!("{:<28}  {:<24}  EXPIRES IN", "LEASE ID", "EXPIRES AT (UTC)"))?;
            let left = if left >= 0 {
                output::duration(Duration::from_millis(left.unsigned_abs()))
            } else {
                "expired".to_owned()
            };
            out.line(&format!("{lease:<28}  {expires_at:<24}  {left}"))?;
        }
    }
    if !out.is_json() {
        out.line(&format!(
            "{user} holds {} of {limit} stream lease(s) (STREAM_LEASE_LIMIT={limit})",
            held.len()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Releases `lease` when the user holds it. A lease the user does not hold (expired, released
/// already, or mistyped) is an error, so that a typo does not pass for a release.
async fn release(
    limiter: &StreamLeaseLimiter,
    user: &UserId,
    lease: &LeaseId,
    out: &mut Out,
) -> Result<ExitCode, CliError> {
    let held = leases(limiter, user).await?;
    if !held.iter().any(|(id, _)| id == lease) {
        return Err(CliError::Failed(format!(
            "{user} holds no lease {lease} (it expired, was released, or the id is wrong; `stream-cli leases \
             {user}` lists the live ones)"
        )));
    }
    limiter
        .release_stream_lease(user, lease)
        .await
        .map_err(|e| CliError::Failed(format!("releasing lease {lease} of {user}: {}", chain(&e))))?;
    let left = held.len() - 1;
    if out.is_json() {
        out.json_line(&json!({"user_id": user, "lease_id": lease, "released": true, "leases_left": left}))?;
    } else {
        out.line(&format!("released lease {lease} of {user}; {left} left"))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_signed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(millis_until(now + Duration::from_millis(1500), now), 1500);
        assert_eq!(millis_until(now - Duration::from_millis(20), now), -20);
    }
}
