//! Who is answering on the Arc endpoint? Any local user can listen on a
//! loopback address the Arc agent does not hold (e.g. `[::1]:40342` while
//! himds listens on 127.0.0.1 only), relay a genuine challenge from the real
//! agent and collect kvsync's `Authorization: Basic <key>`. Before the key is
//! sent, the owner of the server end of the very connection that will carry
//! it is looked up (Linux: `/proc/net/tcp{,6}`, whose `uid` column of an
//! accepted socket is its listener's owner) and must be root or the Arc
//! agent's user (`himds`, or `[auth] arc_agent_user`).
//!
//! Elsewhere (no `/proc/net`) the check reports [`Owner::Unknown`] and the
//! caller proceeds: the Windows port adds its own lookup behind
//! [`server_owner`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The owner of the server end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Uid(u32),
    /// The platform cannot tell (no `/proc/net/tcp`).
    Unknown,
}

/// Owner of the socket whose local address is `server` and remote address
/// is `client` (the server end of our connection), from `/proc/net/tcp`
/// and `/proc/net/tcp6`.
#[cfg(target_os = "linux")]
pub fn server_owner(client: SocketAddr, server: SocketAddr) -> std::io::Result<Owner> {
    let mut seen_table = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        seen_table = true;
        if let Some(uid) = find_uid(&text, server, client) {
            return Ok(Owner::Uid(uid));
        }
    }
    if seen_table {
        Err(std::io::Error::other(
            "the server end of the connection is not in /proc/net/tcp",
        ))
    } else {
        Ok(Owner::Unknown)
    }
}

#[cfg(not(target_os = "linux"))]
pub fn server_owner(_client: SocketAddr, _server: SocketAddr) -> std::io::Result<Owner> {
    Ok(Owner::Unknown)
}

/// The `uid` of the row with this local and remote address.
pub fn find_uid(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (local, remote) = (canonical(local), canonical(remote));
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let l = parse_addr(cols.get(1)?)?;
        let r = parse_addr(cols.get(2)?)?;
        (canonical(l) == local && canonical(r) == remote)
            .then(|| cols.get(7)?.parse().ok())
            .flatten()
    })
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// `0100007F:9C46` (IPv4) or 32 hex digits + port (IPv6): each 32-bit word
/// in the kernel's byte order.
pub fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(w, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The users whose listeners may receive the challenge key: root and the
/// Arc agent's user (`name`, default `himds`) when it exists.
pub fn accepted_uids(name: Option<&str>) -> Vec<u32> {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut uids = vec![0];
    #[cfg(unix)]
    if let Ok(Some(u)) = nix::unistd::User::from_name(name.unwrap_or("himds")) {
        uids.push(u.uid.as_raw());
    }
    #[cfg(not(unix))]
    let _ = name;
    uids
}

/// A user id with its name when known, for messages.
pub fn describe(uid: u32) -> String {
    #[cfg(unix)]
    if let Ok(Some(u)) = nix::unistd::User::from_uid(uid.into()) {
        return format!("uid {uid} ({})", u.name);
    }
    format!("uid {uid}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_kernel_rows() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:9C46 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000   999        0 1 1 0\n";
        let local: SocketAddr = "127.0.0.1:40006".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:54000".parse().unwrap();
        assert_eq!(find_uid(table, local, remote), Some(999));
        assert_eq!(find_uid(table, remote, local), None);
        let v6 = parse_addr("00000000000000000000000001000000:9C46").unwrap();
        #[cfg(target_endian = "little")]
        assert_eq!(v6, "[::1]:40006".parse().unwrap());
        assert_eq!(parse_addr("zz:1"), None);
        assert_eq!(parse_addr("0100007F"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_the_owner_of_a_live_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let stream = std::net::TcpStream::connect(server).unwrap();
        let client = stream.local_addr().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(server_owner(client, server).unwrap(), Owner::Uid(me));
    }
}
