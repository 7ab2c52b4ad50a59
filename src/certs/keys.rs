//! Private keys: PKCS#8, PKCS#1 ("RSA PRIVATE KEY") and SEC1 ("EC PRIVATE
//! KEY") in, one canonical unencrypted PKCS#8 v1 out, and the check that a
//! key belongs to a certificate.
//!
//! The match compares the public key *derived from the private key* with the
//! certificate's SubjectPublicKeyInfo:
//! * RSA: the modulus and public exponent are part of the private key
//!   (RFC 8017 A.1.2) and must equal the certificate's; this is the check
//!   OpenSSL's `X509_check_private_key` makes.
//! * EC P-256/P-384: ring recomputes the public point from the private scalar
//!   and refuses a key whose point differs from the one it is given, which is
//!   the certificate's point. ring is already in the tree through rustls.
//!
//! Key bytes live in `Zeroizing` buffers and never reach an error message.

use der::{Tag, Tagged, asn1::AnyRef, oid::ObjectIdentifier};
use ring::{rand::SystemRandom, signature};
use zeroize::Zeroizing;

use super::CertError;
use super::asn1::{
    TAG_BIT_STRING, TAG_CONTEXT_1, TAG_INTEGER, TAG_NULL, TAG_OCTET_STRING, TAG_OID, elements,
    is_context, pkcs8, sequence, sequence_elements, tlv, unsigned,
};

/// rsaEncryption (RFC 8017 A.1).
pub(crate) const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey (RFC 5480 §2.1.1).
pub(crate) const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 / P-256 (RFC 5480 §2.1.1.1).
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1 / P-384 (RFC 5480 §2.1.1.1).
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// An EC key's named curve. ring derives public points for P-256 and P-384;
/// other curves Key Vault offers (P-521, secp256k1) are matched by the public
/// point the private key carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    Other(ObjectIdentifier),
}

/// secp521r1 / P-521 (RFC 5480 §2.1.1.1), named in messages only.
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

impl Curve {
    pub(crate) fn from_oid(oid: &[u8]) -> Option<Self> {
        if oid == OID_P256.as_bytes() {
            Some(Self::P256)
        } else if oid == OID_P384.as_bytes() {
            Some(Self::P384)
        } else {
            ObjectIdentifier::from_bytes(oid).ok().map(Self::Other)
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::P256 => OID_P256,
            Self::P384 => OID_P384,
            Self::Other(oid) => oid,
        }
    }

    /// Private scalar length in octets (SEC1 §C.4: ceil(log2(n)/8)), for
    /// the curves ring handles.
    fn scalar_len(self) -> Option<usize> {
        match self {
            Self::P256 => Some(32),
            Self::P384 => Some(48),
            Self::Other(_) => None,
        }
    }

    fn ring_alg(self) -> Option<&'static signature::EcdsaSigningAlgorithm> {
        match self {
            Self::P256 => Some(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
            Self::P384 => Some(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
            Self::Other(_) => None,
        }
    }

    pub(crate) fn name(self) -> String {
        match self {
            Self::P256 => "P-256".to_owned(),
            Self::P384 => "P-384".to_owned(),
            Self::Other(oid) if oid == OID_P521 => "P-521".to_owned(),
            Self::Other(oid) => oid.to_string(),
        }
    }
}

/// A certificate's public key, as read from its SubjectPublicKeyInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// Modulus and exponent, leading zeros removed.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed point (SEC1 §2.3.3).
    Ec { curve: Curve, point: Vec<u8> },
    /// Anything else, by algorithm OID.
    Other(String),
}

/// A private key as found in the secret, not yet tied to a certificate.
pub(crate) enum PrivateKey {
    Rsa {
        /// The PKCS#1 RSAPrivateKey DER.
        pkcs1: Zeroizing<Vec<u8>>,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        /// The private scalar, left-padded to the curve's length.
        scalar: Zeroizing<Vec<u8>>,
        /// The public point the key carries, if any (it is optional).
        point: Option<Vec<u8>>,
    },
}

/// A key proven to belong to the leaf, as canonical PKCS#8 v1 DER.
pub(crate) struct BoundKey {
    pub(crate) pkcs8: Zeroizing<Vec<u8>>,
    /// "RSA 2048" or "EC P-256".
    pub(crate) algorithm: String,
}

