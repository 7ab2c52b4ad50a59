//! `kvsync run` end to end: the real agent binary against the in-process
//! emulator. Tests wait for the agent's "round complete" log events, never
//! for fixed sleeps, and assert on files, hook runs and request counters.

use std::time::{Duration, Instant};

use crate::support::harness::{Harness, read, stamp, temp_leftovers};
use kvsync_fake::{Fault, Service};
use nix::sys::signal::Signal;

const SECS_60: Duration = Duration::from_secs(60);

/// key + cert share a hook (a group); `plain` has its own file and no hook.
fn group_config(h: &Harness, agent: &str) -> std::path::PathBuf {
    let out = h.path("out");
    let log = h.path("hook.log");
    h.write_config(&format!(
        r#"
[agent]
{agent}

[secrets]
key = "tls-key"
cert = "tls-cert"
plain = "plain"

[[file]]
path = "{out}/site.key"
contents = "{{{{ secrets.key }}}}"
on_change = "echo run >> {log}"

[[file]]
path = "{out}/site.crt"
contents = "{{{{ secrets.cert }}}}"
on_change = "echo run >> {log}"

[[file]]
path = "{out}/plain.txt"
contents = "{{{{ secrets.plain }}}}"
"#,
        out = out.display(),
        log = log.display()
    ))
}

fn seed(h: &Harness) {
    h.emu.set_secret("tls-key", "key-v1");
    h.emu.set_secret("tls-cert", "cert-v1");
    h.emu.set_secret("plain", "plain-v1");
}

