//! `kvsync once` end to end: the real binary against the in-process Azure
//! emulator (Arc HIMDS challenge flow + Key Vault over HTTPS).

use crate::support::harness::{Harness, mode, read, stamp, stderr, stdout, temp_leftovers};
use kvsync_fake::{Fault, Service};

const CANARY_A: &str = "canary-A-7f3e9b1c";
const CANARY_B: &str = "canary-B-0d2c4a8e";

/// Two files sharing one hook; a log file records each hook run.
fn two_files_one_hook(h: &Harness) -> std::path::PathBuf {
    let out = h.path("out");
    let hook_log = h.path("hook.log");
    h.write_config(&format!(
        r#"
[secrets]
a = "secret-a"
b = "secret-b"

[[file]]
path = "{out}/a.txt"
contents = "a={{{{ secrets.a }}}}\n"
mode = "0600"
on_change = "echo run >> {log}; printf '%s\n' \"$KVSYNC_CHANGED\" >> {log}"

[[file]]
path = "{out}/sub/b.txt"
contents = "b={{{{ secrets.b }}}}\n"
mode = "0640"
on_change = "echo run >> {log}; printf '%s\n' \"$KVSYNC_CHANGED\" >> {log}"
"#,
        out = out.display(),
        log = hook_log.display(),
    ))
}

