//! Claims of a JWT access token (payload only; the signature is not checked:
//! this is for messages and `whoami`, never for trust decisions).

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Claims {
    pub oid: Option<String>,
    pub tid: Option<String>,
    pub appid: Option<String>,
    pub azp: Option<String>,
    pub aud: Option<String>,
    pub exp: Option<i64>,
}

/// Decode the payload of `token`; `None` if it is not a JWT.
pub fn decode(token: &str) -> Option<Claims> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
