//! `kvsync exec` end to end (issue 16): the real binary supervising a shell
//! child against the in-process emulator. Tests wait for kvsync's log events
//! and for files the child writes (bounded polls), never for fixed sleeps.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::harness::{Agent, Harness, read};
use nix::sys::signal::Signal;

const CANARY_1: &str = "canary-exec-1-5b9d2e7a";
const CANARY_2: &str = "canary-exec-2-c4f81a3e";
const SECS_60: Duration = Duration::from_secs(60);

/// `[env] DATABASE_PASSWORD` from secret `db-password`, plus `[exec]`.
fn exec_config(h: &Harness, exec: &str) -> std::path::PathBuf {
    h.write_config(&format!(
        r#"
[agent]
interval = "1s"
jitter = "0s"

[secrets]
db_password = "db-password"

[env]
DATABASE_PASSWORD = "{{{{ secrets.db_password }}}}"

[exec]
{exec}
"#
    ))
}

fn spawn_exec(h: &Harness, config: &Path, script: &str, extra_env: &[(&str, &str)]) -> Agent {
    h.spawn(
        &[
            "exec",
            "-c",
            config.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
        extra_env,
    )
}

/// Poll (bounded) until `path` holds `want` (the child writes it).
async fn wait_for_file(path: &Path, want: &str) {
    let deadline = Instant::now() + SECS_60;
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {want:?} (has {:?})",
            path.display(),
            std::fs::read_to_string(path).ok()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_of(line: &str) -> u32 {
    line.split("pid=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"))
}

/// Poll (bounded) until a child of `parent` runs `command` (its
/// /proc/PID/cmdline, arguments split on spaces), or `parent` itself does
/// (a shell that execs its last command).
async fn wait_for_child_command(parent: u32, command: &str) {
    let want: Vec<u8> = command
        .split(' ')
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    let deadline = Instant::now() + SECS_60;
    loop {
        let found = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            // /proc/PID/stat after the parenthesised name: state, ppid.
            let ppid = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            let pid = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok());
            (ppid == Some(parent) || pid == Some(parent))
                && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want)
        });
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "{parent} never ran {command:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn environ(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
}

