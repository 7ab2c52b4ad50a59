//! Token audience for a vault host, derived from its DNS suffix
//! (PROTOCOL.md §5), so a token is never sent to a host it was not meant for.

use url::Url;

/// Known Key Vault DNS suffixes and their audiences (PROTOCOL.md §5).
pub const KNOWN_SUFFIXES: &[(&str, &str)] = &[
    (".vault.azure.net", "https://vault.azure.net"),
    (".vault.azure.cn", "https://vault.azure.cn"),
    (
        ".vault.usgovcloudapi.net",
        "https://vault.usgovcloudapi.net",
    ),
    (".managedhsm.azure.net", "https://managedhsm.azure.net"),
];

/// The audience for `vault`, or the explicit one for unknown hosts. `None`
/// when the host is unknown and no explicit audience was configured.
pub fn for_vault(vault: &Url, explicit: Option<&str>) -> Option<String> {
    let host = vault.host_str()?.to_ascii_lowercase();
    for (suffix, audience) in KNOWN_SUFFIXES {
        if host.ends_with(suffix) {
            return Some((*audience).to_owned());
        }
    }
    explicit.map(str::to_owned)
}
