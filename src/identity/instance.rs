//! Instance metadata (PROTOCOL.md §1 "Instance metadata", §2): the
//! `compute` object of `GET {base}/metadata/instance?api-version=...` with
//! `Metadata: true`, from HIMDS (Arc) or IMDS (Azure VM), reached directly.
//!
//! [`normalize`] turns `tags` (`"a:1;b:2"`) into a map (preferring the exact
//! `tagsList` when present) and keeps `tagsList`, so templates can write
//! `{{ instance.tags.keyvault }}`. Instance metadata holds no secret; it is
//! still never logged in full.

use url::Url;

use super::IdentityError;

/// HIMDS instance metadata api-version (PROTOCOL.md §1).
pub const HIMDS_API_VERSION: &str = "2020-06-01";
/// IMDS instance metadata api-version (the issue; 2021-02-01 has `tagsList`).
pub const IMDS_API_VERSION: &str = "2021-02-01";
/// Largest instance document we read; real ones are a few KiB.
const MAX_INSTANCE_BYTES: usize = 256 * 1024;

/// `{base}/metadata/instance?api-version={api_version}`.
pub fn url(base: &Url, api_version: &str) -> Url {
    let mut url = base.clone();
    url.set_path("/metadata/instance");
    url.set_query(Some(&format!("api-version={api_version}")));
    url
}

/// Fetch and normalise the `compute` object.
pub async fn fetch(http: &reqwest::Client, url: &Url) -> Result<serde_json::Value, IdentityError> {
    let mut endpoint = url.clone();
    endpoint.set_query(None);
    let endpoint = endpoint.to_string();
    let (status, body) = super::metadata_get(
        http,
        url,
        &endpoint,
        MAX_INSTANCE_BYTES,
        "the instance metadata",
    )
    .await?;
    if !status.is_success() {
        return Err(super::arc::status_error(&endpoint, status, &body));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| IdentityError::Malformed {
            endpoint: endpoint.clone(),
            detail: "the instance metadata is not JSON".to_owned(),
        })?;
    // `/metadata/instance` wraps it in `compute`; `/compute` is bare.
    let compute = match doc.get("compute") {
        Some(c) => c.clone(),
        None => doc,
    };
    if !compute.is_object() {
        return Err(IdentityError::Malformed {
            endpoint,
            detail: "the instance metadata has no `compute` object".to_owned(),
        });
    }
    Ok(normalize(compute))
}

/// `tags` as a map: from `tagsList` (`[{name,value}]`) when it is a
/// non-empty list, else parsed from the `"a:1;b:2"` string. `tagsList` is
/// kept as sent.
pub fn normalize(mut compute: serde_json::Value) -> serde_json::Value {
    let Some(obj) = compute.as_object_mut() else {
        return compute;
    };
    let from_list = obj
        .get("tagsList")
        .and_then(serde_json::Value::as_array)
        .filter(|l| !l.is_empty())
        .map(|list| {
            list.iter()
                .filter_map(|t| {
                    let name = t.get("name")?.as_str()?;
                    let value = t.get("value").and_then(|v| v.as_str()).unwrap_or_default();
                    Some((name.to_owned(), serde_json::Value::from(value)))
                })
                .collect::<serde_json::Map<_, _>>()
        });
    let tags = match (from_list, obj.get("tags")) {
        (Some(map), _) => map,
        (None, Some(serde_json::Value::String(s))) => parse_tags(s),
        (None, Some(serde_json::Value::Object(m))) => m.clone(),
        (None, _) => serde_json::Map::new(),
    };
    obj.insert("tags".to_owned(), serde_json::Value::Object(tags));
    obj.entry("tagsList")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    compute
}

/// `"a:1;b:2"` → `{a: "1", b: "2"}`; a value may itself contain `:`.
pub fn parse_tags(s: &str) -> serde_json::Map<String, serde_json::Value> {
    s.split(';')
        .filter(|t| !t.trim().is_empty())
        .map(|t| match t.split_once(':') {
            Some((k, v)) => (k.trim().to_owned(), serde_json::Value::from(v.trim())),
            None => (t.trim().to_owned(), serde_json::Value::from("")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_string_and_list() {
        let c = normalize(json!({"name":"vm1","tags":"keyvault:kv-prod;env:prod;url:https://x"}));
        assert_eq!(c["tags"]["keyvault"], "kv-prod");
        assert_eq!(c["tags"]["url"], "https://x");
        assert_eq!(c["tagsList"], json!([]));
        let c = normalize(json!({"tags":"a:1","tagsList":[{"name":"a;b","value":"x:y"}]}));
        assert_eq!(c["tags"], json!({"a;b":"x:y"}));
        assert_eq!(c["tagsList"][0]["name"], "a;b");
        let c = normalize(json!({"tags":""}));
        assert_eq!(c["tags"], json!({}));
    }

    #[test]
    fn url_shape() {
        let u = url(
            &Url::parse("http://127.0.0.1:9/metadata/identity/oauth2/token").unwrap(),
            HIMDS_API_VERSION,
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/metadata/instance?api-version=2020-06-01"
        );
    }
}
