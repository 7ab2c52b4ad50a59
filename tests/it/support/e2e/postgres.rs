//! A throwaway PostgreSQL cluster from the Debian packages: `initdb` as the
//! `postgres` user (via `runuser`) in a temp dir chowned to `postgres`,
//! listening on 127.0.0.1:<free port> with its Unix socket inside that dir,
//! `scram-sha-256` for TCP clients and `trust` only for the `postgres`
//! superuser on the private socket (used by the test to run SQL).
//!
//! The cluster is stopped (`pg_ctl stop -m fast`) when the guard drops, even
//! when the test panics.

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use super::{run, run_ok};

/// Where Debian installs the server binaries: /usr/lib/postgresql/<major>/bin.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// The server account created by Debian's postgresql-common.
const PG_USER: &str = "postgres";
/// `pg_ctl -t`: seconds to wait for start/stop (bounded).
const PG_CTL_WAIT_SECS: &str = "30";

/// The newest `/usr/lib/postgresql/<major>/bin` holding `initdb`.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_PG_ROOT)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// What this machine lacks to run the PostgreSQL test.
pub fn missing() -> Vec<String> {
    let mut m = Vec::new();
    if bin_dir().is_none() {
        m.push(format!(
            "PostgreSQL server ({DEBIAN_PG_ROOT}/*/bin/initdb; apt-get install postgresql)"
        ));
    }
    if psql_path().is_none() {
        m.push("psql (apt-get install postgresql-client)".to_owned());
    }
    if nix::unistd::User::from_name(PG_USER)
        .ok()
        .flatten()
        .is_none()
    {
        m.push(format!("the `{PG_USER}` user"));
    }
    if !super::have_program("runuser") {
        m.push("runuser (util-linux)".to_owned());
    }
    m
}

fn psql_path() -> Option<PathBuf> {
    if let Some(p) = bin_dir().map(|b| b.join("psql")).filter(|p| p.is_file()) {
        return Some(p);
    }
    super::have_program("psql").then(|| PathBuf::from("psql"))
}

/// A running throwaway cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    psql: PathBuf,
    pub port: u16,
}

impl Postgres {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, program: &Path) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--"])
            .arg(program)
            .current_dir(self.dir.path());
        c
    }

    /// initdb + pg_hba.conf + pg_ctl start (waits until it accepts connections).
    pub async fn start() -> Self {
        let bin = bin_dir().expect("PostgreSQL binaries");
        let psql = psql_path().expect("psql");
        let dir = tempfile::Builder::new()
            .prefix("kvsync-pg-")
            .tempdir()
            .expect("tempdir");
        let pg = nix::unistd::User::from_name(PG_USER).unwrap().unwrap();
        nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).expect("chown to postgres");
        let mut this = Self {
            dir,
            bin,
            psql,
            port: 0,
        };

        let mut initdb = this.as_postgres(&this.bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(this.data())
            .args(["-U", PG_USER, "--no-sync", "--encoding=UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        run_ok(initdb, None).await;
        // Only the superuser over the private socket (dir is 0700, owned by
        // postgres; root gets in too), everyone else over TCP with SCRAM.
        let hba = "local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let hba_path = this.data().join("pg_hba.conf");
        std::fs::write(&hba_path, hba).expect("write pg_hba.conf");
        nix::unistd::chown(&hba_path, Some(pg.uid), Some(pg.gid)).expect("chown pg_hba.conf");

        this.port = super::free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c password_encryption=scram-sha-256 -c fsync=off",
            this.port,
            this.dir.path().display()
        );
        let mut start = this.as_postgres(&this.bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(this.data())
            .arg("-l")
            .arg(this.dir.path().join("server.log"))
            .args(["-w", "-t", PG_CTL_WAIT_SECS, "-o", &opts, "start"]);
        let o = run(start, None).await;
        if !o.status.success() {
            let log =
                std::fs::read_to_string(this.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "pg_ctl start failed: {}\n{}\nserver.log:\n{log}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        this
    }

    /// Run SQL as the superuser over the private socket (stdin, so values in
    /// it don't show up in `ps`). Returns stdout.
    pub async fn sql(&self, sql: &str) -> String {
        let mut c = self.as_postgres(&self.psql);
        c.arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-d", "postgres"])
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        let o = run_ok(c, Some(sql)).await;
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `psql -w` over TCP to 127.0.0.1 as `user`, password only from the
    /// pgpass file `pgpass` (clean environment: no PGPASSWORD from the host).
    pub async fn connect(&self, user: &str, database: &str, pgpass: &Path) -> Output {
        let mut c = Command::new(&self.psql);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PGPASSFILE", pgpass)
            .env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-w", "-t", "-A", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", user, "-d", database])
            .args(["-c", "select current_user"]);
        run(c, None).await
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        // Synchronous: Drop can't await. pg_ctl -w -t bounds the wait.
        let r = std::process::Command::new("runuser")
            .args(["-u", PG_USER, "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", PG_CTL_WAIT_SECS, "stop"])
            .current_dir(self.dir.path())
            .output();
        match r {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("pg_ctl stop failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("pg_ctl stop: {e}"),
        }
    }
}
