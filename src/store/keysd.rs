//! The security descriptor kvsync puts on an imported private key: a
//! protected DACL giving SYSTEM and Administrators full control and each
//! `accounts` entry read access, nobody else. Built here byte by byte in
//! the self-relative layout Windows documents (`SECURITY_DESCRIPTOR_RELATIVE`,
//! `ACL`, `ACCESS_ALLOWED_ACE`, binary SIDs; MS-DTYP §2.4.2, §2.4.4.2, §2.4.5,
//! §2.4.6) so it is tested on every platform; Windows hands the bytes to
//! `NCryptSetProperty(NCRYPT_SECURITY_DESCR_PROPERTY)` (CNG keys) or
//! applies the DACL to the key file under `MachineKeys` (CAPI keys). Also
//! renders the same descriptor as SDDL, for logs and to compare with
//! Windows' own rendering in the Windows-target tests. Pure.

use std::fmt::Write as _;

/// `GENERIC_ALL`: full control of a CNG key (the key's generic mapping).
pub const GENERIC_ALL: u32 = 0x1000_0000;
/// `GENERIC_READ`: use of a CNG key (sign, decrypt): what the certificate
/// console's "Manage private keys… Read" grants.
pub const GENERIC_READ: u32 = 0x8000_0000;
/// `FILE_ALL_ACCESS`: full control of a CAPI key file.
pub const FILE_ALL_ACCESS: u32 = 0x001F_01FF;
/// `FILE_GENERIC_READ`: read of a CAPI key file.
pub const FILE_GENERIC_READ: u32 = 0x0012_0089;

/// LocalSystem and BUILTIN\Administrators (by SID: language independent).
pub const OWNERS: [&str; 2] = ["S-1-5-18", "S-1-5-32-544"];

/// `SE_DACL_PRESENT | SE_DACL_PROTECTED | SE_SELF_RELATIVE` (MS-DTYP §2.4.6).
const CONTROL: u16 = 0x0004 | 0x1000 | 0x8000;
/// `ACL_REVISION`.
const ACL_REVISION: u8 = 2;
/// `ACCESS_ALLOWED_ACE_TYPE`.
const ACCESS_ALLOWED: u8 = 0;
/// Header sizes: security descriptor (relative), ACL, ACE without its SID.
const SD_HEADER: usize = 20;
const ACL_HEADER: usize = 8;
const ACE_HEADER: usize = 8;

/// Which kind of key the descriptor is for (the access masks differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A CNG (KSP) key: generic rights.
    Cng,
    /// A legacy CAPI key: a file under `MachineKeys`, file rights.
    CapiFile,
}

impl KeyKind {
    fn masks(self) -> (u32, u32) {
        match self {
            KeyKind::Cng => (GENERIC_ALL, GENERIC_READ),
            KeyKind::CapiFile => (FILE_ALL_ACCESS, FILE_GENERIC_READ),
        }
    }
}

/// Parse a SID string (`S-1-5-32-544`) into its binary form (MS-DTYP
/// §2.4.2.2: revision, sub-authority count, 48-bit big-endian authority,
/// little-endian 32-bit sub-authorities).
pub fn sid_from_string(s: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("\"{s}\" is not a SID string (S-1-<authority>-<sub>…)");
    let mut parts = s.split('-');
    if !parts.next().is_some_and(|p| p.eq_ignore_ascii_case("S")) || parts.next() != Some("1") {
        return Err(bad());
    }
    let authority: u64 = parts.next().and_then(|a| a.parse().ok()).ok_or_else(bad)?;
    if authority >= 1 << 48 {
        return Err(bad());
    }
    let subs = parts
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<Result<Vec<u32>, String>>()?;
    // SID_MAX_SUB_AUTHORITIES.
    if subs.is_empty() || subs.len() > 15 {
        return Err(bad());
    }
    let mut out = vec![1, subs.len() as u8];
    out.extend_from_slice(&authority.to_be_bytes()[2..]);
    for sub in subs {
        out.extend_from_slice(&sub.to_le_bytes());
    }
    Ok(out)
}

