//! http.sys SSL bindings (PROTOCOL.md §7): read every `ip:port`
//! (`HttpServiceConfigSSLCertInfo`) and SNI `host:port`
//! (`HttpServiceConfigSslSniCertInfo`) binding, and rewrite one in place
//! with `HttpUpdateServiceConfiguration` (never delete-then-add, which
//! leaves a window without a certificate). Centralized Certificate Store
//! bindings (`HttpServiceConfigSslCcsCertInfo`) are never queried, so never
//! touched. The plan (which binding, what hash) is `crate::store::bindings`.
//!
//! Wine answers `ERROR_FILE_NOT_FOUND` to every query: read as "no
//! bindings". Updates cannot be exercised there; the structures are
//! round-trip tested below, the call itself needs a Windows host.
#![allow(unsafe_code)]

use std::ffi::c_void;

use windows_sys::Win32::Foundation::{
    ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_NO_MORE_ITEMS, NO_ERROR,
};
use windows_sys::Win32::Networking::HttpServer::{
    HTTP_INITIALIZE_CONFIG, HTTP_SERVICE_CONFIG_ID, HTTP_SERVICE_CONFIG_SSL_KEY,
    HTTP_SERVICE_CONFIG_SSL_PARAM, HTTP_SERVICE_CONFIG_SSL_QUERY, HTTP_SERVICE_CONFIG_SSL_SET,
    HTTP_SERVICE_CONFIG_SSL_SNI_KEY, HTTP_SERVICE_CONFIG_SSL_SNI_QUERY,
    HTTP_SERVICE_CONFIG_SSL_SNI_SET, HTTPAPI_VERSION, HttpInitialize,
    HttpQueryServiceConfiguration, HttpServiceConfigQueryNext, HttpServiceConfigSSLCertInfo,
    HttpServiceConfigSslSniCertInfo, HttpTerminate, HttpUpdateServiceConfiguration,
};
use windows_sys::Win32::Networking::WinSock::{SOCKADDR, SOCKADDR_STORAGE};
use windows_sys::core::GUID;

use super::wide;
use crate::store::bindings::{self, BindingKey, Guid, Rebind, SOCKADDR_STORAGE_LEN, SslBinding};

/// Upper bound on bindings read per kind (a server has tens; the loop must
/// end even if http.sys never says "no more items").
const MAX_BINDINGS: u32 = 10_000;

/// http.sys configuration access for the duration of a value's life.
struct Session;

impl Session {
    fn open() -> Result<Session, String> {
        let v = HTTPAPI_VERSION {
            HttpApiMajorVersion: 2,
            HttpApiMinorVersion: 0,
        };
        // SAFETY: plain call; paired with HttpTerminate in Drop.
        let rc = unsafe { HttpInitialize(v, HTTP_INITIALIZE_CONFIG, std::ptr::null_mut()) };
        if rc != NO_ERROR {
            return Err(format!(
                "HttpInitialize: {}",
                std::io::Error::from_raw_os_error(rc as i32)
            ));
        }
        Ok(Session)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: paired with the successful HttpInitialize.
        unsafe {
            HttpTerminate(HTTP_INITIALIZE_CONFIG, std::ptr::null_mut());
        }
    }
}

/// Every `ip:port` and SNI binding with a certificate hash.
pub fn query_all() -> Result<Vec<SslBinding>, String> {
    let _s = Session::open()?;
    let mut out = query_kind(HttpServiceConfigSSLCertInfo)?;
    out.extend(query_kind(HttpServiceConfigSslSniCertInfo)?);
    Ok(out)
}