fn malformed(what: &'static str) -> CertError {
    CertError::InvalidKey(what)
}

/// Parses a PKCS#8 `PrivateKeyInfo`/`OneAsymmetricKey` (RFC 5208, RFC 5958).
pub(crate) fn from_pkcs8(der_bytes: &[u8]) -> Result<PrivateKey, CertError> {
    let items = sequence_elements(der_bytes).map_err(|_| malformed("not a PKCS#8 structure"))?;
    let [_version, alg, key, ..] = items.as_slice() else {
        return Err(malformed("PKCS#8 structure is incomplete"));
    };
    let alg = elements(alg.value()).map_err(|_| malformed("bad PKCS#8 algorithm"))?;
    let oid = alg
        .first()
        .filter(|a| a.tag() == Tag::ObjectIdentifier)
        .ok_or_else(|| malformed("bad PKCS#8 algorithm"))?;
    if key.tag() != Tag::OctetString {
        return Err(malformed("PKCS#8 private key is not an OCTET STRING"));
    }
    if oid.value() == OID_RSA.as_bytes() {
        from_pkcs1(key.value())
    } else if oid.value() == OID_EC.as_bytes() {
        let curve = alg
            .get(1)
            .filter(|p| p.tag() == Tag::ObjectIdentifier)
            .map(|p| p.value());
        from_sec1_with(key.value(), curve)
    } else {
        let name = ObjectIdentifier::from_bytes(oid.value())
            .map(|o| o.to_string())
            .unwrap_or_else(|_| "(unreadable OID)".to_owned());
        Err(CertError::UnsupportedKey(name))
    }
}

/// Parses a PKCS#1 `RSAPrivateKey` (RFC 8017 A.1.2).
pub(crate) fn from_pkcs1(der_bytes: &[u8]) -> Result<PrivateKey, CertError> {
    let items = sequence_elements(der_bytes).map_err(|_| malformed("not an RSA private key"))?;
    let [_version, n, e, ..] = items.as_slice() else {
        return Err(malformed("RSA private key is incomplete"));
    };
    if n.tag() != Tag::Integer || e.tag() != Tag::Integer {
        return Err(malformed("RSA modulus or exponent is not an INTEGER"));
    }
    Ok(PrivateKey::Rsa {
        pkcs1: Zeroizing::new(der_bytes.to_vec()),
        n: unsigned(n.value()).to_vec(),
        e: unsigned(e.value()).to_vec(),
    })
}

/// Parses a SEC1 `ECPrivateKey` (RFC 5915 §3) on its own ("EC PRIVATE KEY").
pub(crate) fn from_sec1(der_bytes: &[u8]) -> Result<PrivateKey, CertError> {
    from_sec1_with(der_bytes, None)
}

/// Parses a SEC1 `ECPrivateKey`; the curve comes from the PKCS#8 algorithm
/// parameters when given, else from the key's own `[0] parameters`.
fn from_sec1_with(der_bytes: &[u8], curve_oid: Option<&[u8]>) -> Result<PrivateKey, CertError> {
    let items = sequence_elements(der_bytes).map_err(|_| malformed("not an EC private key"))?;
    let [_version, scalar, rest @ ..] = items.as_slice() else {
        return Err(malformed("EC private key is incomplete"));
    };
    if scalar.tag() != Tag::OctetString {
        return Err(malformed("EC private scalar is not an OCTET STRING"));
    }
    let own_curve = context_inner(rest, 0).filter(|p| p.tag() == Tag::ObjectIdentifier);
    let curve_oid = curve_oid
        .or(own_curve.map(|p| p.value()))
        .ok_or_else(|| malformed("EC private key names no curve"))?;
    let curve = Curve::from_oid(curve_oid).ok_or_else(|| malformed("EC curve OID is invalid"))?;
    let padded = match curve.scalar_len() {
        // Some encoders drop leading zero octets; ring wants the full width.
        Some(len) => {
            let raw = unsigned(scalar.value());
            if raw.is_empty() || raw.len() > len {
                return Err(malformed(
                    "EC private scalar has the wrong length for its curve",
                ));
            }
            let mut padded = Zeroizing::new(vec![0u8; len - raw.len()]);
            padded.extend_from_slice(raw);
            padded
        }
        None => Zeroizing::new(scalar.value().to_vec()),
    };
    // publicKey [1] BIT STRING: first content octet is the unused-bit count.
    let point = context_inner(rest, 1)
        .filter(|b| b.tag() == Tag::BitString)
        .and_then(|b| b.value().split_first())
        .filter(|(unused, _)| **unused == 0)
        .map(|(_, point)| point.to_vec());
    Ok(PrivateKey::Ec {
        curve,
        scalar: padded,
        point,
    })
}

