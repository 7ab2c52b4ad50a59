//! The `[[store]]` step on Windows (see `crate::store` for the flow and the
//! decisions): system certificate stores through crypt32, the key's DACL in
//! [`super::keyacl`], http.sys in [`super::httpsys`].
//!
//! Wine facts this code respects (TOOLING.md): a system store persists
//! deletions and property changes only after `CertControlStore(…COMMIT,
//! FORCE)`, and a leaked context can keep even an addition from being
//! written, so every context is owned by a [`Cert`] that frees it;
//! `PFXImportCertStore` gives intermediates a key property too, so the leaf
//! is found by its SHA-1 hash (the DER Key Vault names), never by "has a
//! key".
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::ffi::c_void;
use std::io;

use rand::Rng as _;
use rand::distr::Alphanumeric;
use windows_sys::Win32::Security::Cryptography::{
    CERT_CONTEXT, CERT_DESCRIPTION_PROP_ID, CERT_FIND_SHA1_HASH, CERT_FRIENDLY_NAME_PROP_ID,
    CERT_KEY_PROV_INFO_PROP_ID, CERT_RENEWAL_PROP_ID, CERT_STORE_ADD_REPLACE_EXISTING,
    CERT_STORE_ADD_USE_EXISTING, CERT_STORE_CTRL_COMMIT, CERT_STORE_CTRL_COMMIT_FORCE_FLAG,
    CERT_STORE_OPEN_EXISTING_FLAG, CERT_STORE_PROV_SYSTEM_W, CERT_STORE_READONLY_FLAG,
    CERT_SYSTEM_STORE_CURRENT_USER, CERT_SYSTEM_STORE_LOCAL_MACHINE, CRYPT_EXPORTABLE,
    CRYPT_INTEGER_BLOB, CRYPT_MACHINE_KEYSET, CRYPT_USER_KEYSET, CertAddCertificateContextToStore,
    CertAddEncodedCertificateToStore, CertCloseStore, CertControlStore,
    CertDeleteCertificateFromStore, CertDuplicateCertificateContext, CertEnumCertificatesInStore,
    CertFindCertificateInStore, CertFreeCertificateContext, CertGetCertificateContextProperty,
    CertSetCertificateContextProperty, HCERTSTORE, PFXImportCertStore, PKCS_7_ASN_ENCODING,
    PKCS12_PREFER_CNG_KSP, X509_ASN_ENCODING,
};
use zeroize::Zeroizing;

use super::wide;
use crate::certs::CertMaterial;
use crate::config::{StoreLocation, StoreSpec};
use crate::store::plan::{self, Version};
use crate::store::{self as store_mod, StoreReport, bindings};

const ENCODING: u32 = X509_ASN_ENCODING | PKCS_7_ASN_ENCODING;
/// Seconds between 1601-01-01 (FILETIME) and 1970-01-01.
const FILETIME_UNIX_OFFSET: i64 = 11_644_473_600;
/// Length of the one-time password of the PFX handed to
/// `PFXImportCertStore` (the PFX never leaves this process).
const IMPORT_PASSWORD_LEN: usize = 32;

/// An open certificate store, closed on drop.
pub struct Store(HCERTSTORE);

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: self.0 is a store handle we opened and close once.
        unsafe {
            CertCloseStore(self.0, 0);
        }
    }
}

/// A certificate context we own a reference to, freed on drop.
pub struct Cert(*const CERT_CONTEXT);

impl Drop for Cert {
    fn drop(&mut self) {
        // SAFETY: self.0 is a context we own one reference to.
        unsafe {
            CertFreeCertificateContext(self.0);
        }
    }
}

fn last_error(call: &str) -> String {
    format!("{call}: {}", io::Error::last_os_error())
}

/// Open a system store (`LocalMachine\My`). Read-only opens fail when the
/// store does not exist (`None`); writable opens create it.
pub fn open(location: StoreLocation, name: &str, read_only: bool) -> Result<Option<Store>, String> {
    let mut flags = match location {
        StoreLocation::LocalMachine => CERT_SYSTEM_STORE_LOCAL_MACHINE,
        StoreLocation::CurrentUser => CERT_SYSTEM_STORE_CURRENT_USER,
    };
    if read_only {
        flags |= CERT_STORE_READONLY_FLAG | CERT_STORE_OPEN_EXISTING_FLAG;
    }
    let w = wide(name);
    // SAFETY: `w` is NUL-terminated and outlives the call.
    let h = unsafe { open_system_store(flags, w.as_ptr()) };
    if h.is_null() {
        if read_only {
            return Ok(None);
        }
        return Err(last_error(&format!("CertOpenStore({location}\\{name})")));
    }
    Ok(Some(Store(h)))
}

