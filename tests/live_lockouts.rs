//! Ordinary configs that once locked the owner out while `apply` and `check` both said all was
//! well (issue 20), on live roots (tests/common/live.rs): each is judged by the owner's own key,
//! logging in from the host side of the veth, outside the root's network namespace. brickup's
//! login proof (src/login.rs) must refuse what sshd or the packet filters would refuse, keep the
//! owner's way in, and say why; `check` must not call such a host converged.
//!
//! Run against an older build with `LIVE_ROOT_BRICKUP=PATH` to see each fail there. Needs root.

mod common;

use std::net::IpAddr;

use common::live::{LiveConfig, LiveRoot, CONFIG_IN_ROOT};
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

/// A config refused before any change (exit 2, the field named): sshd's config is as it was, no
/// key was installed, and the owner still logs in on 22 as before brickup (the provider's
/// password). Returns brickup's output.
fn refused_up_front(lr: &LiveRoot, field: &str) -> String {
    let before = lr.read("/etc/ssh/sshd_config");
    let (o, _) = lr.apply();
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "apply: {out}\n{}",
        lr.diagnostics()
    );
    assert!(out.contains(field), "the refusal names {field}: {out}");
    assert_eq!(lr.read("/etc/ssh/sshd_config"), before, "nothing changed");
    assert!(
        !lr.path("/etc/ssh/sshd_config.d/00-brickup.conf").exists(),
        "no drop-in written"
    );
    let keys = lr.path("/root/.ssh/authorized_keys");
    assert!(
        !keys.exists() || lr.read("/root/.ssh/authorized_keys").trim().is_empty(),
        "{out}"
    );
    let o = lr.host_password_ssh(lr.addr4(), 22);
    assert!(
        stdout(&o).contains("password-login-ok"),
        "{}\n{out}",
        text(&o)
    );
    out
}

/// A restriction by the client's address cannot be proven from the proof's own namespace: one
/// that admits only another network (the owner's would be refused) and one that admits exactly the
/// proof's range (the proof would pass, the owner be refused) are both refused before any change.
#[test]
fn allow_users_by_address_is_refused_up_front() {
    for (i, entry) in ["root@198.18.0.0/15", "root@192.0.2.0/24"]
        .iter()
        .enumerate()
    {
        let lr = LiveRoot::new(["allow_users_proof_range", "allow_users_host"][i]);
        let mut c = LiveConfig::new(PORT);
        c.ssh_settings = vec![("AllowUsers", *entry)];
        lr.configure(&c);
        let out = refused_up_front(&lr, "ssh.settings.AllowUsers");
        assert!(out.contains("cannot prove"), "{out}");
    }
}

/// Whether the root's real sshd lets the owner's key in when `line` is the whole authorized_keys
/// file: a one-connection `sshd -d` on a port of its own, before brickup has changed anything.
fn sshd_takes_key_line(lr: &LiveRoot, line: &str) -> bool {
    const CONTROL_PORT: u16 = 2998;
    lr.write_mode("/tmp/control_keys", format!("{line}\n").as_bytes(), 0o600);
    lr.must_sh(&format!(
        "/usr/sbin/sshd -d -p {CONTROL_PORT} -o AuthorizedKeysFile=/tmp/control_keys \
         -o StrictModes=no -o PidFile=none -E /tmp/control_sshd.log </dev/null >/dev/null 2>&1 &"
    ));
    let up = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        lr.listening_ports().contains(&CONTROL_PORT)
    });
    assert!(
        up,
        "the control sshd did not listen: {}",
        lr.read("/tmp/control_sshd.log")
    );
    let works = lr.key_login_works(lr.addr4(), CONTROL_PORT);
    lr.sh(&format!(
        "rm -f /tmp/control_keys; pkill -f 'sshd -d -p {CONTROL_PORT}'"
    ));
    works
}

/// Turns the owner's key line into one pasted wrong.
type Mangle = fn(&str) -> String;

