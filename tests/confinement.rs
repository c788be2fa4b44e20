//! brickup's own attack surface: a login user's symlinks must not steer root's writes, and a root
//! other than `/` must confine every path (absolute links re-rooted, `..` resolved as the target's
//! kernel would). Each attack from the issue runs against a temp tree laid out like a root
//! filesystem, through the library, with a recording runner so no command runs.
//!
//! These tests need root, as brickup does: the attacks need files owned by a normal user (chown),
//! the refusals are about root writing into that user's directories, and the `..` test runs
//! `realpath` under chroot. Every symlink made here points inside the test's own temp dir; the
//! absolute in-image links point at `/brickup-test-<random>`, which does not exist on this machine.

mod common;

use std::fs;
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use brickup::config::Config;
use brickup::engine::{self, Context, Step};
use brickup::fsops::{NewFile, Transaction, UserTree};
use brickup::keys::KeysStep;
use brickup::root::Root;
use brickup::runner::RecordingRunner;
use common::*;

const UID: u32 = 1000;
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi owner@laptop";
const SHADOW: &str = "root:$y$j9T$STAND-IN-SECRET:19000:0:99999:7:::\n";

/// A made-up root: the test rootfs's passwd plus user `mn` (uid 1000, home /home/mn owned by mn),
/// its sshd_config, a root-only brickup.yaml, an empty apt.conf.d and a stand-in /etc/shadow.
fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let src = test_rootfs();
    for dir in [
        "etc/ssh/sshd_config.d",
        "etc/brickup",
        "etc/apt/apt.conf.d",
        "home/mn",
    ] {
        fs::create_dir_all(r.join(dir)).unwrap();
    }
    let passwd = fs::read_to_string(src.join("etc/passwd")).unwrap();
    fs::write(
        r.join("etc/passwd"),
        format!("{passwd}mn:x:{UID}:{UID}:masternode:/home/mn:/bin/bash\n"),
    )
    .unwrap();
    fs::copy(
        src.join("etc/ssh/sshd_config"),
        r.join("etc/ssh/sshd_config"),
    )
    .unwrap();
    fs::write(r.join("etc/brickup/brickup.yaml"), yaml()).unwrap();
    fs::set_permissions(r.join("etc/brickup/brickup.yaml"), mode(0o600)).unwrap();
    fs::write(r.join("etc/shadow"), SHADOW).unwrap();
    fs::set_permissions(r.join("etc/shadow"), mode(0o640)).unwrap();
    chown(r.join("home/mn"), Some(UID), Some(UID)).unwrap();
    fs::set_permissions(r.join("home/mn"), mode(0o755)).unwrap();
    d
}

fn mode(m: u32) -> fs::Permissions {
    fs::Permissions::from_mode(m)
}

/// The config, as /etc/brickup/brickup.yaml holds it: its key line parses as a key, so the attack
/// below finds the key "already installed" and only fixes mode and owner.
fn yaml() -> String {
    format!("version: 1\nupdates:\n  enabled: false\nssh:\n  user: mn\n  port: 2222\n  authorized_keys:\n    - {KEY}\n")
}

fn config() -> Config {
    brickup::config::parse(&yaml(), Path::new("brickup.yaml")).unwrap()
}

/// `mkdir ~/.ssh` as mn would.
fn user_ssh_dir(r: &Path) -> PathBuf {
    let ssh = r.join("home/mn/.ssh");
    fs::create_dir(&ssh).unwrap();
    chown(&ssh, Some(UID), Some(UID)).unwrap();
    ssh
}

/// Run the key step through the engine; returns the error chain, or "" on success.
fn apply_keys(r: &Path) -> String {
    let config = config();
    let runner = RecordingRunner::new();
    let cx = Context::new(Root::new(r), &config, &runner);
    let steps: Vec<Box<dyn Step>> = vec![Box::new(KeysStep)];
    let result = engine::apply(&cx, &steps);
    assert!(runner.calls().is_empty(), "{:?}", runner.calls());
    result
        .error_chain()
        .map(|c| c.join(": "))
        .unwrap_or_default()
}