/// `CertOpenStore(CERT_STORE_PROV_SYSTEM_W, …)`.
///
/// # Safety
/// `name` must be a NUL-terminated UTF-16 string.
unsafe fn open_system_store(flags: u32, name: *const u16) -> HCERTSTORE {
    // SAFETY: forwarded from the caller; the provider takes a wide name.
    unsafe {
        windows_sys::Win32::Security::Cryptography::CertOpenStore(
            CERT_STORE_PROV_SYSTEM_W,
            0,
            0,
            flags,
            name as *const c_void,
        )
    }
}

impl Store {
    /// Every certificate in the store (each its own reference).
    pub fn certs(&self) -> Vec<Cert> {
        let mut out = Vec::new();
        let mut prev: *const CERT_CONTEXT = std::ptr::null();
        // Bounded by the store's size: enumeration ends with NULL.
        loop {
            // SAFETY: `prev` is NULL or the context the previous call
            // returned (which this call frees).
            let next = unsafe { CertEnumCertificatesInStore(self.0, prev) };
            if next.is_null() {
                break;
            }
            // SAFETY: `next` is valid; the duplicate is ours to free.
            out.push(Cert(unsafe { CertDuplicateCertificateContext(next) }));
            prev = next;
        }
        out
    }

    /// The certificate whose SHA-1 hash is `hash`.
    pub fn find(&self, hash: &[u8]) -> Option<Cert> {
        let blob = CRYPT_INTEGER_BLOB {
            cbData: hash.len() as u32,
            pbData: hash.as_ptr() as *mut u8,
        };
        // SAFETY: blob points at `hash`, alive for the call; the returned
        // context is ours to free.
        let c = unsafe {
            CertFindCertificateInStore(
                self.0,
                ENCODING,
                0,
                CERT_FIND_SHA1_HASH,
                &blob as *const _ as *const c_void,
                std::ptr::null(),
            )
        };
        (!c.is_null()).then_some(Cert(c))
    }

    /// Add a copy of `cert` (with its properties); returns the store's copy.
    pub fn add(&self, cert: &Cert, disposition: u32) -> Result<Cert, String> {
        let mut added: *mut CERT_CONTEXT = std::ptr::null_mut();
        // SAFETY: cert.0 is valid; `added` receives a context we free.
        let ok =
            unsafe { CertAddCertificateContextToStore(self.0, cert.0, disposition, &mut added) };
        if ok == 0 || added.is_null() {
            return Err(last_error("CertAddCertificateContextToStore"));
        }
        Ok(Cert(added))
    }

    /// Add an encoded certificate unless it is there already.
    pub fn add_encoded(&self, der: &[u8]) -> Result<(), String> {
        // SAFETY: der is alive for the call; no context is returned.
        let ok = unsafe {
            CertAddEncodedCertificateToStore(
                self.0,
                ENCODING,
                der.as_ptr(),
                der.len() as u32,
                CERT_STORE_ADD_USE_EXISTING,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(last_error("CertAddEncodedCertificateToStore"));
        }
        Ok(())
    }

    /// Write pending changes now (Wine needs it; harmless on Windows).
    pub fn commit(&self) -> Result<(), String> {
        let force = CERT_STORE_CTRL_COMMIT_FORCE_FLAG;
        // SAFETY: plain call on our store handle.
        let ok =
            unsafe { CertControlStore(self.0, force, CERT_STORE_CTRL_COMMIT, std::ptr::null()) };
        if ok == 0 {
            return Err(last_error("CertControlStore(COMMIT)"));
        }
        Ok(())
    }
}

impl Cert {
    pub fn as_ptr(&self) -> *const CERT_CONTEXT {
        self.0
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        // SAFETY: a valid context points at its encoding, alive as long as
        // the context (borrowed from self).
        unsafe {
            let c = &*self.0;
            std::slice::from_raw_parts(c.pbCertEncoded, c.cbCertEncoded as usize)
        }
    }

    /// SHA-1 thumbprint, uppercase hex.
    pub fn thumbprint(&self) -> String {
        hex::encode_upper(sha1_of(self.der()))
    }

    /// notBefore as Unix seconds.
    pub fn not_before(&self) -> i64 {
        // SAFETY: a valid context has a valid pCertInfo.
        let ft = unsafe { (*(*self.0).pCertInfo).NotBefore };
        let ticks = (u64::from(ft.dwHighDateTime) << 32) | u64::from(ft.dwLowDateTime);
        (ticks / 10_000_000) as i64 - FILETIME_UNIX_OFFSET
    }

