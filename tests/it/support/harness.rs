//! Test harness: an in-process Azure emulator plus a scratch directory, a
//! config writer that points every endpoint at the emulator, and a runner for
//! the real `kvsync` binary.

use std::path::{Path, PathBuf};
use std::process::Output;

use kvsync_fake::{Emulator, Options};

pub struct Harness {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn new() -> Self {
        let emu = Emulator::start(Options::default())
            .await
            .expect("emulator starts");
        let dir = tempfile::tempdir().expect("tempdir");
        Self { emu, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The `vault`, `[auth]` and `[tls]` sections pointing at the emulator.
    pub fn header(&self) -> String {
        format!(
            r#"vault = "{vault}"

[auth]
method = "arc"
identity_endpoint = "{himds}"
audience = "https://vault.azure.net"
insecure_test_arc_token_dir = "{tokens}"

[tls]
ca_file = "{ca}"
"#,
            vault = self.emu.vault_url(),
            himds = self.emu.himds_token_endpoint(),
            tokens = self.emu.token_dir().display(),
            ca = self.emu.ca_file().display(),
        )
    }

    /// Write `kvsync.toml` = header + `body` into the scratch dir.
    pub fn write_config(&self, body: &str) -> PathBuf {
        let path = self.path("kvsync.toml");
        let text = format!("{}\n{}", self.header(), body);
        #[allow(clippy::disallowed_methods)]
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Run the kvsync binary with a clean environment (no Azure variables
    /// leak in from the host) and the given args.
    pub async fn kvsync(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvsync"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let fut = cmd.output();
        // Bounded: no test run of kvsync may hang.
        tokio::time::timeout(std::time::Duration::from_secs(120), fut)
            .await
            .expect("kvsync finished within 120 s")
            .expect("kvsync ran")
    }

    pub async fn once(&self, config: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["once", "-c", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.kvsync(&args, &[]).await
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// (inode, mtime in ns) of a file.
pub fn stamp(path: &Path) -> (u64, i128) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).expect("metadata");
    (
        m.ino(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    )
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

/// Names in `dir` that look like leftover temp files.
pub fn temp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.') || n.contains(".tmp") || n.contains("kvsync"))
                .collect()
        })
        .unwrap_or_default()
}

/// A running `kvsync run` whose stderr is read line by line, so tests wait
/// for log events instead of sleeping.
pub struct Agent {
    pub child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    pub log: Vec<String>,
}

impl Harness {
    pub fn spawn_agent(&self, config: &Path, extra_env: &[(&str, &str)]) -> Agent {
        self.spawn(&["run", "-c", config.to_str().unwrap()], extra_env)
    }

    /// Start kvsync with `args` (debug logs on stderr, read line by line).
    pub fn spawn(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Agent {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvsync"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("KVSYNC_LOG", "debug")
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn kvsync");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent {
            child,
            lines,
            log: Vec::new(),
        }
    }
}

impl Agent {
    /// Wait (bounded) for a log line containing `needle`; returns it.
    pub async fn wait_for(&mut self, needle: &str, timeout: std::time::Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "agent exited before logging {needle:?}; log:\n{}",
                    self.log.join("\n")
                ),
                Err(_) => panic!(
                    "timed out waiting for {needle:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Wait for the next "round complete" line.
    pub async fn round(&mut self) -> String {
        self.wait_for("round complete", std::time::Duration::from_secs(60))
            .await
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// Send SIGTERM and wait (bounded) for exit; returns the exit code and
    /// drains the rest of the log.
    pub async fn terminate(self) -> (Option<i32>, Vec<String>) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.terminate_after_signal().await
    }

    /// Wait (bounded) for exit after a signal was sent.
    pub async fn terminate_after_signal(mut self) -> (Option<i32>, Vec<String>) {
        let status = tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait())
            .await
            .expect("agent exits within 30 s of SIGTERM")
            .expect("wait");
        while let Ok(Some(line)) =
            tokio::time::timeout(std::time::Duration::from_secs(5), self.lines.recv()).await
        {
            self.log.push(line);
        }
        (status.code(), self.log)
    }
}