fn plan_keys(r: &Path) -> anyhow::Result<Vec<engine::Action>> {
    let config = config();
    let runner = RecordingRunner::new();
    KeysStep.plan(&Context::new(Root::new(r), &config, &runner))
}

/// (content, mode, uid) of a file.
fn state(p: &Path) -> (String, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (fs::read_to_string(p).unwrap(), m.mode() & 0o7777, m.uid())
}

/// Every regular file under `dir` whose content contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if m.is_file() && fs::read_to_string(&p).unwrap_or_default().contains(needle) {
            found.push(p);
        }
    }
    found
}

#[test]
fn a_clean_home_gets_the_key_with_strict_modes_and_rerun_changes_nothing() {
    let d = tree();
    let r = d.path();
    assert_eq!(apply_keys(r), "");
    let ssh = fs::metadata(r.join("home/mn/.ssh")).unwrap();
    assert_eq!(
        (ssh.mode() & 0o7777, ssh.uid(), ssh.gid()),
        (0o700, UID, UID)
    );
    let (content, m, uid) = state(&r.join("home/mn/.ssh/authorized_keys"));
    assert_eq!((content, m, uid), (format!("{KEY}\n"), 0o600, UID));
    assert!(plan_keys(r).unwrap().is_empty());
    assert_eq!(apply_keys(r), "");
}

