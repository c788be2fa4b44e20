//! brickup against a real Debian rootfs (mmdebstrap): the target's own sshd validates the config
//! (`sshd -t`, `sshd -T`), then the real sshd serves the result on a loopback port and the real
//! ssh client proves the key logs in and a password is refused.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PASSWORD: &str = "correct-horse-battery";

fn start_sshd(root: &Path, extra: &[&str]) -> Killer {
    std::fs::create_dir_all(root.join("run/sshd")).unwrap();
    let child = Command::new("chroot")
        .arg(root)
        .args(["/usr/sbin/sshd", "-D", "-e"])
        .args(extra)
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

fn ssh_key(key: &Path, port: u16) -> std::process::Output {
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
            "root@127.0.0.1",
            "echo",
            "key-login-ok",
        ])
        .output()
        .unwrap()
}

fn ssh_password(port: u16) -> std::process::Output {
    Command::new("sshpass")
        .args([
            "-p",
            PASSWORD,
            "ssh",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ])
        .args([
            "-p",
            &port.to_string(),
            "root@127.0.0.1",
            "echo",
            "password-login-ok",
        ])
        .output()
        .unwrap()
}

fn setup() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    std::path::PathBuf,
    String,
) {
    let root = copy_rootfs();
    let st = Command::new("chroot")
        .arg(root.path())
        .args(["sh", "-c", &format!("echo root:{PASSWORD} | chpasswd")])
        .status()
        .unwrap();
    assert!(st.success());
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keypair(keys.path());
    (root, keys, key, public)
}

