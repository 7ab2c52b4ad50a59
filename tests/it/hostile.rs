//! Hostile hosts (issue 13): other local users who can swap directories,
//! plant files or FIFOs, imitate the Arc agent or hold sockets open; run as
//! root with throwaway users where the scenario needs another user.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::support::harness::{Harness, read, stderr};
use crate::support::mock as support;

const CANARY: &str = "canary-hostile-5b7d1e";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A system user created for one test and deleted when dropped.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TempUser {
    fn new(tag: &str) -> Self {
        let name = format!("kvst{}{tag}", std::process::id() % 100_000);
        // useradd takes a lock on /etc/passwd: parallel tests retry.
        for _ in 0..50 {
            let status = std::process::Command::new("useradd")
                .args(["--system", "--no-create-home", "--user-group"])
                .args(["--shell", "/usr/sbin/nologin", &name])
                .status()
                .unwrap();
            if status.success() || status.code() == Some(9) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let user = nix::unistd::User::from_name(&name)
            .unwrap()
            .unwrap_or_else(|| panic!("useradd {name} failed"));
        Self {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = std::process::Command::new("userdel")
                .arg(&self.name)
                .status()
                .is_ok_and(|s| s.success() || s.code() == Some(6));
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_ancestor_is_refused_naming_it_and_nothing_is_written() {
    if !is_root() {
        eprintln!("skipped: needs root (throwaway user)");
        return;
    }
    let user = TempUser::new("sa");
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    // /var/lib/app owned by `app`; `app` swaps conf for a symlink to a
    // root-owned directory (standing for /etc/tmpfiles.d).
    let app = h.path("app");
    let victim = h.path("victim");
    std::fs::create_dir_all(app.join("conf")).unwrap();
    std::fs::create_dir(&victim).unwrap();
    chown(&app, user.uid, user.gid);
    let config = h.write_config(&format!(
        r#"
[secrets]
s = "s"

[[file]]
path = "{app}/conf/app.conf"
contents = "{{{{ secrets.s }}}}"
owner = "{user}"
"#,
        app = app.display(),
        user = user.name
    ));
    assert!(h.once(&config, &[]).await.status.success());
    assert_eq!(read(&app.join("conf/app.conf")), CANARY);
    h.emu.set_secret("s", "rotated");
    std::fs::rename(app.join("conf"), h.path("old-conf")).unwrap();
    std::os::unix::fs::symlink(&victim, app.join("conf")).unwrap();
    let o = h.once(&config, &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}/conf", app.display())) && err.contains("symbolic link"),
        "names the component: {err}"
    );
    assert!(
        entries(&victim).is_empty(),
        "nothing written through the link"
    );
    assert_eq!(
        read(&h.path("old-conf/app.conf")),
        CANARY,
        "target untouched"
    );
    assert!(!err.contains(CANARY) && !err.contains("rotated"));
}

#[test]
fn a_directory_swapped_during_creation_never_redirects_the_write() {
    // Bounded race: a thread keeps exchanging `conf` (a real directory)
    // and a symlink to `victim` while files are written below conf.
    let d = tempfile::tempdir().unwrap();
    let app = d.path().join("app");
    let victim = d.path().join("victim");
    std::fs::create_dir_all(app.join("conf")).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, app.join("alt")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (app, stop) = (app.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && swaps < 2_000_000 {
                let _ = nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &app.join("conf"),
                    nix::fcntl::AT_FDCWD,
                    &app.join("alt"),
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
                swaps += 1;
            }
            swaps
        })
    };
    let (mut ok, mut refused) = (0, 0);
    for i in 0..300 {
        let path = app.join(format!("conf/d{i}/sub/f"));
        match kvsync::fuzzing::write_file(&path, CANARY.as_bytes()) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(e.contains("/app/conf") || e.contains("/app/alt"), "{e}");
                refused += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("race: {swaps} swaps, {ok} writes, {refused} refused");
    assert!(
        entries(&victim).is_empty(),
        "nothing written outside: {:?}",
        entries(&victim)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ancestor_writable_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root (throwaway user)");
        return;
    }
    let user = TempUser::new("aw");
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    let shared = h.path("shared");
    std::fs::create_dir(&shared).unwrap();
    chown(&shared, user.uid, user.gid);
    let config = h.write_config(&format!(
        "[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}/out/f\"\ncontents = \"{{{{ secrets.s }}}}\"\n",
        shared.display()
    ));
    let o = h.once(&config, &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&shared.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("chown root {}", shared.display())),
        "{err}"
    );
    assert!(entries(&shared).is_empty());
    // Group-writable by the user's group: refused too.
    chown(&shared, 0, user.gid);
    chmod(&shared, 0o775);
    let o = h.once(&config, &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("chmod g-w {}", shared.display())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_symlinks_writes_through_a_symlinked_directory() {
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    let real = h.path("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, h.path("link")).unwrap();
    let config = h.write_config(&format!(
        "[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}/link/f\"\ncontents = \"{{{{ secrets.s }}}}\"\nfollow_symlinks = true\n",
        h.dir.path().display()
    ));
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&real.join("f")), CANARY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_planted_by_another_user_never_holds_the_secret_for_them() {
    if !is_root() {
        eprintln!("skipped: needs root (throwaway user)");
        return;
    }
    let user = TempUser::new("pl");
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    // A shared, sticky, root-owned directory (like /tmp): the user can
    // create entries in it; no `owner` configured.
    let shared = h.path("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let dest = shared.join("secret.txt");
    std::fs::write(&dest, b"").unwrap();
    chown(&dest, user.uid, user.gid);
    chmod(&dest, 0o666);
    // The user keeps a descriptor on their file.
    let mut planted = std::fs::File::open(&dest).unwrap();
    // The candidate is checked before the rename, by `verify`.
    let config = h.write_config(&format!(
        "[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}\"\ncontents = \"{{{{ secrets.s }}}}\"\nverify = \"test \\\"$(stat -c %u:%g \\\"$KVSYNC_CANDIDATE\\\")\\\" = 0:0\"\n",
        dest.display()
    ));
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let m = std::fs::symlink_metadata(&dest).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o600));
    assert_eq!(read(&dest), CANARY);
    let mut old = String::new();
    std::io::Read::read_to_string(&mut planted, &mut old).unwrap();
    assert_eq!(old, "", "the user's inode never received the secret");
}

// --------------------------------------------------------------- config

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_writable_config_as_root_exits_2_with_the_fix() {
    if !is_root() {
        eprintln!("skipped: the check applies to root only");
        return;
    }
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    let config = h.write_config(&format!(
        "[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}/f\"\ncontents = \"{{{{ secrets.s }}}}\"\n",
        h.dir.path().display()
    ));
    chmod(&config, 0o664);
    let o = h.once(&config, &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("chmod go-w {}", config.display())),
        "{err}"
    );
    assert!(err.contains("writable by group"), "{err}");
    // `check` says the same.
    let o = h
        .kvsync(&["check", "-c", config.to_str().unwrap()], &[])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // The documented opt-out for configs kvsync cannot check.
    let o = h
        .kvsync(
            &["once", "-c", config.to_str().unwrap()],
            &[("KVSYNC_TRUST_CONFIG_PERMISSIONS", "1")],
        )
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    // A template writable by others: refused too.
    chmod(&config, 0o600);
    let tpl = h.path("t.tera");
    std::fs::write(&tpl, "{{ secrets.s }}").unwrap();
    chmod(&tpl, 0o646);
    let config = h.write_config(&format!(
        "[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}/g\"\ntemplate = \"{}\"\n",
        h.dir.path().display(),
        tpl.display()
    ));
    let o = h.once(&config, &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("chmod go-w {}", tpl.display())),
        "{err}"
    );
}

// ------------------------------------------------------- health endpoint

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, buf)
}