fn query_kind(id: HTTP_SERVICE_CONFIG_ID) -> Result<Vec<SslBinding>, String> {
    let mut out = Vec::new();
    // u64 elements: the output holds pointers and must be 8-byte aligned.
    let mut buf: Vec<u64> = vec![0; 512];
    for token in 0..MAX_BINDINGS {
        // Two tries: the first may report the size needed.
        let mut got = None;
        for _ in 0..2 {
            let mut needed = 0u32;
            // SAFETY: the query struct and the output buffer are alive and
            // sized as passed.
            let rc = unsafe {
                if id == HttpServiceConfigSSLCertInfo {
                    let mut q: HTTP_SERVICE_CONFIG_SSL_QUERY = std::mem::zeroed();
                    q.QueryDesc = HttpServiceConfigQueryNext;
                    q.dwToken = token;
                    HttpQueryServiceConfiguration(
                        std::ptr::null_mut(),
                        id,
                        &q as *const _ as *const c_void,
                        size_of_val(&q) as u32,
                        buf.as_mut_ptr() as *mut c_void,
                        (buf.len() * 8) as u32,
                        &mut needed,
                        std::ptr::null(),
                    )
                } else {
                    let mut q: HTTP_SERVICE_CONFIG_SSL_SNI_QUERY = std::mem::zeroed();
                    q.QueryDesc = HttpServiceConfigQueryNext;
                    q.dwToken = token;
                    HttpQueryServiceConfiguration(
                        std::ptr::null_mut(),
                        id,
                        &q as *const _ as *const c_void,
                        size_of_val(&q) as u32,
                        buf.as_mut_ptr() as *mut c_void,
                        (buf.len() * 8) as u32,
                        &mut needed,
                        std::ptr::null(),
                    )
                }
            };
            match rc {
                NO_ERROR => {
                    got = Some(true);
                    break;
                }
                // Wine answers FILE_NOT_FOUND for every query.
                ERROR_NO_MORE_ITEMS | ERROR_FILE_NOT_FOUND => {
                    got = Some(false);
                    break;
                }
                ERROR_INSUFFICIENT_BUFFER => {
                    buf.resize((needed as usize).div_ceil(8).max(buf.len() * 2), 0)
                }
                other => {
                    return Err(format!(
                        "HttpQueryServiceConfiguration: {}",
                        std::io::Error::from_raw_os_error(other as i32)
                    ));
                }
            }
        }
        match got {
            Some(true) => {}
            Some(false) => break,
            None => {
                return Err(
                    "HttpQueryServiceConfiguration kept asking for a larger buffer".to_owned(),
                );
            }
        }
        // SAFETY: on NO_ERROR the buffer starts with the SET structure of
        // this kind, its pointers into the same buffer.
        let b = unsafe {
            if id == HttpServiceConfigSSLCertInfo {
                from_ip_set(&*(buf.as_ptr() as *const HTTP_SERVICE_CONFIG_SSL_SET))
            } else {
                from_sni_set(&*(buf.as_ptr() as *const HTTP_SERVICE_CONFIG_SSL_SNI_SET))
            }
        };
        if let Some(b) = b.filter(|b| !b.hash.is_empty()) {
            out.push(b);
        }
    }
    Ok(out)
}

/// Rewrite each planned binding in place, then read the bindings again and
/// check each now names the new hash; returns one line per change.
pub fn rebind(planned: &[Rebind]) -> Result<Vec<String>, String> {
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    {
        let _s = Session::open()?;
        for r in planned {
            update(&r.after).map_err(|e| format!("{}: {e}", r.before.key))?;
        }
    }
    let now = query_all()?;
    let mut lines = Vec::new();
    for r in planned {
        match now.iter().find(|b| b.key == r.after.key) {
            Some(b) if *b == r.after => lines.push(r.to_string()),
            _ => {
                return Err(format!(
                    "{}: http.sys does not show the new certificate after the update",
                    r.before.key
                ));
            }
        }
    }
    Ok(lines)
}

/// The owned buffers a SET structure points into.
pub struct Owned {
    hash: Vec<u8>,
    store: Option<Vec<u16>>,
    ctl_id: Option<Vec<u16>>,
    ctl_store: Option<Vec<u16>>,
    host: Option<Vec<u16>>,
    addr: Box<SOCKADDR_STORAGE>,
}

fn pwstr(v: &mut Option<Vec<u16>>) -> *mut u16 {
    v.as_mut().map_or(std::ptr::null_mut(), |w| w.as_mut_ptr())
}