fn write_config(dir: &Path, port: u16, public: &str) -> std::path::PathBuf {
    let cfg = dir.join("brickup.yaml");
    let text = format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: {port}\n  authorized_keys:\n    - {public}\n  settings:\n    ListenAddress: 127.0.0.1\n");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn key_logs_in_and_password_is_refused_on_the_new_port() {
    let (root, keys, key, public) = setup();
    let r = root.path().to_str().unwrap();

    // Before brickup: the stock config accepts the password (so the refusal below means something).
    let before = free_port();
    let _stock = start_sshd(
        root.path(),
        &[
            "-o",
            &format!("Port={before}"),
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            "PermitRootLogin=yes",
        ],
    );
    wait_port(before);
    let o = ssh_password(before);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("password-login-ok"),
        "stock sshd should take the password: {}",
        text(&o)
    );
    drop(_stock);

    let port = free_port();
    let cfg = write_config(keys.path(), port, &public);
    let c = cfg.to_str().unwrap();
    let o = brickup(&["apply", "--root", r, "--config", c, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Under a root the restart is left to first boot: partial, not failed.
    assert_eq!(summary["status"], "partial");
    assert!(summary["error"].is_null());

    // The drop-in went in first, the stock Include stays.
    let dropin =
        std::fs::read_to_string(root.path().join("etc/ssh/sshd_config.d/00-brickup.conf")).unwrap();
    assert!(
        dropin.contains(&format!("Port {port}")) && dropin.contains("PasswordAuthentication no"),
        "{dropin}"
    );
    let ak = std::fs::read_to_string(root.path().join("root/.ssh/authorized_keys")).unwrap();
    assert!(ak.contains(&public));

    let _sshd = start_sshd(root.path(), &[]);
    wait_port(port);
    let o = ssh_key(&key, port);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("key-login-ok"),
        "key login failed: {}",
        text(&o)
    );
    let o = ssh_password(port);
    assert!(
        !o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("password-login-ok"),
        "password login must be refused: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o)
    );

    // Rerun changes nothing; check is converged.
    let o = brickup(&["apply", "--root", r, "--config", c, "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["changed"], false, "{}", text(&o));
    let o = brickup(&["check", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Drift that wins over the drop-in (before the Include) is found from sshd -T's view.
    let main = root.path().join("etc/ssh/sshd_config");
    let stock = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("PasswordAuthentication yes\n{stock}")).unwrap();
    let o = brickup(&["check", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("passwordauthentication"),
        "{}",
        text(&o)
    );
    // check --json gives it as values and the line that set it.
    let sshd_drift = || {
        let o = brickup(&["check", "--root", r, "--config", c, "--json"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["converged"], false, "{doc}");
        doc["drift"]["sshd"].as_array().unwrap().clone()
    };
    let entry = |drift: &[serde_json::Value], item: &str| {
        drift
            .iter()
            .find(|d| d["item"] == item)
            .unwrap_or_else(|| panic!("no {item}: {drift:?}"))
            .clone()
    };
    let pa = entry(&sshd_drift(), "sshd passwordauthentication");
    assert_eq!(
        (&pa["want"], &pa["have"], &pa["source"]),
        (
            &serde_json::json!("no"),
            &serde_json::json!("yes"),
            &serde_json::json!("/etc/ssh/sshd_config:1")
        ),
        "{pa}"
    );
    // With brickup's drop-in gone, sshd's own defaults show: no file is their source.
    std::fs::write(&main, &stock).unwrap();
    let dropin = root.path().join("etc/ssh/sshd_config.d/00-brickup.conf");
    let kept = std::fs::read_to_string(&dropin).unwrap();
    std::fs::remove_file(&dropin).unwrap();
    let drift = sshd_drift();
    let tries = entry(&drift, "sshd maxauthtries");
    assert_eq!(tries["have"], "6", "{tries}");
    assert!(
        tries["source"]
            .as_str()
            .unwrap()
            .starts_with("no config file (sshd's compiled-in default"),
        "{tries}"
    );
    std::fs::write(&dropin, kept).unwrap();
    std::fs::write(&main, format!("PasswordAuthentication yes\n{stock}")).unwrap();

    // A drop-in that sorts before brickup's is drift too; apply repairs both.
    let early = root.path().join("etc/ssh/sshd_config.d/00-aaa.conf");
    std::fs::write(&early, "KbdInteractiveAuthentication yes\n").unwrap();
    let o = brickup(&["check", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = brickup(&["apply", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = brickup(&["check", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(std::fs::read_to_string(&early)
        .unwrap()
        .starts_with("#brickup-disabled# KbdInteractiveAuthentication yes"));
}

#[test]
fn match_block_override_is_refused_and_rolled_back() {
    let (root, keys, _key, public) = setup();
    let r = root.path().to_str().unwrap();
    let main = root.path().join("etc/ssh/sshd_config");
    let stock = std::fs::read_to_string(&main).unwrap();
    let edited = format!("{stock}\nMatch User root\n    PasswordAuthentication yes\n");
    std::fs::write(&main, &edited).unwrap();
    let cfg = write_config(keys.path(), free_port(), &public);
    let o = brickup(&["apply", "--root", r, "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/etc/ssh/sshd_config:") && err.contains("Match block"),
        "{}",
        text(&o)
    );
    // Rolled back: no drop-in, sshd_config as it was.
    assert!(!root
        .path()
        .join("etc/ssh/sshd_config.d/00-brickup.conf")
        .exists());
    assert_eq!(std::fs::read_to_string(&main).unwrap(), edited);
}

#[test]
fn no_key_where_sshd_reads_means_passwords_stay_on() {
    let (root, keys, _key, public) = setup();
    let r = root.path().to_str().unwrap();
    // sshd reads keys from a file the key step does not write: the guard must refuse.
    let main = root.path().join("etc/ssh/sshd_config");
    let stock = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        format!("AuthorizedKeysFile /etc/ssh/keys/%u\n{stock}"),
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("etc/ssh/keys")).unwrap();
    let cfg = write_config(keys.path(), free_port(), &public);
    // The key step follows AuthorizedKeysFile, so the key lands there...
    let o = brickup(&["apply", "--root", r, "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        std::fs::read_to_string(root.path().join("etc/ssh/keys/root"))
            .unwrap()
            .contains(&public)
    );
    // ...and when that file loses the key, the sshd step refuses to turn passwords off.
    std::fs::write(root.path().join("etc/ssh/keys/root"), "").unwrap();
    std::fs::remove_file(root.path().join("etc/ssh/sshd_config.d/00-brickup.conf")).unwrap();
    let loaded = brickup::config::load(&cfg).unwrap();
    let cx = brickup::engine::Context::new(
        brickup::root::Root::new(root.path()),
        &loaded.config,
        &brickup::runner::SystemRunner,
    );
    let result = brickup::engine::apply(&cx, &[Box::new(brickup::sshd::SshdStep)]);
    let err = result
        .error
        .map(|e| format!("{e:#}"))
        .expect("the guard must refuse");
    assert!(err.contains("refusing to disable password logins"), "{err}");
    assert!(!root
        .path()
        .join("etc/ssh/sshd_config.d/00-brickup.conf")
        .exists());
}

/// Appends `extra` to the rootfs's sshd_config and runs `apply --root` with the real sshd -T.
fn apply_with_sshd_config(extra: &str) -> (tempfile::TempDir, std::process::Output, String) {
    let (root, keys, _key, public) = setup();
    let main = root.path().join("etc/ssh/sshd_config");
    let stock = std::fs::read_to_string(&main).unwrap();
    let edited = format!("{stock}\n{extra}\n");
    std::fs::write(&main, &edited).unwrap();
    let cfg = write_config(keys.path(), 2222, &public);
    let r = root.path().to_str().unwrap();
    let o = brickup(&["apply", "--root", r, "--config", cfg.to_str().unwrap()]);
    (root, o, edited)
}

fn assert_refused_and_rolled_back(root: &Path, o: &std::process::Output, edited: &str, why: &str) {
    assert_eq!(o.status.code(), Some(3), "{}", text(o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(why),
        "{}",
        text(o)
    );
    assert!(!root.join("etc/ssh/sshd_config.d/00-brickup.conf").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ssh/sshd_config")).unwrap(),
        edited
    );
}

/// The candidate config is the truth: a `Match LocalPort` block for the new port makes sshd read
/// keys from a file the key step never wrote. Asked only about port 22 and 127.0.0.1, the guard
/// would miss it.
#[test]
fn match_local_port_keys_file_is_refused() {
    let (root, o, edited) =
        apply_with_sshd_config("Match LocalPort 2222\n    AuthorizedKeysFile /etc/ssh/nowhere/%u");
    assert_refused_and_rolled_back(
        root.path(),
        &o,
        &edited,
        "refusing to disable password logins",
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/etc/ssh/nowhere/root"),
        "{}",
        text(&o)
    );
}

/// Like [`apply_with_sshd_config`], with `ssh.owner_addresses` in brickup's config.
fn apply_with_owner(
    extra: &str,
    owners: &str,
) -> (tempfile::TempDir, std::process::Output, String) {
    let (root, keys, _key, public) = setup();
    let main = root.path().join("etc/ssh/sshd_config");
    let edited = format!("{}\n{extra}\n", std::fs::read_to_string(&main).unwrap());
    std::fs::write(&main, &edited).unwrap();
    let cfg = write_config(keys.path(), 2222, &public);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "  settings:\n",
        &format!("  owner_addresses: [{owners}]\n  settings:\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    let r = root.path().to_str().unwrap();
    let o = brickup(&["apply", "--root", r, "--config", cfg.to_str().unwrap()]);
    (root, o, edited)
}

/// A restriction by the client's address in the host's own sshd_config (`Match Address`, an
/// AllowUsers `user@host`) with no `ssh.owner_addresses`: the login proof, from its own
/// namespace, cannot tell whether it admits the owner. Refused before any change (exit 2),
/// naming the line.
#[test]
fn address_restrictions_without_owner_addresses_are_refused_up_front() {
    for extra in [
        "Match Address 203.0.113.0/24\n    PasswordAuthentication yes",
        "AllowUsers deploy admin@10.*",
    ] {
        let (root, o, edited) = apply_with_sshd_config(extra);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{extra}: {out}");
        let first = extra.lines().next().unwrap();
        assert!(
            out.contains("ssh.owner_addresses") && out.contains(first),
            "{extra}: {out}"
        );
        assert!(out.contains("nothing was changed"), "{out}");
        assert!(!root
            .path()
            .join("etc/ssh/sshd_config.d/00-brickup.conf")
            .exists());
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/ssh/sshd_config")).unwrap(),
            edited
        );
    }
}

/// Passwords back on for connections from the internet only (`Match Address`): sshd -T asked
/// about a public client shows it.
#[test]
fn match_address_override_for_public_clients_is_refused() {
    let (root, o, edited) = apply_with_owner(
        "Match Address 203.0.113.0/24\n    PasswordAuthentication yes",
        "198.51.100.7",
    );
    assert_refused_and_rolled_back(root.path(), &o, &edited, "addr=203.0.113.7");
}

/// With the owner's address known, sshd is asked about it: a `Match Address` that serves it a
/// ForceCommand (the owner's key would authenticate and get no shell, while the proof, from
/// another address, passes) is refused and rolled back, naming the difference; one for other
/// networks converges.
#[test]
fn owner_addresses_are_served_the_proven_config() {
    let (root, o, edited) = apply_with_owner(
        "Match Address 198.51.100.0/24\n    ForceCommand /bin/false",
        "198.51.100.7",
    );
    assert_refused_and_rolled_back(root.path(), &o, &edited, "forcecommand /bin/false");
    assert!(text(&o).contains("198.51.100.7"), "{}", text(&o));
    let (_root, o, _) = apply_with_owner(
        "Match Address 192.0.2.128/25\n    ForceCommand /bin/false",
        "198.51.100.7, 2001:db8:1::5",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A DenyUsers the owner's address falls under, in the host's own file.
    let (root, o, edited) = apply_with_owner("DenyUsers root@198.51.100.0/24", "198.51.100.7");
    assert_refused_and_rolled_back(
        root.path(),
        &o,
        &edited,
        "AllowUsers/DenyUsers would refuse root",
    );
}

/// AllowUsers that leaves the owner out would lock them out.
#[test]
fn allow_users_without_the_owner_is_refused() {
    let (root, o, edited) = apply_with_sshd_config("AllowUsers deploy admin");
    assert_refused_and_rolled_back(
        root.path(),
        &o,
        &edited,
        "AllowUsers/DenyUsers would refuse root",
    );
}

/// cloud-init's restricted entry of the owner's own key (`command="echo Please login as..."`)
/// does not count as installed: brickup puts a plain entry before it, and the real sshd lets the
/// key in.
#[test]
fn restricted_entry_of_the_same_key_is_not_a_login() {
    let (root, keys, key, public) = setup();
    let ssh_dir = root.path().join("root/.ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let restricted = format!("no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"debian\\\" rather than the user \\\"root\\\".';echo;sleep 1;exit 142\" {public}");
    std::fs::write(ssh_dir.join("authorized_keys"), format!("{restricted}\n")).unwrap();
    let port = free_port();
    let cfg = write_config(keys.path(), port, &public);
    let r = root.path().to_str().unwrap();
    let o = brickup(&["apply", "--root", r, "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let text_now = std::fs::read_to_string(ssh_dir.join("authorized_keys")).unwrap();
    assert_eq!(text_now, format!("{public}\n{restricted}\n"));
    let _sshd = start_sshd(root.path(), &[]);
    wait_port(port);
    let login = ssh_key(&key, port);
    assert!(
        String::from_utf8_lossy(&login.stdout).contains("key-login-ok"),
        "{}",
        text(&login)
    );
}

/// Before sshd's host keys exist (cloud-init's bootcmd at first boot, or an image) sshd cannot
/// check a whole config by itself: a value sshd rejects is still refused instead of written
/// (else sshd would not start at all: the owner locked out), and a good config is checked with
/// a throwaway host key.
#[test]
fn without_host_keys_the_candidate_is_still_checked_by_sshd() {
    let (root, keys, _key, public) = setup();
    for e in std::fs::read_dir(root.path().join("etc/ssh")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let r = root.path().to_str().unwrap();
    let bad = keys.path().join("bad.yaml");
    std::fs::write(&bad, format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\n  settings:\n    LogLevel: LOUDEST\n")).unwrap();
    // The preflight asks sshd about the setting itself (its value is parsed before host keys
    // are looked for): refused before any change, the config's own field named.
    let o = brickup(&["apply", "--root", r, "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("ssh.settings.LogLevel: the target's sshd rejects it"),
        "{}",
        text(&o)
    );
    assert!(!root
        .path()
        .join("etc/ssh/sshd_config.d/00-brickup.conf")
        .exists());

    let cfg = write_config(keys.path(), 2222, &public);
    let o = brickup(&["apply", "--root", r, "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("no host keys"),
        "{}",
        text(&o)
    );
    assert!(root
        .path()
        .join("etc/ssh/sshd_config.d/00-brickup.conf")
        .exists());
}

/// A power cut seconds after cloud-init made the host keys leaves them empty, and sshd will not
/// start on them (seen in the fault matrix's VM). The early run, before sshd starts on every
/// boot, replaces an unreadable key, also when the instance's early hardening is already done.
#[test]
fn an_emptied_host_key_is_made_anew_before_sshd_starts() {
    let root = copy_rootfs();
    let r = root.path();
    std::fs::create_dir_all(r.join("run/cloud-init")).unwrap();
    std::fs::write(r.join("run/cloud-init/.instance-id"), "i-keys\n").unwrap();
    let keygen = |args: &[&str]| {
        std::process::Command::new("chroot")
            .arg(r)
            .arg("ssh-keygen")
            .args(args)
            .output()
            .unwrap()
    };
    let key = "/etc/ssh/ssh_host_ed25519_key";
    let host_keys = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(r.join("etc/ssh"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ssh_host_"))
            .collect();
        v.sort();
        v
    };
    let remove_host_keys = || {
        for n in host_keys() {
            std::fs::remove_file(r.join("etc/ssh").join(n)).unwrap();
        }
    };
    // The instance's first boot: the early run comes before cloud-init's ssh module, and makes
    // no host key where there is none (cloud-init's to make).
    remove_host_keys();
    let (_, public) = keypair(r);
    let cfg = r.join("brickup-test.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\n"
        ),
    )
    .unwrap();
    let run = || {
        let o = brickup(&[
            "firstboot",
            "--early",
            "--root",
            r.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    run();
    assert_eq!(host_keys(), Vec::<String>::new(), "made on a first boot");
    assert!(keygen(&["-q", "-t", "ed25519", "-N", "", "-f", key])
        .status
        .success());
    for round in 0..2 {
        // As the cut leaves it: the file there, its data never written.
        std::fs::write(r.join(&key[1..]), "").unwrap();
        assert!(!keygen(&["-y", "-f", key]).status.success(), "control");
        run();
        let o = keygen(&["-y", "-f", key]);
        assert!(
            o.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let public = std::fs::read_to_string(r.join(format!("{}.pub", &key[1..]))).unwrap();
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
    }
    // A later boot with no host key at all (the cut undid their creation, and cloud-init's ssh
    // module, done for this instance, will not run again): made.
    remove_host_keys();
    run();
    let o = keygen(&["-y", "-f", key]);
    assert!(
        o.status.success(),
        "none left: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The same cut empties a config written in the same seconds (cloud-init's bootcmd): the
    // run fails on it, and the host key is still made before that failure.
    std::fs::write(&cfg, "").unwrap();
    std::fs::write(r.join(&key[1..]), "").unwrap();
    let o = brickup(&[
        "firstboot",
        "--early",
        "--root",
        r.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0), "an empty config: {}", text(&o));
    let o = keygen(&["-y", "-f", key]);
    assert!(
        o.status.success(),
        "with an empty config: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// brickup's list of sshd keywords (for catching typos in ssh.settings) holds every keyword
/// the test rootfs's real sshd prints with `sshd -T`.
#[test]
fn every_keyword_the_real_sshd_prints_is_known() {
    let root = common::copy_rootfs();
    let o = Command::new("chroot")
        .arg(root.path())
        .args(["sh", "-c", "mkdir -p /run/sshd && /usr/sbin/sshd -T"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let words: Vec<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
    assert!(words.len() > 60, "{out}");
    let missing: Vec<&&str> = words
        .iter()
        .filter(|w| !brickup::sshd_keyword_known(w))
        .collect();
    assert!(
        missing.is_empty(),
        "not in src/sshd/keywords.rs: {missing:?}"
    );
}