/// The key's entries: owners full control, then each reader (deduplicated,
/// owners not repeated), as (SID string, access mask).
pub fn entries(readers: &[String], kind: KeyKind) -> Vec<(String, u32)> {
    let (full, read) = kind.masks();
    let mut out: Vec<(String, u32)> = OWNERS.iter().map(|s| ((*s).to_owned(), full)).collect();
    for r in readers {
        if !out.iter().any(|(s, _)| s.eq_ignore_ascii_case(r)) {
            out.push((r.to_ascii_uppercase(), read));
        }
    }
    out
}

/// A self-relative security descriptor holding only a protected DACL of
/// `entries` (no owner, group or SACL: `NCryptSetProperty` is called with
/// `DACL_SECURITY_INFORMATION`).
pub fn descriptor(entries: &[(String, u32)]) -> Result<Vec<u8>, String> {
    let mut aces = Vec::new();
    for (sid, mask) in entries {
        let sid = sid_from_string(sid)?;
        let size = u16::try_from(ACE_HEADER + sid.len()).map_err(|_| "ACE too large")?;
        aces.push(ACCESS_ALLOWED);
        aces.push(0); // no inheritance flags: a key has no children
        aces.extend_from_slice(&size.to_le_bytes());
        aces.extend_from_slice(&mask.to_le_bytes());
        aces.extend_from_slice(&sid);
    }
    let acl_size = u16::try_from(ACL_HEADER + aces.len()).map_err(|_| "ACL too large")?;
    let count = u16::try_from(entries.len()).map_err(|_| "too many ACEs")?;
    let mut sd = Vec::with_capacity(SD_HEADER + usize::from(acl_size));
    sd.push(1); // SECURITY_DESCRIPTOR_REVISION
    sd.push(0);
    sd.extend_from_slice(&CONTROL.to_le_bytes());
    sd.extend_from_slice(&0u32.to_le_bytes()); // owner
    sd.extend_from_slice(&0u32.to_le_bytes()); // group
    sd.extend_from_slice(&0u32.to_le_bytes()); // SACL
    sd.extend_from_slice(&(SD_HEADER as u32).to_le_bytes()); // DACL right after
    sd.push(ACL_REVISION);
    sd.push(0);
    sd.extend_from_slice(&acl_size.to_le_bytes());
    sd.extend_from_slice(&count.to_le_bytes());
    sd.extend_from_slice(&0u16.to_le_bytes());
    sd.extend_from_slice(&aces);
    Ok(sd)
}

/// SDDL of the same descriptor, as Windows renders it
/// (`ConvertSecurityDescriptorToStringSecurityDescriptorW`): well-known SIDs
/// by their alias, known masks by their right names.
pub fn sddl(entries: &[(String, u32)]) -> String {
    let mut out = "D:P".to_owned();
    for (sid, mask) in entries {
        let rights = match *mask {
            GENERIC_ALL => "GA".to_owned(),
            GENERIC_READ => "GR".to_owned(),
            FILE_ALL_ACCESS => "FA".to_owned(),
            FILE_GENERIC_READ => "FR".to_owned(),
            other => format!("0x{other:x}"),
        };
        let _ = write!(out, "(A;;{rights};;;{})", sid_alias(sid));
    }
    out
}

