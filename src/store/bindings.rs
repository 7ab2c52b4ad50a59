//! http.sys SSL bindings as plain data (PROTOCOL.md §7), and the rebind
//! plan: which bindings point at a superseded version of a certificate and
//! what each becomes. `platform/windows/httpsys.rs` converts these to and
//! from `HTTP_SERVICE_CONFIG_SSL_SET` / `HTTP_SERVICE_CONFIG_SSL_SNI_SET`.
//! Centralized-Certificate-Store bindings (`HttpServiceConfigSslCcsCertInfo`)
//! carry no hash and are never read, so never touched. Pure.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

/// The store http.sys assumes when a binding names none.
pub const DEFAULT_BINDING_STORE: &str = "MY";

/// What a binding is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BindingKey {
    /// `HttpServiceConfigSSLCertInfo`: `ip:port` (`0.0.0.0:443` for all).
    IpPort(SocketAddr),
    /// `HttpServiceConfigSslSniCertInfo`: `host:port`.
    Sni { host: String, port: u16 },
}

impl fmt::Display for BindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindingKey::IpPort(addr) => write!(f, "ipport={addr}"),
            BindingKey::Sni { host, port } => write!(f, "hostnameport={host}:{port}"),
        }
    }
}

/// A GUID in its four fields (`windows_sys::core::GUID` layout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

/// One SSL binding with every field of `HTTP_SERVICE_CONFIG_SSL_PARAM`, so
/// an update writes back exactly what it read except the hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslBinding {
    pub key: BindingKey,
    /// Certificate SHA-1 hash (empty: no certificate).
    pub hash: Vec<u8>,
    pub app_id: Guid,
    /// `pSslCertStoreName` (None: http.sys uses `MY`).
    pub store: Option<String>,
    pub cert_check_mode: u32,
    pub revocation_freshness_time: u32,
    pub revocation_url_retrieval_timeout: u32,
    pub ctl_identifier: Option<String>,
    pub ctl_store: Option<String>,
    pub flags: u32,
}

impl SslBinding {
    /// The bound thumbprint, uppercase hex.
    pub fn thumbprint(&self) -> String {
        hex::encode_upper(&self.hash)
    }

    fn in_store(&self, name: &str) -> bool {
        self.store
            .as_deref()
            .unwrap_or(DEFAULT_BINDING_STORE)
            .eq_ignore_ascii_case(name)
    }
}

/// Size of `SOCKADDR_STORAGE`, the largest socket address http.sys keys use.
pub const SOCKADDR_STORAGE_LEN: usize = 128;
/// Windows' `AF_INET` and `AF_INET6` (ws2def.h; AF_INET6 is 23 there, not
/// Linux's 10).
const AF_INET: u16 = 2;
const AF_INET6: u16 = 23;

/// `addr` in Windows' `SOCKADDR_IN` / `SOCKADDR_IN6` layout, zero-padded to
/// a `SOCKADDR_STORAGE`: family (little-endian), port (network order), then
/// the IPv4 address, or flow info, IPv6 address and scope id.
pub fn sockaddr_bytes(addr: &SocketAddr) -> [u8; SOCKADDR_STORAGE_LEN] {
    let mut out = [0u8; SOCKADDR_STORAGE_LEN];
    out[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr {
        SocketAddr::V4(a) => {
            out[0..2].copy_from_slice(&AF_INET.to_le_bytes());
            out[4..8].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out[0..2].copy_from_slice(&AF_INET6.to_le_bytes());
            out[4..8].copy_from_slice(&a.flowinfo().to_le_bytes());
            out[8..24].copy_from_slice(&a.ip().octets());
            out[24..28].copy_from_slice(&a.scope_id().to_le_bytes());
        }
    }
    out
}

/// The reverse of [`sockaddr_bytes`]; `None` for another family or too few
/// bytes.
pub fn sockaddr_from_bytes(b: &[u8]) -> Option<SocketAddr> {
    let u16_at = |i: usize| b.get(i..i + 2).map(|s| [s[0], s[1]]);
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let family = u16::from_le_bytes(u16_at(0)?);
    let port = u16::from_be_bytes(u16_at(2)?);
    match family {
        AF_INET => {
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::from((ip, port)))
        }
        AF_INET6 => {
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.into(),
                port,
                u32_at(4)?,
                u32_at(24)?,
            )))
        }
        _ => None,
    }
}

/// One planned update: the binding as read, and as it will be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebind {
    pub before: SslBinding,
    pub after: SslBinding,
}

impl fmt::Display for Rebind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} (appid {})",
            self.before.key,
            self.before.thumbprint(),
            self.after.thumbprint(),
            self.before.app_id
        )
    }
}

/// Thumbprints (uppercase) some binding points at.
pub fn bound(bindings: &[SslBinding]) -> BTreeSet<String> {
    bindings
        .iter()
        .filter(|b| !b.hash.is_empty())
        .map(SslBinding::thumbprint)
        .collect()
}

