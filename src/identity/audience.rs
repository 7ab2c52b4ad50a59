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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn aud(url: &str, explicit: Option<&str>) -> Option<String> {
        for_vault(&Url::parse(url).unwrap(), explicit)
    }

    #[test]
    fn each_cloud() {
        assert_eq!(
            aud("https://v.vault.azure.net", None).as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            aud("https://V.Vault.Azure.NET/", None).as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            aud("https://v.vault.azure.cn", None).as_deref(),
            Some("https://vault.azure.cn")
        );
        assert_eq!(
            aud("https://v.vault.usgovcloudapi.net", None).as_deref(),
            Some("https://vault.usgovcloudapi.net")
        );
        assert_eq!(
            aud("https://h.managedhsm.azure.net", None).as_deref(),
            Some("https://managedhsm.azure.net")
        );
    }

    #[test]
    fn known_suffix_wins_over_explicit() {
        assert_eq!(
            aud("https://v.vault.azure.net", Some("https://other")).as_deref(),
            Some("https://vault.azure.net")
        );
    }

    #[test]
    fn unknown_hosts() {
        assert_eq!(aud("https://localhost:8443", None), None);
        // A look-alike suffix without the dot boundary is unknown.
        assert_eq!(aud("https://evilvault.azure.net.example.com", None), None);
        assert_eq!(aud("https://vault.azure.net", None), None);
        assert_eq!(
            aud("https://localhost:8443", Some("https://vault.azure.net")).as_deref(),
            Some("https://vault.azure.net")
        );
    }
}
