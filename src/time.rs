//! Unix times from outside (Key Vault attributes, token expiries, JWT
//! claims) are range-checked here before any formatting or arithmetic:
//! only 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z is accepted, so
//! `SystemTime` arithmetic cannot overflow and RFC 3339 formatting (four-digit
//! years) cannot panic. Also the one [`unix_now`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
pub const MAX_UNIX_SECS: i64 = 253_402_300_799;

/// What an accepted time may be, for messages.
pub const RANGE: &str = "1970-01-01T00:00:00Z..=9999-12-31T23:59:59Z";

/// Seconds since the Unix epoch (0 before it).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether `secs` is in [`RANGE`].
pub fn in_range(secs: i64) -> bool {
    (0..=MAX_UNIX_SECS).contains(&secs)
}

/// `secs` as a `SystemTime`, when in [`RANGE`].
pub fn system_time(secs: i64) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok().filter(|_| in_range(secs))?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// A `SystemTime` as Unix seconds, when in [`RANGE`].
pub fn unix_secs(t: SystemTime) -> Option<i64> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok().filter(|s| in_range(*s))
}

/// `secs` as RFC 3339 (UTC, seconds precision), when in [`RANGE`].
pub fn rfc3339(secs: i64) -> Option<String> {
    system_time(secs).map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ends_of_the_range_format_and_beyond_them_nothing_does() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(MAX_UNIX_SECS).as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
        for bad in [-1, MAX_UNIX_SECS + 1, i64::MIN, i64::MAX] {
            assert_eq!(rfc3339(bad), None, "{bad}");
            assert_eq!(system_time(bad), None, "{bad}");
        }
        assert_eq!(unix_secs(UNIX_EPOCH), Some(0));
    }
}
