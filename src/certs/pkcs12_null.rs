//! Fallback PKCS#12 reader for the zero-length ("null") password.
//!
//! RFC 7292 B.1 feeds the password to its key derivation as a BMPString with
//! a two-octet terminator, so "" becomes `00 00`; OpenSSL's
//! `PKCS12_create(NULL, ...)` and Windows/.NET exports instead derive from
//! zero octets. p12-keystore only tries the former (TOOLING.md). This reader
//! verifies the MAC and decrypts PBES1 (3DES, RC2) with zero octets. PBES2
//! uses PBKDF2 over the UTF-8 password, where both encodings are the same
//! empty string.
//!
//! It reads what a certificate needs (key bags, shrouded key bags, X.509
//! certificate bags) and ignores other bags. Every loop is bounded by the
//! input, and iteration counts are capped.

use cbc::cipher::{BlockModeDecrypt as _, KeyIvInit, block_padding::Pkcs7};
use cms::{content_info::ContentInfo, encrypted_data::EncryptedData};
use der::{
    Decode, Encode,
    asn1::{AnyRef, OctetString},
    oid::ObjectIdentifier,
};
use hmac::{KeyInit as _, Mac as _};
use pkcs12::{
    CertBag, MacData,
    kdf::{Pkcs12KeyType, derive_key},
    pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams},
    pfx::{Pfx, Version},
    safe_bag::SafeContents,
};
use spki_alg::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::{Bundle, keys};

// Re-exported through cms so the version matches its ContentInfo.
use cms::cert::x509::spki as spki_alg;

/// The zero-length password.
const NULL_PASSWORD: &[u8] = &[];

/// Cap on MAC/PBE iterations: p12-keystore's `MAX_KDF_ITERATIONS`, which
/// keeps a hostile file from burning CPU; real files use 2048-10000.
const MAX_ITERATIONS: i32 = 1_000_000;