/// The owner's key line as pasted wrong (issue 20 cases 5 and 6, and an option sshd does not
/// know, which makes sshd skip the whole line): each would have been installed with passwords
/// turned off. Refused before any change, the line named with what is wrong with it; the owner
/// keeps the provider's password on 22.
#[test]
fn a_key_line_sshd_would_reject_is_refused_up_front() {
    let cases: [(&str, Mangle, &str); 3] = [
        (
            "key_cut_short",
            // The base64 blob cut inside the key (as a paste into a narrow field does).
            |k| {
                let mut f = k.split(' ');
                let (t, b) = (f.next().unwrap(), f.next().unwrap());
                format!("{t} {}", &b[..48])
            },
            "cut short",
        ),
        (
            "key_nbsp",
            |k| k.replacen(' ', "\u{a0}", 1),
            "a non-breaking space (U+00A0)",
        ),
        (
            "key_unknown_option",
            |k| format!("no-port-fowarding {k}"),
            "(`no-port-fowarding`) is not an option sshd knows",
        ),
    ];
    for (name, mangle, why) in cases {
        let lr = LiveRoot::new(name);
        let line = mangle(lr.public_key.trim());
        // Control: sshd takes the key as it is, and would not take this line.
        assert!(
            sshd_takes_key_line(&lr, lr.public_key.trim()),
            "{name}: the key itself"
        );
        assert!(
            !sshd_takes_key_line(&lr, &line),
            "{name}: sshd takes {line:?}"
        );
        let mut c = LiveConfig::new(PORT);
        c.key_line = Some(line);
        lr.configure(&c);
        let out = refused_up_front(&lr, "ssh.authorized_keys[0]");
        assert!(out.contains(why), "{name}: {out}");
    }
}

