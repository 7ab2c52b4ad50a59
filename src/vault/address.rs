//! Every rule about a vault URL, in one place (PROTOCOL.md §5, SPEC.md):
//!
//! * an `https://` bare origin: a host (and port), no path, query, fragment
//!   or credentials;
//! * a token audience: derived from a known Key Vault DNS suffix
//!   ([`KNOWN_SUFFIXES`]), else the explicit `[auth] audience`, else the
//!   URL is refused, so a token is never sent to a host it was not meant for;
//! * a template over instance metadata
//!   (`https://{{ instance.tags.keyvault }}.vault.azure.net`) may only use
//!   `{{ instance.<field>[.<field>...] }}` placeholders, each filled with a
//!   DNS-name fragment (letters, digits, `-`, `.`), so a tag can never inject
//!   a path, a port, credentials or another scheme.
//!
//! A URL is checked by [`VaultUrl::parse`]: at config load (a template with
//! a sample value in each placeholder) and, for a template, again after the
//! round's instance metadata filled it ([`resolve_template`]). One set of
//! messages ([`VaultUrlError`]).

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

const EXPECTED: &str = "expected an https:// URL such as \"https://myvault.vault.azure.net\"";

/// Why a text is not a usable vault URL (or template).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VaultUrlError {
    #[error("{EXPECTED} ({0})")]
    NotUrl(String),
    #[error("{EXPECTED}; the scheme {0}:// would expose tokens and secrets")]
    NotHttps(String),
    #[error("{EXPECTED}, with no path, query, fragment or credentials")]
    NotBareOrigin,
    #[error(
        "{host} is not a known Key Vault host (*{}); set [auth] audience to the token audience it expects",
        KNOWN_SUFFIXES.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", *")
    )]
    UnknownHost { host: String },
    #[error(
        "`{{{{ {0} }}}}`: only `{{{{ instance.<field> }}}}` placeholders (e.g. instance.tags.keyvault) are allowed in a vault URL"
    )]
    Placeholder(String),
    #[error("a `{{{{` is not closed by `}}}}`")]
    Unclosed,
    #[error("a `}}}}` has no opening `{{{{`")]
    Unopened,
    #[error("`{{{{ {0} }}}}` is not a DNS name fragment (letters, digits, `-`, `.`)")]
    NotDnsFragment(String),
    #[error("the vault {0} uses instance metadata, which is not available")]
    NoInstance(String),
    #[error("instance.{0} is not in the instance metadata")]
    MissingField(String),
    #[error("instance.{0} is not a string")]
    NotString(String),
    /// A template filled with instance metadata gave an invalid URL.
    #[error("the vault {template} became {text}: {error}")]
    Became {
        template: String,
        text: String,
        error: Box<VaultUrlError>,
    },
}

/// A checked vault URL and the token audience it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultUrl {
    url: Url,
    audience: String,
}

impl VaultUrl {
    /// Check `text` against every rule; `explicit` is `[auth] audience`.
    pub fn parse(text: &str, explicit: Option<&str>) -> Result<Self, VaultUrlError> {
        let url = Url::parse(text.trim()).map_err(|e| VaultUrlError::NotUrl(e.to_string()))?;
        Self::from_url(url, explicit)
    }

