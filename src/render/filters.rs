//! Filters beyond tera's own (SPEC.md "Template context"): `base64_decode`,
//! `base64_encode`, `json_decode`, `pgpass_escape`, `shell_quote`,
//! `dotenv_quote`.
//!
//! Invariant: an error message built here never contains the filter's input
//! (which is usually a secret value); it names the filter and the kind of
//! problem only. Filters are pure functions of their input.
//!
//! Exact escaping rules:
//!
//! * `pgpass_escape` — libpq's `.pgpass` rule ("If an entry needs to contain
//!   `:` or `\`, escape this character with `\`", PostgreSQL docs §34.16
//!   "The Password File"): `\` → `\\`, `:` → `\:`. A newline (or carriage
//!   return) cannot be represented in a `.pgpass` line, so it is an error.
//! * `shell_quote` — POSIX single quotes: the value is wrapped in `'...'`,
//!   and each `'` inside becomes `'\''`. The empty string becomes `''`. The
//!   result is one word for `sh`, with no expansion of any kind.
//! * `dotenv_quote` — a double-quoted value: `\` → `\\`, `"` → `\"`,
//!   `$` → `\$`, `` ` `` → `` \` ``, newline → `\n`, carriage return → `\r`;
//!   everything else is copied. Escaping `$` and `` ` `` keeps the value
//!   literal in docker compose / systemd-style `.env` readers and when the
//!   file is `source`d by a POSIX shell (where a bare backtick or `$(...)`
//!   would run a command). A NUL byte cannot be represented: error.
//! * `base64_decode` — standard alphabet (RFC 4648 §4), padding optional,
//!   surrounding whitespace ignored; falls back to the URL-safe alphabet
//!   (§5). The decoded bytes must be UTF-8: a template produces text. For
//!   binary payloads use a `[[file]]` with `secret = ...` and
//!   `decode = "base64"`, which writes the bytes.
//! * `base64_encode` — standard alphabet with padding.
//! * `json_decode` — parses the string as JSON into a tera value (map, array,
//!   string, number, bool, null).

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use tera::{Kwargs, State, Tera, TeraResult, Value};
use zeroize::Zeroize;

/// Standard alphabet, padding optional on decode.
pub(crate) const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// URL-safe alphabet, padding optional on decode.
pub(crate) const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Register every kvsync filter on `tera`.
pub fn register(tera: &mut Tera) {
    tera.register_filter("base64_decode", |s: &str, _: Kwargs, _: &State| {
        base64_decode(s)
    });
    tera.register_filter("base64_encode", |s: &str, _: Kwargs, _: &State| {
        base64_encode(s)
    });
    tera.register_filter("json_decode", |s: &str, _: Kwargs, _: &State| {
        json_decode(s)
    });
    tera.register_filter("pgpass_escape", |s: &str, _: Kwargs, _: &State| {
        pgpass_escape(s)
    });
    tera.register_filter("shell_quote", |s: &str, _: Kwargs, _: &State| {
        shell_quote(s)
    });
    tera.register_filter("dotenv_quote", |s: &str, _: Kwargs, _: &State| {
        dotenv_quote(s)
    });
}

fn err(filter: &str, what: &str) -> tera::Error {
    tera::Error::message(format!("filter `{filter}`: {what}"))
}

pub fn base64_decode(input: &str) -> TeraResult<String> {
    let trimmed = input.trim();
    let mut bytes = STANDARD_LENIENT
        .decode(trimmed)
        .or_else(|_| URL_SAFE_LENIENT.decode(trimmed))
        .map_err(|_| err("base64_decode", "the input is not valid base64"))?;
    match String::from_utf8(std::mem::take(&mut bytes)) {
        Ok(s) => Ok(s),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(err(
                "base64_decode",
                "the decoded bytes are not UTF-8 text; to write binary content use a [[file]] with `secret = \"<alias>\"` and `decode = \"base64\"` (format = \"raw\" alone writes the base64 text, not the bytes)",
            ))
        }
    }
}

pub fn base64_encode(input: &str) -> String {
    general_purpose::STANDARD.encode(input.as_bytes())
}

pub fn json_decode(input: &str) -> TeraResult<Value> {
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(v) => Value::try_from_serializable(&v).map_err(|_| {
            err(
                "json_decode",
                "the JSON value cannot be represented in a template",
            )
        }),
        // Only the category: serde_json's message could quote part of the
        // input, and even a position says something about the value.
        Err(e) => Err(err(
            "json_decode",
            &format!(
                "the input is not valid JSON ({} error)",
                format!("{:?}", e.classify()).to_lowercase()
            ),
        )),
    }
}

pub fn pgpass_escape(input: &str) -> TeraResult<String> {
    let mut out = String::with_capacity(input.len() + 4);
    for c in input.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ':' => out.push_str("\\:"),
            '\n' | '\r' => {
                out.zeroize();
                return Err(err(
                    "pgpass_escape",
                    "the value contains a line break, which a .pgpass line cannot hold",
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

pub fn shell_quote(input: &str) -> String {
    let mut out = String::with_capacity(input.len() + 2);
    out.push('\'');
    for c in input.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

pub fn dotenv_quote(input: &str) -> TeraResult<String> {
    let mut out = String::with_capacity(input.len() + 2);
    out.push('"');
    for c in input.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '`' => out.push_str("\\`"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => {
                out.zeroize();
                return Err(err(
                    "dotenv_quote",
                    "the value contains a NUL byte, which an .env file cannot hold",
                ));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pgpass() {
        assert_eq!(pgpass_escape(r"a:b\c").unwrap(), r"a\:b\\c");
        assert!(pgpass_escape("a\nb").is_err());
    }

    #[test]
    fn shell() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
    }

    #[test]
    fn dotenv() {
        assert_eq!(
            dotenv_quote("a\"b\\c$d`e\nf\rg").unwrap(),
            r#""a\"b\\c\$d\`e\nf\rg""#
        );
        assert!(dotenv_quote("a\0").is_err());
    }

    #[test]
    fn base64_round_trip_and_errors() {
        assert_eq!(base64_encode("hé"), "aMOp");
        assert_eq!(base64_decode(" aMOp\n").unwrap(), "hé");
        assert_eq!(base64_decode("aMOp").unwrap(), "hé");
        assert!(base64_decode("_w").is_err()); // 0xff: not UTF-8
        let e = base64_decode("canary!!").unwrap_err().to_string();
        assert!(!e.contains("canary"), "{e}");
    }

    #[test]
    fn json() {
        let v = json_decode(r#"{"a":[1,"x"]}"#).unwrap();
        assert!(v.is_map());
        let e = json_decode("canary-not-json").unwrap_err().to_string();
        assert!(!e.contains("canary"), "{e}");
    }
}