/// `UsePAM no` with the user's password locked (`passwd -l`, as images that allow only keys
/// ship root): sshd then refuses even a key ("account is locked"). The proof sees it; the old
/// config stays and the owner keeps their way in.
#[test]
fn use_pam_no_with_a_locked_password_is_refused() {
    let lr = LiveRoot::new("use_pam_no_locked");
    let mut c = LiveConfig::new(PORT);
    c.ssh_settings = vec![("UsePAM", "no")];
    lr.configure(&c);
    lr.must_sh("passwd -l root >/dev/null");
    // A syslog for sshd's refusal line (the root has no journal; Ubuntu's images ship rsyslog).
    lr.must_sh(
        "apt-get update -q >/dev/null && apt-get install -y -q rsyslog >/dev/null && \
         systemctl start rsyslog.service",
    );
    let out = refused_and_still_in(&lr);
    assert!(
        out.contains("User root not allowed because account is locked"),
        "sshd's own line: {out}"
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

/// With `ssh.owner_addresses` naming where the owner connects from (the host side of the veth),
/// restrictions by address are allowed and judged for that address: a DenyUsers for another
/// network and `from=` on the owner's key that admits the owner's address converge, the owner's
/// key logs in from there, and `check` agrees. Without the field the same config is refused
/// before any change.
#[test]
fn restrictions_by_address_converge_for_the_owners_address() {
    let owner = {
        let lr = LiveRoot::new("owner_addresses");
        let owner = lr.host_addr4();
        let mut c = LiveConfig::new(PORT);
        c.ssh_settings = vec![("DenyUsers", "root@203.0.113.0/24")];
        c.key_line = Some(format!("from=\"{owner}\" {}", lr.public_key.trim()));
        c.owner_addresses = vec![owner];
        lr.configure(&c);
        let (o, _) = lr.apply();
        assert_eq!(
            o.status.code(),
            Some(0),
            "apply: {}\n{}",
            text(&o),
            lr.diagnostics()
        );
        assert!(lr.key_login_works(lr.addr4(), PORT), "{}", lr.diagnostics());
        let c = lr.check();
        assert_eq!(c.status.code(), Some(0), "check: {}", text(&c));
        owner
    };
    let lr = LiveRoot::new("owner_addresses_missing");
    let mut c = LiveConfig::new(PORT);
    c.key_line = Some(format!("from=\"{owner}\" {}", lr.public_key.trim()));
    lr.configure(&c);
    let out = refused_up_front(&lr, "ssh.authorized_keys[0]");
    assert!(out.contains("ssh.owner_addresses"), "{out}");
}

/// Install the root's own iptables (from the local repository) and run `rules` with it.
fn provider_rules(lr: &LiveRoot, rules: &str) {
    lr.must_sh("apt-get update -q >/dev/null && apt-get install -y -q iptables >/dev/null");
    lr.must_sh(rules);
    // Control: the provider's rules let 22 through (the key is not installed yet: a password).
    let o = lr.host_password_ssh(lr.addr4(), 22);
    assert!(stdout(&o).contains("password-login-ok"), "{}", text(&o));
}

const DROP_BUT_22: &str = "-A INPUT -i lo -j ACCEPT && \
     {T} -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT && \
     {T} -A INPUT -p tcp --dport 22 -j ACCEPT && {T} -P INPUT DROP";

/// On a host with a global IPv6 address and `firewall.ipv6` on, the restart's proof logs in over
/// IPv6 too (with no csf to prove it later): an sshd that serves IPv4 only is refused there, naming
/// the IPv6 address.
#[test]
fn an_ipv4_only_sshd_on_an_ipv6_host_is_refused() {
    let lr = LiveRoot::new("ipv4_only_sshd");
    let mut c = LiveConfig::new(PORT);
    c.ipv6 = true;
    c.ssh_settings = vec![("AddressFamily", "inet")];
    // No csf: only the restart's proof can see it.
    c.csf = false;
    lr.configure(&c);
    let out = refused_and_still_in(&lr);
    assert!(out.contains(&lr.addr6().to_string()), "{out}");
}

/// A root where `setup` left a provider's packet filter, configured with or without csf: the
/// apply is refused before any change, its output containing `found`.
fn filter_refused(name: &'static str, setup: impl Fn(&LiveRoot), csf: bool, found: &str) {
    let lr = LiveRoot::new(name);
    setup(&lr);
    let mut c = LiveConfig::new(PORT);
    c.csf = csf;
    lr.configure(&c);
    let out = refused_up_front(&lr, "ssh.port");
    assert!(out.contains(found), "{out}");
}

/// A provider's own iptables rules (not csf, ufw or firewalld), no firewall section: the port move
/// would have closed 22's listener with nothing opening the new port. Refused before any change,
/// naming the rules found.
#[test]
fn a_foreign_iptables_ruleset_is_refused_before_any_change() {
    let rules = format!("iptables {}", DROP_BUT_22.replace("{T}", "iptables"));
    filter_refused(
        "foreign_iptables",
        |lr| provider_rules(lr, &rules),
        false,
        "iptables (nft backend): INPUT policy DROP",
    );
}

/// iptables-legacy tables beside the nft backend csf loads: csf would never see them. Refused
/// before any change, with csf in the config.
#[test]
fn iptables_legacy_tables_beside_csf_are_refused() {
    let rules = format!(
        "iptables-legacy {}",
        DROP_BUT_22.replace("{T}", "iptables-legacy")
    );
    filter_refused(
        "legacy_iptables",
        |lr| provider_rules(lr, &rules),
        true,
        "iptables-legacy: INPUT policy DROP",
    );
}

/// A native nftables table of the provider's (not iptables-nft's): csf's rules would sit beside it
/// and never see it. Refused before any change, with csf in the config.
#[test]
fn a_native_nftables_table_is_refused() {
    let setup = |lr: &LiveRoot| {
        lr.must_sh("apt-get update -q >/dev/null && apt-get install -y -q nftables >/dev/null");
        lr.write(
            "/etc/provider.nft",
            "table inet provider {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    \
             iif lo accept\n    ct state established,related accept\n    tcp dport 22 accept\n  }\n}\n",
        );
        provider_rules(lr, "nft -f /etc/provider.nft");
    };
    filter_refused(
        "native_nftables",
        setup,
        true,
        "nftables table inet provider: chain input policy drop",
    );
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

/// `firstboot --early` as at a first boot: sshd has not started and has no host keys yet
/// (cloud-init's ssh module makes them after bootcmd). Returns its output.
fn early_run(lr: &LiveRoot, c: &LiveConfig) -> std::process::Output {
    lr.configure(c);
    lr.must_sh("systemctl stop ssh.service && rm -f /etc/ssh/ssh_host_*");
    lr.write("/var/lib/cloud/data/instance-id", "i-live-early\n");
    let o = lr.brickup(&["firstboot", "--early", "--config", CONFIG_IN_ROOT]);
    assert!(
        !lr.listening_ports().contains(&PORT),
        "the throwaway sshd is gone: {}",
        text(&o)
    );
    // What cloud-init does next: host keys, then sshd's first start.
    lr.must_sh("ssh-keygen -A && systemctl start ssh.service");
    o
}

/// The early run has no old port to fall back on: a candidate the throwaway sshd's proof refuses
/// is never the config sshd first starts with (the image's own is: the provider's password on
/// 22), and one it proves is exactly the one sshd first starts with.
#[test]
fn firstboot_early_proves_the_candidate_before_sshd_first_starts() {
    // One live root at a time (each holds the harness's lock while it lives).
    {
        let lr = LiveRoot::new("early_refused");
        let mut c = LiveConfig::new(PORT);
        c.ssh_settings = vec![("AllowGroups", "sshusers")];
        let o = early_run(&lr, &c);
        let out = text(&o);
        assert_ne!(o.status.code(), Some(0), "early: {out}");
        assert!(out.contains("the owner's login was not proven"), "{out}");
        assert!(out.contains("before sshd first starts"), "{out}");
        assert!(
            !lr.path("/etc/ssh/sshd_config.d/00-brickup.conf").exists(),
            "the refused candidate is not left for sshd's first start: {out}"
        );
        let o = lr.host_password_ssh(lr.addr4(), 22);
        assert!(
            stdout(&o).contains("password-login-ok"),
            "{}\n{out}",
            text(&o)
        );
    }
    let lr = LiveRoot::new("early_proven");
    let o = early_run(&lr, &LiveConfig::new(PORT));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "early: {out}");
    assert!(out.contains("the owner's login is proven"), "{out}");
    assert!(
        lr.key_login_works(lr.addr4(), PORT),
        "{out}\n{}",
        lr.diagnostics()
    );
}

/// At a first boot systemd's `/run/nologin` ("System is booting up") keeps every user but root
/// out until systemd-user-sessions.service, which comes after the early run: a login proof as a
/// named admin user would always fail there (pam_nologin: "Access denied ... by PAM account
/// configuration"; seen in a VM). The early run holds the file aside for its proof only and puts
/// it back; the real sshd then keeps refusing that user while it is there, and lets them in once
/// it is gone, as after the boot (the control that the file is what gates the login).
#[test]
fn firstboot_early_proves_a_named_user_while_the_boot_still_says_nologin() {
    let lr = LiveRoot::new("early_nologin");
    let nologin = "System is booting up. Unprivileged users are not permitted to log in yet.\n";
    lr.write("/run/nologin", nologin);
    let mut c = LiveConfig::new(PORT);
    c.user = Some("mnadmin");
    let o = early_run(&lr, &c);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "early: {out}");
    assert!(out.contains("the owner's login is proven"), "{out}");
    assert_eq!(lr.read("/run/nologin"), nologin, "put back: {out}");
    let during = lr.host_ssh_as("mnadmin", lr.addr4(), PORT, "echo key-login-ok");
    assert!(
        !stdout(&during).contains("key-login-ok"),
        "while /run/nologin is there sshd refuses mnadmin: {}",
        text(&during)
    );
    std::fs::remove_file(lr.path("/run/nologin")).unwrap();
    let after = lr.host_ssh_as("mnadmin", lr.addr4(), PORT, "echo key-login-ok");
    assert!(
        stdout(&after).contains("key-login-ok"),
        "{}\n{out}\n{}",
        text(&after),
        lr.diagnostics()
    );
}

/// The early run failed naming `why` (exit 3), left no candidate for sshd's first start, and the
/// image's own config serves the provider's password on 22 afterwards. Returns the output.
fn early_failed(lr: &LiveRoot, c: &LiveConfig, why: &str) -> String {
    let o = early_run(lr, c);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "early: {out}");
    assert!(out.contains(why), "{out}");
    assert!(
        !lr.path("/etc/ssh/sshd_config.d/00-brickup.conf").exists(),
        "the unproven candidate is not left for sshd's first start: {out}"
    );
    let keys = lr.read("/root/.ssh/authorized_keys");
    assert!(!keys.contains("brickup-login-proof"), "{keys}");
    out
}