    /// Check a parsed URL against every rule.
    pub fn from_url(url: Url, explicit: Option<&str>) -> Result<Self, VaultUrlError> {
        if url.scheme() != "https" {
            return Err(VaultUrlError::NotHttps(url.scheme().to_owned()));
        }
        if !bare_origin(&url) {
            return Err(VaultUrlError::NotBareOrigin);
        }
        let audience = audience_for(&url, explicit).ok_or_else(|| VaultUrlError::UnknownHost {
            host: url.host_str().unwrap_or_default().to_owned(),
        })?;
        Ok(Self { url, audience })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn into_url(self) -> Url {
        self.url
    }
}

/// `url` names a host and nothing more: no credentials, path, query or
/// fragment.
fn bare_origin(url: &Url) -> bool {
    url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.path() == "/"
}

/// The audience for `vault`: a known suffix's, else the explicit one.
/// `None` when the host is unknown and no explicit audience was configured.
pub fn audience_for(vault: &Url, explicit: Option<&str>) -> Option<String> {
    let host = vault.host_str()?.to_ascii_lowercase();
    for (suffix, audience) in KNOWN_SUFFIXES {
        if host.ends_with(suffix) {
            return Some((*audience).to_owned());
        }
    }
    explicit.map(str::to_owned)
}

/// Whether `s` is a template (has a `{{`).
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

/// Check a template at config load: placeholders well-formed, and the URL
/// valid with each placeholder replaced by a sample label.
pub fn check_template(template: &str, explicit: Option<&str>) -> Result<(), VaultUrlError> {
    let sample = substitute(template, |_| Ok("sample".to_owned()))?;
    VaultUrl::parse(&sample, explicit).map(|_| ())
}

/// Fill a template with `instance` (the normalised `compute` object) and
/// check the result as at config load.
pub fn resolve_template(
    template: &str,
    instance: Option<&serde_json::Value>,
    explicit: Option<&str>,
) -> Result<VaultUrl, VaultUrlError> {
    let instance = instance.ok_or_else(|| VaultUrlError::NoInstance(template.to_owned()))?;
    let text = substitute(template, |path| lookup(instance, path))?;
    VaultUrl::parse(&text, explicit).map_err(|e| VaultUrlError::Became {
        template: template.to_owned(),
        text,
        error: Box::new(e),
    })
}

/// Replace each `{{ instance.a.b }}` with `value(["a","b"])`.
fn substitute(
    template: &str,
    mut value: impl FnMut(&[&str]) -> Result<String, VaultUrlError>,
) -> Result<String, VaultUrlError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(VaultUrlError::Unclosed)?;
        let expr = after[..end].trim();
        let path: Vec<&str> = expr.split('.').collect();
        let ok = path.len() >= 2
            && path[0] == "instance"
            && path[1..]
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !ok {
            return Err(VaultUrlError::Placeholder(expr.to_owned()));
        }
        let v = value(&path[1..])?;
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(VaultUrlError::NotDnsFragment(expr.to_owned()));
        }
        out.push_str(&v);
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err(VaultUrlError::Unopened);
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(instance: &serde_json::Value, path: &[&str]) -> Result<String, VaultUrlError> {
    let mut v = instance;
    for p in path {
        v = v
            .get(*p)
            .ok_or_else(|| VaultUrlError::MissingField(path.join(".")))?;
    }
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(VaultUrlError::NotString(path.join("."))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    const T: &str = "https://{{ instance.tags.keyvault }}.vault.azure.net";

    fn aud(url: &str, explicit: Option<&str>) -> Option<String> {
        audience_for(&Url::parse(url).unwrap(), explicit)
    }

    #[test]
    fn each_cloud() {
        for (url, audience) in [
            ("https://v.vault.azure.net", "https://vault.azure.net"),
            ("https://V.Vault.Azure.NET/", "https://vault.azure.net"),
            ("https://v.vault.azure.cn", "https://vault.azure.cn"),
            (
                "https://v.vault.usgovcloudapi.net",
                "https://vault.usgovcloudapi.net",
            ),
            (
                "https://h.managedhsm.azure.net",
                "https://managedhsm.azure.net",
            ),
        ] {
            assert_eq!(aud(url, None).as_deref(), Some(audience), "{url}");
            assert_eq!(
                VaultUrl::parse(url, None).unwrap().audience(),
                audience,
                "{url}"
            );
        }
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
        let e = VaultUrl::parse("https://localhost:8443", None).unwrap_err();
        assert!(e.to_string().contains("not a known Key Vault host"), "{e}");
    }

    #[test]
    fn only_bare_https_origins() {
        for bad in [
            "http://v.vault.azure.net",
            "https://v.vault.azure.net/path",
            "https://v.vault.azure.net/?q=1",
            "https://u:p@v.vault.azure.net",
            "not a url",
        ] {
            assert!(VaultUrl::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_and_validates() {
        let inst = json!({"tags": {"keyvault": "kv-prod"}, "name": "h"});
        assert_eq!(
            resolve_template(T, Some(&inst), None)
                .unwrap()
                .url()
                .as_str(),
            "https://kv-prod.vault.azure.net/"
        );
        assert!(check_template(T, None).is_ok());
        let e = resolve_template(T, None, None).unwrap_err().to_string();
        assert!(e.contains("not available"), "{e}");
        let e = resolve_template(T, Some(&json!({"tags": {}})), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("instance.tags.keyvault"), "{e}");
    }

    #[test]
    fn injection_is_refused() {
        for bad in ["evil.com/x", "a@b", "x:1", "", "a b"] {
            let inst = json!({"tags": {"keyvault": bad}});
            assert!(resolve_template(T, Some(&inst), None).is_err(), "{bad}");
        }
        // A tag naming another domain fails the suffix check.
        let inst = json!({"tags": {"kv": "evil.example.com"}});
        assert!(resolve_template("https://{{ instance.tags.kv }}", Some(&inst), None).is_err());
        assert!(check_template("https://{{ secrets.x }}.vault.azure.net", None).is_err());
        assert!(
            check_template("https://{{ instance.name | upper }}.vault.azure.net", None).is_err()
        );
        assert!(check_template("http://{{ instance.name }}.vault.azure.net", None).is_err());
        assert!(check_template("https://{{ instance.name .vault.azure.net", None).is_err());
    }
}
