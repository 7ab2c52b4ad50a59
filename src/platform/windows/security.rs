//! Windows security descriptors for the files kvsync writes: account names
//! and SID strings resolved to SIDs, a DACL built from an `acl = [...]` list,
//! applied to an open handle as a *protected* DACL (no inherited entries),
//! and read back for comparison and tests.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::windows::io::AsRawHandle;

use windows_sys::Win32::Foundation::{
    ERROR_INSUFFICIENT_BUFFER, ERROR_SUCCESS, GetLastError, HANDLE, HLOCAL, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
    ConvertStringSidToSidW, GetSecurityInfo, SDDL_REVISION_1, SE_FILE_OBJECT, SetSecurityInfo,
};
use windows_sys::Win32::Security::{
    ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_REVISION, ACL_SIZE_INFORMATION, AclSizeInformation,
    AddAccessAllowedAceEx, CONTAINER_INHERIT_ACE, DACL_SECURITY_INFORMATION, GetAce,
    GetAclInformation, GetLengthSid, GetSecurityDescriptorControl, InitializeAcl,
    InitializeSecurityDescriptor, IsValidSid, LookupAccountNameW, OBJECT_INHERIT_ACE,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SE_DACL_PROTECTED,
    SECURITY_DESCRIPTOR, SID_NAME_USE, SetSecurityDescriptorControl, SetSecurityDescriptorDacl,
};
use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_ALL_ACCESS, FILE_GENERIC_EXECUTE, FILE_GENERIC_READ, FILE_GENERIC_WRITE,
};
use windows_sys::Win32::System::SystemServices::SECURITY_DESCRIPTOR_REVISION;

use crate::platform::acl::{Access, AclEntry};

use super::wide;

/// `ACCESS_ALLOWED_ACE_TYPE`.
const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;

/// A binary SID, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sid(Vec<u8>);

impl Sid {
    fn as_psid(&self) -> PSID {
        self.0.as_ptr() as PSID
    }

    /// Copy the SID at `psid`.
    ///
    /// # Safety
    /// `psid` must point to a valid SID.
    unsafe fn copy_from(psid: PSID) -> Sid {
        // SAFETY: the caller guarantees a valid SID; GetLengthSid reads its
        // header and the slice covers exactly its bytes.
        unsafe {
            let len = GetLengthSid(psid) as usize;
            Sid(std::slice::from_raw_parts(psid as *const u8, len).to_vec())
        }
    }

    /// `S-1-5-18` form.
    pub fn to_string_sid(&self) -> String {
        let mut out: *mut u16 = std::ptr::null_mut();
        // SAFETY: self holds a valid SID (built only by resolve/copy_from);
        // on success `out` is a LocalAlloc'ed NUL-terminated string we free.
        unsafe {
            if ConvertSidToStringSidW(self.as_psid(), &mut out) == 0 || out.is_null() {
                return "<invalid SID>".to_owned();
            }
            let mut len = 0;
            while *out.add(len) != 0 {
                len += 1;
            }
            let s = String::from_utf16_lossy(std::slice::from_raw_parts(out, len));
            LocalFree(out as HLOCAL);
            s
        }
    }
}

/// Resolve an account name (`SYSTEM`, `BUILTIN\Administrators`,
/// `IIS AppPool\Site`) or a SID string (`S-1-5-18`).
pub fn resolve(principal: &str) -> io::Result<Sid> {
    if principal.len() > 2 && principal[..2].eq_ignore_ascii_case("S-") {
        return string_sid(principal);
    }
    lookup_account(principal)
}

fn string_sid(s: &str) -> io::Result<Sid> {
    let w = wide(s);
    let mut psid: PSID = std::ptr::null_mut();
    // SAFETY: `w` is NUL-terminated; on success psid is LocalAlloc'ed, copied
    // then freed.
    unsafe {
        if ConvertStringSidToSidW(w.as_ptr(), &mut psid) == 0 {
            return Err(io::Error::last_os_error());
        }
        let sid = Sid::copy_from(psid);
        LocalFree(psid as HLOCAL);
        Ok(sid)
    }
}

