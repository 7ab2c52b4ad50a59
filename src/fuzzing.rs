//! Entry points for the property tests (`tests/it/parsers.rs`) and the
//! cargo-fuzz targets (`fuzz/`): one function per parser of bytes that come
//! from outside kvsync (config and templates from disk, Key Vault and
//! identity answers from the network, certificates from the vault). Each
//! must return normally on ANY input (a panic is a bug) and its error
//! messages must not contain secret bytes; the functions return the error
//! text so callers can check that.
//!
//! Hidden from the docs and kept `pub` on purpose: narrowing the crate's
//! `pub` items must not break the fuzz crate.

use secrecy::SecretString;

/// Config TOML (both stages, no file read).
pub fn config_toml(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    crate::config::parse(&text, std::path::Path::new("/fuzz/kvsync.toml"))
        .err()
        .map(|e| e.to_string())
}

/// A template source, compiled with kvsync's filters (as an inline
/// `contents`).
pub fn template(data: &[u8]) -> Option<String> {
    let source = String::from_utf8_lossy(data);
    let toml = format!(
        "vault = \"https://fuzz.vault.azure.net\"\n[[file]]\npath = \"/fuzz/out\"\ncontents = {}\n",
        toml::Value::String(source.into_owned())
    );
    let config = match crate::config::parse(&toml, std::path::Path::new("/fuzz/kvsync.toml")) {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    crate::render::Renderer::compile(&config)
        .err()
        .map(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
}

/// Key Vault answers: a secret bundle, a list page and an error body.
pub fn vault_json(data: &[u8]) -> Option<String> {
    let _ = crate::vault::models::error_codes(data);
    let _ = crate::vault::models::parse_list_page(data);
    crate::vault::models::parse_bundle(data)
        .err()
        .map(str::to_owned)
}

/// A token answer (HIMDS, IMDS and Entra share the parser).
pub fn token_json(data: &[u8]) -> Option<String> {
    crate::identity::token::parse(data, std::time::SystemTime::now())
        .err()
        .map(|e| e.to_string())
}

/// `WWW-Authenticate` headers: the Arc challenge and Key Vault's bearer
/// challenge.
pub fn www_authenticate(data: &[u8]) {
    let header = String::from_utf8_lossy(data);
    let _ = crate::identity::challenge::parse_realm(&header);
    let _ = crate::vault::transport::challenge_resource(&header);
}

/// A certificate secret as PFX (base64) or PEM, through the whole
/// normalisation (key, chain, leaf choice).
pub fn certificate(data: &[u8], pem: bool) -> Option<String> {
    use base64::Engine;
    let value = if pem {
        String::from_utf8_lossy(data).into_owned()
    } else {
        base64::engine::general_purpose::STANDARD.encode(data)
    };
    let content_type = if pem {
        "application/x-pem-file"
    } else {
        "application/x-pkcs12"
    };
    crate::certs::from_secret(&SecretString::from(value), Some(content_type), None, true)
        .err()
        .map(|e| e.to_string())
}

/// JWT claims (the token's payload, decoded for `whoami` and logs).
pub fn jwt_claims(data: &[u8]) {
    let _ = crate::identity::claims::decode(&String::from_utf8_lossy(data));
}

/// Render error scrubbing: a message with secret values in it.
pub fn redact(message: &str, secrets: &[&str], source: &str) -> String {
    let needles = crate::render::redact::Needles::from_values(secrets);
    crate::render::redact::sanitize(&needles.scrub(message), source)
}

/// Write `bytes` to `path` through [`crate::write`] (mode 0600, strict
/// directory walk): the race test of `tests/it/hostile.rs` swaps
/// directories under it.
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    let target = crate::write::Target {
        path: path.to_path_buf(),
        mode: 0o600,
        uid: None,
        gid: None,
        dir_mode: 0o755,
        follow_symlinks: false,
        #[cfg(windows)]
        acl: Vec::new(),
    };
    crate::write::apply(&target, bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