/// Every binding of `store_name` whose hash is one of `superseded`
/// (uppercase thumbprints), rewritten to `new_hash`; app id, store name,
/// check modes, CTL and flags unchanged.
pub fn plan(
    bindings: &[SslBinding],
    superseded: &BTreeSet<String>,
    new_hash: &[u8],
    store_name: &str,
) -> Vec<Rebind> {
    bindings
        .iter()
        .filter(|b| !b.hash.is_empty() && b.hash != new_hash)
        .filter(|b| superseded.contains(&b.thumbprint()) && b.in_store(store_name))
        .map(|b| Rebind {
            before: b.clone(),
            after: SslBinding {
                hash: new_hash.to_vec(),
                ..b.clone()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IIS's application id, `{4dc3e181-e14b-4a21-b022-59fc669b0914}`.
    pub const IIS_APP_ID: Guid = Guid {
        data1: 0x4dc3_e181,
        data2: 0xe14b,
        data3: 0x4a21,
        data4: [0xb0, 0x22, 0x59, 0xfc, 0x66, 0x9b, 0x09, 0x14],
    };

    fn binding(key: BindingKey, hash: u8, store: Option<&str>) -> SslBinding {
        SslBinding {
            key,
            hash: vec![hash; 20],
            app_id: IIS_APP_ID,
            store: store.map(str::to_owned),
            cert_check_mode: 4,
            revocation_freshness_time: 60,
            revocation_url_retrieval_timeout: 1000,
            ctl_identifier: Some("ctl".to_owned()),
            ctl_store: None,
            flags: 0x1, // HTTP_SERVICE_CONFIG_SSL_FLAG_USE_DS_MAPPER
        }
    }

    fn ip(s: &str) -> BindingKey {
        BindingKey::IpPort(s.parse().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()))
    }

    #[test]
    fn superseded_bindings_in_the_store_get_the_new_hash_and_keep_the_rest() {
        let old = hex::encode_upper([0xAA; 20]);
        let other = hex::encode_upper([0xCC; 20]);
        let bindings = vec![
            binding(ip("0.0.0.0:443"), 0xAA, Some("My")),
            binding(
                BindingKey::Sni {
                    host: "www.contoso.com".into(),
                    port: 443,
                },
                0xAA,
                None,
            ),
            binding(ip("10.0.0.1:8443"), 0xCC, Some("MY")), // another certificate
            binding(ip("10.0.0.2:443"), 0xAA, Some("WebHosting")), // another store
            SslBinding {
                hash: Vec::new(),
                ..binding(ip("10.0.0.3:443"), 0, None)
            },
        ];
        let superseded: BTreeSet<String> = [old.clone()].into();
        let new = [0xBB; 20];
        let p = plan(&bindings, &superseded, &new, "My");
        assert_eq!(p.len(), 2);
        for r in &p {
            assert_eq!(r.after.hash, new);
            assert_eq!(
                SslBinding {
                    hash: r.before.hash.clone(),
                    ..r.after.clone()
                },
                r.before
            );
        }
        assert_eq!(p[0].before.key, ip("0.0.0.0:443"));
        assert_eq!(
            p[1].to_string(),
            format!(
                "hostnameport=www.contoso.com:443 {old} -> {} (appid {{4dc3e181-e14b-4a21-b022-59fc669b0914}})",
                hex::encode_upper(new)
            )
        );
        let b = bound(&bindings);
        assert_eq!(b, [old, other].into());
    }

    #[test]
    fn socket_addresses_use_the_windows_layout() {
        let v4: SocketAddr = "10.1.2.3:443"
            .parse()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let b = sockaddr_bytes(&v4);
        assert_eq!(&b[..8], &[2, 0, 0x01, 0xbb, 10, 1, 2, 3]);
        assert!(b[8..].iter().all(|&x| x == 0));
        assert_eq!(sockaddr_from_bytes(&b), Some(v4));
        let v6: SocketAddr = "[::1]:8443"
            .parse()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let b = sockaddr_bytes(&v6);
        assert_eq!(&b[..4], &[23, 0, 0x20, 0xfb]);
        assert_eq!(b[23], 1);
        assert_eq!(sockaddr_from_bytes(&b), Some(v6));
        assert_eq!(sockaddr_from_bytes(&[10, 0, 1, 1]), None);
        assert_eq!(sockaddr_from_bytes(&[2, 0]), None);
    }

    #[test]
    fn nothing_superseded_nothing_planned() {
        let bindings = vec![binding(ip("0.0.0.0:443"), 0xBB, None)];
        let superseded: BTreeSet<String> = [hex::encode_upper([0xAA; 20])].into();
        assert!(plan(&bindings, &superseded, &[0xBB; 20], "My").is_empty());
        assert!(plan(&bindings, &BTreeSet::new(), &[0xCC; 20], "My").is_empty());
    }
}
