//! `--since`: an RFC 3339 time, or a duration back from now.

use std::str::FromStr;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The start of a time range, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// A point in time (`2025-01-31T12:00:00Z`, `2025-01-31T13:00:00+01:00`).
    At(OffsetDateTime),
    /// This long before the command runs (`90s`, `15m`, `2h`, `7d`, `1h30m`).
    Ago(Duration),
}

impl Since {
    /// The point in time, with `now` for the durations.
    pub(crate) fn resolve(self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            Self::At(at) => at,
            Self::Ago(ago) => now - ago,
        }
    }
}

impl FromStr for Since {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(at) = OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(Self::At(at));
        }
        parse_duration(s).map(Self::Ago).ok_or_else(|| {
            format!(
                "{s:?} is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor a duration (90s, 15m, 2h, 7d, \
                 1h30m; units ms, s, m, h, d)"
            )
        })
    }
}

/// `1h30m`, `90s`, `250ms`, `7d`: whole numbers, each with its unit. `None` for anything else,
/// and for durations past a hundred years.
fn parse_duration(s: &str) -> Option<Duration> {
    const MAX_SECS: u64 = 100 * 365 * 86_400;
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            _ => return None,
        };
        rest = &rest[unit..];
        total = total.checked_add(part)?;
        if total.as_secs() > MAX_SECS {
            return None;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn times_and_durations_parse() {
        assert_eq!(
            "2025-01-31T12:00:00Z".parse::<Since>(),
            Ok(Since::At(datetime!(2025-01-31 12:00 UTC)))
        );
        assert_eq!(
            "2025-01-31T13:00:00.5+01:00".parse::<Since>(),
            Ok(Since::At(datetime!(2025-01-31 13:00:00.5 +01:00)))
        );
        assert_eq!("90s".parse(), Ok(Since::Ago(Duration::from_secs(90))));
        assert_eq!("15m".parse(), Ok(Since::Ago(Duration::from_secs(900))));
        assert_eq!("1h30m".parse(), Ok(Since::Ago(Duration::from_secs(5400))));
        assert_eq!("7d".parse(), Ok(Since::Ago(Duration::from_secs(7 * 86_400))));
        assert_eq!("250ms".parse(), Ok(Since::Ago(Duration::from_millis(250))));
    }

    #[test]
    fn anything_else_is_refused_with_the_accepted_forms() {
        for bad in [
            "",
            "15",
            "m",
            "15x",
            "1.5h",
            "-5m",
            "yesterday",
            "2025-01-31",
            "99999999999d",
        ] {
            let e = bad.parse::<Since>().unwrap_err();
            assert!(e.contains("RFC 3339") && e.contains("15m"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_duration_counts_back_from_now() {
        let now = datetime!(2025-01-31 12:00 UTC);
        assert_eq!(
            Since::Ago(Duration::from_secs(3600)).resolve(now),
            datetime!(2025-01-31 11:00 UTC)
        );
        let at = datetime!(2024-01-01 0:00 UTC);
        assert_eq!(Since::At(at).resolve(now), at);
    }
}
