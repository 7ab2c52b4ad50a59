//! Issue 15 "Select, decode, publish" against the emulator: selections by
//! prefix and tags (env file, fan-out directory, removal of files that left
//! the selection, list-only unchanged rounds, forbidden list), binary files
//! (`decode`), public-only certificates, public keys, and the `check`
//! rejections. Issue 12 item 3 (IIS Centralized Certificate Store output)
//! shares the fan-out mechanism and is tested here too.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kvsync_fake::{CertOptions, KeyKind, SecretOptions};

use crate::support::harness::{Agent, Harness, read, stderr, stdout};

fn tags(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn set_tagged(h: &Harness, name: &str, value: &str, t: &[(&str, &str)]) -> String {
    h.emu.set_secret_with(
        name,
        value,
        SecretOptions {
            tags: tags(t),
            ..SecretOptions::default()
        },
    )
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// web-a, web-b: selected; web-c (other tag), web-d (disabled), api-x
/// (other prefix), web-e (untagged): not.
fn seed_web(h: &Harness) {
    set_tagged(h, "web-a", "value-a", &[("app", "web")]);
    set_tagged(h, "web-b", "value-b", &[("app", "web"), ("tier", "1")]);
    set_tagged(h, "web-c", "value-c", &[("app", "api")]);
    let d = set_tagged(h, "web-d", "value-d", &[("app", "web")]);
    assert!(h.emu.set_version_enabled("web-d", &d, false));
    set_tagged(h, "api-x", "value-x", &[("app", "web")]);
    h.emu.set_secret("web-e", "value-e");
}

fn web_config(h: &Harness, extra: &str) -> std::path::PathBuf {
    let out = h.path("out");
    h.write_config(&format!(
        r#"
[selections]
web = {{ prefix = "web-", tags = {{ app = "web" }} }}

[[file]]
path = "{env}"
contents = """{{% for s in selected.web %}}{{{{ s.name }}}}={{{{ s.value | dotenv_quote }}}}
{{% endfor %}}"""

[[file]]
selection = "web"
path = "{dir}"
mode = "0640"
{extra}
"#,
        env = out.join("web.env").display(),
        dir = out.join("web.d").display(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_by_prefix_and_tags_env_file_and_fanout_directory() {
    let h = Harness::new().await;
    seed_web(&h);
    let config = web_config(&h, "");
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        read(&h.path("out/web.env")),
        "web-a=\"value-a\"\nweb-b=\"value-b\"\n"
    );
    let dir = h.path("out/web.d");
    assert_eq!(names_in(&dir), [".kvsync-manifest", "web-a", "web-b"]);
    assert_eq!(read(&dir.join("web-b")), "value-b");
    assert_eq!(crate::support::harness::mode(&dir.join("web-a")), 0o640);

    // A foreign file, then web-b loses its tag: its file goes, the foreign
    // one stays.
    std::fs::write(dir.join("foreign.txt"), "not kvsync's").unwrap();
    h.emu.set_secret("web-b", "value-b2");
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(names_in(&dir), [".kvsync-manifest", "foreign.txt", "web-a"]);
    assert_eq!(read(&dir.join("foreign.txt")), "not kvsync's");
    assert_eq!(read(&h.path("out/web.env")), "web-a=\"value-a\"\n");
    assert_eq!(read(&dir.join(".kvsync-manifest")), "web-a\n");

    // check --online prints what each selection matched.
    let o = h
        .kvsync(&["check", "--online", "-c", config.to_str().unwrap()], &[])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("selection web: 1 secrets matched: web-a"),
        "{}",
        stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_and_a_selection_matching_nothing_is_not_an_error() {
    let h = Harness::new().await;
    set_tagged(&h, "app-db-host", "db.internal", &[]);
    let out = h.path("out");
    let config = h.write_config(&format!(
        r#"
[selections]
app = {{ prefix = "app-", strip_prefix = true }}
none = {{ prefix = "nothing-" }}

[[file]]
selection = "app"
path = "{a}"

[[file]]
selection = "none"
path = "{n}"
"#,
        a = out.join("app").display(),
        n = out.join("none").display(),
    ));
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out.join("app/db-host")), "db.internal");
    assert!(
        stderr(&o).contains("selection matches no enabled secret"),
        "{}",
        stderr(&o)
    );
}

async fn next_round(h: &Harness, agent: &mut Agent) -> (String, kvsync_fake::Counters) {
    h.emu.reset_counters();
    let line = agent.round().await;
    (line, h.emu.counters())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_agent_rounds_make_list_requests_only() {
    let h = Harness::new().await;
    seed_web(&h);
    let config = web_config(&h, "");
    let text = read(&config) + "\n[agent]\ninterval = \"1s\"\njitter = \"0s\"\n";
    std::fs::write(&config, text).unwrap();
    let mut agent = h.spawn_agent(&config, &[]);
    let first = agent.round().await;
    assert!(first.contains("ok=true"), "{first}");
    assert_eq!(read(&h.path("out/web.d/web-a")), "value-a");

    // Bundles fetched in the second of their `updated` are fetched once
    // more (CHANGE_MARGIN_SECS); then rounds are list-only.
    let mut settled = None;
    for _ in 0..6 {
        let (line, c) = next_round(&h, &mut agent).await;
        assert!(line.contains("ok=true"), "{line}");
        if c.kv_gets == 0 {
            settled = Some(c);
            break;
        }
    }
    let c = settled.expect("a round without GETs within 6 rounds");
    assert_eq!((c.kv_lists, c.kv_gets), (1, 0), "{c:?}");
    assert_eq!(c.kv_requests, 1, "{c:?}");

    // A rotation costs one GET and rewrites one file.
    set_tagged(&h, "web-a", "value-a2", &[("app", "web")]);
    let (line, c) = next_round(&h, &mut agent).await;
    assert!(line.contains("ok=true"), "{line}");
    assert_eq!((c.kv_lists, c.kv_gets), (1, 1), "{c:?}");
    assert_eq!(read(&h.path("out/web.d/web-a")), "value-a2");
    agent.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_list_names_the_permission() {
    let h = Harness::new().await;
    seed_web(&h);
    h.emu.set_list_forbidden(true);
    let config = web_config(&h, "");
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("selection 'web'"), "{err}");
    assert!(err.contains("secrets/readMetadata"), "{err}");
    assert!(err.contains("ForbiddenByRbac"), "{err}");
    assert!(!h.path("out/web.env").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_secret_is_written_byte_identical_and_invalid_base64_is_named_not_shown() {
    let h = Harness::new().await;
    let bytes: Vec<u8> = (0..256).map(|_| rand::random::<u8>()).collect();
    h.emu.set_secret("keystore", &STANDARD.encode(&bytes));
    let out = h.path("out");
    let config = h.write_config(&format!(
        r#"
[secrets]
jks = "keystore"

[[file]]
secret = "jks"
decode = "base64"
path = "{p}"
"#,
        p = out.join("app.jks").display()
    ));
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("app.jks")).unwrap(), bytes);

    // Invalid: exit 1, the secret named, the value nowhere.
    let canary = "Q0FOQVJZ%CANARY-7f3e";
    h.emu.set_secret("keystore", canary);
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (err, outp) = (stderr(&o), stdout(&o));
    assert!(
        err.contains("secret `jks`") && err.contains("'keystore'"),
        "{err}"
    );
    assert!(err.contains("offset 8"), "{err}");
    for text in [&err, &outp] {
        assert!(
            !text.contains("CANARY") && !text.contains("Q0FOQVJZ"),
            "{text}"
        );
    }
    assert_eq!(std::fs::read(out.join("app.jks")).unwrap(), bytes, "kept");
}

fn openssl(args: &[&str]) -> String {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_exportable_certificate_with_public_only_writes_its_cert() {
    let h = Harness::new().await;
    let issued = h
        .emu
        .issue_certificate(
            "site",
            CertOptions {
                exportable: false,
                ..CertOptions::default()
            },
        )
        .unwrap();
    let out = h.path("out");
    let body = |public_only: &str| {
        format!(
            r#"
[secrets]
site = {{ name = "site", type = "certificate"{public_only} }}

[[file]]
secret = "site"
format = "cert"
path = "{p}"

[[file]]
path = "{facts}"
contents = "{{{{ certs.site.serial }}}} {{{{ certs.site.thumbprint }}}} {{{{ certs.site.sans | join(sep=',') }}}}"
"#,
            p = out.join("site.crt").display(),
            facts = out.join("facts.txt").display(),
        )
    };
    // Without public_only: the error suggests it.
    let config = h.write_config(&body(""));
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("public_only = true"), "{}", stderr(&o));

    let config = h.write_config(&body(", public_only = true"));
    h.emu.reset_counters();
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let serial = openssl(&[
        "x509",
        "-in",
        out.join("site.crt").to_str().unwrap(),
        "-noout",
        "-serial",
    ]);
    assert_eq!(
        serial.trim(),
        format!("serial={}", issued.serial.to_ascii_uppercase())
    );
    assert_eq!(
        read(&out.join("facts.txt")),
        format!(
            "{} {} localhost,127.0.0.1",
            issued.serial, issued.thumbprint
        )
    );
    let c = h.emu.counters();
    assert_eq!((c.kv_cert_gets, c.kv_gets), (1, 0), "no secret read: {c:?}");
}

/// The bytes of `openssl pkey -text`'s hex block after `label`.
fn hex_block(text: &str, label: &str) -> Vec<u8> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(label));
    lines.next();
    let hex: String = lines
        .take_while(|l| l.starts_with("    "))
        .flat_map(|l| l.trim().split(':').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    hex::decode(hex).unwrap()
}

fn b64url(jwk: &serde_json::Value, k: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ec_keys_give_pem_equal_to_the_jwk() {
    let h = Harness::new().await;
    let kinds = [
        ("rsa", KeyKind::Rsa2048),
        ("p256", KeyKind::EcP256),
        ("p384", KeyKind::EcP384),
        ("p521", KeyKind::EcP521),
    ];
    let out = h.path("out");
    let mut body = String::from("[secrets]\n");
    let mut created = Vec::new();
    for (alias, kind) in kinds {
        let k = h
            .emu
            .create_key(&format!("jwt-{alias}"), kind, BTreeMap::new())
            .unwrap();
        body.push_str(&format!(
            "{alias} = {{ name = \"jwt-{alias}\", type = \"key\" }}\n"
        ));
        created.push((alias, k));
    }
    for (alias, _) in &created {
        body.push_str(&format!(
            "\n[[file]]\nsecret = \"{alias}\"\nformat = \"pem\"\npath = \"{}\"\n",
            out.join(format!("{alias}.pem")).display()
        ));
    }
    body.push_str(&format!(
        "\n[[file]]\npath = \"{}\"\ncontents = \"{{{{ keys.rsa.kty }}}} {{{{ keys.p256.kid }}}}\\n{{{{ keys.p384.jwk }}}}\"\n",
        out.join("facts.txt").display()
    ));
    let config = h.write_config(&body);
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    for (alias, k) in &created {
        let path = out.join(format!("{alias}.pem"));
        let pem = read(&path);
        assert_eq!(pem, k.public_pem, "{alias}: same SPKI as openssl printed");
        let text = openssl(&[
            "pkey",
            "-pubin",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-text",
        ]);
        if *alias == "rsa" {
            let modulus = openssl(&[
                "rsa",
                "-pubin",
                "-in",
                path.to_str().unwrap(),
                "-noout",
                "-modulus",
            ]);
            let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
            assert_eq!(n, b64url(&k.jwk, "n"), "modulus equals the JWK's n");
            assert!(text.contains("Exponent: 65537"), "{text}");
            assert_eq!(b64url(&k.jwk, "e"), [1, 0, 1]);
        } else {
            let point = hex_block(&text, "pub:");
            let mut want = vec![0x04];
            want.extend(b64url(&k.jwk, "x"));
            want.extend(b64url(&k.jwk, "y"));
            assert_eq!(point, want, "{alias}: point equals the JWK's x, y");
        }
    }
    let facts = read(&out.join("facts.txt"));
    let kid = created[1].1.jwk["kid"].as_str().unwrap();
    assert!(facts.starts_with(&format!("RSA {kid}\n")), "{facts}");
    let jwk: serde_json::Value = serde_json::from_str(facts.lines().nth(1).unwrap()).unwrap();
    assert_eq!(jwk["crv"], "P-384");
    assert_eq!(jwk["x"], created[2].1.jwk["x"]);
}

/// `kvsync check` on `body` (after the emulator header): exit 2 and the
/// `file:line:col: key:` diagnostics.
async fn check_rejects(h: &Harness, body: &str, key: &str, line: usize, needle: &str) {
    let config = h.write_config(body);
    let header_lines = h.header().lines().count() + 1;
    let o = h
        .kvsync(&["check", "-c", config.to_str().unwrap()], &[])
        .await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let want = format!("kvsync.toml:{}:", header_lines + line);
    let hit = err
        .lines()
        .find(|l| l.contains(&format!(": {key}: ")))
        .unwrap_or_else(|| panic!("no diagnostic for {key}:\n{err}"));
    assert!(
        hit.contains(&want),
        "{key} should be on line {}: {hit}",
        header_lines + line
    );
    assert!(hit.contains(needle), "{hit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_rejects_misused_keys_naming_key_and_line() {
    let h = Harness::new().await;
    // Line numbers count from the first line of `body` (1-based).
    check_rejects(
        &h,
        "[[file]]\npath = \"/tmp/x\"\ncontents = \"x\"\ndecode = \"base64\"\n",
        "file[0].decode",
        4,
        "decode needs secret",
    )
    .await;
    let plain_file = h.path("not-a-dir");
    std::fs::write(&plain_file, "x").unwrap();
    check_rejects(
        &h,
        &format!(
            "[selections]\nweb = {{ prefix = \"web-\" }}\n\n[[file]]\nselection = \"web\"\npath = \"{}\"\n",
            plain_file.display()
        ),
        "file[0].path",
        6,
        "not a directory",
    )
    .await;
    check_rejects(
        &h,
        "[secrets]\ndb = { name = \"db\", public_only = true }\n",
        "secrets.db.public_only",
        2,
        "only to certificates",
    )
    .await;
    check_rejects(
        &h,
        "[secrets]\njwt = { name = \"jwt\", type = \"key\" }\n\n[[file]]\nsecret = \"jwt\"\nformat = \"pem\"\ndecode = \"base64\"\npath = \"/tmp/jwt.pem\"\n",
        "file[0].decode",
        7,
        "format = \"pem\" of a key",
    )
    .await;
    check_rejects(
        &h,
        "[selections]\nweb = { prefix = \"web-\", tag = { app = \"web\" } }\n",
        "selections.web.tag",
        2,
        "unknown field `tag`",
    )
    .await;
    // Issue 12: ccs needs format = "pfx" and a directory.
    check_rejects(
        &h,
        "[secrets]\nsite = { name = \"site\", type = \"certificate\" }\n\n[[file]]\nsecret = \"site\"\nccs = true\npath = \"/tmp/ccs\"\n",
        "file[0].ccs",
        6,
        "format = \"pfx\"",
    )
    .await;
    check_rejects(
        &h,
        &format!(
            "[secrets]\nsite = {{ name = \"site\", type = \"certificate\" }}\n\n[[file]]\nsecret = \"site\"\nformat = \"pfx\"\nccs = true\npath = \"{}\"\n",
            plain_file.display()
        ),
        "file[0].path",
        8,
        "not a directory",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccs_directory_one_pfx_per_dns_name_and_a_dropped_name_is_removed() {
    let h = Harness::new().await;
    let sans = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    let first = h
        .emu
        .issue_certificate(
            "site",
            CertOptions {
                sans: sans(&["a.example", "b.example", "*.example"]),
                ..CertOptions::default()
            },
        )
        .unwrap();
    h.emu.set_secret("ccs-password", "Pa55-ccs");
    let dir = h.path("ccs");
    let config = h.write_config(&format!(
        r#"
[secrets]
site = {{ name = "site", type = "certificate" }}
ccs_password = "ccs-password"

[[file]]
secret = "site"
format = "pfx"
ccs = true
path = "{d}"
pfx_password = "ccs_password"
"#,
        d = dir.display()
    ));
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        names_in(&dir),
        [
            ".kvsync-manifest",
            "_.example.pfx",
            "a.example.pfx",
            "b.example.pfx"
        ]
    );
    for name in ["_.example.pfx", "a.example.pfx", "b.example.pfx"] {
        let p = dir.join(name);
        let text = openssl(&[
            "pkcs12",
            "-in",
            p.to_str().unwrap(),
            "-passin",
            "pass:Pa55-ccs",
            "-nodes",
        ]);
        assert!(text.contains("PRIVATE KEY"), "{name} holds the key");
        let leaf = openssl(&[
            "pkcs12",
            "-in",
            p.to_str().unwrap(),
            "-passin",
            "pass:Pa55-ccs",
            "-nokeys",
            "-clcerts",
        ]);
        let leaf_file = h.path("leaf.pem");
        std::fs::write(&leaf_file, leaf).unwrap();
        let serial = openssl(&[
            "x509",
            "-in",
            leaf_file.to_str().unwrap(),
            "-noout",
            "-serial",
        ]);
        assert_eq!(
            serial.trim(),
            format!("serial={}", first.serial.to_ascii_uppercase()),
            "{name}"
        );
    }
    // Unchanged certificate: nothing rewritten (a PFX has a fresh salt each
    // time, so this proves the manifest's fingerprint is used).
    let before = crate::support::harness::stamp(&dir.join("a.example.pfx"));
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        crate::support::harness::stamp(&dir.join("a.example.pfx")),
        before
    );

    // Rotation without b.example: its file goes, a foreign file stays.
    std::fs::write(dir.join("other.example.pfx"), "foreign").unwrap();
    let second = h
        .emu
        .issue_certificate(
            "site",
            CertOptions {
                sans: sans(&["a.example", "*.example"]),
                ..CertOptions::default()
            },
        )
        .unwrap();
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        names_in(&dir),
        [
            ".kvsync-manifest",
            "_.example.pfx",
            "a.example.pfx",
            "other.example.pfx"
        ]
    );
    assert_eq!(read(&dir.join("other.example.pfx")), "foreign");
    let leaf = openssl(&[
        "pkcs12",
        "-in",
        dir.join("a.example.pfx").to_str().unwrap(),
        "-passin",
        "pass:Pa55-ccs",
        "-nokeys",
        "-clcerts",
    ]);
    let leaf_file = h.path("leaf2.pem");
    std::fs::write(&leaf_file, leaf).unwrap();
    let serial = openssl(&[
        "x509",
        "-in",
        leaf_file.to_str().unwrap(),
        "-noout",
        "-serial",
    ]);
    assert_eq!(
        serial.trim(),
        format!("serial={}", second.serial.to_ascii_uppercase())
    );
}
