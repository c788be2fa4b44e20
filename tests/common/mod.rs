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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
