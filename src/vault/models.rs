//! Key Vault REST JSON shapes (PROTOCOL.md §5). Optional fields are omitted
//! by the service, never null; parse liberally. Parsed by hand from a
//! [`serde_json::Value`]: serde's own error messages quote offending values,
//! and a secret bundle's body holds the secret, so every failure here names
//! a field and nothing else.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// `attributes` of a secret (integer Unix seconds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub enabled: Option<bool>,
    pub not_before: Option<i64>,
    pub expires: Option<i64>,
    pub created: Option<i64>,
    pub updated: Option<i64>,
}

/// A secret bundle with its value still a plain `String`: the caller wraps
/// it in a `SecretString` at once.
pub struct RawBundle {
    pub value: String,
    pub id: String,
    pub name: String,
    pub version: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub attributes: Attributes,
    pub kid: Option<String>,
    pub managed: bool,
}

/// One entry of `GET /secrets` (no value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawListItem {
    pub name: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub attributes: Attributes,
}

pub struct ListPage {
    pub items: Vec<RawListItem>,
    pub next_link: Option<String>,
}

fn object(body: &[u8]) -> Result<Map<String, Value>, &'static str> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("the answer is not a JSON object"),
    }
}

fn string(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn tags(obj: &Map<String, Value>) -> BTreeMap<String, String> {
    obj.get("tags")
        .and_then(Value::as_object)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The attributes; a time outside 1970..=9999 is an error naming the
/// attribute (it would overflow date arithmetic and formatting later).
fn attributes(obj: &Map<String, Value>) -> Result<Attributes, &'static str> {
    let Some(a) = obj.get("attributes").and_then(Value::as_object) else {
        return Ok(Attributes::default());
    };
    let time = |k: &str, out_of_range: &'static str| match a.get(k).and_then(Value::as_i64) {
        Some(t) if !crate::time::in_range(t) => Err(out_of_range),
        Some(t) => Ok(Some(t)),
        // A number beyond i64 is out of range too.
        None if a.get(k).is_some_and(Value::is_number) => Err(out_of_range),
        None => Ok(None),
    };
    Ok(Attributes {
        enabled: a.get("enabled").and_then(Value::as_bool),
        not_before: time("nbf", "attribute `nbf` is outside 1970..=9999")?,
        expires: time("exp", "attribute `exp` is outside 1970..=9999")?,
        created: time("created", "attribute `created` is outside 1970..=9999")?,
        updated: time("updated", "attribute `updated` is outside 1970..=9999")?,
    })
}

/// `(name, version)` from `https://v/secrets/{name}[/{version}]`.
pub fn split_id(id: &str) -> Option<(String, Option<String>)> {
    let url = url::Url::parse(id).ok()?;
    let mut segs = url.path_segments()?.filter(|s| !s.is_empty());
    if segs.next()? != "secrets" {
        return None;
    }
    let name = segs.next()?.to_owned();
    let version = segs.next().map(str::to_owned);
    if segs.next().is_some() {
        return None;
    }
    Some((name, version))
}

/// Parse a `GET /secrets/{name}[/{version}]` answer.
pub fn parse_bundle(body: &[u8]) -> Result<RawBundle, &'static str> {
    let obj = object(body)?;
    let value = string(&obj, "value").ok_or("missing or non-string field `value`")?;
    let id = string(&obj, "id").ok_or("missing or non-string field `id`")?;
    let (name, version) = split_id(&id).ok_or("field `id` is not a secret identifier")?;
    let version = version.ok_or("field `id` carries no version")?;
    Ok(RawBundle {
        value,
        id,
        name,
        version,
        content_type: string(&obj, "contentType"),
        tags: tags(&obj),
        attributes: attributes(&obj)?,
        kid: string(&obj, "kid"),
        managed: obj.get("managed").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Parse one page of `GET /secrets`.
pub fn parse_list_page(body: &[u8]) -> Result<ListPage, &'static str> {
    let obj = object(body)?;
    let values = match obj.get("value") {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Null) | None => &[],
        Some(_) => return Err("field `value` is not an array"),
    };
    let mut items = Vec::with_capacity(values.len());
    for item in values {
        let item = item.as_object().ok_or("a list entry is not an object")?;
        let id = string(item, "id").ok_or("a list entry has no `id`")?;
        let (name, _) = split_id(&id).ok_or("a list entry's `id` is not a secret identifier")?;
        items.push(RawListItem {
            name,
            content_type: string(item, "contentType"),
            tags: tags(item),
            attributes: attributes(item)?,
        });
    }
    let next_link = string(&obj, "nextLink").filter(|l| !l.is_empty());
    Ok(ListPage { items, next_link })
}