    /// A property's bytes, or `None` when absent.
    pub fn property(&self, id: u32) -> Option<Vec<u8>> {
        let mut len = 0u32;
        // SAFETY: size query, then a buffer of that size.
        unsafe {
            if CertGetCertificateContextProperty(self.0, id, std::ptr::null_mut(), &mut len) == 0 {
                return None;
            }
            let mut buf = vec![0u8; len as usize];
            if CertGetCertificateContextProperty(
                self.0,
                id,
                buf.as_mut_ptr() as *mut c_void,
                &mut len,
            ) == 0
            {
                return None;
            }
            buf.truncate(len as usize);
            Some(buf)
        }
    }

    /// A string property (UTF-16, NUL-terminated).
    pub fn string_property(&self, id: u32) -> Option<String> {
        let b = self.property(id)?;
        let w: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(
            String::from_utf16_lossy(&w)
                .trim_end_matches('\0')
                .to_owned(),
        )
    }

    /// Set a blob property (a string as UTF-16 with its NUL, or bytes).
    pub fn set_property(&self, id: u32, data: &[u8]) -> Result<(), String> {
        let blob = CRYPT_INTEGER_BLOB {
            cbData: data.len() as u32,
            pbData: data.as_ptr() as *mut u8,
        };
        // SAFETY: the blob points at `data`, alive for the call (crypt32
        // copies it).
        let ok = unsafe {
            CertSetCertificateContextProperty(self.0, id, 0, &blob as *const _ as *const c_void)
        };
        if ok == 0 {
            return Err(last_error(&format!(
                "CertSetCertificateContextProperty({id})"
            )));
        }
        Ok(())
    }

    pub fn set_string_property(&self, id: u32, s: &str) -> Result<(), String> {
        let w = wide(s);
        let bytes: Vec<u8> = w.iter().flat_map(|c| c.to_le_bytes()).collect();
        self.set_property(id, &bytes)
    }

    /// Whether the certificate has a private key associated.
    pub fn has_key(&self) -> bool {
        self.property(CERT_KEY_PROV_INFO_PROP_ID).is_some()
    }