fn hook_runs(h: &Harness) -> usize {
    std::fs::read_to_string(h.path("hook.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_picked_up_within_one_interval_and_quiet_rounds_do_nothing() {
    let h = Harness::new().await;
    seed(&h);
    let config = group_config(&h, "interval = \"1s\"\njitter = \"0s\"");
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    assert_eq!(read(&h.path("out/site.key")), "key-v1");
    assert_eq!(hook_runs(&h), 1);
    let stamps = [
        stamp(&h.path("out/site.key")),
        stamp(&h.path("out/plain.txt")),
    ];

    // Quiet rounds: no write, no hook, and no new token.
    h.emu.reset_counters();
    for _ in 0..3 {
        let line = agent.round().await;
        assert!(line.contains("files_written=0"), "{line}");
    }
    assert_eq!(stamp(&h.path("out/site.key")), stamps[0]);
    assert_eq!(stamp(&h.path("out/plain.txt")), stamps[1]);
    assert_eq!(hook_runs(&h), 1);
    assert_eq!(
        h.emu.counters().tokens_issued,
        0,
        "the token is reused across rounds"
    );

    // Rotation: picked up by the next round (interval 1 s).
    h.emu.set_secret("tls-cert", "cert-v2");
    let rotated_at = Instant::now();
    loop {
        agent.round().await;
        if read(&h.path("out/site.crt")) == "cert-v2" {
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(10),
            "rotation not picked up"
        );
    }
    assert_eq!(
        hook_runs(&h),
        2,
        "the group's hook ran once for the rotation"
    );
    let (code, _) = agent.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_causes_an_immediate_round() {
    let h = Harness::new().await;
    seed(&h);
    let config = group_config(&h, "interval = \"1h\"\njitter = \"0s\"");
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    h.emu.set_secret("plain", "plain-v2");
    agent.signal(Signal::SIGHUP);
    // With a 1 h interval, only the signal explains a second round.
    agent.wait_for("reason=\"SIGHUP\"", SECS_60).await;
    agent.round().await;
    assert_eq!(read(&h.path("out/plain.txt")), "plain-v2");
    let (code, _) = agent.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edits_are_picked_up_and_invalid_edits_rejected() {
    let h = Harness::new().await;
    seed(&h);
    let config = group_config(&h, "interval = \"1h\"\njitter = \"0s\"");
    let original = read(&config);
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;

    // A valid edit: one more file. Written by rename, as editors do.
    let edited = format!(
        "{original}\n[[file]]\npath = \"{}\"\ncontents = \"extra {{{{ secrets.plain }}}}\"\n",
        h.path("out/extra.txt").display()
    );
    replace_file(&config, &edited);
    agent.wait_for("config reloaded", SECS_60).await;
    agent.round().await;
    assert_eq!(read(&h.path("out/extra.txt")), "extra plain-v1");

    // An invalid edit: rejected with check's message; the old config keeps working.
    replace_file(
        &config,
        &edited.replace("interval = \"1h\"", "bogus_key = \"1h\""),
    );
    let line = agent.wait_for("config reload rejected", SECS_60).await;
    let mut message = line;
    if !message.contains("bogus_key") {
        message = agent.wait_for("bogus_key", SECS_60).await;
    }
    assert!(
        message.contains("agent.bogus_key"),
        "names the key: {message}"
    );
    assert!(
        message.contains("kvsync.toml:"),
        "names file and line: {message}"
    );
    agent.round().await;
    h.emu.set_secret("plain", "plain-v2");
    agent.signal(Signal::SIGHUP);
    agent.wait_for("config reload rejected", SECS_60).await;
    agent.round().await;
    assert_eq!(read(&h.path("out/extra.txt")), "extra plain-v2");
    let (code, _) = agent.terminate().await;
    assert_eq!(code, Some(0));
}

fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    #[allow(clippy::disallowed_methods)]
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_round_leaves_no_temp_file_and_a_consistent_group() {
    let h = Harness::new().await;
    seed(&h);
    let config = group_config(&h, "interval = \"1h\"\njitter = \"0s\"");
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;

    // Rotate the group; the cert's fetch hangs, so SIGTERM lands mid-round.
    h.emu.set_secret("tls-key", "key-v2");
    h.emu.set_secret("tls-cert", "cert-v2");
    h.emu.push_fault(Fault {
        service: Service::KeyVault,
        path_contains: Some("/secrets/tls-cert".into()),
        status: 200,
        code: None,
        inner_code: None,
        retry_after: None,
        delay: Some(Duration::from_secs(30)),
        times: 1,
    });
    h.emu.reset_counters();
    agent.signal(Signal::SIGHUP);
    agent.wait_for("reloading config", SECS_60).await;
    // Wait until the slow request has reached the vault.
    let t0 = Instant::now();
    while h.emu.counters().kv_gets < 3 {
        assert!(t0.elapsed() < SECS_60, "round did not start");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, log) = agent.terminate().await;
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    let (key, cert) = (read(&h.path("out/site.key")), read(&h.path("out/site.crt")));
    assert!(
        (key == "key-v1" && cert == "cert-v1") || (key == "key-v2" && cert == "cert-v2"),
        "group diverged: {key} / {cert}"
    );
    assert!(
        temp_leftovers(&h.path("out")).is_empty(),
        "{:?}",
        temp_leftovers(&h.path("out"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_group_member_leaves_the_group_untouched_while_others_update() {
    let h = Harness::new().await;
    seed(&h);
    let config = group_config(&h, "interval = \"1s\"\njitter = \"0s\"");
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    assert_eq!(hook_runs(&h), 1);
    let key_stamp = stamp(&h.path("out/site.key"));

    h.emu.set_secret("tls-key", "key-v2");
    h.emu.delete_secret("tls-cert");
    h.emu.set_secret("plain", "plain-v2");
    loop {
        let line = agent.round().await;
        if read(&h.path("out/plain.txt")) == "plain-v2" {
            assert!(line.contains("ok=false"), "{line}");
            break;
        }
    }
    assert_eq!(
        stamp(&h.path("out/site.key")),
        key_stamp,
        "group member untouched"
    );
    assert_eq!(read(&h.path("out/site.crt")), "cert-v1");
    assert_eq!(hook_runs(&h), 1, "no hook for an unwritten group");

    // The cert comes back: the whole group updates together, hook once.
    h.emu.set_secret("tls-cert", "cert-v2");
    loop {
        let line = agent.round().await;
        if line.contains("ok=true") {
            break;
        }
    }
    assert_eq!(read(&h.path("out/site.key")), "key-v2");
    assert_eq!(read(&h.path("out/site.crt")), "cert-v2");
    assert_eq!(hook_runs(&h), 2);
    agent.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn himds_outage_keeps_files_and_recovers_with_one_log_per_state_change() {
    let h = Harness::new().await;
    seed(&h);
    // Files from an earlier sync are on disk.
    let config = group_config(&h, "interval = \"2s\"\njitter = \"0s\"\ndeadline = \"1s\"");
    assert!(h.once(&config, &[]).await.status.success());
    let before = stamp(&h.path("out/plain.txt"));
    h.emu.set_secret("plain", "plain-v2");

    // HIMDS fails every token request for a while (a fresh agent has no token).
    h.emu.push_fault(Fault {
        service: Service::Himds,
        path_contains: None,
        status: 503,
        code: None,
        inner_code: None,
        retry_after: None,
        delay: None,
        times: 1_000_000,
    });
    let mut agent = h.spawn_agent(&config, &[]);
    for _ in 0..3 {
        let line = agent.round().await;
        assert!(line.contains("ok=false"), "{line}");
    }
    assert_eq!(
        stamp(&h.path("out/plain.txt")),
        before,
        "files untouched during the outage"
    );
    h.emu.clear_faults();
    loop {
        let line = agent.round().await;
        if line.contains("ok=true") {
            break;
        }
    }
    assert_eq!(read(&h.path("out/plain.txt")), "plain-v2");
    let (_, log) = agent.terminate().await;
    let errors = log.iter().filter(|l| l.contains("ERROR")).count();
    assert!(
        errors <= 3,
        "one error log per state change, not per retry ({errors}):\n{}",
        log.join("\n")
    );
    assert!(log.iter().any(|l| l.contains("recovered")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let h = Harness::new().await;
    seed(&h);
    let config = group_config(&h, "interval = \"1h\"\njitter = \"0s\"");
    h.emu.push_fault(Fault {
        service: Service::KeyVault,
        path_contains: Some("/secrets/plain".into()),
        status: 429,
        code: Some("Throttled".into()),
        inner_code: None,
        retry_after: Some(3),
        delay: None,
        times: 1,
    });
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    assert_eq!(read(&h.path("out/plain.txt")), "plain-v1");
    let times = h.emu.request_times("/secrets/plain");
    assert!(times.len() >= 2, "{times:?}");
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_secs(3),
        "retried after {gap:?}, before Retry-After: 3"
    );
    agent.terminate().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    tokio::time::timeout(SECS_60, s.read_to_string(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_metrics_and_sd_notify() {
    let h = Harness::new().await;
    seed(&h);
    let port = free_port();
    let config = group_config(
        &h,
        &format!("interval = \"1h\"\njitter = \"0s\"\nlisten = \"127.0.0.1:{port}\""),
    );
    let sock_path = h.path("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let mut agent = h.spawn_agent(&config, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(SECS_60, sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    agent.round().await;

    let (status, body) = http_get(port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    for metric in [
        "kvsync_rounds_total",
        "kvsync_files_written_total",
        "kvsync_hooks_run_total",
        "kvsync_file_last_success_timestamp_seconds",
        "kvsync_token_expiry_timestamp_seconds",
        "kvsync_failures_total{kind=\"vault\"} 0",
    ] {
        assert!(body.contains(metric), "{metric} missing:\n{body}");
    }
    assert!(!body.contains("key-v1") && !body.contains("cert-v1"));

    agent.signal(Signal::SIGTERM);
    let mut saw_stopping = false;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf)).await {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            saw_stopping = true;
            break;
        }
    }
    assert!(saw_stopping);
    let (code, _) = agent.terminate_after_signal().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_with_the_reason_when_rounds_fail() {
    let h = Harness::new().await;
    seed(&h);
    h.emu.delete_secret("plain");
    let port = free_port();
    let config = group_config(
        &h,
        &format!("interval = \"1h\"\njitter = \"0s\"\nlisten = \"127.0.0.1:{port}\""),
    );
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    let (status, body) = http_get(port, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    // The public answer names failure kinds only; the details (secret
    // names) are for loopback clients asking for them.
    assert!(body.contains("vault"), "the reason names the kind: {body}");
    let answer = body.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(!answer.contains("plain"), "no secret names: {body}");
    let (status, body) = http_get(port, "/healthz?verbose").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("plain"),
        "the verbose reason names the secret: {body}"
    );
    agent.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_is_retried_next_round_without_rewriting() {
    let h = Harness::new().await;
    seed(&h);
    let mark = h.path("failed-once");
    let log = h.path("hook.log");
    let config = h.write_config(&format!(
        r#"
[agent]
interval = "1h"
jitter = "0s"

[secrets]
plain = "plain"

[[file]]
path = "{out}/plain.txt"
contents = "{{{{ secrets.plain }}}}"
on_change = "test -f {mark} || {{ touch {mark}; echo first-attempt-fails >&2; exit 1; }}; echo run >> {log}"
"#,
        out = h.path("out").display(),
        mark = mark.display(),
        log = log.display(),
    ));
    let mut agent = h.spawn_agent(&config, &[]);
    let first = agent.round().await;
    assert!(
        first.contains("ok=false") && first.contains("files_written=1"),
        "{first}"
    );
    // Retried with backoff (≈1 s), not after the 1 h interval, and without
    // rewriting the file.
    let second = agent.round().await;
    assert!(
        second.contains("ok=true") && second.contains("files_written=0"),
        "{second}"
    );
    assert!(second.contains("hooks_run=1"), "{second}");
    assert_eq!(read(&log), "run\n");
    agent.terminate().await;
}