fn hook_runs(h: &Harness) -> usize {
    std::fs::read_to_string(h.path("hook.log"))
        .map(|s| s.lines().filter(|l| *l == "run").count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_files_with_modes_and_runs_a_shared_hook_once() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY_A);
    h.emu.set_secret("secret-b", CANARY_B);
    let config = two_files_one_hook(&h);

    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let a = h.path("out/a.txt");
    let b = h.path("out/sub/b.txt");
    assert_eq!(read(&a), format!("a={CANARY_A}\n"));
    assert_eq!(read(&b), format!("b={CANARY_B}\n"));
    assert_eq!(mode(&a), 0o600);
    assert_eq!(mode(&b), 0o640);
    assert_eq!(hook_runs(&h), 1, "a shared hook runs once per round");
    let log = read(&h.path("hook.log"));
    assert!(log.contains(&a.display().to_string()), "{log}");
    assert!(log.contains(&b.display().to_string()), "{log}");
    assert!(temp_leftovers(&h.path("out")).iter().all(|n| n == "sub"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_changes_only_what_rotated() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY_A);
    h.emu.set_secret("secret-b", CANARY_B);
    let config = two_files_one_hook(&h);
    assert!(h.once(&config, &[]).await.status.success());
    let a = h.path("out/a.txt");
    let b = h.path("out/sub/b.txt");
    let (a0, b0) = (stamp(&a), stamp(&b));

    // Nothing rotated: no write (same inode and mtime), no hook.
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stamp(&a), a0);
    assert_eq!(stamp(&b), b0);
    assert_eq!(hook_runs(&h), 1);

    // Rotate b only.
    h.emu.set_secret("secret-b", "rotated-b");
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stamp(&a), a0, "a did not rotate and must not be rewritten");
    assert_ne!(stamp(&b).0, b0.0, "b is replaced by rename (new inode)");
    assert_eq!(read(&b), "b=rotated-b\n");
    assert_eq!(hook_runs(&h), 2);
    let log = read(&h.path("hook.log"));
    let last_run: Vec<&str> = log.rsplit("run\n").next().unwrap().lines().collect();
    assert_eq!(
        last_run,
        vec![b.display().to_string()],
        "KVSYNC_CHANGED lists only b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_request_for_many_secrets() {
    let h = Harness::new().await;
    let mut body = String::from("[secrets]\n");
    let mut files = String::new();
    for i in 0..40 {
        h.emu.set_secret(&format!("s{i}"), &format!("value-{i}"));
        body.push_str(&format!("s{i} = \"s{i}\"\n"));
        files.push_str(&format!(
            "[[file]]\npath = \"{}/f{i}\"\ncontents = \"{{{{ secrets.s{i} }}}}\"\n",
            h.path("out").display()
        ));
    }
    let config = h.write_config(&format!("{body}\n{files}"));
    h.emu.reset_counters();
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let c = h.emu.counters();
    assert_eq!(c.tokens_issued, 1, "one token for 40 secrets: {c:?}");
    assert_eq!(c.himds_challenges, 1, "{c:?}");
    assert_eq!(c.kv_gets, 40, "{c:?}");
    assert_eq!(read(&h.path("out/f39")), "value-39");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_secret_leaves_every_destination_untouched() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY_A);
    h.emu.set_secret("secret-b", CANARY_B);
    let config = two_files_one_hook(&h);
    assert!(h.once(&config, &[]).await.status.success());
    let a = h.path("out/a.txt");
    let b = h.path("out/sub/b.txt");
    let (a0, b0) = (stamp(&a), stamp(&b));

    // a rotates, but b is now gone from the vault: nothing may be written.
    h.emu.set_secret("secret-a", "rotated-a");
    h.emu.delete_secret("secret-b");
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("secret-b"), "names the secret: {err}");
    assert!(err.contains("404"), "names the status: {err}");
    assert_eq!(stamp(&a), a0);
    assert_eq!(stamp(&b), b0);
    assert_eq!(read(&a), format!("a={CANARY_A}\n"));
    assert_eq!(hook_runs(&h), 1, "no hook on a failed round");
    assert!(temp_leftovers(&h.path("out")).iter().all(|n| n == "sub"));
    assert!(temp_leftovers(&h.path("out/sub")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_prints_no_value() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY_A);
    h.emu.set_secret("secret-b", CANARY_B);
    let config = two_files_one_hook(&h);
    let o = h.once(&config, &["--dry-run"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("would create"), "{out}");
    assert!(out.contains("a.txt") && out.contains("b.txt"), "{out}");
    assert!(!h.path("out").exists(), "dry run created nothing");
    assert_eq!(hook_runs(&h), 0);
    for text in [stdout(&o), stderr(&o)] {
        assert!(
            !text.contains(CANARY_A) && !text.contains(CANARY_B),
            "{text}"
        );
    }

    // After a real run, a rotation shows up as "would change".
    assert!(h.once(&config, &[]).await.status.success());
    h.emu.set_secret("secret-a", "rotated-a");
    let o = h.once(&config, &["--dry-run"]).await;
    let out = stdout(&o);
    assert!(
        out.contains("would change") && out.contains("unchanged"),
        "{out}"
    );
    assert_eq!(read(&h.path("out/a.txt")), format!("a={CANARY_A}\n"));
    assert!(!out.contains("rotated-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_exits_1_with_status_and_stderr_tail() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY_A);
    let config = h.write_config(&format!(
        r#"
[secrets]
a = "secret-a"

[[file]]
path = "{}/a.txt"
contents = "{{{{ secrets.a }}}}"
on_change = "echo reload-failed-marker >&2; exit 3"
"#,
        h.path("out").display()
    ));
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("reload-failed-marker"), "{err}");
    assert!(err.contains('3'), "{err}");
    assert_eq!(
        read(&h.path("out/a.txt")),
        CANARY_A,
        "files are written before hooks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_exits_2() {
    let h = Harness::new().await;
    let config = h.write_config("[agent]\nintervall = \"1m\"\n");
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("intervall"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_vault_hits_the_deadline() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY_A);
    h.emu.push_fault(Fault {
        service: Service::KeyVault,
        path_contains: Some("/secrets/secret-a".into()),
        status: 200,
        code: None,
        inner_code: None,
        retry_after: None,
        delay: Some(std::time::Duration::from_secs(60)),
        times: 10,
    });
    let config = h.write_config(&format!(
        "[agent]\ndeadline = \"2s\"\n\n[secrets]\na = \"secret-a\"\n\n[[file]]\npath = \"{}/a.txt\"\ncontents = \"{{{{ secrets.a }}}}\"\n",
        h.path("out").display()
    ));
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("deadline"), "{}", stderr(&o));
    assert!(!h.path("out/a.txt").exists());
}

/// Runs a succeeding and several failing syncs with trace logging, in text
/// and JSON, and asserts that no secret value and no token ever appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_in_any_output_at_trace_level() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY_A);
    h.emu.set_secret("secret-b", CANARY_B);
    let config = two_files_one_hook(&h);
    let mut outputs = Vec::new();
    let trace = [("KVSYNC_LOG", "trace")];
    let cfg = config.to_str().unwrap();
    // Success, text and JSON logs, and a dry run.
    outputs.push(h.kvsync(&["once", "-c", cfg], &trace).await);
    h.emu.set_secret("secret-a", "rotated-a-canary-5d1e");
    outputs.push(
        h.kvsync(
            &["--log-format", "json", "once", "-c", cfg, "--dry-run"],
            &trace,
        )
        .await,
    );
    outputs.push(
        h.kvsync(&["--log-format", "json", "once", "-c", cfg], &trace)
            .await,
    );
    // Failures: 403, 500s, a missing secret.
    h.emu.push_fault(Fault {
        service: Service::KeyVault,
        path_contains: Some("/secrets/secret-a".into()),
        status: 403,
        code: Some("Forbidden".into()),
        inner_code: Some("ForbiddenByRbac".into()),
        retry_after: None,
        delay: None,
        times: 1,
    });
    outputs.push(h.kvsync(&["once", "-c", cfg], &trace).await);
    h.emu.delete_secret("secret-b");
    outputs.push(h.kvsync(&["once", "-c", cfg], &trace).await);

    assert!(outputs[0].status.success(), "{}", stderr(&outputs[0]));
    assert_eq!(outputs[3].status.code(), Some(1));
    assert_eq!(outputs[4].status.code(), Some(1));
    let tokens = h.emu.issued_tokens();
    assert!(!tokens.is_empty());
    for o in &outputs {
        for text in [stdout(o), stderr(o)] {
            for canary in [CANARY_A, CANARY_B, "rotated-a-canary-5d1e"] {
                assert!(!text.contains(canary), "secret value leaked:\n{text}");
            }
            for token in &tokens {
                assert!(!text.contains(token.as_str()), "token leaked:\n{text}");
                // Not even the signature part alone.
                let sig = token.rsplit('.').next().unwrap();
                assert!(!text.contains(sig), "token signature leaked:\n{text}");
            }
            assert!(!text.contains("Basic "), "challenge key leaked:\n{text}");
        }
    }
}
