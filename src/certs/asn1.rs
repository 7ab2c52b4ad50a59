//! The few DER shapes kvsync writes by hand: a TLV, a SEQUENCE, and the
//! PKCS#8 wrapper (RFC 5208 §5) around a PKCS#1 or SEC1 private key.
//!
//! Reading uses the `der` crate; writing these small fixed structures by hand
//! keeps the key normalisation free of extra ASN.1 derive types.

use der::{Decode, Reader, SliceReader, Tag, Tagged, asn1::AnyRef};
use zeroize::Zeroizing;

/// DER tags used below (X.690 §8).
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
/// `[1] EXPLICIT` (constructed, context-specific 1): ECPrivateKey.publicKey.
pub(crate) const TAG_CONTEXT_1: u8 = 0xa1;

/// The elements of a DER SEQUENCE given as one complete TLV.
pub(crate) fn sequence_elements(bytes: &[u8]) -> Result<Vec<AnyRef<'_>>, der::Error> {
    let outer = AnyRef::from_der(bytes)?;
    outer.tag().assert_eq(Tag::Sequence)?;
    elements(outer.value())
}

/// The elements in the content octets of a constructed value.
pub(crate) fn elements(content: &[u8]) -> Result<Vec<AnyRef<'_>>, der::Error> {
    let mut reader = SliceReader::new(content)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        out.push(reader.decode::<AnyRef<'_>>()?);
    }
    Ok(out)
}

/// Whether `any` is the context-specific tag `[number]`.
pub(crate) fn is_context(any: &AnyRef<'_>, number: u32) -> bool {
    any.tag().is_context_specific() && any.tag().number().0 == number
}

/// The magnitude of a DER INTEGER's content: leading zero octets removed so
/// values from different encoders compare equal.
pub(crate) fn unsigned(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[skip..]
}

/// One DER element: tag, definite length, content.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(content.len() + 6));
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        // Short form: the length fits in 7 bits (X.690 §8.1.3.4).
        out.push(len as u8);
    } else {
        // Long form: 0x80 | number of length bytes, then big-endian length.
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already encoded elements.
pub(crate) fn sequence(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let content = Zeroizing::new(parts.concat());
    tlv(TAG_SEQUENCE, &content)
}

/// PKCS#8 v1 `PrivateKeyInfo` with the given algorithm identifier content
/// (OID and parameters, already encoded) around `private_key`.
pub(crate) fn pkcs8(algorithm: &[&[u8]], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    let version = tlv(TAG_INTEGER, &[0]);
    let alg = sequence(algorithm);
    let key = tlv(TAG_OCTET_STRING, private_key);
    sequence(&[&version, &alg, &key])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        assert_eq!(*tlv(TAG_INTEGER, &[5]), vec![0x02, 0x01, 0x05]);
        let long = tlv(TAG_OCTET_STRING, &[0u8; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = tlv(TAG_OCTET_STRING, &[0u8; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(longer.len(), 304);
    }
}
