//! Ordinary configs that once locked the owner out while `apply` and `check` both said all was
//! well (issue 20), on live roots (tests/common/live.rs): each is judged by the owner's own key,
//! logging in from the host side of the veth, outside the root's network namespace. brickup's
//! login proof (src/login.rs) must refuse what sshd or the packet filters would refuse, keep the
//! owner's way in, and say why; `check` must not call such a host converged.
//!
//! Run against an older build with `LIVE_ROOT_BRICKUP=PATH` to see each fail there. Needs root.

mod common;

use std::net::IpAddr;

use common::live::{LiveConfig, LiveRoot};
use common::text;

const PORT: u16 = 2849;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The apply failed (exit 3) naming the proof, and the owner's key still logs in on a port sshd
/// listens on (22, where the VPS-like root had it). Returns brickup's output.
fn refused_and_still_in(lr: &LiveRoot) -> String {
    let (o, _) = lr.apply();
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(3),
        "apply: {out}\n{}",
        lr.diagnostics()
    );
    assert!(
        out.contains("the owner's login was not proven"),
        "the failure names the proof: {out}"
    );
    assert_owner_in(lr, lr.addr4());
    // Nothing of the throwaway key is left.
    let keys = lr.read("/root/.ssh/authorized_keys");
    assert!(!keys.contains("brickup-login-proof"), "{keys}");
    let c = lr.check();
    assert_ne!(
        c.status.code(),
        Some(0),
        "check after a refused apply: {}",
        text(&c)
    );
    out
}

/// The owner logs in with their key on some port sshd listens on in the root.
fn assert_owner_in(lr: &LiveRoot, addr: IpAddr) {
    let ports = lr.listening_ports();
    assert!(
        ports.iter().any(|p| lr.key_login_works(addr, *p)),
        "the owner is locked out: no key login on any of {ports:?}\n{}",
        lr.diagnostics()
    );
}

fn refused_with(name: &'static str, settings: Vec<(&'static str, &'static str)>) -> String {
    let lr = LiveRoot::new(name);
    let mut c = LiveConfig::new(PORT);
    c.ssh_settings = settings;
    lr.configure(&c);
    refused_and_still_in(&lr)
}

/// sshd serves loopback only: a banner on 127.0.0.1 answered, the owner's address did not.
#[test]
fn listen_address_loopback_is_refused() {
    let out = refused_with(
        "listen_address_loopback",
        vec![("ListenAddress", "127.0.0.1")],
    );
    assert!(out.contains("Connection refused"), "{out}");
}

/// The user is in no listed group.
#[test]
fn allow_groups_without_the_user_is_refused() {
    refused_with("allow_groups", vec![("AllowGroups", "sshusers")]);
}

/// The `@host` part admits only another network.
#[test]
fn allow_users_from_another_network_is_refused() {
    refused_with(
        "allow_users_host",
        vec![("AllowUsers", "root@192.0.2.0/24")],
    );
}

/// The owner's key is ed25519; sshd would take only RSA signatures.
#[test]
fn pubkey_algorithms_without_the_owners_type_are_refused() {
    refused_with(
        "pubkey_algorithms",
        vec![("PubkeyAcceptedAlgorithms", "rsa-sha2-512,rsa-sha2-256")],
    );
}

/// A provider's own iptables rules (not csf, ufw or firewalld), no firewall section: the port move
/// would have closed 22's listener with nothing opening the new port.
#[test]
fn a_foreign_iptables_ruleset_keeps_the_old_port() {
    let lr = LiveRoot::new("foreign_iptables");
    // The root has no iptables before csf's prerequisites: the host's, in the root's netns.
    let rules = "iptables -A INPUT -i lo -j ACCEPT && \
         iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT && \
         iptables -A INPUT -p tcp --dport 22 -j ACCEPT && iptables -P INPUT DROP";
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &lr.netns, "sh", "-c", rules])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Control: the provider's rules let 22 through (the key is not installed yet: a password).
    let o = lr.host_password_ssh(lr.addr4(), 22);
    assert!(stdout(&o).contains("password-login-ok"), "{}", text(&o));
    let mut c = LiveConfig::new(PORT);
    c.csf = false;
    lr.configure(&c);
    let out = refused_and_still_in(&lr);
    assert!(lr.key_login_works(lr.addr4(), 22), "{out}");
}

/// On a hardened host, a hand edit that locks the owner out (a drop-in after brickup's that sshd
/// reads, and a restart) is drift for `check`, with sshd's own refusal line.
#[test]
fn check_finds_a_hand_edit_that_locks_the_owner_out() {
    let lr = LiveRoot::new("check_hand_edit");
    lr.configure(&LiveConfig::new(PORT));
    let (o, _) = lr.apply();
    assert_eq!(o.status.code(), Some(0), "apply: {}", text(&o));
    let c = lr.check();
    assert_eq!(
        c.status.code(),
        Some(0),
        "check before the edit: {}",
        text(&c)
    );
    lr.write(
        "/etc/ssh/sshd_config.d/60-hand.conf",
        "AllowGroups sshusers\n",
    );
    lr.must_sh("systemctl restart ssh.service");
    assert!(
        !lr.key_login_works(lr.addr4(), PORT),
        "control: the hand edit locks the owner's key out"
    );
    let c = lr.check();
    let out = text(&c);
    assert_ne!(c.status.code(), Some(0), "check: {out}");
    assert!(out.contains("the owner's login was not proven"), "{out}");
    assert!(
        stdout(&c).contains("not allowed because") || out.contains("not allowed because"),
        "sshd's refusal line: {out}"
    );
}
