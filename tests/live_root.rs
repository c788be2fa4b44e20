//! The real brickup binary as if on a booted machine (tests/common/live.rs): `brickup apply` runs
//! inside a copy of the Debian test rootfs, live (its root is `/`), so everything is real but
//! systemd - sshd -t/-T and the restarted sshd, apt-get from the local repository, the fixture
//! csf's install.sh/csftest/csf/lfd with real iptables, rsyslogd - and a systemctl shim
//! (tests/fixtures/systemctl-shim) stands in for systemd. The results are judged from outside:
//! real `ssh` logins and TCP connects from the host side of a veth into the root's network
//! namespace.
//!
//! Every test needs root: it creates network, mount and PID namespaces, mounts an overlay and
//! API filesystems, and lets brickup and csf load iptables rules (inside the namespace only).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::live::{LiveConfig, LiveRoot};
use common::text;

/// The SSH port brickup moves sshd to.
const PORT: u16 = 2849;
/// A port nobody allows: a listener there must be unreachable from outside once csf enforces.
const CLOSED: u16 = 8080;
const FATAL: &str =
    "csf will not function on this server due to FATAL errors from missing modules [ip_tables]";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `apply` must exit 0; the failure message has brickup's output and the root's state.
fn converge(lr: &LiveRoot) -> serde_json::Value {
    let (o, summary) = lr.apply();
    assert_eq!(
        o.status.code(),
        Some(0),
        "apply: {}\n{}",
        text(&o),
        lr.diagnostics()
    );
    summary
}

/// A root that brickup hardened with the default live config (sshd on PORT), and its address.
fn hardened(name: &'static str) -> (LiveRoot, IpAddr) {
    let lr = LiveRoot::new(name);
    lr.configure(&LiveConfig::new(PORT));
    converge(&lr);
    let a = lr.addr4();
    (lr, a)
}

fn assert_check(lr: &LiveRoot, code: i32) -> String {
    let o = lr.check();
    assert_eq!(
        o.status.code(),
        Some(code),
        "check: {}\n{}",
        text(&o),
        lr.diagnostics()
    );
    stdout(&o)
}

/// A listener on CLOSED inside the namespace answers there (positive control) but not from the
/// host side of the veth: dropped by the loaded rules.
fn assert_closed_port_dropped(lr: &LiveRoot, addr: IpAddr) {
    let nc = lr.listen_inside(CLOSED, addr.is_ipv6());
    assert!(
        lr.connects_inside(addr, CLOSED),
        "positive control: the listener on {CLOSED} answers inside the namespace"
    );
    let dropped = !lr.connects(addr, CLOSED, Duration::from_secs(3));
    drop(nc);
    assert!(
        dropped,
        "{addr} port {CLOSED} is not in TCP_IN but answers from outside\n{}",
        lr.diagnostics()
    );
}

fn assert_ssh_hardened(lr: &LiveRoot, addr: IpAddr, port: u16) {
    let banner = lr.banner(addr, port, Duration::from_secs(5));
    assert!(
        banner.as_deref().is_some_and(|b| b.starts_with("SSH-2.0-")),
        "no SSH banner on {addr} port {port}: {banner:?}\n{}",
        lr.diagnostics()
    );
    let o = lr.host_ssh(addr, port, "echo key-login-ok");
    assert!(
        stdout(&o).contains("key-login-ok"),
        "key login on {addr} port {port}: {}",
        text(&o)
    );
    let o = lr.host_password_ssh(addr, port);
    assert!(
        !o.status.success() && !stdout(&o).contains("password-login-ok"),
        "a password login on {port} must be refused: {}",
        text(&o)
    );
    assert!(stderr(&o).contains("Permission denied"), "{}", text(&o));
}

fn assert_enforcing(lr: &LiveRoot, v6: bool) {
    let rules = lr.rules(v6);
    assert!(
        rules.lines().any(|l| l.starts_with(":INPUT DROP")),
        "INPUT policy is not DROP:\n{rules}"
    );
    let o = lr.sh("systemctl is-active csf.service lfd.service");
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "active\nactive\n"),
        "{}",
        text(&o)
    );
}

