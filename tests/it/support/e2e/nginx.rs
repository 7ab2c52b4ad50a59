//! A private nginx from the Debian package: its own prefix in a temp dir
//! (`nginx -p DIR -c DIR/nginx.conf -e DIR/error.log`), absolute paths for
//! the pid file, logs and every `*_temp_path`, one TLS server on
//! 127.0.0.1:<free port> serving `DIR/tls/site.crt` + `DIR/tls/site.key`.
//!
//! Decisions: the master runs as root (it reads the 0600 root-owned key at
//! start and on every reload, as on a production host); the workers run as
//! nginx's default unprivileged user and never touch the key. `daemon off`,
//! spawned as a child of the test, so its pid and exit are known without a
//! pid-file race; stopped with `-s quit` (graceful) and a bounded wait for
//! the master to exit, also from Drop when a test panics.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// Debian installs nginx here (root's PATH has /usr/sbin; a test runner's
/// PATH may not).
const DEBIAN_NGINX: &str = "/usr/sbin/nginx";
/// Bounded wait for the master to exit after `-s quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bounded wait for the listening socket after spawn.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Poll step while waiting for nginx to accept: nginx has no readiness
/// notification a test can await (no sd_notify), so we retry connecting.
const POLL_STEP: Duration = Duration::from_millis(25);

/// The nginx binary, if installed.
pub fn binary() -> Option<PathBuf> {
    if Path::new(DEBIAN_NGINX).is_file() {
        return Some(PathBuf::from(DEBIAN_NGINX));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nginx"))
            .find(|c| c.is_file())
    })
}

/// What this machine lacks to run the nginx test.
pub fn missing() -> Vec<String> {
    match binary() {
        Some(_) => Vec::new(),
        None => vec![
            "nginx (DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx)"
                .to_owned(),
        ],
    }
}

/// A private nginx instance (configured by [`Nginx::prepare`], running
/// after [`Nginx::start`]).
pub struct Nginx {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl Nginx {
    /// Write `nginx.conf` into a fresh prefix dir; create `tls/`.
    pub fn prepare() -> Self {
        let bin = binary().expect("nginx installed");
        let dir = tempfile::Builder::new()
            .prefix("kvsync-nginx-")
            .tempdir()
            .expect("tempdir");
        // Traversable (not listable) by the unprivileged workers.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        let this = Self {
            dir,
            bin,
            port: super::free_port(),
            child: None,
        };
        std::fs::write(this.path("nginx.conf"), this.config()).unwrap();
        this
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.path("tls/site.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.path("tls/site.key")
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "# kvsync e2e: private nginx instance\n\
             daemon off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             # notice: nginx logs each SIGHUP (\"reconfiguring\") at this level.\n\
             error_log {d}/error.log notice;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {d}/client_body_temp;\n\
             \x20   proxy_temp_path {d}/proxy_temp;\n\
             \x20   fastcgi_temp_path {d}/fastcgi_temp;\n\
             \x20   uwsgi_temp_path {d}/uwsgi_temp;\n\
             \x20   scgi_temp_path {d}/scgi_temp;\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port} ssl;\n\
             \x20       server_name localhost;\n\
             \x20       ssl_certificate {cert};\n\
             \x20       ssl_certificate_key {key};\n\
             \x20       location / {{ return 200 \"ok\\n\"; }}\n\
             \x20   }}\n\
             }}\n",
            port = self.port,
            cert = self.cert_path().display(),
            key = self.key_path().display(),
        )
    }

    /// `nginx -p DIR -c DIR/nginx.conf -e DIR/error.log`, as a shell word
    /// list (the temp dir path has no characters a shell would expand).
    pub fn command_line(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "{} -p {d} -c {d}/nginx.conf -e {d}/error.log",
            self.bin.display()
        )
    }

    /// The recipe's hook for this instance (`nginx -t && nginx -s reload`),
    /// appending one line to `counter` each time it runs.
    pub fn reload_hook(&self, counter: &Path) -> String {
        let n = self.command_line();
        format!(
            "echo run >> {counter}; {n} -q -t && {n} -s reload",
            counter = counter.display()
        )
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.path("nginx.conf"))
            .arg("-e")
            .arg(self.path("error.log"));
        c
    }

    /// Spawn the master and wait (bounded) until the port accepts TCP.
    pub async fn start(&mut self) {
        let stderr = std::fs::File::create(self.path("stderr.log")).unwrap();
        let mut c = self.command();
        c.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        self.child = Some(c.spawn().expect("spawn nginx"));
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("nginx exited at start ({status}):\n{}", self.logs());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx not listening on {} within {START_TIMEOUT:?}:\n{}",
                self.port,
                self.logs()
            );
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    /// error.log + the master's stderr, for failure messages.
    pub fn logs(&self) -> String {
        let read = |p: &str| std::fs::read_to_string(self.path(p)).unwrap_or_default();
        format!(
            "error.log:\n{}\nstderr:\n{}",
            read("error.log"),
            read("stderr.log")
        )
    }

    /// error.log lines at `[emerg]` (a config load or reload failed, e.g.
    /// key and certificate don't match) or `[alert]`.
    pub fn failures(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("[emerg]") || l.contains("[alert]"))
            .map(str::to_owned)
            .collect()
    }

    /// How many reloads (SIGHUP) the master received.
    pub fn reloads(&self) -> usize {
        std::fs::read_to_string(self.path("error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("signal 1 (SIGHUP) received"))
            .count()
    }

    /// SIGHUP straight to the master: a reload that skips the config check
    /// `nginx -s reload` itself does before signalling.
    pub fn sighup(&self) {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .expect("nginx running");
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    }

    /// `-s quit` and a bounded wait for the master to exit.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut quit = self.command();
        quit.args(["-s", "quit"]);
        super::run_ok(quit, None).await;
        let status = tokio::time::timeout(QUIT_TIMEOUT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("nginx did not quit within {QUIT_TIMEOUT:?}"))
            .unwrap();
        assert!(status.success(), "nginx exit: {status}\n{}", self.logs());
    }
}

impl Drop for Nginx {
    /// A test that panicked still stops its nginx: SIGQUIT (graceful), a
    /// bounded wait, then SIGTERM (fast shutdown: the master takes its
    /// workers down) and SIGKILL as a last resort.
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Some(pid) = child.id() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        for sig in [Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGKILL] {
            let _ = kill(pid, sig);
            let deadline = std::time::Instant::now() + QUIT_TIMEOUT / 3;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(POLL_STEP);
            }
        }
        eprintln!("nginx master {pid} did not exit");
    }
}
