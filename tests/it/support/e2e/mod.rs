//! Helpers for the end-to-end tests against real servers (nginx, PostgreSQL)
//! from Debian packages, run on loopback ports inside private temp dirs.
//!
//! Gating: these tests need root (chown to `postgres`, nginx master) and the
//! server binaries. When something is missing they print a loud `SKIP` line
//! and pass, unless `KVSYNC_E2E_REQUIRED` is set (CI: scripts/test.sh), in
//! which case they fail so a CI machine can't silently skip them.
//!
//! Every external command runs under a timeout; nothing here talks to a
//! non-loopback address.

pub mod nginx;
pub mod postgres;
pub mod tls_client;

use std::io::Write as _;
use std::process::Output;
use std::time::Duration;

/// Upper bound for any single external command (initdb, pg_ctl, psql,
/// nginx -t): generous for a loaded 2-core machine, small enough that a hang
/// fails the test instead of the whole suite.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable that turns a skip into a failure (set by CI).
pub const REQUIRED_ENV: &str = "KVSYNC_E2E_REQUIRED";

fn required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether test `name` can run. `missing` lists what this machine lacks
/// (besides root, checked here). Prints a loud skip message, or panics when
/// `KVSYNC_E2E_REQUIRED` is set.
pub fn gate(name: &str, mut missing: Vec<String>) -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root (uid 0)".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    if required() {
        panic!("{name}: {REQUIRED_ENV} is set but this machine lacks: {what}");
    }
    // Straight to the stderr handle, not eprintln!: the test harness
    // captures (and hides) eprintln! output of passing tests, and a skip
    // must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIP {name}: end-to-end test NOT RUN; missing: {what}\n\
         !!! (set {REQUIRED_ENV}=1 to make this a failure; scripts/test.sh does)\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    false
}

/// A loopback TCP port that was free a moment ago (bind to port 0, read it,
/// release it). Another process could take it before the server binds; the
/// server's start then fails loudly with its own log.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Run `cmd` to completion under [`COMMAND_TIMEOUT`], feeding `stdin`.
pub async fn run(mut cmd: tokio::process::Command, stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let what = format!("{:?}", cmd.as_std());
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {COMMAND_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Like [`run`], panicking with the command's output when it fails.
pub async fn run_ok(cmd: tokio::process::Command, stdin: Option<&str>) -> Output {
    let what = format!("{:?}", cmd.as_std());
    let o = run(cmd, stdin).await;
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Whether an executable exists at `path` or on PATH under that name.
pub fn have_program(name: &str) -> bool {
    if name.contains('/') {
        return std::path::Path::new(name).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}
