#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use super::*;

const LONG: Duration = Duration::from_secs(30);

/// A shell hook (the string form of `on_change`).
async fn run(cmd: &str, changed: &[PathBuf], timeout: Duration) -> Result<(), HookError> {
    super::run(&Hook::shell(cmd), changed, timeout).await
}

#[tokio::test]
async fn argv_runs_without_a_shell() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // Arguments reach the program verbatim: no word splitting, no `$`
    // expansion, no glob.
    let hook = Hook::argv([
        "sh".to_string(),
        "-c".to_string(),
        "printf '%s|%s|%s' \"$1\" \"$2\" \"$KVSYNC_CHANGED\" > \"$0\"".to_string(),
        out.display().to_string(),
        "two words".to_string(),
        "$HOME *".to_string(),
    ]);
    super::run(&hook, &[PathBuf::from("/etc/a b")], LONG)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "two words|$HOME *|/etc/a b"
    );
    assert_eq!(
        hook.to_string(),
        format!(
            "[\"sh\",\"-c\",\"printf '%s|%s|%s' \\\"$1\\\" \\\"$2\\\" \\\"$KVSYNC_CHANGED\\\" > \\\"$0\\\"\",\"{}\",\"two words\",\"$HOME *\"]",
            out.display()
        )
    );
}

#[tokio::test]
async fn argv_failures_and_missing_programs() {
    let err = super::run(&Hook::argv(["false"]), &[], LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, HookError::Failed { .. }), "{err:?}");
    // No shell: a missing program cannot start (not "exit 127").
    let err = super::run(&Hook::argv(["/nonexistent/kvsync-hook"]), &[], LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, HookError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("[\"/nonexistent/kvsync-hook\"]"),
        "{err}"
    );
}

#[tokio::test]
async fn per_hook_timeout_overrides_the_default() {
    let hook = Hook::argv(["sleep", "1000"]).with_timeout(Some(Duration::from_millis(200)));
    let err = super::run(&hook, &[], LONG).await.unwrap_err();
    let HookError::Timeout { timeout, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(timeout, Duration::from_millis(200));
}

#[tokio::test]
async fn passes_changed_paths_and_succeeds() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let cmd = format!("printf '%s' \"$KVSYNC_CHANGED\" > '{}'", out.display());
    let changed = [PathBuf::from("/etc/a.key"), PathBuf::from("/etc/b crt")];
    run(&cmd, &changed, LONG).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "/etc/a.key\n/etc/b crt"
    );
}

#[tokio::test]
async fn stdin_is_null() {
    // `cat` would block forever on an inherited terminal/pipe.
    run("cat", &[], LONG).await.unwrap();
}

#[tokio::test]
async fn failure_reports_status_and_stderr_tail() {
    let cmd = "for i in $(seq 1 30); do echo line$i >&2; done; echo out; exit 3";
    let err = run(cmd, &[], LONG).await.unwrap_err();
    match &err {
        HookError::Failed {
            status,
            stderr_tail,
            ..
        } => {
            assert!(status.contains('3'), "{status}");
            let lines: Vec<&str> = stderr_tail.lines().collect();
            assert_eq!(lines.len(), STDERR_TAIL_LINES);
            assert_eq!(lines.last(), Some(&"line30"));
            assert_eq!(lines.first(), Some(&"line11"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("exited with"), "{err}");
}

#[tokio::test]
async fn stderr_tail_is_bounded_in_bytes() {
    let err = run(
        "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1",
        &[],
        LONG,
    )
    .await
    .unwrap_err();
    let HookError::Failed { stderr_tail, .. } = err else {
        panic!("{err:?}")
    };
    assert!(stderr_tail.len() <= STDERR_TAIL_BYTES);
    assert!(!stderr_tail.is_empty());
}

#[tokio::test]
async fn spawn_failure_of_command_is_failed_127() {
    let err = run("/nonexistent/kvsync-hook", &[], LONG)
        .await
        .unwrap_err();
    let HookError::Failed { status, .. } = err else {
        panic!("{err:?}")
    };
    assert!(status.contains("127"), "{status}");
}

/// State of a process from /proc (None: gone).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ..." — comm may contain spaces; state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("pid");
    let ready = d.path().join("ready");
    // The grandchild records its pid; the shell then blocks too.
    let cmd = format!(
        "sleep 1000 & echo $! > '{p}'; mv '{p}' '{r}'; sleep 1000",
        p = pidfile.display(),
        r = ready.display()
    );
    let err = run(&cmd, &[], Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, HookError::Timeout { .. }), "{err:?}");
    let pid: i32 = std::fs::read_to_string(&ready)
        .expect("the hook wrote the grandchild's pid before the timeout")
        .trim()
        .parse()
        .unwrap();
    // SIGKILL is delivered asynchronously; the orphan may linger as a zombie
    // until its new parent reaps it. Bounded poll for that event.
    let mut state = proc_state(pid);
    for _ in 0..500 {
        if matches!(state, None | Some('Z') | Some('X')) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        state = proc_state(pid);
    }
    assert!(
        matches!(state, None | Some('Z') | Some('X')),
        "grandchild {pid} still running: {state:?}"
    );
}

#[test]
fn changed_env_joins_with_newlines() {
    assert_eq!(changed_env(&[]), OsString::new());
    assert_eq!(
        changed_env(&[PathBuf::from("/a"), PathBuf::from("/b")]),
        OsString::from("/a\n/b")
    );
}

#[tokio::test]
async fn hooks_get_a_minimal_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    // The test process has CARGO_* and more: none of it may reach a hook.
    let env = hook_environment();
    assert!(env.iter().all(|(k, _)| {
        let k = k.to_str().unwrap();
        HOOK_ENV_KEPT.contains(&k)
            || k.starts_with("KVSYNC_")
            || std::env::var(HOOK_ENV_PASSTHROUGH)
                .is_ok_and(|v| v.split(',').any(|n| n.trim() == k))
    }));
    run(
        &format!("env > {}", out.display()),
        &[],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let seen = std::fs::read_to_string(&out).unwrap();
    for line in seen.lines() {
        let name = line.split('=').next().unwrap();
        assert!(
            HOOK_ENV_KEPT.contains(&name)
                || name.starts_with("KVSYNC_")
                || ["PWD", "SHLVL", "_", "OLDPWD"].contains(&name)
                || std::env::var(HOOK_ENV_PASSTHROUGH)
                    .is_ok_and(|v| v.split(',').any(|n| n.trim() == name)),
            "{name} leaked into the hook"
        );
    }
    assert!(seen.contains("KVSYNC_CHANGED="));
}
