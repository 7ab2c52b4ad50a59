//! Values from outside are range-checked before formatting or arithmetic
//! (src/time.rs): a Key Vault timestamp or a token expiry outside
//! 1970..=9999 makes `once` exit 1 with a message naming the secret (or the
//! token endpoint) and the attribute, never a panic (exit 101); `run` keeps
//! running and reports it.

use kvsync_fake::SecretOptions;
use serde_json::json;

use crate::support::harness::{Harness, stderr};

fn config(h: &Harness) -> std::path::PathBuf {
    h.write_config(&format!(
        "[agent]\ninterval = \"1h\"\njitter = \"0s\"\n\n[secrets]\ndb = \"db-password\"\n\n[[file]]\npath = \"{}\"\ncontents = \"{{{{ secrets.db }}}}\"\n",
        h.path("out/db.txt").display()
    ))
}

/// `once` exits 1 naming `needles`; `run` reports the same and keeps
/// running until SIGTERM (exit 0).
async fn once_fails_and_run_survives(h: &Harness, needles: &[&str]) {
    let config = config(h);
    let out = h.once(&config, &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from:\n{err}");
    }
    assert!(!h.path("out/db.txt").exists());

    let mut agent = h.spawn_agent(&config, &[]);
    let line = agent.round().await;
    assert!(line.contains("ok=false"), "{line}");
    let (code, log) = agent.terminate().await;
    assert_eq!(code, Some(0), "the agent kept running:\n{}", log.join("\n"));
    let log = log.join("\n");
    for n in needles {
        assert!(
            log.contains(n),
            "{n:?} missing from the agent's log:\n{log}"
        );
    }
}

async fn with_secret_expiry(exp: i64) -> Harness {
    let h = Harness::new().await;
    h.emu.set_secret_with(
        "db-password",
        "s3cret",
        SecretOptions {
            expires: Some(exp),
            ..SecretOptions::default()
        },
    );
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_exp_of_minus_one_is_reported_not_a_panic() {
    let h = with_secret_expiry(-1).await;
    once_fails_and_run_survives(&h, &["secret 'db'", "attribute `exp`"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_exp_after_9999_is_reported_not_a_panic() {
    let h = with_secret_expiry(253_402_300_800).await;
    once_fails_and_run_survives(&h, &["secret 'db'", "attribute `exp`"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expires_on_of_u64_max_is_reported_not_a_panic() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", "s3cret");
    h.emu
        .set_token_fields(json!({ "expires_on": u64::MAX.to_string() }));
    let endpoint = h.emu.himds_token_endpoint();
    once_fails_and_run_survives(&h, &[endpoint.as_str(), "`expires_on`"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_token_expires_in_is_reported_not_a_panic() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", "s3cret");
    h.emu
        .set_token_fields(json!({ "expires_on": null, "expires_in": "-5" }));
    let endpoint = h.emu.himds_token_endpoint();
    once_fails_and_run_survives(&h, &[endpoint.as_str(), "`expires_in`"]).await;
}
