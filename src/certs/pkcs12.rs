//! PKCS#12 (RFC 7292) in and out.
//!
//! Reading: Key Vault stores PFX secrets with no password (PROTOCOL.md §6),
//! and "no password" has two encodings for the PKCS#12 key derivation
//! (RFC 7292 B.1): the empty BMPString with its terminator (`00 00`, what
//! OpenSSL's `-passin pass:` and p12-keystore use) and the zero-length
//! ("null") password (OpenSSL's `PKCS12_create(NULL, ...)`, Windows/.NET
//! exports). p12-keystore tries only the first (TOOLING.md), so a failure
//! falls back to [`super::pkcs12_null`], which tries the second.
//!
//! Writing goes through p12-keystore: AES-256-CBC/PBKDF2 with an
//! HMAC-SHA256 MAC by default (the OpenSSL 3 default), or 3DES with an
//! HMAC-SHA1 MAC for Windows Server 2016 and older, which cannot import AES.

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, Pkcs12Archive,
    PrivateKey, PrivateKeyChain,
};

use super::{Bundle, CertError, keys, pkcs12_null};

/// PBE and MAC iteration count of written PFX files: OpenSSL 3's default
/// (`PKCS12_DEFAULT_ITER` = 2048); enough against brute force of a password
/// and cheap for the no-password case.
const WRITE_ITERATIONS: u32 = 2048;

/// Friendly name of the key entry in written PFX files (shown by Windows).
const FRIENDLY_NAME: &str = "kvsync";

/// Reads a no-password PFX, trying both encodings of "no password".
pub(crate) fn read(der_bytes: &[u8]) -> Result<Bundle, CertError> {
    match Pkcs12Archive::from_pkcs12(der_bytes, "") {
        Ok(archive) => from_archive(archive),
        Err(first) => match pkcs12_null::read(der_bytes) {
            Ok(bundle) => Ok(bundle),
            // p12-keystore's error names the failing step (MAC, padding,
            // DER); none of its messages carries key material.
            Err(_) => Err(CertError::Pkcs12(first.to_string())),
        },
    }
}

fn from_archive(archive: Pkcs12Archive) -> Result<Bundle, CertError> {
    let keys = archive
        .keys
        .iter()
        .map(|bag| keys::from_pkcs8(bag.key.as_der()))
        .collect::<Result<Vec<_>, _>>()?;
    let certs = archive
        .certs
        .into_iter()
        .map(|bag| bag.cert.as_der().to_vec())
        .collect();
    Ok(Bundle { keys, certs })
}

/// Writes a PFX of `key_pkcs8` with `certs` (leaf first, then issuing order).
pub(crate) fn write(
    key_pkcs8: &[u8],
    certs: &[&[u8]],
    local_key_id: &[u8],
    password: Option<&str>,
    legacy: bool,
) -> Result<Vec<u8>, CertError> {
    let build = |e: p12_keystore::error::Error| CertError::PfxBuild(e.to_string());
    let key = PrivateKey::from_der(key_pkcs8).map_err(build)?;
    let certs = certs
        .iter()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(build)?;
    let chain = PrivateKeyChain::new(local_key_id, key, certs);
    let mut store = KeyStore::new();
    store.add_entry(FRIENDLY_NAME, KeyStoreEntry::PrivateKeyChain(chain));
    let mut writer = store
        .writer(password.unwrap_or(""))
        .encryption_iterations(WRITE_ITERATIONS)
        .mac_iterations(WRITE_ITERATIONS);
    if legacy {
        writer = writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(MacAlgorithm::HmacSha1);
    }
    writer.write().map_err(build)
}
