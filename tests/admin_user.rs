//! `ssh.create_user` against a real Debian rootfs: the real useradd, usermod and visudo make the
//! admin user, then the real sshd serves the result on a loopback port: the owner's key logs in
//! as the created user, `sudo -n true` behaves as the chosen policy says, root is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const USER: &str = "mnadmin";

fn start_sshd(root: &Path) -> Killer {
    std::fs::create_dir_all(root.join("run/sshd")).unwrap();
    let child = Command::new("chroot")
        .arg(root)
        .args(["/usr/sbin/sshd", "-D", "-e"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killer(child)
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ssh -i key -p port user@127.0.0.1 command`, by key only.
fn ssh(key: &Path, port: u16, user: &str, command: &str) -> Output {
    Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
        ])
        .arg(key)
        .args([
            "-p",
            &port.to_string(),
            &format!("{user}@127.0.0.1"),
            command,
        ])
        .output()
        .unwrap()
}

struct Node {
    root: tempfile::TempDir,
    _keys: tempfile::TempDir,
    key: PathBuf,
    cfg: PathBuf,
    port: u16,
}

impl Node {
    /// A copy of the rootfs and a config that creates `mnadmin` with `create` (YAML lines under
    /// `create_user:`, indented four spaces).
    fn new(create: &str) -> Node {
        let root = copy_rootfs();
        let keys = tempfile::tempdir().unwrap();
        let (key, public) = keypair(keys.path());
        let port = free_port();
        let cfg = keys.path().join("brickup.yaml");
        std::fs::write(
            &cfg,
            format!(
                "version: 1\nupdates:\n  enabled: false\nssh:\n  user: {USER}\n  port: {port}\n  \
                 authorized_keys:\n    - {public}\n  settings:\n    ListenAddress: 127.0.0.1\n  \
                 create_user:\n{create}"
            ),
        )
        .unwrap();
        Node {
            root,
            _keys: keys,
            key,
            cfg,
            port,
        }
    }

    fn brickup(&self, cmd: &str) -> Output {
        brickup(&[
            cmd,
            "--root",
            self.root.path().to_str().unwrap(),
            "--config",
            self.cfg.to_str().unwrap(),
        ])
    }

    fn file(&self, p: &str) -> String {
        std::fs::read_to_string(self.root.path().join(p)).unwrap_or_default()
    }

    fn passwd_entry(&self) -> Option<String> {
        self.file("etc/passwd")
            .lines()
            .find(|l| l.starts_with(&format!("{USER}:")))
            .map(str::to_string)
    }

    fn in_group(&self, group: &str) -> bool {
        self.file("etc/group").lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() >= 4 && f[0] == group && f[3].split(',').any(|m| m == USER)
        })
    }
}

#[test]
fn created_user_logs_in_by_key_and_sudo_asks_nothing_while_root_is_refused() {
    let n = Node::new("    groups: [adm]\n    sudo: nopasswd\n");
    assert_eq!(
        n.passwd_entry(),
        None,
        "the rootfs must not have {USER} yet"
    );

    // plan sees the user as it will be made (the sshd preflight passes), and says how.
    let o = n.brickup("plan");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("useradd --create-home --home-dir /home/mnadmin"),
        "{}",
        text(&o)
    );
    assert!(
        out.contains("/home/mnadmin/.ssh/authorized_keys"),
        "{}",
        text(&o)
    );
    assert!(out.contains("NOPASSWD: ALL"), "{}", text(&o));
    assert_eq!(n.passwd_entry(), None, "plan changed nothing");

    let o = n.brickup("apply");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let entry = n.passwd_entry().expect("the user was created");
    assert!(entry.ends_with(":/home/mnadmin:/bin/bash"), "{entry}");
    let shadow = n.file("etc/shadow");
    let pw = shadow
        .lines()
        .find(|l| l.starts_with(&format!("{USER}:")))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or_default()
        .to_string();
    assert!(pw.starts_with('!') || pw == "*", "no password: {pw:?}");
    assert!(n.in_group("adm"), "{}", n.file("etc/group"));
    let rule_path = n.root.path().join("etc/sudoers.d/brickup-mnadmin");
    let rule = std::fs::read_to_string(&rule_path).unwrap();
    assert!(
        rule.contains("mnadmin ALL=(ALL:ALL) NOPASSWD: ALL"),
        "{rule}"
    );
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&rule_path).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o440, 0, 0));
    let ak = n.root.path().join("home/mnadmin/.ssh/authorized_keys");
    let uid: u32 = entry.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(
        std::fs::metadata(&ak).unwrap().uid(),
        uid,
        "the key file is the user's"
    );
    let dropin = n.file("etc/ssh/sshd_config.d/00-brickup.conf");
    assert!(dropin.contains("PermitRootLogin no"), "{dropin}");

    // The real sshd: the key logs in as the user, sudo asks nothing, root is refused.
    let _sshd = start_sshd(n.root.path());
    wait_port(n.port);
    let o = ssh(
        &n.key,
        n.port,
        USER,
        "id -un && sudo -n true && echo sudo-ok",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(USER) && out.contains("sudo-ok"),
        "{}",
        text(&o)
    );
    // Root's own key file holds the owner's key too (the control: refused by PermitRootLogin, not
    // for want of a key).
    let root_keys = n.root.path().join("root/.ssh");
    std::fs::create_dir_all(&root_keys).unwrap();
    std::fs::copy(&ak, root_keys.join("authorized_keys")).unwrap();
    let o = ssh(&n.key, n.port, "root", "echo root-in");
    assert!(
        !o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("root-in"),
        "root must be refused: {}",
        text(&o)
    );
    std::fs::remove_dir_all(&root_keys).unwrap();

    // Converged: check finds nothing, a rerun changes nothing.
    let o = n.brickup("check");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = n.brickup("apply");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("user mnadmin as configured")
            || String::from_utf8_lossy(&o.stdout).contains("nothing to change"),
        "{}",
        text(&o)
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("changes made"),
        "{}",
        text(&o)
    );

    // Drift: out of its group, the rule edited; check finds both, apply repairs both.
    let group = n.file("etc/group").replace(":mnadmin\n", ":\n");
    std::fs::write(n.root.path().join("etc/group"), group).unwrap();
    std::fs::write(&rule_path, "mnadmin ALL=(ALL) ALL\n").unwrap();
    let o = n.brickup("check");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("not in group adm") && out.contains("brickup-mnadmin"),
        "{}",
        text(&o)
    );
    let o = n.brickup("apply");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(n.in_group("adm"));
    assert_eq!(std::fs::read_to_string(&rule_path).unwrap(), rule);
    let o = n.brickup("check");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn sudo_none_writes_no_rule_and_sudo_cannot_be_used() {
    let n = Node::new("    sudo: none\n");
    let o = n.brickup("apply");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(n.passwd_entry().is_some());
    assert!(!n.root.path().join("etc/sudoers.d/brickup-mnadmin").exists());
    let _sshd = start_sshd(n.root.path());
    wait_port(n.port);
    // The control: the login works, so the refusal below is sudo's.
    let o = ssh(
        &n.key,
        n.port,
        USER,
        "echo in; sudo -n true && echo sudo-ok",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("in") && !out.contains("sudo-ok"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_missing_group_is_refused_before_anything_changes() {
    let n = Node::new("    groups: [no-such-group]\n");
    let passwd = n.file("etc/passwd");
    for cmd in ["plan", "apply"] {
        let o = n.brickup(cmd);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("ssh.create_user.groups[0]"),
            "{cmd}: {}",
            text(&o)
        );
    }
    assert_eq!(n.file("etc/passwd"), passwd);
    assert!(!n.root.path().join("home/mnadmin").exists());
}

#[test]
fn a_sudo_policy_visudo_refuses_rolls_back_the_rule_and_the_new_user() {
    let n = Node::new("    sudo: nopasswd\n");
    // The node's own policy is broken: brickup's rule alone parses, the whole does not.
    let sudoers = n.root.path().join("etc/sudoers");
    let text_before = std::fs::read_to_string(&sudoers).unwrap();
    std::fs::write(
        &sudoers,
        format!("{text_before}\nthis is not sudoers syntax\n"),
    )
    .unwrap();
    let o = n.brickup("apply");
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("visudo"),
        "{}",
        text(&o)
    );
    assert_eq!(
        n.passwd_entry(),
        None,
        "the new user is removed with the step"
    );
    assert!(!n.root.path().join("etc/sudoers.d/brickup-mnadmin").exists());
    assert!(!n.root.path().join("home/mnadmin").exists());
    // Nothing after the user step ran: sshd's config is the stock one.
    assert!(!n
        .root
        .path()
        .join("etc/ssh/sshd_config.d/00-brickup.conf")
        .exists());
}