fn lookup_account(name: &str) -> io::Result<Sid> {
    let w = wide(name);
    let mut sid = vec![0u8; 68];
    let mut domain = vec![0u16; 256];
    // Two attempts: the first may report the sizes needed.
    for _ in 0..2 {
        let mut sid_len = sid.len() as u32;
        let mut dom_len = domain.len() as u32;
        let mut usage: SID_NAME_USE = 0;
        // SAFETY: buffers and their lengths match; `w` is NUL-terminated.
        let ok = unsafe {
            LookupAccountNameW(
                std::ptr::null(),
                w.as_ptr(),
                sid.as_mut_ptr() as PSID,
                &mut sid_len,
                domain.as_mut_ptr(),
                &mut dom_len,
                &mut usage,
            )
        };
        if ok != 0 {
            sid.truncate(sid_len as usize);
            return Ok(Sid(sid));
        }
        // SAFETY: plain FFI call.
        if unsafe { GetLastError() } != ERROR_INSUFFICIENT_BUFFER {
            return Err(io::Error::last_os_error());
        }
        sid.resize(sid_len.max(sid.len() as u32) as usize, 0);
        domain.resize(dom_len.max(domain.len() as u32) as usize, 0);
    }
    Err(io::Error::other(
        "account lookup kept asking for a larger buffer",
    ))
}

/// The access mask of `R` / `M` / `F`.
pub fn access_mask(access: Access) -> u32 {
    match access {
        Access::Read => FILE_GENERIC_READ | FILE_GENERIC_EXECUTE,
        Access::Modify => FILE_GENERIC_READ | FILE_GENERIC_WRITE | FILE_GENERIC_EXECUTE | DELETE,
        Access::Full => FILE_ALL_ACCESS,
    }
}

/// One allowed entry, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ace {
    pub sid: Sid,
    pub mask: u32,
    /// ACE flags (inheritance bits for directories).
    pub flags: u8,
}

/// A resolved `acl` list, ready to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAcl {
    pub aces: Vec<Ace>,
}

/// What kind of object a DACL is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    File,
    /// Entries also inherited by files and directories created inside.
    Directory,
}

/// Resolve every entry; the error names the account that failed.
pub fn resolve_acl(entries: &[AclEntry], kind: ObjectKind) -> io::Result<ResolvedAcl> {
    let flags = match kind {
        ObjectKind::File => 0,
        ObjectKind::Directory => (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE) as u8,
    };
    let aces = entries
        .iter()
        .map(|e| {
            let sid = resolve(&e.principal).map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("acl entry \"{e}\": cannot resolve the account: {err}"),
                )
            })?;
            Ok(Ace {
                sid,
                mask: access_mask(e.access),
                flags,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(ResolvedAcl { aces })
}

/// A built ACL (the bytes `SetSecurityInfo` takes), 4-byte aligned.
pub struct Dacl(Vec<u32>);

impl Dacl {
    fn as_ptr(&self) -> *const ACL {
        self.0.as_ptr() as *const ACL
    }
}

/// Build the DACL: one access-allowed ACE per entry, in order.
pub fn build_dacl(acl: &ResolvedAcl) -> io::Result<Dacl> {
    // ACL header 8 bytes; each ACE: header 4 + mask 4 + SID.
    let size: usize = 8 + acl.aces.iter().map(|a| 8 + a.sid.0.len()).sum::<usize>();
    let size = size.div_ceil(4) * 4;
    let mut buf = vec![0u32; size / 4];
    let pacl = buf.as_mut_ptr() as *mut ACL;
    // SAFETY: `buf` is `size` bytes, 4-byte aligned, and outlives the calls;
    // every SID is valid (resolved by the system).
    unsafe {
        if InitializeAcl(pacl, size as u32, ACL_REVISION) == 0 {
            return Err(io::Error::last_os_error());
        }
        for ace in &acl.aces {
            if IsValidSid(ace.sid.as_psid()) == 0 {
                return Err(io::Error::other("invalid SID"));
            }
            if AddAccessAllowedAceEx(
                pacl,
                ACL_REVISION,
                ace.flags as _,
                ace.mask,
                ace.sid.as_psid(),
            ) == 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(Dacl(buf))
}

/// Set `dacl` on the open file or directory as a protected DACL (inherited
/// entries removed). The handle needs `WRITE_DAC`.
pub fn apply(handle: &impl AsRawHandle, dacl: &Dacl) -> io::Result<()> {
    // SAFETY: the handle is open for the call's duration; the DACL is valid.
    let rc = unsafe {
        SetSecurityInfo(
            handle.as_raw_handle() as HANDLE,
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            dacl.as_ptr(),
            std::ptr::null(),
        )
    };
    if rc == ERROR_SUCCESS {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc as i32))
    }
}

/// A DACL read back from an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBack {
    /// `SE_DACL_PROTECTED` is set: no inherited entries apply.
    pub protected: bool,
    /// Access-allowed entries in order (other ACE types are listed with
    /// their type in `other`).
    pub aces: Vec<Ace>,
    /// Types of entries that are not access-allowed (deny, audit, ...).
    pub other: Vec<u8>,
}

