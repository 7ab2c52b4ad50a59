//! Hooks as argv (issue 11) on Unix: `on_change` / `verify` arrays run the
//! program directly (no shell), with the same environment and per-file
//! `hook_timeout`; the platform keys of the other OS are config errors.

use crate::support::harness::{Harness, read, stderr};

const CANARY: &str = "canary-argv-5b1d9e2f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_change_and_verify_arrays_run_without_a_shell() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY);
    let out = h.path("out");
    let log = h.path("hook.log");
    // Each argument reaches the program as one argv element: `$0`, `$1`
    // are set by position, and "$HOME *" is not expanded by any shell.
    let config = h.write_config(&format!(
        r#"
[secrets]
a = "secret-a"

[[file]]
path = "{out}/a.txt"
contents = "a={{{{ secrets.a }}}}\n"
verify = ["sh", "-c", "grep -q '^a=' \"$KVSYNC_CANDIDATE\" && echo verify >> \"$0\"", "{log}"]
on_change = ["sh", "-c", "printf '%s|%s|%s\n' hook \"$1\" \"$KVSYNC_CHANGED\" >> \"$0\"", "{log}", "$HOME *"]
hook_timeout = "20s"
"#,
        out = out.display(),
        log = log.display(),
    ));
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert_eq!(read(&h.path("out/a.txt")), format!("a={CANARY}\n"));
    assert_eq!(
        read(&log),
        format!("verify\nhook|$HOME *|{}\n", out.join("a.txt").display())
    );
    // Unchanged: no verify, no hook.
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert_eq!(read(&log).lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_hook_timeout_is_per_file() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", CANARY);
    let out = h.path("out");
    let config = h.write_config(&format!(
        r#"
[agent]
hook_timeout = "10m"

[secrets]
a = "secret-a"

[[file]]
path = "{out}/a.txt"
contents = "{{{{ secrets.a }}}}"
on_change = ["sleep", "600"]
hook_timeout = "300ms"
"#,
        out = out.display(),
    ));
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(r#"hook `["sleep","600"]` timed out after 300ms"#),
        "{err}"
    );
    assert!(!err.contains(CANARY));
}
