//! One setup for every command (src/app.rs): logging is set up by whoami
//! too, and every failure goes through the one exit-code map with the one
//! message prefix.

use crate::support::harness::{Harness, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_logs_at_debug_when_asked() {
    let h = Harness::new().await;
    let config = h.write_config("");
    let out = h
        .kvsync(
            &["whoami", "-c", config.to_str().unwrap()],
            &[("KVSYNC_LOG", "debug")],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("source:"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.contains("DEBUG")),
        "no debug line:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_reports_a_bad_config_alike_with_exit_2() {
    let h = Harness::new().await;
    let config = h.path("kvsync.toml");
    #[allow(clippy::disallowed_methods)]
    std::fs::write(&config, "vault = 42\n").unwrap();
    let c = config.to_str().unwrap();
    for args in [
        vec!["check", "-c", c],
        vec!["check", "--online", "-c", c],
        vec!["once", "-c", c],
        vec!["run", "-c", c],
        vec!["whoami", "-c", c],
    ] {
        let out = h.kvsync(&args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("{c}:1:9: vault: ")) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // Anything else: the one prefix, exit 1.
    let config = h.write_config("[agent]\nlisten = \"192.0.2.1:1\"\n");
    let out = h
        .kvsync(&["run", "-c", config.to_str().unwrap()], &[])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("kvsync: cannot listen on 192.0.2.1:1"),
        "{}",
        stderr(&out)
    );
}