/// Before brickup: sshd on 22 takes the root password (the VPS-like config), so the refusals
/// asserted later are brickup's doing.
fn assert_stock_ssh(lr: &LiveRoot) {
    let a = lr.addr4();
    let banner = lr.banner(a, 22, Duration::from_secs(5));
    assert!(
        banner.as_deref().is_some_and(|b| b.starts_with("SSH-2.0-")),
        "the booted root's sshd answers on 22: {banner:?}\n{}",
        lr.diagnostics()
    );
    let o = lr.host_password_ssh(a, 22);
    assert!(
        stdout(&o).contains("password-login-ok"),
        "before brickup the root password logs in on 22: {}",
        text(&o)
    );
}

#[test]
fn first_boot_hardens_ssh_and_enforces_csf() {
    let lr = LiveRoot::new("first_boot_hardens_ssh_and_enforces_csf");
    let a = lr.addr4();
    assert_stock_ssh(&lr);
    let sink = lr.report_sink();
    let mut cfg = LiveConfig::new(PORT);
    cfg.report_url = Some(sink.url.clone());
    lr.configure(&cfg);

    let summary = converge(&lr);
    assert_eq!(summary["changed"], true, "{summary}");
    // Both reports arrive; `finished` leaves after csf enforces, through TCP_OUT.
    let reports = sink.wait_for(2);
    let events: Vec<_> = reports.iter().map(|r| r["event"].clone()).collect();
    assert_eq!(events, ["started", "finished"], "{reports:?}");
    let fin = &reports[1];
    assert_eq!(
        (
            &fin["status"],
            &fin["firewall"],
            &fin["sshPort"],
            &fin["hostname"]
        ),
        (
            &serde_json::json!("succeeded"),
            &serde_json::json!("enforcing"),
            &serde_json::json!(PORT),
            &serde_json::json!("brickup-live")
        ),
        "{fin}"
    );
    assert_ssh_hardened(&lr, a, PORT);
    assert!(
        !lr.connects(a, 22, Duration::from_secs(3)),
        "port 22 still answers from outside\n{}",
        lr.diagnostics()
    );
    assert!(!lr.listening_ports().contains(&22), "{}", lr.diagnostics());
    assert_closed_port_dropped(&lr, a);
    assert_enforcing(&lr, false);

    // lfd's eyes: sshd's log lines (the logins above) reach SSHD_LOG through the real rsyslogd.
    let seen = (0..50).any(|_| {
        let log = std::fs::read_to_string(lr.path("/var/log/auth.log")).unwrap_or_default();
        if log.contains("sshd[") && log.contains("Accepted publickey for root") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(
        seen,
        "auth.log has no sshd login line\n{}",
        lr.diagnostics()
    );

    assert_check(&lr, 0);
    let summary = converge(&lr);
    assert_eq!(summary["changed"], false, "a second apply: {summary}");
}

#[test]
fn first_boot_with_ipv6_enforces_tcp6_in() {
    let lr = LiveRoot::new("first_boot_with_ipv6_enforces_tcp6_in");
    let mut cfg = LiveConfig::new(PORT);
    cfg.ipv6 = true;
    lr.configure(&cfg);
    converge(&lr);

    let conf = lr.read("/etc/csf/csf.conf");
    for line in ["IPV6 = \"1\"", &format!("TCP6_IN = \"{PORT},9999\"")] {
        assert!(conf.lines().any(|l| l == line), "{line} not in csf.conf");
    }
    let v6 = lr.addr6();
    assert_ssh_hardened(&lr, v6, PORT);
    assert_ssh_hardened(&lr, lr.addr4(), PORT);
    assert!(!lr.connects(v6, 22, Duration::from_secs(3)));
    assert_closed_port_dropped(&lr, v6);
    assert_enforcing(&lr, true);
    assert_enforcing(&lr, false);
    assert_check(&lr, 0);
}

#[test]
fn csftest_fatal_keeps_ssh_and_leaves_the_firewall_open() {
    let lr = LiveRoot::new("csftest_fatal_keeps_ssh_and_leaves_the_firewall_open");
    let a = lr.addr4();
    lr.configure(&LiveConfig::new(PORT));

    let (o, _) = lr.apply_env(&[("CSF_FIXTURE_CSFTEST_RESULT", FATAL)]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}\n{}",
        text(&o),
        lr.diagnostics()
    );
    assert!(
        stderr(&o).contains("csftest") && stderr(&o).contains("FATAL"),
        "the error names csftest's verdict: {}",
        text(&o)
    );
    assert!(
        lr.key_login_works(a, PORT),
        "SSH on the configured port after a csftest FATAL\n{}",
        lr.diagnostics()
    );
    let rules = lr.rules(false);
    assert!(
        !rules.lines().any(|l| l.starts_with(":INPUT DROP")),
        "csftest said FATAL, yet the firewall enforces:\n{rules}"
    );
    let drift = assert_check(&lr, 1);
    assert!(
        drift.contains("drift: firewall:"),
        "check names the firewall: {drift}"
    );

    // The hook gone, a plain apply converges.
    converge(&lr);
    assert_check(&lr, 0);
    assert_enforcing(&lr, false);
    assert!(lr.key_login_works(a, PORT));
}

/// The fixture lfd daemonizes, then dies a second later (as lfd does on its own start checks):
/// `systemctl restart` succeeded and the unit was active when first asked. The apply must not
/// call the firewall enforcing: exit 3 naming lfd, rules flushed with TESTING on, SSH reachable,
/// `check` names it; the fault gone, a plain apply converges.
#[test]
fn lfd_that_dies_after_its_start_fails_the_apply() {
    let lr = LiveRoot::new("lfd_that_dies_after_its_start_fails_the_apply");
    let a = lr.addr4();
    lr.configure(&LiveConfig::new(PORT));
    lr.write("/etc/csf/fixture-lfd-crash", "1\n");

    let (o, _) = lr.apply();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}\n{}",
        text(&o),
        lr.diagnostics()
    );
    assert!(
        stderr(&o).contains("after enabling: lfd.service is failed"),
        "the error names lfd: {}",
        text(&o)
    );
    assert!(
        lr.key_login_works(a, PORT),
        "SSH on the configured port after lfd died\n{}",
        lr.diagnostics()
    );
    assert!(
        lr.read("/etc/csf/csf.conf")
            .lines()
            .any(|l| l == "TESTING = \"1\""),
        "TESTING left on"
    );
    let drift = assert_check(&lr, 1);
    assert!(drift.contains("drift: firewall:"), "{drift}");

    lr.must_sh("rm -f /etc/csf/fixture-lfd-crash");
    converge(&lr);
    assert_check(&lr, 0);
    assert_enforcing(&lr, false);
}