/// Whether a live (not zombie) process is still in process group `pgid`
/// (/proc/PID/stat after the parenthesised name: state, ppid, pgrp).
fn group_alive(pgid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
    })
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_sees_the_value_and_is_restarted_with_the_new_one() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", CANARY_1);
    let config = exec_config(&h, "on_change = \"restart\"\nstop_timeout = \"5s\"");
    let mut kv = spawn_exec(
        &h,
        &config,
        r#"echo "$DATABASE_PASSWORD" > out; sleep 1000"#,
        &[("KVSYNC_LOG", "trace")],
    );
    let started = kv.wait_for("child started", SECS_60).await;
    let first_pid = pid_of(&started);
    wait_for_file(&h.path("out"), CANARY_1).await;

    // kvsync's own environment never holds the value; the child's does.
    let kvsync_pid = kv.child.id().unwrap();
    assert!(!contains(&environ(kvsync_pid), CANARY_1));
    assert!(
        contains(&environ(first_pid), CANARY_1),
        "sanity: the child has it"
    );

    // Rotation: restarted within an interval (1 s), with the new value.
    h.emu.set_secret("db-password", CANARY_2);
    let rotated = Instant::now();
    kv.wait_for("restarting child", SECS_60).await;
    let restarted = kv.wait_for("child started", SECS_60).await;
    assert_ne!(pid_of(&restarted), first_pid, "a new process");
    wait_for_file(&h.path("out"), CANARY_2).await;
    assert!(
        !group_alive(first_pid),
        "the old child's whole group (sh and its sleep) is gone"
    );
    // One interval plus a round; generous for a loaded machine.
    assert!(
        rotated.elapsed() < Duration::from_secs(20),
        "{:?}",
        rotated.elapsed()
    );
    assert!(!contains(&environ(kvsync_pid), CANARY_2));

    let (code, log) = kv.terminate().await;
    // sleep was killed by the forwarded SIGTERM: 128 + 15.
    assert_eq!(code, Some(143), "{}", log.join("\n"));
    let log = log.join("\n");
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logs captured"
    );
    for canary in [CANARY_1, CANARY_2] {
        assert!(!log.contains(canary), "value in kvsync's log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_mode_delivers_sighup_to_the_same_pid() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", CANARY_1);
    let config = exec_config(&h, "on_change = \"signal\"\nsignal = \"SIGHUP\"");
    let hups = h.path("hups");
    let script = format!(
        r#"trap 'echo "$$" >> {hups}' HUP; echo "$$" > pid; echo "$DATABASE_PASSWORD" > out; while :; do sleep 0.05; done"#,
        hups = hups.display()
    );
    let mut kv = spawn_exec(&h, &config, &script, &[]);
    let started = kv.wait_for("child started", SECS_60).await;
    let pid = pid_of(&started);
    wait_for_file(&h.path("out"), CANARY_1).await;
    wait_for_file(&h.path("pid"), &pid.to_string()).await;

    h.emu.set_secret("db-password", CANARY_2);
    kv.wait_for("signalling child", SECS_60).await;
    wait_for_file(&hups, &pid.to_string()).await;
    assert!(
        !kv.log.iter().any(|l| l.contains("restarting child")),
        "signal mode never restarts"
    );
    let (code, _) = kv.terminate().await;
    // The shell has no TERM trap: killed by the forwarded SIGTERM.
    assert_eq!(code, Some(143));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_forwarded_and_kvsync_exits_with_the_child_status() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", CANARY_1);
    let config = exec_config(&h, "");
    let got = h.path("got-term");
    let script = format!(
        r#"trap 'echo term > {got}; exit 7' TERM; echo ready > ready; while :; do sleep 0.05; done"#,
        got = got.display()
    );
    let mut kv = spawn_exec(&h, &config, &script, &[]);
    kv.wait_for("child started", SECS_60).await;
    wait_for_file(&h.path("ready"), "ready").await;
    let (code, log) = kv.terminate().await;
    assert_eq!(read(&got).trim(), "term", "the child got SIGTERM");
    assert_eq!(code, Some(7), "{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_exits_on_its_own_sets_kvsync_exit_code() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", CANARY_1);
    let config = exec_config(&h, "");
    let mut kv = spawn_exec(
        &h,
        &config,
        r#"test -n "$DATABASE_PASSWORD" && exit 3"#,
        &[],
    );
    kv.wait_for("child exited", SECS_60).await;
    let (code, _) = kv.terminate_after_signal().await;
    assert_eq!(code, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_round_starts_no_child() {
    let h = Harness::new().await;
    // db-password does not exist: nothing to start the child with.
    let config = exec_config(&h, "");
    let marker = h.path("started");
    let script = format!("touch {}", marker.display());
    let kv = spawn_exec(&h, &config, &script, &[]);
    let (code, log) = kv.terminate_after_signal().await;
    assert_eq!(code, Some(1), "{}", log.join("\n"));
    assert!(!marker.exists(), "the command never ran");
    assert!(log.join("\n").contains("db-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_a_child_and_a_missing_command_is_127() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", CANARY_1);
    let config = exec_config(&h, "");
    let kv = h.spawn(
        &[
            "exec",
            "-c",
            config.to_str().unwrap(),
            "--",
            "/nonexistent/kvsync-test-command",
        ],
        &[],
    );
    let (code, _) = kv.terminate_after_signal().await;
    assert_eq!(code, Some(127));

    let mut kv = spawn_exec(&h, &config, "sleep 1000", &[]);
    let shell = pid_of(&kv.wait_for("child started", SECS_60).await);
    // sh catches a SIGINT that arrives before it forked `sleep` and acts on
    // it only when `sleep` ends: signal once `sleep` runs in the group.
    wait_for_child_command(shell, "sleep 1000").await;
    kv.signal(Signal::SIGINT);
    let (code, log) = kv.terminate_after_signal().await;
    assert_eq!(
        code,
        Some(130),
        "sleep killed by the forwarded SIGINT\n{}",
        log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stop_signal_is_forwarded_while_the_child_stops() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", CANARY_1);
    let config = exec_config(&h, "");
    let ints = h.path("ints");
    // The first SIGINT only counts; the second ends the child with 9.
    let script = format!(
        r#"n=0; trap 'n=$((n+1)); echo $n > {ints}; [ $n -ge 2 ] && exit 9' INT; echo ready > ready; while :; do sleep 0.05; done"#,
        ints = ints.display()
    );
    let mut kv = spawn_exec(&h, &config, &script, &[]);
    kv.wait_for("child started", SECS_60).await;
    wait_for_file(&h.path("ready"), "ready").await;
    kv.signal(Signal::SIGINT);
    wait_for_file(&ints, "1").await;
    kv.wait_for("forwarding stop signal", SECS_60).await;
    // An operator's second Ctrl-C reaches the child too.
    kv.signal(Signal::SIGINT);
    let (code, log) = kv.terminate_after_signal().await;
    assert_eq!(read(&ints).trim(), "2", "the child got both SIGINTs");
    assert_eq!(code, Some(9), "{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_boot_retries_stops_without_starting_the_child() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", CANARY_1);
    let config = h.write_config(
        r#"
[agent]
deadline = "2s"
once_wait = "10m"

[secrets]
db_password = "db-password"

[env]
DATABASE_PASSWORD = "{{ secrets.db_password }}"
"#,
    );
    h.emu.set_himds_down(true).await.unwrap();
    let marker = h.path("started");
    let mut kv = spawn_exec(&h, &config, &format!("touch {}", marker.display()), &[]);
    kv.wait_for("transient failure, retrying", SECS_60).await;
    // Well inside the 10 min budget: only the signal explains the exit.
    let (code, log) = kv.terminate().await;
    assert_eq!(code, Some(143), "{}", log.join("\n"));
    assert!(!marker.exists(), "the command never ran");
}