/// The early proof's other ways to fail: a candidate sshd -t accepts but on which sshd cannot
/// serve (a ListenAddress the host does not have: the throwaway instance exits before it
/// listens), and a host with no global address after the 30 s wait (no address to prove on).
/// Either way sshd first starts on the image's own config.
#[test]
fn firstboot_early_fails_safe_when_the_throwaway_sshd_cannot_prove() {
    {
        let lr = LiveRoot::new("early_instance_exits");
        let mut c = LiveConfig::new(PORT);
        c.ssh_settings = vec![("ListenAddress", "192.0.2.1")];
        early_failed(&lr, &c, "the throwaway sshd exited");
        let o = lr.host_password_ssh(lr.addr4(), 22);
        assert!(stdout(&o).contains("password-login-ok"), "{}", text(&o));
    }
    let lr = LiveRoot::new("early_no_address");
    lr.must_sh("ip addr flush dev eth0 scope global");
    let out = early_failed(&lr, &LiveConfig::new(PORT), "no global address after 30 s");
    assert!(!out.contains("the owner's login is proven"), "{out}");
    // The address back: sshd (the image's config) serves the password on 22.
    let n = lr.net;
    lr.must_sh(&format!("ip addr add 10.199.{n}.2/30 dev eth0"));
    let o = lr.host_password_ssh(lr.addr4(), 22);
    assert!(stdout(&o).contains("password-login-ok"), "{}", text(&o));
}

