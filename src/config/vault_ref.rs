//! A vault address as configured: a fixed `https://` URL, or a template over
//! the host's instance metadata such as
//! `https://{{ instance.tags.keyvault }}.vault.azure.net`, resolved each
//! round (after instance metadata is fetched). Every rule a vault URL must
//! follow (and its messages) lives in [`crate::vault::address`]; this type only
//! records which of the two forms was written.

use url::Url;

use crate::vault::address::{self, VaultUrl, VaultUrlError};

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
    /// `compute` object); the result is checked as at config load
    /// ([`crate::vault::address`]).
    pub fn resolve(
        &self,
        instance: Option<&serde_json::Value>,
        audience: Option<&str>,
    ) -> Result<Url, VaultUrlError> {
        match self {
            VaultRef::Url(u) => Ok(u.clone()),
            VaultRef::Template(t) => {
                address::resolve_template(t, instance, audience).map(VaultUrl::into_url)
            }
        }
    }
}