#[test]
fn loose_modes_and_a_root_owned_key_file_are_fixed_on_the_descriptor() {
    let d = tree();
    let r = d.path();
    let ssh = user_ssh_dir(r);
    fs::set_permissions(&ssh, mode(0o777)).unwrap();
    let keys = ssh.join("authorized_keys");
    fs::write(&keys, format!("{KEY}\n")).unwrap();
    fs::set_permissions(&keys, mode(0o666)).unwrap();
    assert_eq!(apply_keys(r), "");
    assert_eq!(fs::metadata(&ssh).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(state(&keys), (format!("{KEY}\n"), 0o600, UID));
}

#[test]
fn key_file_linked_to_the_root_only_config_is_refused() {
    let d = tree();
    let r = d.path();
    let yaml = r.join("etc/brickup/brickup.yaml");
    let before = state(&yaml);
    symlink(&yaml, user_ssh_dir(r).join("authorized_keys")).unwrap();
    let err = apply_keys(r);
    assert!(
        err.contains("/home/mn/.ssh/authorized_keys is a symbolic link"),
        "{err}"
    );
    let err = plan_keys(r).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(state(&yaml), before);
    assert_eq!(fs::metadata(&yaml).unwrap().gid(), 0);
}

#[test]
fn ssh_dir_linked_to_apt_conf_d_is_refused_and_nothing_lands_there() {
    let d = tree();
    let r = d.path();
    let apt = r.join("etc/apt/apt.conf.d");
    let ssh = r.join("home/mn/.ssh");
    symlink(&apt, &ssh).unwrap();
    // lchown: the link is mn's, as if mn made it.
    std::os::unix::fs::lchown(&ssh, Some(UID), Some(UID)).unwrap();
    let err = apply_keys(r);
    assert!(err.contains("/home/mn/.ssh is a symbolic link"), "{err}");
    assert!(plan_keys(r).is_err());
    assert_eq!(fs::read_dir(&apt).unwrap().count(), 0);
    assert_eq!(fs::metadata(&apt).unwrap().uid(), 0);
}

#[test]
fn key_file_linked_or_hard_linked_to_shadow_is_refused_and_never_copied() {
    let d = tree();
    let r = d.path();
    let shadow = r.join("etc/shadow");
    let keys = user_ssh_dir(r).join("authorized_keys");
    symlink(&shadow, &keys).unwrap();
    let err = apply_keys(r);
    assert!(
        err.contains("/home/mn/.ssh/authorized_keys is a symbolic link"),
        "{err}"
    );
    let err = plan_keys(r).unwrap_err().to_string();
    assert!(!err.contains("STAND-IN"), "{err}");
    assert!(fs::symlink_metadata(&keys).unwrap().is_symlink());
    assert_eq!(
        files_containing(&r.join("home"), "STAND-IN"),
        Vec::<PathBuf>::new()
    );

    // A hard link is the same file under a second name.
    fs::remove_file(&keys).unwrap();
    fs::hard_link(&shadow, &keys).unwrap();
    let err = apply_keys(r);
    assert!(err.contains("hard links"), "{err}");
    assert_eq!(
        fs::metadata(&keys).unwrap().ino(),
        fs::metadata(&shadow).unwrap().ino()
    );

    assert_eq!(state(&shadow), (SHADOW.to_string(), 0o640, 0));
    fs::remove_file(&keys).unwrap();
    assert_eq!(
        files_containing(r, "STAND-IN"),
        vec![shadow],
        "a copy of the shadow stand-in"
    );
}

#[test]
fn home_or_ssh_dir_owned_by_someone_else_or_group_writable_is_refused() {
    let d = tree();
    let r = d.path();
    let ssh = user_ssh_dir(r);
    chown(&ssh, Some(UID + 1), Some(UID + 1)).unwrap();
    let err = apply_keys(r);
    assert!(
        err.contains("/home/mn/.ssh is owned by uid 1001, not mn"),
        "{err}"
    );
    assert!(!ssh.join("authorized_keys").exists());

    chown(&ssh, Some(UID), Some(UID)).unwrap();
    fs::set_permissions(r.join("home/mn"), mode(0o775)).unwrap();
    let err = apply_keys(r);
    assert!(
        err.contains("/home/mn is writable by group or others") && err.contains("chmod go-w"),
        "{err}"
    );
    assert!(!ssh.join("authorized_keys").exists());

    // /home itself writable by others: mn could swap their home for a link.
    fs::set_permissions(r.join("home/mn"), mode(0o755)).unwrap();
    fs::set_permissions(r.join("home"), mode(0o777)).unwrap();
    let err = apply_keys(r);
    assert!(err.contains("/home (above /home/mn)"), "{err}");
    assert!(!ssh.join("authorized_keys").exists());
}

#[test]
fn rollback_does_not_follow_a_link_swapped_in_after_the_write() {
    let d = tree();
    let r = d.path();
    let ssh = user_ssh_dir(r);
    fs::write(ssh.join("authorized_keys"), "# mine\n").unwrap();
    chown(ssh.join("authorized_keys"), Some(UID), Some(UID)).unwrap();
    let apt = r.join("etc/apt/apt.conf.d");
    let mn = UserTree {
        top: "/home/mn".into(),
        user: "mn".into(),
        uid: UID,
        gid: UID,
    };
    {
        let mut tx = Transaction::new(&Root::new(r));
        let keys = Path::new("/home/mn/.ssh/authorized_keys");
        assert!(tx.write_user_file(&mn, keys, b"new\n", 0o600).unwrap());
        // mn swaps ~/.ssh for a link before brickup rolls the write back.
        fs::rename(&ssh, r.join("home/mn/old-ssh")).unwrap();
        symlink(&apt, &ssh).unwrap();
    }
    assert_eq!(fs::read_dir(&apt).unwrap().count(), 0);
}

/// A name that does not exist on this machine, to be the target of absolute links in the image.
fn host_absent() -> String {
    let name = format!("brickup-test-{:016x}", fastrand::u64(..));
    assert!(!Path::new("/").join(&name).exists());
    name
}

/// Fails (after cleaning up) if brickup wrote `/name` on this machine.
fn assert_host_untouched(name: &str) {
    let host = Path::new("/").join(name);
    if fs::symlink_metadata(&host).is_ok() {
        let _ = fs::remove_dir_all(&host);
        let _ = fs::remove_file(&host);
        panic!(
            "{} was written on the machine running the test",
            host.display()
        );
    }
}

#[test]
fn absolute_links_in_the_image_are_re_rooted_for_writes_and_rollback() {
    let d = tree();
    let r = d.path();
    let name = host_absent();
    // A dangling absolute link to a file, and a directory reached through an absolute link.
    symlink(format!("/{name}/x"), r.join("etc/brickup-target")).unwrap();
    fs::remove_dir(r.join("etc/ssh/sshd_config.d")).unwrap();
    symlink(format!("/{name}/d"), r.join("etc/ssh/sshd_config.d")).unwrap();
    fs::create_dir_all(r.join(&name).join("d")).unwrap();
    let root = Root::new(r);
    {
        let mut tx = Transaction::new(&root);
        let wrote = tx.write(
            Path::new("/etc/brickup-target"),
            b"one",
            NewFile::mode(0o600),
        );
        assert_host_untouched(&name);
        assert!(wrote.unwrap());
        let dropin = Path::new("/etc/ssh/sshd_config.d/00-brickup.conf");
        let wrote = tx.write(dropin, b"Port 2222\n", NewFile::mode(0o644));
        assert_host_untouched(&name);
        assert!(wrote.unwrap());
        assert_eq!(fs::read(r.join(&name).join("x")).unwrap(), b"one");
        assert_eq!(
            fs::read(r.join(&name).join("d/00-brickup.conf")).unwrap(),
            b"Port 2222\n"
        );
        assert_eq!(
            tx.changed(),
            vec![
                PathBuf::from(format!("/{name}/x")),
                PathBuf::from(format!("/{name}/d/00-brickup.conf"))
            ]
        );
        // The links themselves are still the image's.
        assert!(fs::symlink_metadata(r.join("etc/brickup-target"))
            .unwrap()
            .is_symlink());
    }
    // Dropped uncommitted: undone inside the root too.
    assert!(!r.join(&name).join("x").exists());
    assert!(!r.join(&name).join("d/00-brickup.conf").exists());
    assert_host_untouched(&name);
}

#[test]
fn dotdot_through_symlinked_dirs_resolves_like_the_targets_kernel() {
    let d = tree();
    let r = d.path();
    fs::create_dir_all(r.join("a/b/c")).unwrap();
    fs::create_dir_all(r.join("srv/x/y")).unwrap();
    symlink("/a/b/c", r.join("srv/abs")).unwrap();
    symlink("../a/b", r.join("srv/rel")).unwrap();
    symlink("/srv/abs/../../..", r.join("srv/up")).unwrap();
    copy_realpath(r);
    let root = Root::new(r);
    for p in [
        "/srv/abs/..",
        "/srv/abs/../../x",
        "/srv/rel/../../etc/passwd",
        "/srv/up/../../../srv/x/y/..",
        "/srv/abs/../../../../../..",
        "/srv/missing/../rel/c/new",
        "/srv/x/y/../../abs/new/../file",
    ] {
        let kernel = chroot_realpath(r, p);
        let ours = root.host_path(&root.path(p));
        assert_eq!(ours, kernel, "{p}");
    }
}

/// GNU realpath from the test rootfs, with what it links against, copied into `r`.
fn copy_realpath(r: &Path) {
    let src = test_rootfs();
    for p in [
        "bin",
        "lib",
        "lib64",
        "usr/bin/realpath",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "usr/lib64/ld-linux-x86-64.so.2",
    ] {
        let st = Command::new("cp")
            .args(["-a", "--parents", p])
            .arg(r)
            .current_dir(&src)
            .status()
            .unwrap();
        assert!(st.success(), "copying {p} from the test rootfs");
    }
}

/// `chroot r realpath -m p`: physical resolution of what exists, lexical for the rest.
fn chroot_realpath(r: &Path, p: &str) -> PathBuf {
    let o = Command::new("chroot")
        .arg(r)
        .args(["/usr/bin/realpath", "-m", p])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim_end())
}