/// The element inside an explicit `[number]` among `items`.
fn context_inner<'a>(items: &[AnyRef<'a>], number: u32) -> Option<AnyRef<'a>> {
    let wrapper = items.iter().find(|i| is_context(i, number))?;
    elements(wrapper.value()).ok()?.into_iter().next()
}

/// Ties `key` to the certificate public key `leaf`: `Ok(Some)` with the
/// canonical PKCS#8 if they match, `Ok(None)` if they do not.
pub(crate) fn bind(key: &PrivateKey, leaf: &PublicKey) -> Result<Option<BoundKey>, CertError> {
    match (key, leaf) {
        (PrivateKey::Rsa { pkcs1, n, e }, PublicKey::Rsa { n: ln, e: le }) => {
            if n != ln || e != le {
                return Ok(None);
            }
            let alg_oid = tlv(TAG_OID, OID_RSA.as_bytes());
            let null = tlv(TAG_NULL, &[]);
            Ok(Some(BoundKey {
                pkcs8: pkcs8(&[&alg_oid, &null], pkcs1),
                algorithm: format!("RSA {}", bit_length(n)),
            }))
        }
        (
            PrivateKey::Ec {
                curve,
                scalar,
                point,
            },
            PublicKey::Ec {
                curve: lc,
                point: lp,
            },
        ) => {
            if curve != lc || point.as_ref().is_some_and(|p| p != lp) {
                return Ok(None);
            }
            bind_ec(*curve, scalar, lp, point.is_some())
        }
        _ => Ok(None),
    }
}

/// Builds the canonical EC PKCS#8 carrying the certificate's point and lets
/// ring confirm that the private scalar yields exactly that point.
fn bind_ec(
    curve: Curve,
    scalar: &[u8],
    point: &[u8],
    key_had_point: bool,
) -> Result<Option<BoundKey>, CertError> {
    let version = tlv(TAG_INTEGER, &[1]);
    let scalar = tlv(TAG_OCTET_STRING, scalar);
    let mut bits = vec![0u8];
    bits.extend_from_slice(point);
    let public = tlv(TAG_CONTEXT_1, &tlv(TAG_BIT_STRING, &bits));
    let ec_private_key = sequence(&[&version, &scalar, &public]);
    let alg_oid = tlv(TAG_OID, OID_EC.as_bytes());
    let curve_oid = tlv(TAG_OID, curve.oid().as_bytes());
    let der_bytes = pkcs8(&[&alg_oid, &curve_oid], &ec_private_key);
    let bound = BoundKey {
        pkcs8: der_bytes,
        algorithm: format!("EC {}", curve.name()),
    };
    let Some(alg) = curve.ring_alg() else {
        // No derivation for this curve: the point the key carries (already
        // compared with the certificate's) is the evidence, as for RSA.
        return if key_had_point {
            Ok(Some(bound))
        } else {
            Err(CertError::UnsupportedKey(format!(
                "EC {} without its public point (kvsync derives points for P-256 and P-384 only)",
                curve.name()
            )))
        };
    };
    match signature::EcdsaKeyPair::from_pkcs8(alg, &bound.pkcs8, &SystemRandom::new()) {
        Ok(_) => Ok(Some(bound)),
        // The key's own point equalled the certificate's, yet the scalar does
        // not produce it: the key is corrupt rather than merely foreign.
        Err(_) if key_had_point => Err(malformed(
            "EC private key is inconsistent (its public point does not follow from its scalar)",
        )),
        Err(_) => Ok(None),
    }
}