/// The proofs' durations (ms) brickup logged in `out`.
fn proof_ms(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.split("the owner's login is proven in ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect()
}

/// Benchmark, run by scripts/bench.sh: what the login proof costs in a first-boot apply, a repair
/// apply (a drift that restarts sshd) and a check. Prints figures; asserts only that the runs
/// did what they are for.
#[test]
#[ignore = "a benchmark: scripts/bench.sh runs it"]
fn bench_login_proof_cost() {
    let lr = LiveRoot::new("bench_proof");
    lr.configure(&LiveConfig::new(PORT));
    for run in ["first-boot apply", "repair apply", "check"] {
        if run == "repair apply" {
            lr.write(
                "/etc/ssh/sshd_config.d/00-brickup.conf",
                "PasswordAuthentication yes\n",
            );
        }
        let start = std::time::Instant::now();
        let o = match run {
            "check" => lr.check(),
            _ => lr.apply().0,
        };
        let wall = start.elapsed().as_secs_f64();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{run}: {out}");
        let ms = proof_ms(&out);
        assert!(!ms.is_empty(), "{run} proved no login: {out}");
        println!(
            "login proof ({run}): wall_s={wall:.2} proofs={} proof_ms={ms:?} proof_total_ms={}",
            ms.len(),
            ms.iter().sum::<u64>()
        );
    }
}
