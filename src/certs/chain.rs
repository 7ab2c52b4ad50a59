//! X.509 side: parse the certificates of a secret, order the chain by
//! issuer → subject (PROTOCOL.md §6: never by position), and read the leaf's
//! facts (subject, SANs, serial, expiry, thumbprint).
//!
//! Names are compared as their raw DER, the way path building does (RFC 5280
//! §7.1 allows more lenient comparison, but Key Vault and OpenSSL emit the
//! issuer name byte-identical to the issuer's subject). When several
//! certificates carry the issuer's name, the one whose subject key identifier
//! matches the child's authority key identifier wins, then the latest expiry.

use std::net::IpAddr;

use sha1::{Digest as _, Sha1};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::public_key::PublicKey as ParsedKey;

use super::CertError;
use super::keys::{Curve, PublicKey};

/// One certificate of the secret, reduced to what ordering and matching use.
pub(crate) struct Cert {
    pub(crate) der: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    pub(crate) public_key: PublicKey,
    /// notAfter, seconds since the Unix epoch.
    pub(crate) not_after: i64,
}

impl Cert {
    fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }
}

/// Parses every certificate; `index` in errors is the certificate's position.
pub(crate) fn parse_all(ders: Vec<Vec<u8>>) -> Result<Vec<Cert>, CertError> {
    ders.into_iter()
        .enumerate()
        .map(|(index, der)| parse(der).map_err(|()| CertError::InvalidCertificate { index }))
        .collect()
}

fn parse(der: Vec<u8>) -> Result<Cert, ()> {
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| ())?;
    let mut subject_key_id = None;
    let mut authority_key_id = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
            }
            _ => {}
        }
    }
    let cert_out = Cert {
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        subject_key_id,
        authority_key_id,
        public_key: public_key(&cert),
        not_after: cert.validity().not_after.timestamp(),
        der: Vec::new(),
    };
    Ok(Cert { der, ..cert_out })
}

fn public_key(cert: &X509Certificate<'_>) -> PublicKey {
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .and_then(|oid| Curve::from_oid(oid.as_bytes()));
    match (spki.parsed(), curve) {
        (Ok(ParsedKey::RSA(rsa)), _) => PublicKey::Rsa {
            n: super::asn1::unsigned(rsa.modulus).to_vec(),
            e: super::asn1::unsigned(rsa.exponent).to_vec(),
        },
        (Ok(ParsedKey::EC(point)), Some(curve)) => PublicKey::Ec {
            curve,
            point: point.data().to_vec(),
        },
        _ => PublicKey::Other(spki.algorithm.algorithm.to_id_string()),
    }
}

/// The issuing path above `leaf`: intermediates in issuing order (the leaf's
/// issuer first) and, separately, the self-signed root if the path reaches
/// one. Certificates off the path are ignored.
pub(crate) fn issuing_path(certs: &[Cert], leaf: usize) -> (Vec<usize>, Option<usize>) {
    let mut used = vec![false; certs.len()];
    let mut path = Vec::new();
    let Some(mut current) = certs.get(leaf).map(|_| leaf) else {
        return (path, None);
    };
    used[leaf] = true;
    // Each step consumes a certificate, so the path is at most certs.len().
    for _ in 0..certs.len() {
        if certs[current].is_self_issued() {
            break;
        }
        let Some(next) = best_issuer(certs, &certs[current], &used) else {
            break;
        };
        used[next] = true;
        if certs[next].is_self_issued() {
            return (path, Some(next));
        }
        path.push(next);
        current = next;
    }
    (path, None)
}

fn best_issuer(certs: &[Cert], child: &Cert, used: &[bool]) -> Option<usize> {
    certs
        .iter()
        .enumerate()
        .filter(|(i, c)| !used[*i] && c.subject == child.issuer)
        .max_by_key(|(_, c)| {
            let key_id_match = matches!(
                (&child.authority_key_id, &c.subject_key_id),
                (Some(a), Some(s)) if a == s
            );
            (key_id_match, c.not_after)
        })
        .map(|(i, _)| i)
}

/// What templates and warnings need to know about the leaf.
pub(crate) struct LeafFacts {
    pub(crate) thumbprint: String,
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) sans: Vec<String>,
    pub(crate) serial: String,
    pub(crate) not_after: String,
}