impl Owned {
    pub fn new(b: &SslBinding) -> Owned {
        let addr_bytes = match &b.key {
            BindingKey::IpPort(a) => bindings::sockaddr_bytes(a),
            BindingKey::Sni { port, .. } => {
                bindings::sockaddr_bytes(&std::net::SocketAddr::from(([0, 0, 0, 0], *port)))
            }
        };
        // SAFETY: SOCKADDR_STORAGE is plain data of SOCKADDR_STORAGE_LEN bytes.
        let mut addr: Box<SOCKADDR_STORAGE> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: both regions are SOCKADDR_STORAGE_LEN bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                addr_bytes.as_ptr(),
                &mut *addr as *mut _ as *mut u8,
                SOCKADDR_STORAGE_LEN,
            );
        }
        Owned {
            hash: b.hash.clone(),
            store: b.store.as_ref().map(wide),
            ctl_id: b.ctl_identifier.as_ref().map(wide),
            ctl_store: b.ctl_store.as_ref().map(wide),
            host: match &b.key {
                BindingKey::Sni { host, .. } => Some(wide(host)),
                BindingKey::IpPort(_) => None,
            },
            addr,
        }
    }

    fn param(&mut self, b: &SslBinding) -> HTTP_SERVICE_CONFIG_SSL_PARAM {
        HTTP_SERVICE_CONFIG_SSL_PARAM {
            SslHashLength: self.hash.len() as u32,
            pSslHash: self.hash.as_mut_ptr() as *mut c_void,
            AppId: GUID {
                data1: b.app_id.data1,
                data2: b.app_id.data2,
                data3: b.app_id.data3,
                data4: b.app_id.data4,
            },
            pSslCertStoreName: pwstr(&mut self.store),
            DefaultCertCheckMode: b.cert_check_mode,
            DefaultRevocationFreshnessTime: b.revocation_freshness_time,
            DefaultRevocationUrlRetrievalTimeout: b.revocation_url_retrieval_timeout,
            pDefaultSslCtlIdentifier: pwstr(&mut self.ctl_id),
            pDefaultSslCtlStoreName: pwstr(&mut self.ctl_store),
            DefaultFlags: b.flags,
        }
    }

    /// The `ip:port` SET (pointers into `self`).
    pub fn ip_set(&mut self, b: &SslBinding) -> HTTP_SERVICE_CONFIG_SSL_SET {
        HTTP_SERVICE_CONFIG_SSL_SET {
            KeyDesc: HTTP_SERVICE_CONFIG_SSL_KEY {
                pIpPort: &mut *self.addr as *mut _ as *mut SOCKADDR,
            },
            ParamDesc: self.param(b),
        }
    }

    /// The SNI SET (pointers into `self`).
    pub fn sni_set(&mut self, b: &SslBinding) -> HTTP_SERVICE_CONFIG_SSL_SNI_SET {
        HTTP_SERVICE_CONFIG_SSL_SNI_SET {
            KeyDesc: HTTP_SERVICE_CONFIG_SSL_SNI_KEY {
                IpPort: *self.addr,
                Host: pwstr(&mut self.host),
            },
            ParamDesc: self.param(b),
        }
    }
}

fn update(b: &SslBinding) -> Result<(), String> {
    let mut owned = Owned::new(b);
    // SAFETY: the SET structure points into `owned`, alive for the call.
    let rc = unsafe {
        match b.key {
            BindingKey::IpPort(_) => {
                let set = owned.ip_set(b);
                HttpUpdateServiceConfiguration(
                    std::ptr::null_mut(),
                    HttpServiceConfigSSLCertInfo,
                    &set as *const _ as *const c_void,
                    size_of_val(&set) as u32,
                    std::ptr::null(),
                )
            }
            BindingKey::Sni { .. } => {
                let set = owned.sni_set(b);
                HttpUpdateServiceConfiguration(
                    std::ptr::null_mut(),
                    HttpServiceConfigSslSniCertInfo,
                    &set as *const _ as *const c_void,
                    size_of_val(&set) as u32,
                    std::ptr::null(),
                )
            }
        }
    };
    if rc != NO_ERROR {
        return Err(format!(
            "HttpUpdateServiceConfiguration: {}",
            std::io::Error::from_raw_os_error(rc as i32)
        ));
    }
    Ok(())
}

/// # Safety
/// `p` is NULL or a NUL-terminated UTF-16 string.
unsafe fn read_pwstr(p: *const u16) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let mut n = 0;
    // SAFETY: NUL-terminated per the caller; bounded by the terminator.
    unsafe {
        while *p.add(n) != 0 {
            n += 1;
        }
        Some(String::from_utf16_lossy(std::slice::from_raw_parts(p, n)))
    }
}

