//! `decode = "base64" | "hex"`: a secret's text → the bytes it encodes
//! (JKS keystores, Kerberos keytabs, PFX files stored as plain secrets).
//!
//! Base64 is the standard alphabet (RFC 4648 §4), padding optional, ASCII
//! whitespace (line breaks of `base64 -w76` output) skipped, with the
//! URL-safe alphabet (§5) as a fallback; hex is case-insensitive, ASCII
//! whitespace skipped. Errors give the character offset in the secret's
//! text and never any of its characters.

use base64::Engine as _;

use super::filters::{STANDARD_LENIENT, URL_SAFE_LENIENT};
use crate::config::Decode;
use crate::secret::SecretBytes;

/// Decode `text`; the error says what is wrong and where (never what).
pub fn decode(kind: Decode, text: &str) -> Result<SecretBytes, String> {
    // Offsets are counted in characters of the original text.
    let mut kept = zeroize::Zeroizing::new(String::with_capacity(text.len()));
    let mut offsets = Vec::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        if !c.is_ascii_whitespace() {
            kept.push(c);
            offsets.push(i);
        }
    }
    let at = |i: usize| offsets.get(i).copied().unwrap_or(offsets.len());
    match kind {
        Decode::Base64 => {
            if let Some(i) = kept.chars().position(|c| !c.is_ascii()) {
                return Err(format!(
                    "not valid base64: a non-ASCII character at offset {}",
                    at(i)
                ));
            }
            STANDARD_LENIENT
                .decode(kept.as_bytes())
                .or_else(|e| URL_SAFE_LENIENT.decode(kept.as_bytes()).map_err(|_| e))
                .map(SecretBytes::new)
                .map_err(|e| match e {
                    base64::DecodeError::InvalidByte(i, _) => {
                        format!("not valid base64: invalid character at offset {}", at(i))
                    }
                    base64::DecodeError::InvalidLastSymbol(i, _) => {
                        format!("not valid base64: invalid last character at offset {}", at(i))
                    }
                    base64::DecodeError::InvalidLength(n) => format!(
                        "not valid base64: {n} base64 characters cannot encode whole bytes (truncated at offset {})",
                        at(n.saturating_sub(1))
                    ),
                    base64::DecodeError::InvalidPadding => {
                        "not valid base64: wrong padding at the end".to_owned()
                    }
                })
        }
        Decode::Hex => hex::decode(kept.as_bytes())
            .map(SecretBytes::new)
            .map_err(|e| match e {
                hex::FromHexError::InvalidHexCharacter { index, .. } => {
                    format!("not valid hex: invalid character at offset {}", at(index))
                }
                hex::FromHexError::OddLength => format!(
                    "not valid hex: an odd number of hex digits ({}) cannot encode whole bytes",
                    kept.len()
                ),
                hex::FromHexError::InvalidStringLength => "not valid hex".to_owned(),
            }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn decodes_and_reports_offsets_without_content() {
        assert_eq!(
            decode(Decode::Base64, "AAEC\n/w==").unwrap().expose(),
            &[0, 1, 2, 255]
        );
        assert_eq!(decode(Decode::Base64, "_w").unwrap().expose(), &[255]);
        assert_eq!(
            decode(Decode::Hex, "00 01 fF").unwrap().expose(),
            &[0, 1, 255]
        );
        let e = decode(Decode::Base64, "AA\nE%CANARY").unwrap_err();
        assert!(e.contains("offset 4"), "{e}");
        assert!(!e.contains('%') && !e.contains("CANARY"), "{e}");
        let e = decode(Decode::Hex, "00zz").unwrap_err();
        assert!(e.contains("offset 2") && !e.contains('z'), "{e}");
        assert!(decode(Decode::Hex, "abc").unwrap_err().contains("odd"));
        assert!(decode(Decode::Base64, "AAAAA").is_err());
        assert!(
            decode(Decode::Base64, "ÄÄÄÄ")
                .unwrap_err()
                .contains("offset 0")
        );
    }
}
