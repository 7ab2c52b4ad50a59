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

/// The emulator's real answers parse, and are the fuzz seed corpus: with
/// `KVSYNC_FUZZ_SEEDS=<dir>` they are written to `<dir>/<target>/` (how
/// `fuzz/corpus` was made; see fuzz/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_answers_parse_and_seed_the_fuzz_corpus() {
    use kvsync_fake::{CertContentType, CertKey, CertOptions, Emulator, Options};
    let emu = Emulator::start(Options::default()).await.unwrap();
    emu.set_secret("db-password", "s3cr3t-seed");
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    let http = kvsync::http::metadata_client().unwrap();
    // HIMDS: the 401 challenge, then the token.
    let url = format!(
        "{}?api-version=2020-06-01&resource=https%3A%2F%2Fvault.azure.net",
        emu.himds_token_endpoint()
    );
    let first = http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let challenge = first.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    seeds.push(("www_authenticate", "himds", challenge.clone().into_bytes()));
    let key_path = kvsync::identity::challenge::parse_realm(&challenge).unwrap();
    let key = std::fs::read_to_string(&key_path).unwrap();
    let token = http
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    assert_eq!(fuzzing::token_json(&token), None);
    seeds.push(("token_json", "himds", token.clone()));
    let jwt = serde_json::from_slice::<serde_json::Value>(&token).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    fuzzing::jwt_claims(jwt.as_bytes());
    seeds.push(("jwt_claims", "himds", jwt.into_bytes()));
    // Key Vault: challenge, bundle, list page, error.
    let env = kvsync::env::Env::empty();
    let vault = kvsync::http::vault_client(&env, Some(emu.ca_file())).unwrap();
    let base = emu.vault_url();
    let api = "api-version=2025-07-01";
    let bare = vault
        .get(format!("{base}/secrets/db-password/?{api}"))
        .send()
        .await
        .unwrap();
    let bearer = bare.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    fuzzing::www_authenticate(bearer.as_bytes());
    seeds.push(("www_authenticate", "vault", bearer.into_bytes()));
    let bearer = format!("Bearer {}", emu.issue_token("https://vault.azure.net"));
    let get = |path: String| {
        let (vault, bearer) = (vault.clone(), bearer.clone());
        async move {
            let resp = vault
                .get(path)
                .header("Authorization", bearer)
                .send()
                .await
                .unwrap();
            resp.bytes().await.unwrap().to_vec()
        }
    };
    let bundle = get(format!("{base}/secrets/db-password/?{api}")).await;
    assert_eq!(fuzzing::vault_json(&bundle), None);
    seeds.push(("vault_json", "bundle", bundle));
    let list = get(format!("{base}/secrets?{api}")).await;
    seeds.push(("vault_json", "list", list));
    let missing = get(format!("{base}/secrets/missing/?{api}")).await;
    seeds.push(("vault_json", "error", missing));
    // Certificates as Key Vault stores them: PFX (base64) and PEM.
    for (name, content_type, key) in [
        ("site-pfx", CertContentType::Pkcs12, CertKey::EcP256),
        ("site-pem", CertContentType::Pem, CertKey::EcP256),
    ] {
        let opts = CertOptions {
            content_type,
            key,
            ..CertOptions::default()
        };
        emu.issue_certificate(name, opts).unwrap();
        let body = get(format!("{base}/secrets/{name}/?{api}")).await;
        let value = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned();
        if name == "site-pem" {
            assert_eq!(fuzzing::certificate(value.as_bytes(), true), None);
            seeds.push(("pem", "ec", value.into_bytes()));
        } else {
            use base64::Engine;
            let der = base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap();
            assert_eq!(fuzzing::certificate(&der, false), None);
            seeds.push(("pfx", "ec", der));
        }
    }
    let config = include_bytes!("../../config/example.toml");
    assert_eq!(fuzzing::config_toml(config), None);
    seeds.push(("config_toml", "example", config.to_vec()));
    let template = include_bytes!("../../templates/app.env.tera");
    seeds.push(("template", "app-env", template.to_vec()));
    if let Some(dir) = std::env::var_os("KVSYNC_FUZZ_SEEDS") {
        for (target, name, bytes) in &seeds {
            let d = std::path::Path::new(&dir).join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("emulator-{name}")), bytes).unwrap();
        }
    }
}
