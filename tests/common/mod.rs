//! Shared helpers for the integration tests that use real parts.
#![allow(dead_code)]

pub mod live;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The cached Debian rootfs built by scripts/build-test-rootfs.sh.
pub fn test_rootfs() -> PathBuf {
    let cache =
        std::env::var("BRICKUP_TEST_CACHE").unwrap_or_else(|_| "/var/cache/brickup-test".into());
    let p = Path::new(&cache).join("rootfs-bookworm");
    assert!(
        p.join(".brickup-stamp").exists(),
        "{} is missing: run `sudo scripts/build-test-rootfs.sh` (the README's test command does)",
        p.display()
    );
    p
}

pub fn apt_repo() -> PathBuf {
    test_rootfs().parent().unwrap().join("apt-bookworm")
}

/// A private copy of the test rootfs.
pub fn copy_rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", test_rootfs().display()))
        .arg(d.path())
        .status()
        .unwrap();
    assert!(st.success(), "copying the test rootfs");
    d
}

/// Ports handed out by [`free_port`]: below Linux's default ephemeral range (32768-60999), so
/// no outgoing connection takes one between the test's check and its server's bind.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that is free now and that no other test thread or test process (nextest
/// runs each test in its own) gets from this function while this process lives: an flock on
/// `CARGO_TARGET_TMPDIR/ports/PORT`, held until the process exits. Binding port 0 and releasing
/// it would hand out an ephemeral port that the next connect() may take.
pub fn free_port() -> u16 {
    use nix::fcntl::{Flock, FlockArg};
    use std::sync::Mutex;
    static HELD: Mutex<Vec<Flock<std::fs::File>>> = Mutex::new(Vec::new());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ports");
    std::fs::create_dir_all(&dir).unwrap();
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let start = fastrand::u16(..span);
    for i in 0..span {
        let port = TEST_PORTS.start + (start + i) % span;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .unwrap();
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // another test holds it
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

pub fn brickup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A child process killed when dropped.
pub struct Killer(pub Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An ed25519 key pair: (private key path, public key line).
pub fn keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@brickup", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

/// Builds the fixture csf tarball in `dir`; the script prints its path.
pub fn fixture_tarball(dir: &Path) -> PathBuf {
    let o = Command::new("bash")
        .arg("scripts/make-fixture-csf.sh")
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// The hex sha256 of a file.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Serve one file on 127.0.0.1 until the test ends; returns its URL.
pub fn serve(file: PathBuf) -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let body = std::fs::read(&file).unwrap();
            let _ = req.respond(tiny_http::Response::from_data(body));
        }
    });
    format!("http://127.0.0.1:{port}/csf.tgz")
}

/// `%XX` escapes in a URL path decoded (apt asks for `a_1%253a2.deb` when the file is `a_1%3a2.deb`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(hex)) if hex.iter().all(u8::is_ascii_hexdigit) => {
                out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves the files of `dir` over HTTP on 127.0.0.1 (base URL returned), answering a conditional
/// request with 304 as a mirror whose files have not changed does.
pub fn serve_dir(dir: PathBuf) -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let path = dir.join(percent_decode(req.url().trim_start_matches('/')));
            let conditional = req
                .headers()
                .iter()
                .any(|h| h.field.equiv("If-Modified-Since"));
            let _ = match std::fs::read(&path) {
                Ok(_) if conditional => req.respond(tiny_http::Response::empty(304)),
                Ok(body) => req.respond(tiny_http::Response::from_data(body)),
                Err(_) => req.respond(tiny_http::Response::empty(404)),
            };
        }
    });
    format!("http://127.0.0.1:{port}/")
}

/// A copy of the test rootfs whose apt sources are the local repository (no network).
pub fn rootfs_with_local_repo() -> tempfile::TempDir {
    let root = copy_rootfs();
    let repo = root.path().join("srv/brickup-repo");
    std::fs::create_dir_all(&repo).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", apt_repo().display()))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        root.path().join("etc/apt/sources.list.d/local.list"),
        "deb [trusted=yes] file:/srv/brickup-repo ./\n",
    )
    .unwrap();
    root
}

/// Scripts brickup's login proof (src/login.rs) on a recording runner as a login that succeeds
/// as `user`: the namespace and veth commands exit 0, the host has the documentation address
/// 192.0.2.10 (nothing is connected to), and the client in the namespace prints the proof.
/// `ssh-keygen` must be a passthrough program of the runner (the proof reads the key it makes).
pub fn script_login(runner: &brickup::runner::RecordingRunner, user: &str) {
    for p in [
        "ip netns ",
        "ip link ",
        "ip -4 addr add",
        "ip -6 addr add",
        "ip -n ",
    ] {
        runner.allow(p);
    }
    runner.answer(
        "ip -o -4 addr show scope global",
        0,
        "2: eth0    inet 192.0.2.10/24 scope global eth0\\       valid_lft forever\n",
        "",
    );
    runner.answer(
        "ip -o -6 addr show scope global",
        0,
        "2: eth0    inet6 2001:db8::10/64 scope global \\       valid_lft forever\n",
        "",
    );
    runner.answer(
        "nsenter --net=/run/netns/brickup-proof-",
        0,
        &format!("brickup-login-ok\n{user}\n"),
        "",
    );
}

/// The recorded calls but the login proof's (its namespace, veth and client: src/login.rs).
pub fn service_calls(runner: &brickup::runner::RecordingRunner) -> Vec<String> {
    runner
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("ip ") && !c.starts_with("nsenter "))
        .collect()
}

/// The least a root needs for `plan` (whose preflight is apply's): sshd's config, the user
/// (entry, home, login shell), the OS.
pub fn plan_root(root: &Path) {
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::write(root.join("etc/ssh/sshd_config"), "Port 22\n").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::create_dir_all(root.join("root")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/sh"), "").unwrap();
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(
        root.join("usr/lib/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
    )
    .unwrap();
}

/// A [`plan_root`] at DIR/root and a config at DIR/brickup.yaml: port 2222, passwords on, no
/// key, updates off, then `extra` (more YAML at the top level). Returns (root, config).
pub fn plan_root_and_config(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    plan_root(&root);
    let cfg = dir.join("brickup.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  password_authentication: true\n{extra}"
        ),
    )
    .unwrap();
    (root, cfg)
}