/// PKCS#7 data / encryptedData (RFC 2315 §14).
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
/// Bag types (RFC 7292 §4.2).
const KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
/// x509Certificate cert type (RFC 7292 §4.2.3).
const X509_CERT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
/// PBES1 schemes (RFC 7292 Appendix C) and PBES2 (RFC 8018 A.4).
const PBE_SHA1_3DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_SHA1_RC2_128: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.5");
const PBE_SHA1_RC2_40: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.6");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
/// MAC digests (RFC 7292 Appendix A; RFC 5754 §2).
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Why the fallback failed (the caller reports p12-keystore's error).
#[derive(Debug)]
pub(crate) struct Unreadable;

impl From<der::Error> for Unreadable {
    fn from(_: der::Error) -> Self {
        Unreadable
    }
}

/// Reads a PFX whose password is the zero-length one.
pub(crate) fn read(data: &[u8]) -> Result<Bundle, Unreadable> {
    let pfx = Pfx::from_der(data)?;
    if pfx.version != Version::V3 || pfx.auth_safe.content_type != ID_DATA {
        return Err(Unreadable);
    }
    let content = OctetString::from_der(&pfx.auth_safe.content.to_der()?)?;
    if let Some(mac) = &pfx.mac_data {
        verify_mac(mac, content.as_bytes())?;
    }
    let safes = Vec::<ContentInfo>::from_der(content.as_bytes())?;
    let mut bundle = Bundle::default();
    for safe in &safes {
        let plain = safe_contents(safe)?;
        for bag in SafeContents::from_der(&plain)? {
            read_bag(bag.bag_id, &bag.bag_value, &mut bundle)?;
        }
    }
    Ok(bundle)
}

fn safe_contents(safe: &ContentInfo) -> Result<Zeroizing<Vec<u8>>, Unreadable> {
    if safe.content_type == ID_DATA {
        let octets = OctetString::from_der(&safe.content.to_der()?)?;
        Ok(Zeroizing::new(octets.into_bytes().into_vec()))
    } else if safe.content_type == ID_ENCRYPTED_DATA {
        let enc = EncryptedData::from_der(&safe.content.to_der()?)?;
        let data = enc.enc_content_info.encrypted_content.ok_or(Unreadable)?;
        decrypt(&enc.enc_content_info.content_enc_alg, data.as_bytes())
    } else {
        Err(Unreadable)
    }
}

fn read_bag(id: ObjectIdentifier, value: &[u8], bundle: &mut Bundle) -> Result<(), Unreadable> {
    // bagValue is `[0] EXPLICIT`: its content is the inner element.
    let inner = AnyRef::from_der(value)?.value();
    if id == KEY_BAG {
        bundle
            .keys
            .push(keys::from_pkcs8(inner).map_err(|_| Unreadable)?);
    } else if id == SHROUDED_KEY_BAG {
        let enc = EncryptedPrivateKeyInfo::from_der(inner)?;
        let plain = decrypt(&enc.encryption_algorithm, enc.encrypted_data.as_bytes())?;
        bundle
            .keys
            .push(keys::from_pkcs8(&plain).map_err(|_| Unreadable)?);
    } else if id == CERT_BAG {
        let cert = CertBag::from_der(inner)?;
        if cert.cert_id == X509_CERT {
            bundle.certs.push(cert.cert_value.as_bytes().to_vec());
        }
    }
    Ok(())
}

macro_rules! mac_ok {
    ($digest:ty, $mac:expr, $data:expr) => {{
        let mac: &MacData = $mac;
        let len = <$digest as hmac::digest::OutputSizeUser>::output_size();
        let key = Zeroizing::new(derive_key::<$digest>(
            NULL_PASSWORD,
            mac.mac_salt.as_bytes(),
            Pkcs12KeyType::Mac,
            mac.iterations,
            len,
        ));
        let mut hmac = hmac::Hmac::<$digest>::new_from_slice(&key).map_err(|_| Unreadable)?;
        hmac.update($data);
        hmac.verify_slice(mac.mac.digest.as_bytes()).is_ok()
    }};
}

fn verify_mac(mac: &MacData, data: &[u8]) -> Result<(), Unreadable> {
    if !(1..=MAX_ITERATIONS).contains(&mac.iterations) {
        return Err(Unreadable);
    }
    let ok = match mac.mac.algorithm.oid {
        SHA1 => mac_ok!(sha1::Sha1, mac, data),
        SHA256 => mac_ok!(sha2::Sha256, mac, data),
        SHA384 => mac_ok!(sha2::Sha384, mac, data),
        SHA512 => mac_ok!(sha2::Sha512, mac, data),
        _ => false,
    };
    if ok { Ok(()) } else { Err(Unreadable) }
}

fn decrypt(alg: &AlgorithmIdentifierOwned, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unreadable> {
    let params = alg.parameters.as_ref().ok_or(Unreadable)?.to_der()?;
    if alg.oid == PBES2 {
        let params = pkcs5::pbes2::Parameters::from_der(&params)?;
        let capped = match &params.kdf {
            pkcs5::pbes2::Kdf::Pbkdf2(p) => p.iteration_count <= MAX_ITERATIONS as u32,
            // scrypt and others: not written by Key Vault, OpenSSL or Windows.
            _ => false,
        };
        if !capped {
            return Err(Unreadable);
        }
        let plain = params
            .decrypt(NULL_PASSWORD, data)
            .map_err(|_| Unreadable)?;
        return Ok(Zeroizing::new(plain));
    }
    let pbe = Pkcs12PbeParams::from_der(&params)?;
    if !(1..=MAX_ITERATIONS).contains(&pbe.iterations) {
        return Err(Unreadable);
    }
    let salt = pbe.salt.as_bytes();
    match alg.oid {
        PBE_SHA1_3DES => pbes1::<des::TdesEde3>(salt, pbe.iterations, 24, data),
        PBE_SHA1_RC2_128 => pbes1::<rc2::Rc2>(salt, pbe.iterations, 16, data),
        PBE_SHA1_RC2_40 => pbes1::<rc2::Rc2>(salt, pbe.iterations, 5, data),
        _ => Err(Unreadable),
    }
}

/// PKCS#12 PBES1 (RFC 7292 B.2, C): key and IV from the PKCS#12 KDF with
/// SHA-1, then CBC with PKCS#7 padding. All these ciphers have 8-byte blocks.
fn pbes1<C>(
    salt: &[u8],
    iterations: i32,
    key_len: usize,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Unreadable>
where
    cbc::Decryptor<C>: KeyIvInit + cbc::cipher::BlockModeDecrypt,
    C: cbc::cipher::BlockCipherDecrypt,
{
    /// IV length of DES and RC2 (their block size).
    const IV_LEN: usize = 8;
    let kdf = |id, len| {
        Zeroizing::new(derive_key::<sha1::Sha1>(
            NULL_PASSWORD,
            salt,
            id,
            iterations,
            len,
        ))
    };
    let key = kdf(Pkcs12KeyType::EncryptionKey, key_len);
    let iv = kdf(Pkcs12KeyType::Iv, IV_LEN);
    let cipher = cbc::Decryptor::<C>::new_from_slices(&key, &iv).map_err(|_| Unreadable)?;
    let plain = cipher
        .decrypt_padded_vec::<Pkcs7>(data)
        .map_err(|_| Unreadable)?;
    Ok(Zeroizing::new(plain))
}
