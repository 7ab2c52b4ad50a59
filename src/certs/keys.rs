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

/// The curves Key Vault offers that kvsync supports (P-521 is not in ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

impl Curve {
    pub(crate) fn from_oid(oid: &[u8]) -> Option<Self> {
        if oid == OID_P256.as_bytes() {
            Some(Self::P256)
        } else if oid == OID_P384.as_bytes() {
            Some(Self::P384)
        } else {
            None
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::P256 => OID_P256,
            Self::P384 => OID_P384,
        }
    }

    /// Private scalar length in octets (SEC1 §C.4: ceil(log2(n)/8)).
    fn scalar_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    fn ring_alg(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
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
    let curve = Curve::from_oid(curve_oid).ok_or_else(|| {
        let name = ObjectIdentifier::from_bytes(curve_oid)
            .map(|o| o.to_string())
            .unwrap_or_default();
        CertError::UnsupportedKey(format!("EC curve {name}"))
    })?;
    let raw = unsigned(scalar.value());
    if raw.is_empty() || raw.len() > curve.scalar_len() {
        return Err(malformed(
            "EC private scalar has the wrong length for its curve",
        ));
    }
    let mut padded = Zeroizing::new(vec![0u8; curve.scalar_len() - raw.len()]);
    padded.extend_from_slice(raw);
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
    match signature::EcdsaKeyPair::from_pkcs8(curve.ring_alg(), &der_bytes, &SystemRandom::new()) {
        Ok(_) => Ok(Some(BoundKey {
            pkcs8: der_bytes,
            algorithm: format!("EC {}", curve.name()),
        })),
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