/// The `code`s of an error answer, outermost first, then each nested
/// `innererror.code`. Codes that are not plain identifiers are dropped so
/// nothing the service echoed from input reaches a message.
pub fn error_codes(body: &[u8]) -> Vec<String> {
    /// Nesting depth we follow (the service uses one or two levels).
    const MAX_DEPTH: usize = 8;
    let mut codes = Vec::new();
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return codes;
    };
    let mut cur = v.get("error");
    for _ in 0..MAX_DEPTH {
        let Some(node) = cur else { break };
        if let Some(code) = node.get("code").and_then(Value::as_str)
            && crate::http::is_plain_code(code)
        {
            codes.push(code.to_owned());
        }
        cur = node.get("innererror");
    }
    codes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn bundle_from_protocol_example() {
        let body = br#"{"value":"s3cr3t",
 "id":"https://v.vault.azure.net/secrets/db-password/4387e9f3d6e14c459867679a90fd0f79",
 "contentType":"text/plain","tags":{"env":"prod"},
 "attributes":{"enabled":true,"nbf":1493938410,"exp":1893456000,
               "created":1493938410,"updated":1493938411,
               "recoveryLevel":"Recoverable+Purgeable","recoverableDays":90},
 "kid":"https://v.vault.azure.net/keys/web/x","managed":true}"#;
        let b = parse_bundle(body).unwrap();
        assert_eq!(b.value, "s3cr3t");
        assert_eq!(b.name, "db-password");
        assert_eq!(b.version, "4387e9f3d6e14c459867679a90fd0f79");
        assert_eq!(b.content_type.as_deref(), Some("text/plain"));
        assert_eq!(b.tags.get("env").map(String::as_str), Some("prod"));
        assert_eq!(b.attributes.enabled, Some(true));
        assert_eq!(b.attributes.expires, Some(1_893_456_000));
        assert_eq!(b.attributes.updated, Some(1_493_938_411));
        assert!(b.managed);
        assert!(b.kid.is_some());
    }

    #[test]
    fn bundle_errors_name_fields_not_values() {
        let e = parse_bundle(br#"{"id":"https://v/secrets/a/b"}"#)
            .err()
            .unwrap();
        assert!(e.contains("value"));
        let e = parse_bundle(br#"{"value":"CANARY"}"#).err().unwrap();
        assert!(e.contains("id") && !e.contains("CANARY"));
        let e = parse_bundle(br#"{"value":5,"id":"https://v/secrets/a/b"}"#)
            .err()
            .unwrap();
        assert!(e.contains("value"));
        assert!(parse_bundle(b"CANARY").err().unwrap().contains("JSON"));
    }

    #[test]
    fn list_page_and_error_codes() {
        let p = parse_list_page(
            br#"{"value":[{"id":"https://v/secrets/a","attributes":{"updated":5,"enabled":false}}],"nextLink":null}"#,
        )
        .unwrap();
        assert_eq!(p.items[0].name, "a");
        assert_eq!(p.items[0].attributes.updated, Some(5));
        assert!(p.next_link.is_none());
        let p = parse_list_page(br#"{"value":[],"nextLink":"https://v/secrets?x=1"}"#).unwrap();
        assert!(p.items.is_empty() && p.next_link.is_some());
        let codes = error_codes(
            br#"{"error":{"code":"Forbidden","message":"m","innererror":{"code":"ForbiddenByRbac","innererror":{"code":"bad code with spaces"}}}}"#,
        );
        assert_eq!(codes, vec!["Forbidden", "ForbiddenByRbac"]);
        assert!(error_codes(b"nope").is_empty());
    }
}