impl ReadBack {
    /// Whether the object's DACL is exactly `acl`, protected.
    pub fn matches(&self, acl: &ResolvedAcl) -> bool {
        self.protected && self.other.is_empty() && self.aces == acl.aces
    }
}

/// The entries of an ACL (`protected` false: that is a property of the
/// descriptor holding it). A NULL ACL (everyone, everything) is listed as
/// an `other` entry.
fn parse_acl(pdacl: *const ACL) -> io::Result<ReadBack> {
    let mut out = ReadBack {
        protected: false,
        aces: Vec::new(),
        other: Vec::new(),
    };
    if pdacl.is_null() {
        out.other.push(u8::MAX);
        return Ok(out);
    }
    // SAFETY: zero-initialised plain data filled by the call.
    let mut info: ACL_SIZE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: pdacl is a valid ACL (caller); info has the right size.
    let ok = unsafe {
        GetAclInformation(
            pdacl,
            &mut info as *mut _ as *mut c_void,
            std::mem::size_of::<ACL_SIZE_INFORMATION>() as u32,
            AclSizeInformation,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    for i in 0..info.AceCount {
        let mut pace: *mut c_void = std::ptr::null_mut();
        // SAFETY: i < AceCount; pace points into the ACL.
        if unsafe { GetAce(pdacl, i, &mut pace) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: every ACE starts with an ACE_HEADER.
        let header = unsafe { &*(pace as *const ACE_HEADER) };
        if header.AceType != ACCESS_ALLOWED_ACE_TYPE {
            out.other.push(header.AceType);
            continue;
        }
        // SAFETY: an access-allowed ACE; its SID starts at SidStart.
        let ace = unsafe { &*(pace as *const ACCESS_ALLOWED_ACE) };
        // SAFETY: the SID lies inside the ACE.
        let sid = unsafe { Sid::copy_from(&ace.SidStart as *const u32 as PSID) };
        out.aces.push(Ace {
            sid,
            mask: ace.Mask,
            flags: header.AceFlags,
        });
    }
    Ok(out)
}

/// The entries of a built DACL, read back through the ACL API.
pub fn parse(dacl: &Dacl) -> io::Result<ReadBack> {
    let mut out = parse_acl(dacl.as_ptr())?;
    out.protected = true;
    Ok(out)
}

/// The SDDL form (`D:P(A;;FA;;;SY)(A;;0x1200a9;;;BU)`) of a protected
/// descriptor holding `dacl`, as Windows itself renders it (logs, tests;
/// compare with `icacls` / `Get-Acl` output on a host).
pub fn sddl(dacl: &Dacl) -> io::Result<String> {
    // SAFETY: zero-initialised plain data, initialised by the call.
    let mut sd: SECURITY_DESCRIPTOR = unsafe { std::mem::zeroed() };
    let psd = &mut sd as *mut SECURITY_DESCRIPTOR as PSECURITY_DESCRIPTOR;
    let mut out: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sd` and `dacl` outlive every call; `out` is LocalAlloc'ed
    // by the conversion and freed here.
    unsafe {
        if InitializeSecurityDescriptor(psd, SECURITY_DESCRIPTOR_REVISION) == 0
            || SetSecurityDescriptorDacl(psd, 1, dacl.as_ptr(), 0) == 0
            || SetSecurityDescriptorControl(psd, SE_DACL_PROTECTED, SE_DACL_PROTECTED) == 0
            || ConvertSecurityDescriptorToStringSecurityDescriptorW(
                psd,
                SDDL_REVISION_1,
                DACL_SECURITY_INFORMATION,
                &mut out,
                std::ptr::null_mut(),
            ) == 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut len = 0;
        while *out.add(len) != 0 {
            len += 1;
        }
        let s = String::from_utf16_lossy(std::slice::from_raw_parts(out, len));
        LocalFree(out as HLOCAL);
        Ok(s)
    }
}

/// Read the DACL of an open handle (needs `READ_CONTROL`).
pub fn read(handle: &impl AsRawHandle) -> io::Result<ReadBack> {
    let mut pdacl: *mut ACL = std::ptr::null_mut();
    let mut psd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: out-pointers are valid; on success psd is LocalAlloc'ed and
    // freed below, pdacl points into it.
    let rc = unsafe {
        GetSecurityInfo(
            handle.as_raw_handle() as HANDLE,
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut pdacl,
            std::ptr::null_mut(),
            &mut psd,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    let result = (|| {
        let mut control: u16 = 0;
        let mut revision: u32 = 0;
        // SAFETY: psd is the valid descriptor just returned.
        if unsafe { GetSecurityDescriptorControl(psd, &mut control, &mut revision) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = parse_acl(pdacl)?;
        out.protected = control & SE_DACL_PROTECTED != 0;
        Ok(out)
    })();
    // SAFETY: psd came from GetSecurityInfo.
    unsafe { LocalFree(psd as HLOCAL) };
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::platform::acl::{SID_ADMINISTRATORS, SID_SYSTEM, default_acl, parse_entry};

    #[test]
    fn resolves_well_known_sids_and_names() {
        assert_eq!(resolve(SID_SYSTEM).unwrap().to_string_sid(), SID_SYSTEM);
        assert_eq!(
            resolve(SID_ADMINISTRATORS).unwrap().to_string_sid(),
            SID_ADMINISTRATORS
        );
        assert_eq!(resolve("SYSTEM").unwrap().to_string_sid(), SID_SYSTEM);
        assert!(resolve(r"NoSuchDomain\no-such-account-kvsync").is_err());
        assert!(resolve("S-1-bogus").is_err());
    }

    #[test]
    fn built_dacl_reads_back_exact_and_protected() {
        let entries = vec![
            parse_entry("SYSTEM:F").unwrap(),
            parse_entry("S-1-5-32-545:R").unwrap(),
            parse_entry(r"BUILTIN\Administrators:M").unwrap(),
        ];
        let acl = resolve_acl(&entries, ObjectKind::File).unwrap();
        assert_eq!(acl.aces[0].mask, FILE_ALL_ACCESS);
        assert_eq!(acl.aces[1].sid.to_string_sid(), "S-1-5-32-545");
        let dacl = build_dacl(&acl).unwrap();
        // Read back through the ACL API: exactly the entries, in order.
        let back = parse(&dacl).unwrap();
        assert!(back.matches(&acl), "{back:?}");
        assert!(back.other.is_empty());
        let default = resolve_acl(&default_acl(), ObjectKind::File).unwrap();
        assert!(!back.matches(&default));
        // As Windows renders it: protected (P), no inherited entries.
        assert_eq!(
            sddl(&dacl).unwrap(),
            "D:P(A;;FA;;;SY)(A;;0x1200a9;;;BU)(A;;0x1301bf;;;BA)"
        );
        let dir = resolve_acl(&default_acl(), ObjectKind::Directory).unwrap();
        assert_eq!(
            sddl(&build_dacl(&dir).unwrap()).unwrap(),
            "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
        );
        // Applying it to a file succeeds (Windows enforces it; Wine accepts
        // and ignores it, which only a Windows host can tell apart).
        let d = tempfile::tempdir().unwrap();
        let file = crate::write::open_for_dacl(&d.path().join("f.txt")).unwrap();
        apply(&file, &dacl).unwrap();
        assert!(read(&file).is_ok());
    }

    #[test]
    fn directory_entries_are_inheritable() {
        let acl = resolve_acl(&default_acl(), ObjectKind::Directory).unwrap();
        assert!(
            acl.aces
                .iter()
                .all(|a| a.flags == (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE) as u8)
        );
    }
}