    /// Delete this certificate from its store (consumes the reference).
    pub fn delete(self) -> Result<(), String> {
        // SAFETY: CertDeleteCertificateFromStore always frees the context
        // it is given, success or not: hand it our reference and forget it.
        let ok = unsafe { CertDeleteCertificateFromStore(self.0) };
        std::mem::forget(self);
        if ok == 0 {
            return Err(last_error("CertDeleteCertificateFromStore"));
        }
        Ok(())
    }
}

/// Import `material`'s leaf and key through a one-time-password PFX;
/// returns the temporary store and the leaf (found by hash).
fn import(spec: &StoreSpec, material: &CertMaterial, hash: &[u8]) -> Result<(Store, Cert), String> {
    let password: Zeroizing<String> = Zeroizing::new(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(IMPORT_PASSWORD_LEN)
            .map(char::from)
            .collect(),
    );
    let pfx = Zeroizing::new(
        crate::certs::build_pfx(material, Some(&password), false).map_err(|e| e.to_string())?,
    );
    let blob = CRYPT_INTEGER_BLOB {
        cbData: pfx.len() as u32,
        pbData: pfx.as_ptr() as *mut u8,
    };
    let mut flags = match spec.location {
        StoreLocation::LocalMachine => CRYPT_MACHINE_KEYSET,
        StoreLocation::CurrentUser => CRYPT_USER_KEYSET,
    };
    if spec.exportable {
        flags |= CRYPT_EXPORTABLE;
    }
    let pw = Zeroizing::new(wide(password.as_str()));
    // CNG first (its key takes NCRYPT_SECURITY_DESCR_PROPERTY); Wine 8
    // refuses PKCS12_PREFER_CNG_KSP (NULL, last error 0), so the second try
    // leaves the choice of provider to the system.
    let mut h = std::ptr::null_mut();
    for extra in [PKCS12_PREFER_CNG_KSP, 0] {
        // SAFETY: blob and pw are alive for the call; the returned store is
        // ours to close.
        h = unsafe { PFXImportCertStore(&blob, pw.as_ptr(), flags | extra) };
        if !h.is_null() {
            break;
        }
    }
    if h.is_null() {
        return Err(last_error("PFXImportCertStore"));
    }
    let temp = Store(h);
    let leaf = temp
        .find(hash)
        .ok_or_else(|| "PFXImportCertStore: the leaf is not in the imported PFX".to_owned())?;
    if !leaf.has_key() {
        return Err("PFXImportCertStore: the leaf was imported without its private key".to_owned());
    }
    Ok((temp, leaf))
}

/// Put the intermediates into `LocalMachine\CA` (never Root: a vault's
/// chain is not a trust anchor, so a self-signed certificate is skipped).
fn intermediates(material: &CertMaterial, dry_run: bool) -> Result<Vec<String>, String> {
    let chain: Vec<&Vec<u8>> = material
        .chain_der
        .iter()
        .filter(|d| !self_signed(d))
        .collect();
    if chain.is_empty() {
        return Ok(Vec::new());
    }
    let ca = open(StoreLocation::LocalMachine, "CA", dry_run)?;
    let mut added = Vec::new();
    for der in chain {
        let hash = sha1_of(der);
        if ca.as_ref().and_then(|s| s.find(&hash)).is_some() {
            continue;
        }
        if let Some(ca) = &ca {
            if !dry_run {
                ca.add_encoded(der)?;
            }
        }
        added.push(hex::encode_upper(hash));
    }
    if let (Some(ca), false, false) = (&ca, dry_run, added.is_empty()) {
        ca.commit()?;
    }
    Ok(added)
}

fn self_signed(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
        .unwrap_or(false)
}

/// See `crate::store`: bring one `[[store]]` in step with `material`.
pub fn store_sync(
    spec: &StoreSpec,
    material: &CertMaterial,
    dry_run: bool,
) -> Result<StoreReport, String> {
    let hash = hex::decode(&material.thumbprint).map_err(|_| "bad thumbprint".to_owned())?;
    let current = material.thumbprint.to_ascii_uppercase();
    let marker = store_mod::marker(&spec.alias);
    let mut report = StoreReport {
        store: spec.label(),
        alias: spec.alias.clone(),
        thumbprint: current.clone(),
        ..StoreReport::default()
    };
    let store = open(spec.location, &spec.name, dry_run)?;
    let ours: Vec<Cert> = store
        .as_ref()
        .map(Store::certs)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.string_property(CERT_DESCRIPTION_PROP_ID).as_deref() == Some(marker.as_str()))
        .collect();
    let present = store
        .as_ref()
        .and_then(|s| s.find(&hash))
        .filter(Cert::has_key);
    report.added = present.is_none();
    report.intermediates = intermediates(material, dry_run)?;
    let mut versions: Vec<Version> = ours
        .iter()
        .map(|c| Version {
            thumbprint: c.thumbprint(),
            not_before: c.not_before(),
        })
        .collect();
    if !versions.iter().any(|v| v.thumbprint == current) {
        versions.push(Version {
            thumbprint: current.clone(),
            not_before: i64::MAX,
        });
    }
    let superseded: BTreeSet<String> = versions
        .iter()
        .map(|v| v.thumbprint.clone())
        .filter(|t| *t != current)
        .collect();
    let mut bound_now = super::httpsys::query_all()?;
    let Some(store) = store else {
        // Dry run on a store that does not exist yet: everything is new.
        return Ok(report);
    };
    if !dry_run {
        let added = match present {
            Some(c) => c,
            None => {
                let (_temp, leaf) = import(spec, material, &hash)?;
                let added = store.add(&leaf, CERT_STORE_ADD_REPLACE_EXISTING)?;
                added.set_string_property(
                    CERT_FRIENDLY_NAME_PROP_ID,
                    &store_mod::friendly_name(spec, material),
                )?;
                added.set_string_property(CERT_DESCRIPTION_PROP_ID, &marker)?;
                added
            }
        };
        // Kept current every round (cheap, idempotent): an `accounts` edit
        // takes effect without a new certificate version.
        if !spec.accounts.is_empty() {
            super::keyacl::grant(&added, &spec.accounts, spec.location)?;
        }
        for old in ours.iter().filter(|c| superseded.contains(&c.thumbprint())) {
            if old.property(CERT_RENEWAL_PROP_ID).as_deref() != Some(hash.as_slice()) {
                old.set_property(CERT_RENEWAL_PROP_ID, &hash)?;
                report.linked.push(old.thumbprint());
            }
        }
        if spec.rebind {
            let planned = bindings::plan(&bound_now, &superseded, &hash, &spec.name);
            report.rebound = super::httpsys::rebind(&planned)?;
            bound_now = super::httpsys::query_all()?;
        }
    }
    let removal = plan::removals(&versions, &current, spec.keep, &bindings::bound(&bound_now));
    for t in &removal.kept_bound {
        tracing::info!(store = %report.store, thumbprint = %t, "kept beyond keep: still bound in http.sys");
    }
    report.kept_bound = removal.kept_bound;
    for t in removal.remove {
        if !dry_run {
            if let Some(c) = ours.iter().find(|c| c.thumbprint() == t) {
                // SAFETY: c.0 is valid; the duplicate is handed to delete().
                let dup = Cert(unsafe { CertDuplicateCertificateContext(c.as_ptr()) });
                dup.delete()?;
            }
        }
        report.removed.push(t);
    }
    drop(ours);
    if !dry_run && report.changed() {
        store.commit()?;
    }
    Ok(report)
}

/// SHA-1 of a DER certificate: its thumbprint's bytes.
fn sha1_of(der: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(der).to_vec()
}
