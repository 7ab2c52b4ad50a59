//! Issue 16, a boot that doesn't give up: optional secrets, `once
//! --keep-going`, `once --wait` (retry budget) and `POST /sync`, end to end
//! against the emulator.

use std::time::{Duration, Instant};

use crate::support::harness::{Harness, read, stamp, stderr};
use kvsync_fake::{Fault, Service};

const SECS_60: Duration = Duration::from_secs(60);

fn optional_config(h: &Harness) -> std::path::PathBuf {
    h.write_config(&format!(
        r#"
[secrets]
feature = {{ name = "feature-flag", optional = true, default = "off" }}

[[file]]
path = "{out}/feature.conf"
contents = "flag={{{{ secrets.feature }}}} present={{{{ meta.feature.present }}}}\n"
"#,
        out = h.path("out").display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_optional_secret_renders_its_default() {
    let h = Harness::new().await;
    let config = optional_config(&h);
    let file = h.path("out/feature.conf");

    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&file), "flag=off present=false\n");

    // Created: the value, present.
    let version = h.emu.set_secret("feature-flag", "on");
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&file), "flag=on present=true\n");

    // Disabled (403 SecretDisabled): the default again.
    assert!(h.emu.set_version_enabled("feature-flag", &version, false));
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&file), "flag=off present=false\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_an_optional_secret_still_fails() {
    let h = Harness::new().await;
    let config = optional_config(&h);
    h.emu.push_fault(Fault {
        service: Service::KeyVault,
        path_contains: Some("/secrets/feature-flag".into()),
        status: 403,
        code: Some("ForbiddenByRbac".into()),
        times: 10,
        ..Fault::default()
    });
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    assert!(!h.path("out/feature.conf").exists(), "nothing written");
}