/// # Safety
/// Every pointer of `p` is NULL or valid for its documented length.
unsafe fn from_param(key: BindingKey, p: &HTTP_SERVICE_CONFIG_SSL_PARAM) -> SslBinding {
    // SAFETY: per the caller.
    unsafe {
        let hash = if p.pSslHash.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(p.pSslHash as *const u8, p.SslHashLength as usize).to_vec()
        };
        SslBinding {
            key,
            hash,
            app_id: Guid {
                data1: p.AppId.data1,
                data2: p.AppId.data2,
                data3: p.AppId.data3,
                data4: p.AppId.data4,
            },
            store: read_pwstr(p.pSslCertStoreName),
            cert_check_mode: p.DefaultCertCheckMode,
            revocation_freshness_time: p.DefaultRevocationFreshnessTime,
            revocation_url_retrieval_timeout: p.DefaultRevocationUrlRetrievalTimeout,
            ctl_identifier: read_pwstr(p.pDefaultSslCtlIdentifier),
            ctl_store: read_pwstr(p.pDefaultSslCtlStoreName),
            flags: p.DefaultFlags,
        }
    }
}

/// # Safety
/// `s`'s pointers are valid (as http.sys or [`Owned`] leaves them).
pub unsafe fn from_ip_set(s: &HTTP_SERVICE_CONFIG_SSL_SET) -> Option<SslBinding> {
    // SAFETY: per the caller; a SOCKADDR_IN6 is the largest address here
    // (28 bytes), read only as far as the family says.
    unsafe {
        if s.KeyDesc.pIpPort.is_null() {
            return None;
        }
        let family = (*s.KeyDesc.pIpPort).sa_family;
        let len = if family == 23 { 28 } else { 16 };
        let bytes = std::slice::from_raw_parts(s.KeyDesc.pIpPort as *const u8, len);
        let addr = bindings::sockaddr_from_bytes(bytes)?;
        Some(from_param(BindingKey::IpPort(addr), &s.ParamDesc))
    }
}

/// # Safety
/// `s`'s pointers are valid (as http.sys or [`Owned`] leaves them).
pub unsafe fn from_sni_set(s: &HTTP_SERVICE_CONFIG_SSL_SNI_SET) -> Option<SslBinding> {
    // SAFETY: per the caller; the key's address is inline.
    unsafe {
        let bytes = std::slice::from_raw_parts(
            &s.KeyDesc.IpPort as *const _ as *const u8,
            SOCKADDR_STORAGE_LEN,
        );
        let port = bindings::sockaddr_from_bytes(bytes)?.port();
        let host = read_pwstr(s.KeyDesc.Host)?;
        Some(from_param(BindingKey::Sni { host, port }, &s.ParamDesc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: BindingKey) -> SslBinding {
        SslBinding {
            key,
            hash: vec![0xAB; 20],
            app_id: Guid {
                data1: 0x4dc3_e181,
                data2: 0xe14b,
                data3: 0x4a21,
                data4: [0xb0, 0x22, 0x59, 0xfc, 0x66, 0x9b, 0x09, 0x14],
            },
            store: Some("My".to_owned()),
            cert_check_mode: 4,
            revocation_freshness_time: 60,
            revocation_url_retrieval_timeout: 1000,
            ctl_identifier: None,
            ctl_store: Some("CA".to_owned()),
            flags: 0x2,
        }
    }

    /// The SET structures kvsync hands to HttpUpdateServiceConfiguration
    /// read back as the binding they were built from (every field).
    #[test]
    fn update_structures_round_trip() {
        for key in [
            BindingKey::IpPort(
                "0.0.0.0:443"
                    .parse()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
            ),
            BindingKey::IpPort(
                "[fe80::1]:8443"
                    .parse()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
            ),
            BindingKey::Sni {
                host: "www.contoso.com".to_owned(),
                port: 443,
            },
        ] {
            let b = sample(key);
            let mut owned = Owned::new(&b);
            // SAFETY: the sets point into `owned`, alive here.
            let back = unsafe {
                match b.key {
                    BindingKey::IpPort(_) => from_ip_set(&owned.ip_set(&b)),
                    BindingKey::Sni { .. } => from_sni_set(&owned.sni_set(&b)),
                }
            };
            assert_eq!(back.as_ref(), Some(&b));
            let set = owned.ip_set(&b);
            assert_eq!(set.ParamDesc.SslHashLength, 20);
            assert_eq!(set.ParamDesc.DefaultFlags, 0x2);
        }
    }

    /// Wine answers every query with ERROR_FILE_NOT_FOUND: no bindings.
    #[test]
    fn query_under_wine_or_windows_does_not_fail() {
        assert!(query_all().is_ok());
    }
}
