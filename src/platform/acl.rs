//! The `acl = ["SYSTEM:F", "BUILTIN\\Administrators:F", "IIS AppPool\\Site:R"]`
//! key of a `[[file]]` (Windows): parsed here on every platform so the
//! syntax is checked (and tested) everywhere; applied by
//! `platform/windows/security.rs` as a protected DACL.

use std::fmt;

/// Access granted by one entry: `R` read, `M` modify, `F` full control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Read,
    Modify,
    Full,
}

impl Access {
    pub fn letter(self) -> char {
        match self {
            Access::Read => 'R',
            Access::Modify => 'M',
            Access::Full => 'F',
        }
    }
}

/// One access-allowed entry: an account name (`SYSTEM`,
/// `BUILTIN\Administrators`, `IIS AppPool\Site`) or a SID string
/// (`S-1-5-18`), and what it may do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclEntry {
    pub principal: String,
    pub access: Access,
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal, self.access.letter())
    }
}

/// Well-known SID of LocalSystem.
pub const SID_SYSTEM: &str = "S-1-5-18";
/// Well-known SID of BUILTIN\Administrators.
pub const SID_ADMINISTRATORS: &str = "S-1-5-32-544";

/// The DACL when `acl` is absent: SYSTEM and Administrators full, nobody
/// else (by SID, so it never depends on the system's language).
pub fn default_acl() -> Vec<AclEntry> {
    vec![
        AclEntry {
            principal: SID_SYSTEM.to_owned(),
            access: Access::Full,
        },
        AclEntry {
            principal: SID_ADMINISTRATORS.to_owned(),
            access: Access::Full,
        },
    ]
}

/// Parse `PRINCIPAL:R|M|F` (split at the last `:`; the letter is
/// case-insensitive). The error says what was expected.
pub fn parse_entry(s: &str) -> Result<AclEntry, String> {
    let expected = "expected \"ACCOUNT:R\", \"ACCOUNT:M\" or \"ACCOUNT:F\" (an account name such as \"BUILTIN\\\\Administrators\" or a SID such as \"S-1-5-18\"; R read, M modify, F full control)";
    let Some((principal, letter)) = s.rsplit_once(':') else {
        return Err(format!("{expected}, found \"{s}\""));
    };
    let principal = principal.trim();
    if principal.is_empty() {
        return Err(format!("{expected}, found no account before `:`"));
    }
    let access = match letter.trim().to_ascii_uppercase().as_str() {
        "R" => Access::Read,
        "M" => Access::Modify,
        "F" => Access::Full,
        other => return Err(format!("{expected}, found access \"{other}\"")),
    };
    Ok(AclEntry {
        principal: principal.to_owned(),
        access,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_names_sids_and_letters() {
        let e = parse_entry(r"IIS AppPool\Site:r").unwrap();
        assert_eq!(e.principal, r"IIS AppPool\Site");
        assert_eq!(e.access, Access::Read);
        assert_eq!(parse_entry("S-1-5-18:F").unwrap().access, Access::Full);
        assert_eq!(
            parse_entry(r"BUILTIN\Administrators : M").unwrap(),
            AclEntry {
                principal: r"BUILTIN\Administrators".into(),
                access: Access::Modify
            }
        );
        // A principal containing ':' splits at the last one.
        assert_eq!(parse_entry("a:b:R").unwrap().principal, "a:b");
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in ["SYSTEM", ":F", "SYSTEM:X", "SYSTEM:", "SYSTEM:RW"] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_is_system_and_administrators_full() {
        let d = default_acl();
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|e| e.access == Access::Full));
        assert_eq!(d[0].principal, SID_SYSTEM);
        assert_eq!(d[1].principal, SID_ADMINISTRATORS);
    }
}