/// The invariant for any failed run: some port on which sshd answers a real key login from
/// outside is accepted by the loaded firewall. Returns the ports that worked.
fn assert_some_ssh_port_reachable(lr: &LiveRoot, what: &str) -> Vec<u16> {
    let a = lr.addr4();
    let listening = lr.listening_ports();
    let working: Vec<u16> = listening
        .iter()
        .copied()
        .filter(|p| lr.key_login_works(a, *p))
        .collect();
    assert!(
        !working.is_empty(),
        "LOCKED OUT after {what}: no listening port ({listening:?}) takes a key login from \
         outside\n{}",
        lr.diagnostics()
    );
    working
}

/// Converge on PORT, then move to NEW while something after the sshd step fails; afterwards the
/// owner must still get in, and a fixed config converges on NEW alone.
fn port_move_with_a_later_failure(test: &'static str, fault: &str) {
    const NEW: u16 = 3917;
    let (lr, a) = hardened(test);
    assert!(lr.key_login_works(a, PORT));
    assert_enforcing(&lr, false);

    let mut broken = LiveConfig::new(NEW);
    let expect = match fault {
        "sha256" => {
            broken.sha256 = Some("ab".repeat(32));
            "sha256 mismatch"
        }
        "package" => {
            broken.extra_packages = vec!["brickup-no-such-package".into()];
            "brickup-no-such-package"
        }
        _ => unreachable!(),
    };
    lr.configure(&broken);
    let (o, _) = lr.apply();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(stderr(&o).contains(expect), "{}", text(&o));
    let working = assert_some_ssh_port_reachable(&lr, &format!("a failed port move ({fault})"));
    eprintln!(
        "after the failed move ({fault}): key login works on {working:?}, listening {:?}",
        lr.listening_ports()
    );

    lr.configure(&LiveConfig::new(NEW));
    converge(&lr);
    assert_check(&lr, 0);
    assert!(
        lr.key_login_works(a, NEW),
        "key login on {NEW}\n{}",
        lr.diagnostics()
    );
    for old in [PORT, 22] {
        assert!(
            !lr.connects(a, old, Duration::from_secs(3)),
            "{old} still answers after the move\n{}",
            lr.diagnostics()
        );
    }
    let sshd_ports: Vec<u16> = lr
        .listening_ports()
        .into_iter()
        .filter(|p| *p == PORT || *p == 22)
        .collect();
    assert!(sshd_ports.is_empty(), "still listening on {sshd_ports:?}");
}