/// SDDL aliases of the SIDs a key descriptor usually names.
fn sid_alias(sid: &str) -> String {
    let alias = match sid.to_ascii_uppercase().as_str() {
        "S-1-5-18" => "SY",
        "S-1-5-19" => "LS",
        "S-1-5-20" => "NS",
        "S-1-5-32-544" => "BA",
        "S-1-5-32-545" => "BU",
        "S-1-5-11" => "AU",
        _ => return sid.to_ascii_uppercase(),
    };
    alias.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_strings_become_binary_sids() {
        assert_eq!(
            sid_from_string("S-1-5-18").ok(),
            Some(vec![1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0])
        );
        assert_eq!(
            sid_from_string("S-1-5-32-544").ok(),
            Some(vec![1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0])
        );
        // An app pool identity: S-1-5-82-<5 sub-authorities from SHA-1 of the name>.
        let pool = sid_from_string("S-1-5-82-3006700770-424185619-1745488364-794895919-4004696415")
            .unwrap_or_default();
        assert_eq!((pool.len(), pool[1], pool[8]), (8 + 6 * 4, 6, 82));
        assert_eq!(&pool[12..16], &3_006_700_770u32.to_le_bytes());
        for bad in [
            "",
            "S-1",
            "S-2-5-18",
            "X-1-5-18",
            "S-1-5-x",
            "S-1-281474976710656-1",
            "NETWORK SERVICE",
        ] {
            assert!(sid_from_string(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cng_descriptor_is_a_protected_self_relative_dacl() {
        let e = entries(
            &["S-1-5-20".to_owned(), "s-1-5-18".to_owned()],
            KeyKind::Cng,
        );
        assert_eq!(
            e,
            [
                ("S-1-5-18".to_owned(), GENERIC_ALL),
                ("S-1-5-32-544".to_owned(), GENERIC_ALL),
                ("S-1-5-20".to_owned(), GENERIC_READ),
            ]
        );
        let sd = descriptor(&e).unwrap_or_default();
        // Header: revision 1, control DACL_PRESENT|DACL_PROTECTED|SELF_RELATIVE,
        // no owner/group/SACL, DACL at 20.
        assert_eq!(
            &sd[..20],
            &[
                1, 0, 0x04, 0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0
            ]
        );
        // ACL: revision 2, size 8 + (8+12) + (8+16) + (8+12) = 72, 3 ACEs.
        assert_eq!(&sd[20..28], &[2, 0, 72, 0, 3, 0, 0, 0]);
        assert_eq!(sd.len(), 20 + 72);
        // First ACE: allowed, no flags, size 20, GENERIC_ALL, S-1-5-18.
        assert_eq!(&sd[28..36], &[0, 0, 20, 0, 0, 0, 0, 0x10]);
        assert_eq!(&sd[36..48], &[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]);
        // Last ACE: GENERIC_READ for NETWORK SERVICE.
        assert_eq!(&sd[72..80], &[0, 0, 20, 0, 0, 0, 0, 0x80]);
        assert_eq!(&sd[80..92], &[1, 1, 0, 0, 0, 0, 0, 5, 20, 0, 0, 0]);
        assert_eq!(sddl(&e), "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GR;;;NS)");
    }

    #[test]
    fn capi_file_descriptor_uses_file_rights() {
        let pool = "S-1-5-82-1-2-3-4-5".to_owned();
        let e = entries(std::slice::from_ref(&pool), KeyKind::CapiFile);
        assert_eq!(e[2], (pool.clone(), FILE_GENERIC_READ));
        assert_eq!(
            sddl(&e),
            "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FR;;;S-1-5-82-1-2-3-4-5)"
        );
        let sd = descriptor(&e).unwrap_or_default();
        // 3 ACEs; the reader's SID has 6 sub-authorities (8 + 24 bytes).
        assert_eq!(sd.len(), 20 + 8 + 20 + 24 + (8 + 32));
        assert_eq!(
            &sd[sd.len() - 40..sd.len() - 32],
            &[0, 0, 40, 0, 0x89, 0, 0x12, 0]
        );
    }

    #[test]
    fn no_readers_leaves_owners_only() {
        let e = entries(&[], KeyKind::Cng);
        assert_eq!(sddl(&e), "D:P(A;;GA;;;SY)(A;;GA;;;BA)");
        assert!(descriptor(&[("bogus".to_owned(), 1)]).is_err());
    }
}