pub(crate) fn leaf_facts(cert: &Cert) -> Result<LeafFacts, CertError> {
    let (_, parsed) = X509Certificate::from_der(&cert.der)
        .map_err(|_| CertError::InvalidCertificate { index: 0 })?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = parsed.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(dns) => sans.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => sans.extend(ip_string(bytes)),
                _ => {}
            }
        }
    }
    Ok(LeafFacts {
        thumbprint: thumbprint(&cert.der),
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        sans,
        serial: serial_hex(parsed.raw_serial()),
        not_after: rfc3339(cert.not_after),
    })
}

/// SHA-1 of the DER, uppercase hex: the "thumbprint" Windows shows.
pub(crate) fn thumbprint(der: &[u8]) -> String {
    hex::encode_upper(Sha1::digest(der))
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// Lowercase hex without the DER sign octet (as `openssl x509 -serial`
/// prints it, lowercased); a zero serial is "00".
fn serial_hex(raw: &[u8]) -> String {
    let trimmed = super::asn1::unsigned(raw);
    if trimmed.is_empty() {
        "00".to_owned()
    } else {
        hex::encode(trimmed)
    }
}

/// Seconds in a day.
const DAY: i64 = 86_400;

/// RFC 3339 UTC ("2027-01-31T23:59:59Z") without a date library; valid for
/// every time an X.509 certificate can carry (years 0000-9999).
pub(crate) fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(DAY);
    let secs = unix.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Howard Hinnant's `civil_from_days` (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rfc3339_known_points() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
        // RFC 5280 §4.1.2.5: 99991231235959Z means "no well-defined expiry".
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn serial_drops_sign_octet() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x7A]), "7a");
    }

    #[test]
    fn ip_sans() {
        assert_eq!(ip_string(&[127, 0, 0, 1]).unwrap(), "127.0.0.1");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(ip_string(&v6).unwrap(), "::1");
        assert_eq!(ip_string(&[1, 2, 3]), None);
    }
}

#[cfg(test)]
mod path_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cert(subject: &str, issuer: &str, ski: Option<u8>, aki: Option<u8>, exp: i64) -> Cert {
        Cert {
            der: subject.as_bytes().to_vec(),
            subject: subject.as_bytes().to_vec(),
            issuer: issuer.as_bytes().to_vec(),
            subject_key_id: ski.map(|k| vec![k]),
            authority_key_id: aki.map(|k| vec![k]),
            public_key: PublicKey::Other(String::new()),
            not_after: exp,
        }
    }

    #[test]
    fn order_follows_names_not_positions() {
        // root, unrelated, int2 (issued by int1), leaf, int1
        let certs = vec![
            cert("root", "root", Some(9), Some(9), 0),
            cert("stray", "elsewhere", None, None, 0),
            cert("int2", "int1", Some(2), Some(1), 0),
            cert("leaf", "int2", None, Some(2), 0),
            cert("int1", "root", Some(1), Some(9), 0),
        ];
        assert_eq!(issuing_path(&certs, 3), (vec![2, 4], Some(0)));
    }

    #[test]
    fn key_identifier_then_expiry_pick_among_same_names() {
        // Two CAs named "ca": the one whose SKI matches the leaf's AKI wins
        // even though the other expires later.
        let certs = vec![
            cert("ca", "root", Some(7), None, 100),
            cert("ca", "root", Some(8), None, 900),
            cert("leaf", "ca", None, Some(7), 0),
        ];
        assert_eq!(issuing_path(&certs, 2), (vec![0], None));
        // Without key identifiers, the later expiry wins.
        let certs = vec![
            cert("ca", "root", None, None, 100),
            cert("ca", "root", None, None, 900),
            cert("leaf", "ca", None, None, 0),
        ];
        assert_eq!(issuing_path(&certs, 2), (vec![1], None));
    }

    #[test]
    fn cycles_end() {
        let certs = vec![
            cert("a", "b", None, None, 0),
            cert("b", "a", None, None, 0),
            cert("leaf", "a", None, None, 0),
        ];
        assert_eq!(issuing_path(&certs, 2), (vec![0, 1], None));
    }
}