#[test]
fn port_move_then_wrong_checksum_keeps_a_way_in() {
    port_move_with_a_later_failure("port_move_then_wrong_checksum_keeps_a_way_in", "sha256");
}

#[test]
fn port_move_then_missing_package_keeps_a_way_in() {
    port_move_with_a_later_failure("port_move_then_missing_package_keeps_a_way_in", "package");
}

#[test]
fn drift_is_named_and_repaired() {
    let (lr, a) = hardened("drift_is_named_and_repaired");
    assert_check(&lr, 0);

    // An early drop-in wins over brickup's 00-brickup.conf (first value wins in sshd).
    lr.write(
        "/etc/ssh/sshd_config.d/00-aaa.conf",
        "PasswordAuthentication yes\n",
    );
    lr.must_sh(r#"sed -i 's/^TESTING = "0"/TESTING = "1"/' /etc/csf/csf.conf"#);
    assert!(lr.read("/etc/csf/csf.conf").contains("TESTING = \"1\""));
    lr.must_sh("systemctl stop rsyslog.service");
    let o = lr.sh("systemctl is-active rsyslog.service");
    assert_eq!(stdout(&o), "inactive\n", "{}", text(&o));

    let drift = assert_check(&lr, 1);
    for needle in ["passwordauthentication", "testing", "rsyslog.service"] {
        assert!(
            drift.to_lowercase().contains(needle),
            "check does not name {needle}:\n{drift}"
        );
    }

    converge(&lr);
    assert_check(&lr, 0);
    assert_ssh_hardened(&lr, a, PORT);
    assert_enforcing(&lr, false);
    let o = lr.sh("systemctl is-active rsyslog.service");
    assert_eq!(stdout(&o), "active\n", "{}", text(&o));
}

/// The message of the run's "access" entry, asserting its outcome.
fn access_entry(summary: &serde_json::Value, outcome: &str, o: &std::process::Output) -> String {
    let steps = summary["steps"].as_array().cloned().unwrap_or_default();
    let access = steps
        .iter()
        .find(|s| s["name"] == "access")
        .unwrap_or_else(|| panic!("no access entry: {summary}\n{}", text(o)));
    assert_eq!(access["outcome"], outcome, "{access}");
    access["message"].as_str().unwrap_or_default().to_string()
}

/// Seen in the VM's drift repair: brickup's reload and csf's TESTING cron flush (`csf -f`)
/// ran into each other and left INPUT dropping with no rule, then a step failed and the run
/// ended there: a lockout. csf's lock now keeps the two apart (the fixture has it, like csf),
/// and whatever leaves the rules so, an apply checks before its first step and after its last
/// that some port sshd listens on is accepted, and if none is, loads csf.conf's rules again.
#[test]
fn an_apply_never_ends_with_rules_that_drop_every_ssh_port() {
    let (lr, a) = hardened("an_apply_never_ends_with_rules_that_drop_every_ssh_port");
    let lost = format!("accepted none of the ports sshd listens on ({PORT}");

    // Arriving locked out (the rules half-loaded by hand): put right first, and the preflight's
    // loopback probes then see sshd (with the rules left, "port in use by another program").
    lr.must_sh("iptables -w -F INPUT");
    assert!(
        !lr.connects(a, PORT, Duration::from_secs(3)),
        "control: with INPUT dropping and no rule left, port {PORT} is unreachable"
    );
    let (o, summary) = lr.apply();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        text(&o),
        lr.diagnostics()
    );
    let message = access_entry(&summary, "changed", &o);
    assert!(
        message.contains("before the run")
            && message.contains(&lost)
            && message.contains("csf -sf loaded"),
        "{message}"
    );
    assert_ssh_hardened(&lr, a, PORT);
    assert_check(&lr, 0);

    // Broken under the run: an apt hook flushes INPUT, then fails the install of an extra
    // package - a failure after which no later step touches the firewall.
    lr.write(
        "/etc/apt/apt.conf.d/99brickup-test-break",
        "DPkg::Pre-Invoke { \"iptables -w -F INPUT; exit 1\"; };\n",
    );
    let mut extra = LiveConfig::new(PORT);
    extra.extra_packages = vec!["xz-utils".into()];
    lr.configure(&extra);
    let (o, summary) = lr.apply();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(stderr(&o).contains("Pre-Invoke"), "{}", text(&o));
    let message = access_entry(&summary, "failed", &o);
    assert!(
        message.contains(&lost) && message.contains("csf -sf loaded"),
        "{message}"
    );
    assert!(
        summary["error"].to_string().contains(&lost),
        "the run's error says it: {summary}"
    );
    assert_ssh_hardened(&lr, a, PORT);
    assert_enforcing(&lr, false);

    lr.must_sh("rm /etc/apt/apt.conf.d/99brickup-test-break");
    let summary = converge(&lr);
    assert!(
        !summary["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "access")),
        "{summary}"
    );
    assert_check(&lr, 0);
}

/// The access check's last resort: when a reload (`csf -sf`) cannot put the rules right (here it
/// fails, like a broken release: the fixture's fail-reload hook), the rules are flushed - an open
/// firewall with key-only SSH, never a lockout - and the entry says so.
#[test]
fn when_a_reload_cannot_restore_access_the_rules_are_flushed() {
    let (lr, a) = hardened("when_a_reload_cannot_restore_access_the_rules_are_flushed");
    lr.write("/etc/csf/fixture-fail-reload", "");
    lr.must_sh("iptables -w -F INPUT");
    assert!(
        !lr.connects(a, PORT, Duration::from_secs(3)),
        "control: with INPUT dropping and no rule left, port {PORT} is unreachable"
    );
    let (o, summary) = lr.apply();
    // The firewall step then fails on the same broken reload (and flushes, TESTING on).
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let message = access_entry(&summary, "changed", &o);
    assert!(
        message.contains("before the run")
            && message.contains("Compilation failed")
            && message.contains("csf -f flushed them"),
        "{message}"
    );
    assert!(
        lr.rules(false).contains(":INPUT ACCEPT"),
        "{}",
        lr.rules(false)
    );
    assert_ssh_hardened(&lr, a, PORT);

    lr.must_sh("rm /etc/csf/fixture-fail-reload");
    converge(&lr);
    assert_check(&lr, 0);
    assert_enforcing(&lr, false);
}

/// csf refuses to run while another csf command holds its lock (csf.pl's `csflock`): here a
/// holder keeps it while a drift repair must reload. brickup's reload is run again after a
/// pause until the lock is free, and the repair converges.
#[test]
fn a_reload_waits_while_another_csf_holds_its_lock() {
    let (lr, a) = hardened("a_reload_waits_while_another_csf_holds_its_lock");
    lr.must_sh(r#"sed -i 's/^TESTING = "0"/TESTING = "1"/' /etc/csf/csf.conf"#);
    lr.must_sh("(flock /var/lib/csf/csf.lock sleep 20 </dev/null >/dev/null 2>&1 &); sleep 1");
    let o = lr.sh("/usr/sbin/csf -f");
    assert_eq!(
        o.status.code(),
        Some(11),
        "control: csf refuses while the lock is held: {}",
        text(&o)
    );
    assert!(
        lr.key_login_works(a, PORT),
        "control: the refused flush changed nothing"
    );

    let (o, _) = lr.apply();
    assert_eq!(
        o.status.code(),
        Some(0),
        "apply: {}\n{}",
        text(&o),
        lr.diagnostics()
    );
    assert!(stderr(&o).contains("holds csf's lock"), "{}", text(&o));
    assert_check(&lr, 0);
    assert_ssh_hardened(&lr, a, PORT);
    assert_enforcing(&lr, false);
}

/// csf's `LFDSTART = "1"` (the owner's `firewall.settings`) makes `csf -s`/`-r` only ask lfd to
/// restart csf later - and lfd does not run while TESTING is "1". brickup's reloads must load
/// the rules themselves (`csf -sf`), or its checks would judge the rules of before.
#[test]
fn lfdstart_does_not_defer_brickups_reloads() {
    let lr = LiveRoot::new("lfdstart_does_not_defer_brickups_reloads");
    let a = lr.addr4();
    let mut cfg = LiveConfig::new(PORT);
    cfg.firewall_settings = vec![("LFDSTART", "1")];
    lr.configure(&cfg);
    converge(&lr);
    let conf = lr.read("/etc/csf/csf.conf");
    assert!(conf.lines().any(|l| l == "LFDSTART = \"1\""), "{conf}");
    assert_ssh_hardened(&lr, a, PORT);
    assert_closed_port_dropped(&lr, a);
    assert_enforcing(&lr, false);
    assert_check(&lr, 0);

    // A drift repair reloads too: TCP_IN lost the masternode port, and the apply puts it back
    // into the loaded rules, not only into csf.conf.
    lr.must_sh(&format!(
        r#"sed -i 's/^TCP_IN = .*/TCP_IN = "{PORT}"/' /etc/csf/csf.conf && /usr/sbin/csf -sf >/dev/null"#
    ));
    let rules = || lr.must_sh("iptables -S INPUT");
    assert!(!rules().contains("--dport 9999"), "control: {}", rules());
    converge(&lr);
    assert!(rules().contains("--dport 9999"), "{}", rules());
    assert_check(&lr, 0);
}

/// The fault matrix's power cut in csf's installer left /etc/csf/csf.conf empty (the installer
/// copies it without fsync), and the installer, run again, keeps an existing csf.conf: the node
/// never converged ("csf.conf has no AUTO_UPDATES setting"). Now a damaged csf.conf (empty, or
/// no TESTING line) is moved aside before the installer runs, and counts as csf not installed
/// even when the mark says the install finished.
#[test]
fn a_csf_conf_a_cut_left_empty_is_written_anew() {
    let (lr, a) = hardened("a_csf_conf_a_cut_left_empty_is_written_anew");

    for (mark, conf) in [("installing", ""), ("installed", "# only a comment\n")] {
        lr.write("/var/lib/brickup/csf-install", &format!("{mark} 15.10\n"));
        lr.write("/etc/csf/csf.conf", conf);
        let drift = assert_check(&lr, 1);
        assert!(
            drift.contains("interrupted") || drift.contains("damaged"),
            "check names it ({mark}): {drift}"
        );
        converge(&lr);
        assert_eq!(
            lr.read("/etc/csf/csf.conf.damaged"),
            conf,
            "kept aside ({mark})"
        );
        assert!(
            lr.read("/etc/csf/csf.conf").contains("TESTING = \"0\""),
            "csf's default, with brickup's policy ({mark})"
        );
        assert_eq!(lr.read("/var/lib/brickup/csf-install"), "installed 15.10\n");
        assert_check(&lr, 0);
        assert_enforcing(&lr, false);
        assert!(lr.key_login_works(a, PORT));
    }
}

/// A power cut (or kill, or full disk) in the middle of csf's installer leaves csf half there,
/// version.txt included: brickup's mark says the install never finished, so `check` names it and
/// the next apply runs the installer again instead of taking csf as installed.
#[test]
fn an_interrupted_csf_install_is_run_again() {
    let (lr, a) = hardened("an_interrupted_csf_install_is_run_again");
    assert_eq!(lr.read("/var/lib/brickup/csf-install"), "installed 15.10\n");

    // As the installer leaves it when cut short: the mark set, a file it installs missing.
    lr.write("/var/lib/brickup/csf-install", "installing 15.10\n");
    lr.must_sh("rm /usr/local/csf/bin/csftest.pl");
    let drift = assert_check(&lr, 1);
    assert!(drift.contains("interrupted"), "check names it: {drift}");

    converge(&lr);
    assert!(lr.read("/usr/local/csf/bin/csftest.pl").contains("RESULT"));
    assert_eq!(lr.read("/var/lib/brickup/csf-install"), "installed 15.10\n");
    assert_check(&lr, 0);
    assert_enforcing(&lr, false);
    assert!(lr.key_login_works(a, PORT));
}
