//! Property tests (issue 13): every parser of bytes from outside kvsync
//! returns normally on any input, and its errors never carry the secret
//! bytes planted in the input. The same entry points back the cargo-fuzz
//! targets in `fuzz/` (see fuzz/README.md).

use kvsync::fuzzing;
use proptest::prelude::*;

const CANARY: &str = "Zq9canaryXv7Lp";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// JSON-ish text built from the tokens the real answers use, so the
/// generator reaches past the first `{` often.
fn jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"value\"".to_owned()),
        Just("\"id\"".to_owned()),
        Just("\"access_token\"".to_owned()),
        Just("\"expires_in\"".to_owned()),
        Just("\"expires_on\"".to_owned()),
        Just("\"nextLink\"".to_owned()),
        Just("\"attributes\"".to_owned()),
        Just("\"error\"".to_owned()),
        Just("\"contentType\"".to_owned()),
        Just(format!("\"{CANARY}\"")),
        Just("\"https://v.vault.azure.net/secrets/a/0123456789abcdef0123456789abcdef\"".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "\"[ -~]{0,12}\"",
        Just("null".to_owned()),
        Just("true".to_owned()),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_toml_never_panics(text in "[ -~\n]{0,300}") {
        let _ = fuzzing::config_toml(text.as_bytes());
    }

    #[test]
    fn config_toml_structured_never_panics(
        key in prop_oneof![Just("path"), Just("mode"), Just("owner"), Just("interval"), Just("listen"), Just("vault")],
        value in prop_oneof![
            "\"[ -~]{0,20}\"",
            any::<i64>().prop_map(|n| n.to_string()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
        ],
    ) {
        for section in ["", "[agent]\n", "[auth]\n", "[[file]]\n"] {
            let text = format!("{section}{key} = {value}\n");
            let _ = fuzzing::config_toml(text.as_bytes());
        }
    }

    #[test]
    fn templates_never_panic(source in "([ -~\n]|\\{\\{|\\}\\}|\\{%|%\\}|\\|)*") {
        let _ = fuzzing::template(source.as_bytes());
    }

    #[test]
    fn vault_json_never_panics_nor_leaks(text in jsonish()) {
        if let Some(e) = fuzzing::vault_json(text.as_bytes()) {
            prop_assert!(!e.contains(CANARY), "{}", e);
        }
    }

    #[test]
    fn vault_json_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = fuzzing::vault_json(&bytes);
    }

    #[test]
    fn token_json_never_panics_nor_leaks(text in jsonish()) {
        if let Some(e) = fuzzing::token_json(text.as_bytes()) {
            prop_assert!(!e.contains(CANARY), "{}", e);
        }
    }

    #[test]
    fn token_answers_with_any_lifetime_never_panic(
        expires_in in prop_oneof![(0i64..100_000).prop_map(|n| n.to_string()), "\"[0-9]{1,10}\""],
        expires_on in prop_oneof![
            Just(None),
            (0u64..4_000_000_000).prop_map(|n| Some(n.to_string())),
            "\"[0-9]{1,10}\"".prop_map(Some),
        ],
    ) {
        // Values beyond these ranges (u64::MAX, negative) are issue 14's
        // range checks; the fuzz targets cover them.
        let mut json = format!("{{\"access_token\":\"{CANARY}\",\"expires_in\":{expires_in}");
        if let Some(on) = expires_on {
            json.push_str(&format!(",\"expires_on\":{on}"));
        }
        json.push('}');
        if let Some(e) = fuzzing::token_json(json.as_bytes()) {
            prop_assert!(!e.contains(CANARY), "{}", e);
        }
    }

    #[test]
    fn www_authenticate_never_panics(header in "(Basic|Bearer|basic|[ -~]{0,6})[ ,=\"a-z/:.]{0,60}") {
        fuzzing::www_authenticate(header.as_bytes());
    }

    #[test]
    fn pfx_never_panics_nor_leaks(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Some(e) = fuzzing::certificate(&bytes, false) {
            prop_assert!(!e.contains(CANARY), "{}", e);
        }
    }

    #[test]
    fn pem_never_panics_nor_leaks(
        label in prop_oneof![
            Just("CERTIFICATE".to_owned()),
            Just("PRIVATE KEY".to_owned()),
            Just("RSA PRIVATE KEY".to_owned()),
            Just("EC PRIVATE KEY".to_owned()),
            "[A-Z ]{0,12}",
        ],
        body in "[A-Za-z0-9+/=\n]{0,200}",
    ) {
        let pem = format!("-----BEGIN {label}-----\n{CANARY}{body}\n-----END {label}-----\n");
        if let Some(e) = fuzzing::certificate(pem.as_bytes(), true) {
            prop_assert!(!e.contains(CANARY), "{}", e);
        }
    }

    #[test]
    fn jwt_claims_never_panic(token in "[A-Za-z0-9_.=-]{0,120}") {
        fuzzing::jwt_claims(token.as_bytes());
    }

    #[test]
    fn jwt_claims_with_json_payloads_never_panic(payload in jsonish()) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!("{}.{}.sig", b64.encode("{\"alg\":\"none\"}"), b64.encode(payload));
        fuzzing::jwt_claims(token.as_bytes());
    }

    #[test]
    fn render_errors_never_show_a_secret(
        secret in "[ -~]{8,24}",
        before in "[ -~]{0,20}",
        quote in prop_oneof![Just("'"), Just("`"), Just("\""), Just("")],
    ) {
        let message = format!("{before}{quote}{secret}{quote} is not a number");
        let out = fuzzing::redact(&message, &[&secret], "{{ secrets.x | int }}");
        prop_assert!(!out.contains(&secret), "{}", out);
    }
}
