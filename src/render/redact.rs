//! Keeping secret values out of render error messages.
//!
//! tera's rendering messages can quote values (`Failed to parse 'VALUE' as
//! int`, `Unable to perform 1234 + 1`). Two independent passes run on every
//! message before it leaves [`super`], scrub FIRST (a secret holding a
//! quote character would otherwise be cut by the sanitizer's quote parsing
//! into fragments the scrubber no longer recognises):
//!
//! 1. [`Needles::scrub`]: every occurrence of every secret value of the
//!    context (and of its trimmed, base64-decoded and JSON-string-leaf forms,
//!    the certificate keys and PFX) is replaced by `[REDACTED]`.
//! 2. [`sanitize`]: every quoted segment (`` ` ``, `'`, `"`) is kept only if
//!    its text appears in the template source or is a tera type name; any
//!    unquoted word containing a digit is kept only if it appears in the
//!    template source. Everything else becomes `[REDACTED]`. The template
//!    source is configuration, not secret, so echoing it is safe.

use base64::Engine;
use secrecy::ExposeSecret;
use zeroize::Zeroize;

use super::Context;

pub const REDACTED: &str = "[REDACTED]";

/// Type names tera puts in messages (`ValueKind` names and Rust argument
/// types used by `ArgFromValue`).
const TYPE_NAMES: &[&str] = &[
    "string",
    "number",
    "map",
    "array",
    "bool",
    "none",
    "undefined",
    "bytes",
    "integer",
    "float",
    "i64",
    "u64",
    "i128",
    "u128",
    "f64",
    "f32",
    "&str",
    "str",
    "String",
    "usize",
    "isize",
    "i32",
    "u32",
    "u8",
    "i8",
    "u16",
    "i16",
    "char",
];

/// Digit-bearing words up to this length are kept ("base 10"): a one- or
/// two-digit value is no secret worth shredding messages for.
const SMALL_NUMBER_LEN: usize = 2;

/// Pass 1: structural filter against the template `source`.
pub fn sanitize(message: &str, source: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(pos) = rest.find(['`', '\'', '"']) {
        out.push_str(&filter_words(&rest[..pos], source));
        let quote = &rest[pos..pos + 1];
        let after = &rest[pos + 1..];
        match after.find(quote) {
            Some(end) => {
                let inner = &after[..end];
                let keep =
                    inner.is_empty() || TYPE_NAMES.contains(&inner) || source.contains(inner);
                out.push_str(quote);
                out.push_str(if keep { inner } else { REDACTED });
                out.push_str(quote);
                rest = &after[end + 1..];
            }
            None => {
                // Unbalanced quote: whatever follows is not trustworthy.
                out.push_str(quote);
                out.push_str(REDACTED);
                rest = "";
            }
        }
    }
    out.push_str(&filter_words(rest, source));
    out
}

fn filter_words(text: &str, source: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        let ws = &piece[word.len()..];
        let core = word.trim_matches(|c: char| matches!(c, ',' | '.' | ':' | ';' | '(' | ')'));
        if core.chars().any(|c| c.is_ascii_digit())
            && core.len() > SMALL_NUMBER_LEN
            && !TYPE_NAMES.contains(&core)
            && !source.contains(core)
        {
            out.push_str(&word.replace(core, REDACTED));
        } else {
            out.push_str(word);
        }
        out.push_str(ws);
    }
    out
}

/// Every secret string of a context, in the forms a message could show.
pub struct Needles(Vec<String>);

impl Drop for Needles {
    fn drop(&mut self) {
        for n in &mut self.0 {
            n.zeroize();
        }
    }
}

impl Needles {
    pub fn from_context(ctx: &Context) -> Self {
        let mut v = Vec::new();
        for b in ctx.secrets.values() {
            add_forms(&mut v, b.value.expose_secret());
        }
        for list in ctx.selected.values() {
            for s in list {
                add_forms(&mut v, s.bundle.value.expose_secret());
            }
        }
        for c in ctx.certs.values() {
            add_forms(&mut v, c.key_pem.expose_secret());
            add_forms(&mut v, c.pfx_base64.expose_secret());
        }
        Self::finish(v)
    }