fn agent_config(h: &Harness, port: u16) -> std::path::PathBuf {
    h.write_config(&format!(
        "[agent]\ninterval = \"1s\"\njitter = \"0s\"\nlisten = \"127.0.0.1:{port}\"\n\n[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}/f\"\ncontents = \"{{{{ secrets.s }}}}\"\n",
        h.dir.path().display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_fd_limit_starve_neither_rounds_nor_probes() {
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    let port = free_port();
    let config = agent_config(&h, port);
    let mut agent = h.spawn_agent(&config, &[]);
    let pid = agent.child.id().unwrap().to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=1024:1024"])
        .status()
        .unwrap();
    assert!(limited.success());
    agent.wait_for("ok=true", Duration::from_secs(60)).await;
    // 1,100 idle sockets: more than the agent may open files.
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            Ok(Ok(s)) => idle.push(s),
            _ => break,
        }
    }
    assert!(idle.len() >= 1_024, "opened {}", idle.len());
    // Rounds keep succeeding (they need descriptors for HTTPS and files)...
    h.emu.set_secret("s", "rotated-under-load");
    agent
        .wait_for("files_written=1", Duration::from_secs(60))
        .await;
    let line = agent.round().await;
    assert!(line.contains("ok=true"), "{line}");
    // ...and a probe is answered within 2 s.
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), get(port, "/healthz"))
        .await
        .expect("/healthz answered within 2 s");
    assert_eq!(status, 200, "{body}");
    drop(idle);
    agent.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_by_byte_header_sender_is_dropped_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    let port = free_port();
    let config = agent_config(&h, port);
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut dropped = false;
    // Bounded: at most the whole header, one byte per 250 ms (~25 s).
    for b in request.iter() {
        if s.write_all(&[*b]).await.is_err() {
            dropped = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                dropped = true;
                break;
            }
            Ok(Ok(_)) => {
                // A 408 answer then close also counts as dropped.
                dropped = true;
                break;
            }
            Err(_) => {}
        }
    }
    let after = start.elapsed();
    assert!(dropped, "still connected after {after:?}");
    assert!(after < Duration::from_secs(20), "dropped after {after:?}");
    eprintln!("slow header sender dropped after {after:?}");
    agent.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_verbose_is_for_loopback_only() {
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    let port = free_port();
    // Listen on every address so a non-loopback peer can connect.
    let config = h.write_config(&format!(
        "[agent]\ninterval = \"1h\"\njitter = \"0s\"\nlisten = \"0.0.0.0:{port}\"\n\n[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}/f\"\ncontents = \"{{{{ secrets.s }}}}\"\n",
        h.dir.path().display()
    ));
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    let (status, _) = get(port, "/healthz?verbose").await;
    assert_eq!(status, 200);
    // A non-loopback address of this host, if it has one.
    let other: Option<std::net::Ipv4Addr> = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|w| w.parse::<std::net::Ipv4Addr>().ok())
                .find(|ip| !ip.is_loopback())
        });
    if let Some(ip) = other {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
        s.write_all(b"GET /healthz?verbose HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        assert!(buf.starts_with("HTTP/1.1 403"), "{buf}");
    } else {
        eprintln!("no non-loopback address: the 403 half is skipped");
    }
    agent.terminate().await;
}

