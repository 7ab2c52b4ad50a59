//! The token JSON shared by HIMDS, IMDS and Entra ID (PROTOCOL.md §1–§4):
//! `access_token` plus `expires_on` / `expires_in`, each a string of digits
//! OR a JSON number. Parsed by hand from a [`serde_json::Value`] so no error
//! message can ever quote the body (serde's messages echo offending values,
//! and this body holds the token).

use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use super::AccessToken;

/// Why a token answer was rejected; names the field, never its value.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenParseError {
    NotJson,
    MissingAccessToken,
    MissingExpiry,
    /// The field holds a number outside 1970..=9999 (or a negative
    /// lifetime).
    ExpiryOutOfRange(&'static str),
}

impl std::fmt::Display for TokenParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenParseError::NotJson => "the answer is not a JSON object",
            TokenParseError::MissingAccessToken => "missing or empty field `access_token`",
            TokenParseError::MissingExpiry => {
                "missing or unreadable fields `expires_on` and `expires_in`"
            }
            TokenParseError::ExpiryOutOfRange("expires_on") => {
                "field `expires_on` is outside 1970..=9999"
            }
            TokenParseError::ExpiryOutOfRange(_) => {
                "field `expires_in` is negative or ends after 9999"
            }
        })
    }
}

/// Parse a token answer received at `now`.
pub fn parse(body: &[u8], now: SystemTime) -> Result<AccessToken, TokenParseError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| TokenParseError::NotJson)?;
    let obj = json.as_object().ok_or(TokenParseError::NotJson)?;
    let token = obj
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(TokenParseError::MissingAccessToken)?;
    // Times from outside are range-checked before any arithmetic
    // (crate::time): an overflowing SystemTime addition would panic.
    let expires_on = if let Some(secs) = obj.get("expires_on").and_then(seconds) {
        i64::try_from(secs)
            .ok()
            .and_then(crate::time::system_time)
            .ok_or(TokenParseError::ExpiryOutOfRange("expires_on"))?
    } else if let Some(date) = obj.get("expires_on").and_then(rfc3339) {
        // "Some services return dates" (PROTOCOL.md §4).
        date
    } else if let Some(secs) = obj.get("expires_in").and_then(seconds) {
        now.checked_add(Duration::from_secs(secs))
            .filter(|t| crate::time::unix_secs(*t).is_some())
            .ok_or(TokenParseError::ExpiryOutOfRange("expires_in"))?
    } else if obj.get("expires_in").is_some_and(negative) {
        return Err(TokenParseError::ExpiryOutOfRange("expires_in"));
    } else {
        return Err(TokenParseError::MissingExpiry);
    };
    Ok(AccessToken {
        token: SecretString::from(token.to_owned()),
        expires_on,
    })
}

/// A non-negative integer given as a JSON number or a string of digits.
fn seconds(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

/// A negative number, as a JSON number or a string.
fn negative(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => {
            n.as_i64().is_some_and(|n| n < 0) || n.as_f64().is_some_and(|n| n < 0.0)
        }
        serde_json::Value::String(s) => s.trim().parse::<i64>().is_ok_and(|n| n < 0),
        _ => false,
    }
}

fn rfc3339(v: &serde_json::Value) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(v.as_str()?.trim()).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use secrecy::ExposeSecret;
    use std::time::UNIX_EPOCH;

    #[test]
    fn out_of_range_expiries_are_errors_naming_the_field() {
        let now = at(1000);
        for (body, field) in [
            (
                br#"{"access_token":"a","expires_on":"18446744073709551615","expires_in":"10"}"#
                    .as_slice(),
                "expires_on",
            ),
            (
                br#"{"access_token":"a","expires_on":253402300800}"#,
                "expires_on",
            ),
            (br#"{"access_token":"a","expires_in":-5}"#, "expires_in"),
            (br#"{"access_token":"a","expires_in":"-5"}"#, "expires_in"),
            (
                br#"{"access_token":"a","expires_in":18446744073709551615}"#,
                "expires_in",
            ),
        ] {
            let e = parse(body, now).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn strings_and_numbers_prefer_expires_on() {
        let now = at(1000);
        let t = parse(
            br#"{"access_token":"a","expires_on":"5000","expires_in":"10"}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.expires_on, at(5000));
        assert_eq!(t.token.expose_secret(), "a");
        let t = parse(br#"{"access_token":"a","expires_on":6000}"#, now).unwrap();
        assert_eq!(t.expires_on, at(6000));
        let t = parse(br#"{"access_token":"a","expires_in":3599}"#, now).unwrap();
        assert_eq!(t.expires_on, at(4599));
        let t = parse(br#"{"access_token":"a","expires_in":"60"}"#, now).unwrap();
        assert_eq!(t.expires_on, at(1060));
    }

    #[test]
    fn date_expiry_and_bad_expires_on_falls_back() {
        let now = at(1000);
        let t = parse(
            br#"{"access_token":"a","expires_on":"2030-01-01T00:00:00Z"}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.expires_on, at(1_893_456_000));
        let t = parse(
            br#"{"access_token":"a","expires_on":"soon","expires_in":"5"}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.expires_on, at(1005));
    }

    #[test]
    fn errors_name_the_field_not_the_value() {
        let now = at(0);
        assert_eq!(parse(b"<html>", now).unwrap_err(), TokenParseError::NotJson);
        assert_eq!(parse(b"[1]", now).unwrap_err(), TokenParseError::NotJson);
        assert_eq!(
            parse(br#"{"expires_in":"5"}"#, now).unwrap_err(),
            TokenParseError::MissingAccessToken
        );
        let e = parse(br#"{"access_token":"CANARY","expires_in":"x"}"#, now).unwrap_err();
        assert_eq!(e, TokenParseError::MissingExpiry);
        assert!(!e.to_string().contains("CANARY"));
        assert!(e.to_string().contains("expires_in"));
    }
}
