//! A vault address: a fixed `https://` URL, or a template over the host's
//! instance metadata such as
//! `https://{{ instance.tags.keyvault }}.vault.azure.net`, resolved each
//! round (after instance metadata is fetched) and validated after
//! substitution exactly like a fixed URL: https, no path/query/credentials,
//! a known Key Vault suffix (or the configured `[auth] audience`).
//!
//! Invariants: a template may only use `{{ instance.<field>[.<field>...] }}`
//! placeholders (no filters, no secrets); each substituted value must be a
//! DNS-name fragment (letters, digits, `-`, `.`), so a tag can never inject
//! a path, a port, credentials or another scheme.

use url::Url;

/// A vault URL or a template producing one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultRef {
    Url(Url),
    /// The template text, as written.
    Template(String),
}

impl From<Url> for VaultRef {
    fn from(url: Url) -> Self {
        VaultRef::Url(url)
    }
}

impl std::fmt::Display for VaultRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultRef::Url(u) => write!(f, "{u}"),
            VaultRef::Template(t) => write!(f, "{t}"),
        }
    }
}

impl VaultRef {
    /// The fixed URL, if this is not a template.
    pub fn as_url(&self) -> Option<&Url> {
        match self {
            VaultRef::Url(u) => Some(u),
            VaultRef::Template(_) => None,
        }
    }

    /// The fixed URL's host; `None` for a template.
    pub fn host_str(&self) -> Option<&str> {
        self.as_url().and_then(Url::host_str)
    }

    /// The URL as text, or the template as written.
    pub fn as_str(&self) -> &str {
        match self {
            VaultRef::Url(u) => u.as_str(),
            VaultRef::Template(t) => t,
        }
    }

    pub fn is_template(&self) -> bool {
        matches!(self, VaultRef::Template(_))
    }

    /// The URL for this round. Templates need `instance` (the normalised
    /// `compute` object); the result is validated as at config load.
    pub fn resolve(
        &self,
        instance: Option<&serde_json::Value>,
        audience: Option<&str>,
    ) -> Result<Url, String> {
        let template = match self {
            VaultRef::Url(u) => return Ok(u.clone()),
            VaultRef::Template(t) => t,
        };
        let instance = instance.ok_or_else(|| {
            format!("the vault {template} uses instance metadata, which is not available")
        })?;
        let text = substitute(template, |path| lookup(instance, path))?;
        validate(&text, audience).map_err(|e| format!("the vault {template} became {text}: {e}"))
    }
}

/// Whether `s` is a template (has a `{{`).
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

/// Check a template at config load: placeholders well-formed, and the URL
/// valid with each placeholder replaced by a sample label.
pub fn check_template(template: &str, audience: Option<&str>) -> Result<(), String> {
    let sample = substitute(template, |_| Ok("sample".to_owned()))?;
    validate(&sample, audience).map(|_| ())
}

/// Replace each `{{ instance.a.b }}` with `value(["a","b"])`.
fn substitute(
    template: &str,
    mut value: impl FnMut(&[&str]) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "a `{{` is not closed by `}}`".to_owned())?;
        let expr = after[..end].trim();
        let path: Vec<&str> = expr.split('.').collect();
        let ok = path.len() >= 2
            && path[0] == "instance"
            && path[1..]
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !ok {
            return Err(format!(
                "`{{{{ {expr} }}}}`: only `{{{{ instance.<field> }}}}` placeholders (e.g. instance.tags.keyvault) are allowed in a vault URL"
            ));
        }
        let v = value(&path[1..])?;
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!(
                "`{{{{ {expr} }}}}` is not a DNS name fragment (letters, digits, `-`, `.`)"
            ));
        }
        out.push_str(&v);
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err("a `}}` has no opening `{{`".to_owned());
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(instance: &serde_json::Value, path: &[&str]) -> Result<String, String> {
    let mut v = instance;
    for p in path {
        v = v.get(*p).ok_or_else(|| {
            format!(
                "instance.{} is not in the instance metadata",
                path.join(".")
            )
        })?;
    }
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("instance.{} is not a string", path.join("."))),
    }
}

/// The rules of a fixed vault URL: https, host only, known audience.
fn validate(text: &str, audience: Option<&str>) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err("not an https:// URL".to_owned());
    }
    if !crate::config::resolve::bare_origin(&url) {
        return Err(
            "expected https://<host> with no path, query, fragment or credentials".to_owned(),
        );
    }
    if crate::identity::audience::for_vault(&url, audience).is_none() {
        return Err(format!(
            "{} is not a known Key Vault host; set [auth] audience to the token audience it expects",
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    const T: &str = "https://{{ instance.tags.keyvault }}.vault.azure.net";

    #[test]
    fn resolves_and_validates() {
        let v = VaultRef::Template(T.into());
        let inst = json!({"tags": {"keyvault": "kv-prod"}, "name": "h"});
        assert_eq!(
            v.resolve(Some(&inst), None).unwrap().as_str(),
            "https://kv-prod.vault.azure.net/"
        );
        assert!(check_template(T, None).is_ok());
        let e = v.resolve(None, None).unwrap_err();
        assert!(e.contains("not available"), "{e}");
        let e = v.resolve(Some(&json!({"tags": {}})), None).unwrap_err();
        assert!(e.contains("instance.tags.keyvault"), "{e}");
    }

    #[test]
    fn injection_is_refused() {
        let v = VaultRef::Template(T.into());
        for bad in ["evil.com/x", "a@b", "x:1", "", "a b"] {
            let inst = json!({"tags": {"keyvault": bad}});
            assert!(v.resolve(Some(&inst), None).is_err(), "{bad}");
        }
        // A tag naming another domain fails the suffix check.
        let v = VaultRef::Template("https://{{ instance.tags.kv }}".into());
        let inst = json!({"tags": {"kv": "evil.example.com"}});
        assert!(v.resolve(Some(&inst), None).is_err());
        assert!(check_template("https://{{ secrets.x }}.vault.azure.net", None).is_err());
        assert!(
            check_template("https://{{ instance.name | upper }}.vault.azure.net", None).is_err()
        );
        assert!(check_template("http://{{ instance.name }}.vault.azure.net", None).is_err());
        assert!(check_template("https://{{ instance.name .vault.azure.net", None).is_err());
    }
}