// ------------------------------------------------------------ Arc agent

/// An impostor HIMDS on `[::1]:port`, run as `user`: it relays a genuine
/// challenge from the real agent on 127.0.0.1 and logs every request it
/// gets (headers included) to `log`.
const IMPOSTOR: &str = r#"
import socket, sys, urllib.request, urllib.error
port, log = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::1", port)); s.listen(16)
open(log + ".ready", "w").close()
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk: break
        data += chunk
    with open(log, "ab") as f: f.write(data + b"\n----\n")
    target = data.split(b" ")[1].decode() if data.count(b" ") else "/"
    try:
        urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%d%s" % (port, target), headers={"Metadata": "true"}))
        challenge = "Basic realm=/nonexistent.key"
    except urllib.error.HTTPError as e:
        challenge = e.headers.get("WWW-Authenticate", "")
    c.sendall(("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % challenge).encode())
    c.close()
"#;

struct Impostor {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Impostor {
    fn start(h: &Harness, user: &TempUser, port: u16) -> Self {
        use std::os::unix::process::CommandExt;
        let dir = h.path("impostor");
        std::fs::create_dir(&dir).unwrap();
        chown(&dir, user.uid, user.gid);
        let script = dir.join("impostor.py");
        std::fs::write(&script, IMPOSTOR).unwrap();
        let log = dir.join("requests.log");
        let child = std::process::Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&log)
            .uid(user.uid)
            .gid(user.gid)
            .env_clear()
            .spawn()
            .unwrap();
        // Bounded wait for the listener.
        let ready = log.with_extension("log.ready");
        for _ in 0..200 {
            if ready.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(ready.exists(), "impostor did not start");
        Self { child, log }
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_on_ipv6_loopback_never_receives_the_challenge_key() {
    if !is_root() {
        eprintln!("skipped: needs root (throwaway user)");
        return;
    }
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let user = TempUser::new("im");
    let h = Harness::new().await;
    h.emu.set_secret("s", CANARY);
    let real = h.emu.himds_token_endpoint();
    let port = url::Url::parse(&real).unwrap().port().unwrap();
    let impostor = Impostor::start(&h, &user, port);
    let body = format!(
        "[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}/f\"\ncontents = \"{{{{ secrets.s }}}}\"\n",
        h.dir.path().display()
    );
    // Dialled at [::1]: the impostor's socket is refused before any key.
    let config = h.write_config(&body);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&real, &real.replace("127.0.0.1", "[::1]"));
    std::fs::write(&config, text).unwrap();
    let o = h.once(&config, &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("impersonating the Arc agent"), "{err}");
    assert!(err.contains(&user.name), "names the socket's owner: {err}");
    // Dialled by name: only loopback addresses, each checked; the real
    // agent is reached.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[::1]", "localhost");
    std::fs::write(&config, text).unwrap();
    let o = h.once(&config, &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&h.path("f")), CANARY);
    let seen = impostor.requests().to_ascii_lowercase();
    assert!(
        !seen.contains("authorization"),
        "the impostor got a key:\n{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_named_by_the_challenge_is_refused_without_hanging() {
    let h = Harness::new().await;
    let fifo = h.emu.token_dir().join("trap.key");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let server = support::MockServer::start({
        let realm = format!("Basic realm={}", fifo.display());
        move |_, _| support::Response::new(401, "").header("WWW-Authenticate", &realm)
    })
    .await;
    let config = h.write_config(&format!(
        "[secrets]\ns = \"s\"\n\n[[file]]\npath = \"{}/f\"\ncontents = \"{{{{ secrets.s }}}}\"\n",
        h.dir.path().display()
    ));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&h.emu.himds_base(), &server.base);
    std::fs::write(&config, text).unwrap();
    let start = std::time::Instant::now();
    let o = h.once(&config, &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(60));
}
