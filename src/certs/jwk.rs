//! Public keys from Key Vault's JSON Web Keys (RFC 7517/7518): the JWK of
//! `GET /keys/{name}` → SubjectPublicKeyInfo DER/PEM (RFC 5280 §4.1.2.7),
//! for RSA (`n`, `e`; RFC 8017 A.1.1) and EC P-256/P-384/P-521 (`crv`, `x`,
//! `y`; RFC 5480, uncompressed point `04 || x || y`).
//!
//! Only public members are read; a JWK carrying private members (`d`, `p`,
//! …) is refused, so no private key material is ever handled. Pure.

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde_json::{Map, Value};

use super::asn1::{TAG_BIT_STRING, TAG_INTEGER, TAG_NULL, TAG_SEQUENCE, tlv};

/// base64url, padding optional (RFC 7515 §2 says none; be liberal).
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// DER of OID 1.2.840.113549.1.1.1 (rsaEncryption, RFC 8017 A.1).
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// DER of OID 1.2.840.10045.2.1 (id-ecPublicKey, RFC 5480 §2.1.1).
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// Named curves (RFC 5480 §2.1.1.1): secp256r1, secp384r1, secp521r1, with
/// the octets of one coordinate.
const CURVES: &[(&str, &[u8], usize)] = &[
    (
        "P-256",
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        32,
    ),
    ("P-384", &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22], 48),
    ("P-521", &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23], 66),
];
/// JWK members that hold private key material (RFC 7518 §6.2.2, §6.3.2).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/// Members copied into `keys.<alias>.jwk` (everything public we know).
const PUBLIC_MEMBERS: &[&str] = &["kid", "kty", "crv", "n", "e", "x", "y", "key_ops"];

/// A public key as kvsync delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// `RSA` or `EC` (an `-HSM` suffix dropped: same public key).
    pub kty: String,
    /// SubjectPublicKeyInfo, PEM (`PUBLIC KEY`).
    pub pem: String,
    /// The JWK's public members only, as compact JSON.
    pub jwk: String,
    /// "RSA 2048", "EC P-384".
    pub algorithm: String,
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the JWK has no string member `{name}`"))
}

fn decode(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = member(jwk, name)?.trim();
    URL_SAFE_LENIENT
        .decode(text)
        .or_else(|_| general_purpose::STANDARD.decode(text))
        .map_err(|_| format!("the JWK member `{name}` is not base64url"))
}

/// A positive DER INTEGER of a big-endian magnitude.
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let skip = magnitude.iter().take_while(|b| **b == 0).count();
    let m = &magnitude[skip..];
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(m);
    tlv(TAG_INTEGER, &content).to_vec()
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0); // no unused bits
    content.extend_from_slice(bytes);
    tlv(TAG_BIT_STRING, &content).to_vec()
}

fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = tlv(TAG_SEQUENCE, algorithm).to_vec();
    body.extend(bit_string(key));
    tlv(TAG_SEQUENCE, &body).to_vec()
}

/// The public key of a Key Vault JWK (the `key` object of a key bundle).
pub fn public_key(jwk: &Value) -> Result<PublicKey, String> {
    let obj = jwk.as_object().ok_or("the key is not a JSON object")?;
    if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
        return Err(format!(
            "the JWK carries the private member `{m}`; kvsync reads public keys only"
        ));
    }
    let kty = member(obj, "kty")?;
    let base = kty.strip_suffix("-HSM").unwrap_or(kty);
    let (der, algorithm) = match base {
        "RSA" => {
            let n = decode(obj, "n")?;
            let e = decode(obj, "e")?;
            let mut seq = integer(&n);
            seq.extend(integer(&e));
            let mut alg = OID_RSA.to_vec();
            alg.extend_from_slice(&[TAG_NULL, 0]);
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            (spki(&alg, &tlv(TAG_SEQUENCE, &seq)), format!("RSA {bits}"))
        }
        "EC" => {
            let crv = member(obj, "crv")?;
            let (_, oid, len) = CURVES.iter().find(|(n, _, _)| *n == crv).ok_or_else(|| {
                format!("unsupported curve {crv:?}; kvsync handles P-256, P-384 and P-521")
            })?;
            let mut point = vec![0x04];
            for name in ["x", "y"] {
                let c = decode(obj, name)?;
                let c = &c[c.iter().take_while(|b| **b == 0).count()..];
                if c.len() > *len {
                    return Err(format!("the JWK member `{name}` is too long for {crv}"));
                }
                point.extend(std::iter::repeat_n(0, len - c.len()));
                point.extend_from_slice(c);
            }
            let mut alg = OID_EC.to_vec();
            alg.extend_from_slice(oid);
            (spki(&alg, &point), format!("EC {crv}"))
        }
        other => {
            return Err(format!(
                "unsupported key type {other:?}; kvsync handles RSA and EC keys"
            ));
        }
    };
    let public: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| PUBLIC_MEMBERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(PublicKey {
        kty: base.to_owned(),
        pem: super::pem::encode("PUBLIC KEY", &der).to_string(),
        jwk: Value::Object(public).to_string(),
        algorithm,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn ec_p256_spki_matches_a_known_encoding() {
        // RFC 7517 Appendix A.1 example EC key.
        let jwk = json!({"kty":"EC","crv":"P-256",
            "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","kid":"1"});
        let k = public_key(&jwk).unwrap();
        assert_eq!(k.kty, "EC");
        assert_eq!(k.algorithm, "EC P-256");
        let der =
            super::super::pem::decode_first(&k.pem, rustls_pki_types::pem::SectionKind::PublicKey)
                .unwrap();
        // 0x30 0x59: SEQUENCE of 89 octets, the fixed size of a P-256 SPKI.
        assert_eq!(&der[..2], &[0x30, 0x59]);
        assert_eq!(der.len(), 91);
    }

    #[test]
    fn rsa_and_refusals() {
        let jwk = json!({"kty":"RSA-HSM","n":"wA","e":"AQAB","key_ops":["verify"]});
        let k = public_key(&jwk).unwrap();
        assert_eq!(k.kty, "RSA");
        assert!(k.jwk.contains("key_ops"));
        let e = public_key(&json!({"kty":"RSA","n":"wA","e":"AQAB","d":"SECRET"})).unwrap_err();
        assert!(e.contains("`d`") && !e.contains("SECRET"));
        assert!(
            public_key(&json!({"kty":"EC","crv":"P-256K","x":"AA","y":"AA"}))
                .unwrap_err()
                .contains("curve")
        );
        assert!(public_key(&json!({"kty":"oct","k":"AA"})).is_err());
        assert_eq!(integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(integer(&[0, 0, 1]), vec![2, 1, 1]);
    }
}