/// Two hook groups: `good` (its hook logs "good") and `bad`, whose secret
/// is missing.
fn two_groups(h: &Harness, extra: &str) -> std::path::PathBuf {
    let out = h.path("out");
    let log = h.path("hook.log");
    h.write_config(&format!(
        r#"
{extra}
[secrets]
good = "good-secret"
bad = "bad-secret"

[[file]]
path = "{out}/good.txt"
contents = "{{{{ secrets.good }}}}"
on_change = "echo good >> {log}"

[[file]]
path = "{out}/bad.txt"
contents = "{{{{ secrets.bad }}}}"
on_change = "echo bad >> {log}"
"#,
        out = out.display(),
        log = log.display(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_going_writes_and_hooks_the_groups_that_can_be() {
    let h = Harness::new().await;
    h.emu.set_secret("good-secret", "good-v1");
    let config = two_groups(&h, "");

    // Default: all or nothing.
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!h.path("out/good.txt").exists());
    assert!(!h.path("hook.log").exists());

    let o = h.once(&config, &["--keep-going"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("bad-secret") && err.contains("404"),
        "names the failure: {err}"
    );
    assert_eq!(read(&h.path("out/good.txt")), "good-v1");
    assert!(!h.path("out/bad.txt").exists());
    assert_eq!(
        read(&h.path("hook.log")),
        "good\n",
        "only the good group's hook ran"
    );

    // The same through [agent] keep_going; the bad group recovers.
    let config = two_groups(&h, "[agent]\nkeep_going = true\n");
    h.emu.set_secret("bad-secret", "bad-v1");
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&h.path("out/bad.txt")), "bad-v1");
    assert_eq!(read(&h.path("hook.log")), "good\nbad\n");
}

fn simple(h: &Harness, agent: &str) -> std::path::PathBuf {
    h.write_config(&format!(
        r#"
[agent]
{agent}

[secrets]
a = "secret-a"

[[file]]
path = "{out}/a.txt"
contents = "{{{{ secrets.a }}}}"
"#,
        out = h.path("out").display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_outlasts_an_identity_endpoint_that_is_down_at_boot() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", "a-v1");
    // Each attempt gives up after 2 s (HIMDS's own retries would go on for
    // ~70 s); only the retry budget explains a later success.
    let config = simple(&h, "deadline = \"2s\"");
    h.emu.set_himds_down(true).await.unwrap();

    // Without --wait: fails.
    let o = h.once(&config, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    let mut kv = h.spawn(
        &["once", "-c", config.to_str().unwrap(), "--wait", "30s"],
        &[],
    );
    // HIMDS comes up once kvsync has failed (and is retrying), ~2-3 s in.
    kv.wait_for("transient failure, retrying", SECS_60).await;
    h.emu.set_himds_down(false).await.unwrap();
    let (code, log) = kv.terminate_after_signal().await;
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    assert_eq!(read(&h.path("out/a.txt")), "a-v1");
    let retries = log
        .iter()
        .filter(|l| l.contains("transient failure, retrying"))
        .count();
    assert_eq!(retries, 1, "one line per state change: {}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("recovered")),
        "{}",
        log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_does_not_retry_a_403() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", "a-v1");
    let config = simple(&h, "once_wait = \"30s\"");
    h.emu.push_fault(Fault {
        service: Service::KeyVault,
        path_contains: Some("/secrets/secret-a".into()),
        status: 403,
        code: Some("ForbiddenByRbac".into()),
        times: 100,
        ..Fault::default()
    });
    h.emu.reset_counters();
    let started = Instant::now();
    let o = h.once(&config, &["--wait", "30s"]).await;
    let elapsed = started.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        h.emu.request_times("/secrets/secret-a").len(),
        1,
        "one GET: not retried"
    );
    // Behavioural bound (the first retry would come after ~1 s and the
    // budget is 30 s), generous for a loaded machine.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    tokio::time::timeout(SECS_60, s.read_to_string(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_sync_runs_a_round_and_concurrent_posts_share_it() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", "a-v1");
    let port = free_port();
    let config = simple(
        &h,
        &format!("interval = \"1h\"\njitter = \"0s\"\nlisten = \"127.0.0.1:{port}\""),
    );
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    let file = h.path("out/a.txt");
    let before = stamp(&file);

    // With a 1 h interval, only POST /sync explains a round now.
    h.emu.set_secret("secret-a", "a-v2");
    let (status, body) = http(port, "POST", "/sync").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ok"], true, "{body}");
    assert_eq!(
        answer["files_changed"][0],
        file.display().to_string(),
        "{body}"
    );
    assert!(!body.contains("a-v2"), "no value in the answer");
    assert_ne!(stamp(&file), before);
    assert_eq!(read(&file), "a-v2");
    let round = answer["round"].as_u64().unwrap();

    // Two at once: one round, both answered by it.
    let (a, b) = tokio::join!(http(port, "POST", "/sync"), http(port, "POST", "/sync"));
    let a: serde_json::Value = serde_json::from_str(&a.1).unwrap();
    let b: serde_json::Value = serde_json::from_str(&b.1).unwrap();
    assert_eq!(a["round"], b["round"], "{a} {b}");
    assert_eq!(a["round"].as_u64().unwrap(), round + 1);
    // The next request gets the next round: nothing extra ran between.
    let (_, body) = http(port, "POST", "/sync").await;
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["round"].as_u64().unwrap(), round + 2, "{c}");

    let (status, _) = http(port, "GET", "/sync").await;
    assert_eq!(status, 405);
    let (code, _) = agent.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_sync_is_refused_on_a_non_loopback_listener() {
    let h = Harness::new().await;
    h.emu.set_secret("secret-a", "a-v1");
    let port = free_port();
    // 0.0.0.0 is not loopback, though reachable through 127.0.0.1 here.
    let config = simple(
        &h,
        &format!("interval = \"1h\"\njitter = \"0s\"\nlisten = \"0.0.0.0:{port}\""),
    );
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    let (status, body) = http(port, "POST", "/sync").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("allow_remote_sync"), "{body}");
    agent.terminate().await;
}
