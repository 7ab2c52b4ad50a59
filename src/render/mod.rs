//! Rendering: tera templates (autoescape off, strict undefined) over the
//! context `secrets`, `meta`, `certs`, `instance`, with the filters of
//! SPEC.md. Render touches neither the network nor the disk (templates are
//! read once, at [`Renderer::compile`]). Errors name the destination file and
//! template line and never carry a secret value.

pub mod filters;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::certs::CertMaterial;
use crate::config::Config;
use crate::secret::SecretBytes;
use crate::vault::SecretBundle;

/// Everything a template may see in one round.
#[derive(Default)]
pub struct Context {
    pub secrets: BTreeMap<String, SecretBundle>,
    pub certs: BTreeMap<String, CertMaterial>,
    /// HIMDS/IMDS `compute` metadata, when fetched.
    pub instance: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
#[error("{destination}: template {template}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct RenderError {
    /// The destination file whose template failed.
    pub destination: PathBuf,
    /// Template file path or `contents` (inline).
    pub template: String,
    pub line: Option<usize>,
    /// What went wrong, never containing a secret value.
    pub message: String,
}

/// Compiled templates for every `[[file]]` of a config.
pub struct Renderer {
    _private: (),
}

impl Renderer {
    /// Read and compile every template; reject references to aliases not
    /// declared in `[secrets]`.
    pub fn compile(config: &Config) -> Result<Self, Vec<RenderError>> {
        let _ = config;
        unimplemented!("Renderer::compile")
    }

    /// Render file number `index` of the config.
    pub fn render(&self, index: usize, ctx: &Context) -> Result<SecretBytes, RenderError> {
        let _ = (index, ctx);
        unimplemented!("Renderer::render")
    }

    /// Whether any template refers to `instance`.
    pub fn uses_instance(&self) -> bool {
        false
    }
}