/// Number of significant bits in a big-endian unsigned integer.
fn bit_length(n: &[u8]) -> usize {
    match n.first() {
        Some(first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ring::signature::KeyPair as _;

    fn ring_p256() -> (Vec<u8>, Vec<u8>) {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let doc = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
        (doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
    }

    #[test]
    fn ec_key_binds_to_its_own_point_only() {
        let (pkcs8_a, point_a) = ring_p256();
        let (_, point_b) = ring_p256();
        let key = from_pkcs8(&pkcs8_a).unwrap();
        let own = PublicKey::Ec {
            curve: Curve::P256,
            point: point_a.clone(),
        };
        let bound = bind(&key, &own).unwrap().expect("own point");
        assert_eq!(bound.algorithm, "EC P-256");
        // Canonical form still parses and carries the point.
        assert!(
            matches!(from_pkcs8(&bound.pkcs8).unwrap(), PrivateKey::Ec { point: Some(p), .. } if p == point_a)
        );
        let other = PublicKey::Ec {
            curve: Curve::P256,
            point: point_b,
        };
        assert!(bind(&key, &other).unwrap().is_none());
        let wrong_curve = PublicKey::Ec {
            curve: Curve::P384,
            point: point_a,
        };
        assert!(bind(&key, &wrong_curve).unwrap().is_none());
    }

    #[test]
    fn ec_scalar_without_point_is_derived_by_ring() {
        let (pkcs8_a, point_a) = ring_p256();
        let (_, point_b) = ring_p256();
        let PrivateKey::Ec { scalar, .. } = from_pkcs8(&pkcs8_a).unwrap() else {
            panic!("EC expected");
        };
        let bare = PrivateKey::Ec {
            curve: Curve::P256,
            scalar,
            point: None,
        };
        let mine = PublicKey::Ec {
            curve: Curve::P256,
            point: point_a,
        };
        let theirs = PublicKey::Ec {
            curve: Curve::P256,
            point: point_b,
        };
        assert!(bind(&bare, &mine).unwrap().is_some());
        assert!(bind(&bare, &theirs).unwrap().is_none());
    }

    #[test]
    fn corrupt_ec_key_is_malformed_not_mismatched() {
        let (_, point_a) = ring_p256();
        let (pkcs8_b, _) = ring_p256();
        let PrivateKey::Ec { scalar, .. } = from_pkcs8(&pkcs8_b).unwrap() else {
            panic!("EC expected");
        };
        // Key B's scalar wearing key A's point.
        let forged = PrivateKey::Ec {
            curve: Curve::P256,
            scalar,
            point: Some(point_a.clone()),
        };
        let leaf = PublicKey::Ec {
            curve: Curve::P256,
            point: point_a,
        };
        assert!(matches!(
            bind(&forged, &leaf),
            Err(CertError::InvalidKey(_))
        ));
    }

    #[test]
    fn rsa_mismatch_and_cross_type() {
        let rsa = PrivateKey::Rsa {
            pkcs1: Zeroizing::new(vec![]),
            n: vec![0xc1; 256],
            e: vec![1, 0, 1],
        };
        let same = PublicKey::Rsa {
            n: vec![0xc1; 256],
            e: vec![1, 0, 1],
        };
        assert_eq!(bind(&rsa, &same).unwrap().unwrap().algorithm, "RSA 2048");
        let other = PublicKey::Rsa {
            n: vec![0xc2; 256],
            e: vec![1, 0, 1],
        };
        assert!(bind(&rsa, &other).unwrap().is_none());
        assert!(
            bind(&rsa, &PublicKey::Other("1.3.101.112".into()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn unsupported_algorithms_are_named() {
        // Ed25519 PKCS#8 (RFC 8410 §10.3 example).
        let ed25519 = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20, 0xd4, 0xee, 0x72, 0xdb, 0xf9, 0x13, 0x58, 0x4a, 0xd5, 0xb6, 0xd8, 0xf1,
            0xf7, 0x69, 0xf8, 0xad, 0x3a, 0xfe, 0x7c, 0x28, 0xcb, 0xf1, 0xd4, 0xfb, 0xe0, 0x97,
            0xa8, 0x8f, 0x44, 0x75, 0x58, 0x42,
        ];
        let err = from_pkcs8(&ed25519).err().unwrap();
        assert_eq!(
            err.to_string(),
            "unsupported private key algorithm 1.3.101.112; kvsync handles RSA and EC (P-256, P-384, and others whose key carries its public point) keys"
        );
        assert!(matches!(
            from_pkcs8(b"garbage"),
            Err(CertError::InvalidKey(_))
        ));
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0]), 9);
        assert_eq!(bit_length(&[]), 0);
    }
}