    /// Needles for plain secret values (tests and fuzzing).
    pub fn from_values(values: &[&str]) -> Self {
        let mut v = Vec::new();
        for value in values {
            add_forms(&mut v, value);
        }
        Self::finish(v)
    }

    fn finish(mut v: Vec<String>) -> Self {
        v.retain(|s| !s.is_empty());
        // Longest first, so a secret containing another is replaced whole.
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        Needles(v)
    }

    /// Pass 2: replace every occurrence of every needle. Needles shorter
    /// than [`SHORT_NEEDLE`] are replaced only as whole words, so that a
    /// one-letter secret does not shred the message (the word rule still
    /// catches it standing alone, which is how a value appears).
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for n in &self.0 {
            out = if n.len() >= SHORT_NEEDLE {
                out.replace(n.as_str(), REDACTED)
            } else {
                replace_words(&out, n)
            };
        }
        out
    }
}

/// Needles shorter than this are matched as whole words only.
const SHORT_NEEDLE: usize = 8;

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn replace_words(text: &str, needle: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(off) = text[i..].find(needle) {
        let start = i + off;
        let end = start + needle.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        let bounded = before.is_none_or(|c| !is_word(c) || !needle.starts_with(is_word))
            && after.is_none_or(|c| !is_word(c) || !needle.ends_with(is_word));
        out.push_str(&text[i..start]);
        out.push_str(if bounded { REDACTED } else { needle });
        i = end;
    }
    out.push_str(&text[i..]);
    out
}

fn add_forms(v: &mut Vec<String>, value: &str) {
    v.push(value.to_string());
    v.push(value.trim().to_string());
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(value.trim()) {
        match String::from_utf8(bytes) {
            Ok(s) => v.push(s),
            Err(e) => e.into_bytes().zeroize(),
        }
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(value) {
        json_leaves(v, &json);
    }
}

fn json_leaves(v: &mut Vec<String>, json: &serde_json::Value) {
    match json {
        serde_json::Value::String(s) => v.push(s.clone()),
        serde_json::Value::Number(n) => v.push(n.to_string()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_leaves(v, x)),
        serde_json::Value::Object(m) => m.values().for_each(|x| json_leaves(v, x)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn scrub_runs_before_sanitize_so_a_quoted_secret_leaks_no_fragment() {
        let secret = "ab`cd-secret-ef";
        let needles = Needles::from_values(&[secret]);
        let raw = format!("Failed to parse '{secret}' as int");
        let src = "{{ secrets.x | int }}";
        let out = sanitize(&needles.scrub(&raw), src);
        for fragment in ["ab", "cd-secret-ef", "secret"] {
            assert!(!out.contains(fragment), "{fragment} leaked: {out}");
        }
        let raw =
            format!("Tried to iterate using key value on variable `{secret}`, but it is missing");
        let out = sanitize(&needles.scrub(&raw), src);
        assert!(!out.contains("secret-ef") && !out.contains("ab`"), "{out}");
    }

    #[test]
    fn short_needles_match_whole_words_only() {
        assert_eq!(
            replace_words("pass p (p) up", "p"),
            "pass [REDACTED] ([REDACTED]) up"
        );
        assert_eq!(replace_words("a:b", ":"), "a[REDACTED]b");
    }

    #[test]
    fn sanitize_keeps_template_words_and_redacts_values() {
        let src = "{{ secrets.pin | int + 1 }}";
        assert_eq!(
            sanitize("Failed to parse 'hunter2' as `int`", src),
            "Failed to parse '[REDACTED]' as `int`"
        );
        assert_eq!(
            sanitize("Unable to perform 4711 + 1", src),
            "Unable to perform [REDACTED] + 1"
        );
        assert_eq!(
            sanitize("Field `pin` is not defined", src),
            "Field `pin` is not defined"
        );
        assert_eq!(
            sanitize("expected `string` but got `map`", src),
            "expected `string` but got `map`"
        );
    }
}
