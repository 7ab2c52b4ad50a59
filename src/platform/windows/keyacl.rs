//! Read access to an imported certificate's private key for `accounts`
//! (PROTOCOL.md §7). The descriptor is built by `crate::store::keysd`
//! (tested on every platform); here accounts are resolved to SIDs and the
//! descriptor is applied: `NCryptSetProperty(NCRYPT_SECURITY_DESCR_PROPERTY,
//! DACL_SECURITY_INFORMATION)` for a CNG key, else (a legacy CAPI key) the
//! same DACL on the key's file under
//! `%ProgramData%\Microsoft\Crypto\RSA\MachineKeys`. Wine implements neither
//! meaningfully: only a Windows host proves the grant.
#![allow(unsafe_code)]

use windows_sys::Win32::Security::Authorization::{SE_FILE_OBJECT, SetNamedSecurityInfoW};
use windows_sys::Win32::Security::Cryptography::{
    CERT_NCRYPT_KEY_SPEC, CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG, CRYPT_ACQUIRE_SILENT_FLAG,
    CryptAcquireCertificatePrivateKey, CryptGetProvParam, CryptReleaseContext,
    NCRYPT_SECURITY_DESCR_PROPERTY, NCryptFreeObject, NCryptSetProperty, PP_UNIQUE_CONTAINER,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION,
};

use super::certstore::Cert;
use super::wide;
use crate::config::StoreLocation;
use crate::store::keysd::{self, KeyKind};

/// Offset of the DACL in the descriptors `keysd` builds (right after the
/// 20-byte relative header).
const DACL_OFFSET: usize = 20;

/// Resolve each account (name or SID string) to a SID string.
pub fn resolve_accounts(accounts: &[String]) -> Result<Vec<String>, String> {
    accounts
        .iter()
        .map(|a| {
            super::security::resolve(a)
                .map(|sid| sid.to_string_sid())
                .map_err(|e| format!("accounts: cannot resolve \"{a}\": {e}"))
        })
        .collect()
}

/// Give `accounts` read access to `cert`'s private key (SYSTEM and
/// Administrators full control, nobody else); returns the SDDL applied.
pub fn grant(cert: &Cert, accounts: &[String], location: StoreLocation) -> Result<String, String> {
    let readers = resolve_accounts(accounts)?;
    let mut handle = 0usize;
    let mut spec = 0u32;
    let mut must_free = 0i32;
    // SAFETY: the context is valid; the out-parameters are plain integers.
    let ok = unsafe {
        CryptAcquireCertificatePrivateKey(
            cert.as_ptr(),
            CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG | CRYPT_ACQUIRE_SILENT_FLAG,
            std::ptr::null(),
            &mut handle,
            &mut spec,
            &mut must_free,
        )
    };
    if ok == 0 {
        return Err(format!(
            "CryptAcquireCertificatePrivateKey: {}",
            std::io::Error::last_os_error()
        ));
    }
    let result = if spec == CERT_NCRYPT_KEY_SPEC {
        cng(handle, &readers)
    } else {
        capi(handle, &readers, location)
    };
    if must_free != 0 {
        // SAFETY: we own the handle (must_free) and release it once.
        unsafe {
            if spec == CERT_NCRYPT_KEY_SPEC {
                NCryptFreeObject(handle);
            } else {
                CryptReleaseContext(handle, 0);
            }
        }
    }
    result
}

fn cng(key: usize, readers: &[String]) -> Result<String, String> {
    let entries = keysd::entries(readers, KeyKind::Cng);
    let sd = keysd::descriptor(&entries)?;
    // SAFETY: `sd` is a valid self-relative descriptor alive for the call.
    let hr = unsafe {
        NCryptSetProperty(
            key,
            NCRYPT_SECURITY_DESCR_PROPERTY,
            sd.as_ptr(),
            sd.len() as u32,
            DACL_SECURITY_INFORMATION,
        )
    };
    if hr != 0 {
        return Err(format!(
            "NCryptSetProperty(Security Descr): HRESULT 0x{hr:08x}"
        ));
    }
    Ok(keysd::sddl(&entries))
}

fn capi(prov: usize, readers: &[String], location: StoreLocation) -> Result<String, String> {
    if location != StoreLocation::LocalMachine {
        return Err("a CurrentUser CAPI key lives in the user's profile: grant access with a CNG key (re-issue the certificate) or use LocalMachine".to_owned());
    }
    let mut buf = vec![0u8; 512];
    let mut len = buf.len() as u32;
    // SAFETY: buffer and length match.
    let ok = unsafe { CryptGetProvParam(prov, PP_UNIQUE_CONTAINER, buf.as_mut_ptr(), &mut len, 0) };
    if ok == 0 {
        return Err(format!(
            "CryptGetProvParam(PP_UNIQUE_CONTAINER): {}",
            std::io::Error::last_os_error()
        ));
    }
    buf.truncate(len as usize);
    let name = String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .to_owned();
    let base = std::env::var("ProgramData").unwrap_or_else(|_| r"C:\ProgramData".to_owned());
    let path = format!(r"{base}\Microsoft\Crypto\RSA\MachineKeys\{name}");
    let entries = keysd::entries(readers, KeyKind::CapiFile);
    let sd = keysd::descriptor(&entries)?;
    let w = wide(&path);
    // SAFETY: the DACL lies inside `sd` at DACL_OFFSET, 4-byte aligned
    // relative to the Vec's start; SetNamedSecurityInfoW copies it.
    let rc = unsafe {
        SetNamedSecurityInfoW(
            w.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            sd.as_ptr().add(DACL_OFFSET) as *const ACL,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "SetNamedSecurityInfoW({path}): {}",
            std::io::Error::from_raw_os_error(rc as i32)
        ));
    }
    Ok(keysd::sddl(&entries))
}

#[cfg(test)]
mod tests {
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::IsValidSecurityDescriptor;

    use crate::store::keysd::{self, KeyKind};

    /// Windows' own reading of the bytes keysd builds equals keysd's SDDL.
    #[test]
    fn windows_reads_the_key_descriptor_as_built() {
        for kind in [KeyKind::Cng, KeyKind::CapiFile] {
            let entries = keysd::entries(
                &["S-1-5-20".to_owned(), "S-1-5-82-1-2-3-4-5".to_owned()],
                kind,
            );
            let sd = keysd::descriptor(&entries).unwrap_or_default();
            let mut out: *mut u16 = std::ptr::null_mut();
            let mut len = 0u32;
            // SAFETY: sd is a self-relative descriptor; `out` is
            // LocalAlloc'ed by the call (leaked in this test).
            let s = unsafe {
                assert_ne!(IsValidSecurityDescriptor(sd.as_ptr() as *mut _), 0);
                assert_ne!(
                    ConvertSecurityDescriptorToStringSecurityDescriptorW(
                        sd.as_ptr() as *mut _,
                        SDDL_REVISION_1,
                        windows_sys::Win32::Security::DACL_SECURITY_INFORMATION,
                        &mut out,
                        &mut len,
                    ),
                    0
                );
                let mut n = 0;
                while *out.add(n) != 0 {
                    n += 1;
                }
                String::from_utf16_lossy(std::slice::from_raw_parts(out, n))
            };
            assert_eq!(s, keysd::sddl(&entries));
        }
    }
}
