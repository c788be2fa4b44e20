//! The csf steps end to end: real apt-get in a Debian rootfs installing the prerequisites from a
//! local repository, the fixture csf tarball served on 127.0.0.1 and verified, install.sh run in
//! the rootfs; and the live enable sequence with a recording runner for csf/iptables/systemctl.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use brickup::engine::{self, Context, Step};
use brickup::runner::RecordingRunner;
use common::*;

/// `check --root` right after an apply: every step that ran reports no drift (plan, apply and
/// check derive from the same desired state).
fn check_agrees_with_apply(root: &str, cfg: &Path, applied: &serde_json::Value) {
    let o = brickup(&[
        "check",
        "--root",
        root,
        "--config",
        cfg.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "check after apply: {}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for step in applied["steps"].as_array().unwrap() {
        let name = step["name"].as_str().unwrap();
        if step["outcome"] == "skipped" {
            continue;
        }
        assert_eq!(doc["drift"][name], serde_json::json!([]), "{name}: {doc}");
    }
}

fn config(dir: &Path, url: &str, sha: &str) -> PathBuf {
    let (_, public) = keypair(dir);
    let cfg = dir.join("brickup.yaml");
    std::fs::write(&cfg, format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\nfirewall:\n  masternode_ports: [pivx]\ncsf:\n  url: {url}\n  sha256: {sha}\n  allow_http: true\n")).unwrap();
    cfg
}

fn installed(root: &Path, pkg: &str) -> bool {
    let o = Command::new("chroot")
        .arg(root)
        .args(["dpkg-query", "-W", "-f=${Status}", pkg])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains("install ok installed")
}

#[test]
fn prerequisites_download_and_install_under_a_root_then_rerun_is_a_no_op() {
    let work = tempfile::tempdir().unwrap();
    let tarball = fixture_tarball(work.path());
    let url = serve(tarball.clone());
    let root = rootfs_with_local_repo();
    let r = root.path().to_str().unwrap();
    let cfg = config(work.path(), &url, &sha256(&tarball));
    assert!(!installed(root.path(), "libwww-perl"));

    let o = brickup(&[
        "apply",
        "--root",
        r,
        "--config",
        cfg.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for p in [
        "libwww-perl",
        "e2fsprogs",
        "bind9-host",
        "cron",
        "unzip",
        "iptables",
        "rsyslog",
    ] {
        assert!(installed(root.path(), p), "{p} not installed");
    }
    // csf's installer must see the booted system (it picks units by PID 1's name): under a
    // root it waits for first boot, with the verified tarball cached for it.
    assert!(!root.path().join("usr/sbin/csf").exists());
    assert!(!root.path().join("etc/csf/csf.conf").exists());
    let cached = root
        .path()
        .join(format!("var/lib/brickup/cache/{}.tgz", sha256(&tarball)));
    assert_eq!(sha256(&cached), sha256(&tarball));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let outcome = |name: &str| {
        summary["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["outcome"]
            .clone()
    };
    assert_eq!(outcome("packages"), "changed");
    assert_eq!(outcome("csf-install"), "deferred");
    assert_eq!(outcome("firewall"), "deferred");
    assert_eq!(outcome("csf-logs"), "deferred");
    check_agrees_with_apply(r, &cfg, &summary);

    // Rerun: no package work, no download, nothing changed.
    let o = brickup(&[
        "apply",
        "--root",
        r,
        "--config",
        cfg.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["changed"], false, "{}", text(&o));
    check_agrees_with_apply(r, &cfg, &summary);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("apt-get"),
        "a rerun must do no package work: {}",
        text(&o)
    );
}

/// A power cut in the middle of an earlier install leaves dpkg's journal behind, and apt refuses
/// every install until `dpkg --configure -a` ran: the packages step finishes dpkg's work first.
#[test]
fn an_interrupted_dpkg_is_finished_before_installing() {
    let work = tempfile::tempdir().unwrap();
    let tarball = fixture_tarball(work.path());
    let url = serve(tarball.clone());
    let root = rootfs_with_local_repo();
    let r = root.path();
    // As dpkg leaves it when the power goes between unpacking and configuring: the package
    // unpacked only, and a pending record in the journal.
    unpack_only(r, "unzip");
    std::fs::write(r.join("var/lib/dpkg/updates/0000"), "").unwrap();
    let apt = std::process::Command::new("chroot")
        .arg(r)
        .args(["apt-get", "-q", "-y", "install", "unzip"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&apt.stderr).contains("dpkg was interrupted"),
        "control: apt must refuse first: {}",
        String::from_utf8_lossy(&apt.stderr)
    );

    let cfg = config(work.path(), &url, &sha256(&tarball));
    apply_installs(r, &cfg, "dpkg --configure -a");
    assert_eq!(
        std::fs::read_dir(r.join("var/lib/dpkg/updates"))
            .unwrap()
            .count(),
        0
    );
}

/// A power cut during `apt-get update` leaves a package list cut short (seen in the fault
/// matrix's VM), and later updates take it as current (the mirror answers 304): the packages
/// step fetches the lists anew when an update did not help.
#[test]
fn damaged_package_lists_are_fetched_anew() {
    let work = tempfile::tempdir().unwrap();
    let tarball = fixture_tarball(work.path());
    let url = serve(tarball.clone());
    let root = copy_rootfs();
    let r = root.path();
    let mirror = serve_dir(apt_repo());
    std::fs::write(
        r.join("etc/apt/sources.list.d/local.list"),
        format!("deb [trusted=yes] {mirror} ./\n"),
    )
    .unwrap();
    let apt = |args: &str| {
        std::process::Command::new("chroot")
            .arg(r)
            .args(["sh", "-c", args])
            .output()
            .unwrap()
    };
    assert!(apt("apt-get -q update").status.success());
    let lists = r.join("var/lib/apt/lists");
    let list = std::fs::read_dir(&lists)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        .expect("a Packages list")
        .path();
    let full = std::fs::read(&list).unwrap();
    std::fs::write(&list, &full[..3000]).unwrap();
    let control = apt("apt-get -q update && apt-get -q -y install unzip");
    assert!(
        String::from_utf8_lossy(&control.stderr).contains("Unable to locate package unzip"),
        "control: an update must not repair the cut list: {}",
        String::from_utf8_lossy(&control.stderr)
    );
    // And a package the cut left half-installed, whose archive the cut list does not name.
    unpack_only(r, "unzip");
    let status = std::fs::read_to_string(r.join("var/lib/dpkg/status")).unwrap();
    let status = status.replacen(
        "Package: unzip\nStatus: install ok unpacked",
        "Package: unzip\nStatus: install reinstreq half-installed",
        1,
    );
    assert!(status.contains("install reinstreq half-installed"));
    std::fs::write(r.join("var/lib/dpkg/status"), status).unwrap();
    let control = apt("apt-get -q -y install unzip");
    assert!(
        String::from_utf8_lossy(&control.stderr).contains("can't find an archive"),
        "control: apt must refuse the half-installed package: {}",
        String::from_utf8_lossy(&control.stderr)
    );

    let cfg = config(work.path(), &url, &sha256(&tarball));
    apply_installs(r, &cfg, "fetching them anew");
}

/// `dpkg --unpack` of the package's archive from the local repository, as a cut leaves it:
/// unpacked, never configured.
fn unpack_only(root: &Path, package: &str) {
    let deb = std::fs::read_dir(apt_repo())
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{package}_"))
        })
        .unwrap_or_else(|| panic!("{package} in the local repo"))
        .path();
    std::fs::copy(&deb, root.join("tmp/unpack-only.deb")).unwrap();
    let st = Command::new("chroot")
        .arg(root)
        .args(["dpkg", "--unpack", "/tmp/unpack-only.deb"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

/// A whole apply under the root exits 0, its output says `says`, and csf's prerequisites (and
/// the unpacked-only unzip) end up installed.
fn apply_installs(root: &Path, cfg: &Path, says: &str) {
    let o = brickup(&[
        "apply",
        "--root",
        root.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(says), "{}", text(&o));
    for p in ["unzip", "libwww-perl", "rsyslog"] {
        assert!(installed(root, p), "{p} not installed");
    }
}

#[test]
fn wrong_checksum_installs_nothing_at_all() {
    let work = tempfile::tempdir().unwrap();
    let tarball = fixture_tarball(work.path());
    let url = serve(tarball);
    let root = rootfs_with_local_repo();
    let wrong = "ab".repeat(32);
    let cfg = config(work.path(), &url, &wrong);
    let o = brickup(&[
        "apply",
        "--root",
        root.path().to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains(&format!("sha256 mismatch for {url}: expected {wrong}")),
        "{}",
        text(&o)
    );
    assert!(!installed(root.path(), "libwww-perl"));
    assert!(!root.path().join("usr/sbin/csf").exists());
    let cache: Vec<_> = std::fs::read_dir(root.path().join("var/lib/brickup/cache"))
        .unwrap()
        .collect();
    assert!(cache.is_empty(), "nothing may stay in the cache: {cache:?}");
}

/// A root laid out like an installed csf, for the live enable sequence.
fn csf_root(port: u16) -> (tempfile::TempDir, brickup::config::Config) {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/csf")).unwrap();
    std::fs::copy(
        "tests/fixtures/csf/csf.generic.conf",
        root.path().join("etc/csf/csf.conf"),
    )
    .unwrap();
    let (_, public) = keypair(root.path());
    // The owner's key where sshd reads it: the login proof puts its own beside it.
    std::fs::create_dir_all(root.path().join("root/.ssh")).unwrap();
    std::fs::write(
        root.path().join("root/.ssh/authorized_keys"),
        format!("{public}\n"),
    )
    .unwrap();
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("etc/ssh")).unwrap();
    std::fs::write(root.path().join("etc/ssh/sshd_config"), "UsePAM yes\n").unwrap();
    let text = format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: {port}\n  authorized_keys:\n    - {public}\nfirewall:\n  masternode_ports: [9999]\n  ipv6: off\ncsf:\n  url: https://example.invalid/csf.tgz\n  sha256: {}\n", "ab".repeat(32));
    (
        root,
        brickup::config::parse(&text, Path::new("t.yaml")).unwrap(),
    )
}

/// A recording runner on which brickup's login proof (src/login.rs) succeeds as root: its
/// namespace would reach this machine's own address, so it is scripted.
fn login_runner() -> RecordingRunner {
    let runner = RecordingRunner::new().passthrough(&["ssh-keygen"]);
    script_login(&runner, "root");
    runner
}

/// systemd says both csf units are active and enabled.
fn units_up(runner: &RecordingRunner) {
    runner.answer("systemctl is-active", 0, "active\n", "");
    runner.answer("systemctl is-enabled", 0, "enabled\n", "");
}

/// Every command of the enable sequence succeeds: csf reloads, systemd enables and starts.
fn enable_sequence_succeeds(runner: &RecordingRunner) {
    runner.allow("/usr/sbin/csf -sf");
    runner.allow("systemctl enable csf.service lfd.service");
    runner.allow("systemctl start csf.service");
    runner.allow("systemctl restart lfd.service");
}

/// The firewall step as on a live machine, with csf/iptables/systemctl recorded.
fn enable_live(
    root: &Path,
    config: &brickup::config::Config,
    runner: &RecordingRunner,
) -> engine::RunResult {
    let mut cx = Context::new(brickup::root::Root::new(root), config, runner);
    cx.set_live(true);
    engine::apply(&cx, &[Box::new(brickup::csf::FirewallStep)])
}

fn testing(root: &Path) -> String {
    brickup::csf::conf::read_keys(&std::fs::read_to_string(root.join("etc/csf/csf.conf")).unwrap())
        ["TESTING"]
        .clone()
}

#[test]
fn live_enable_goes_testing_then_verifies_then_enforces() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = login_runner();
    runner.answer(
        "iptables-save",
        0,
        &format!("*filter\n-A INPUT ! -i lo -p tcp -m tcp --dport {port} -j ACCEPT\nCOMMIT\n"),
        "",
    );
    units_up(&runner);
    enable_sequence_succeeds(&runner);
    let r = enable_live(root.path(), &config, &runner);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(
        service_calls(&runner),
        vec![
            "/usr/sbin/csf -sf",
            "iptables-save -t filter",
            "/usr/sbin/csf -sf",
            "iptables-save -t filter",
            "systemctl enable csf.service lfd.service",
            "systemctl start csf.service",
            "iptables-save -t filter",
            "systemctl restart lfd.service",
            "systemctl is-active csf.service",
            "systemctl is-enabled csf.service",
            "systemctl is-active lfd.service",
            "systemctl is-enabled lfd.service",
            // Again after lfd had a moment to die on its own.
            "systemctl is-active csf.service",
            "systemctl is-enabled csf.service",
            "systemctl is-active lfd.service",
            "systemctl is-enabled lfd.service",
            // And the rules once more: a TESTING cron flush may end after the last reload.
            "iptables-save -t filter",
        ]
    );
    // Last, the owner's login through the enforcing rules.
    let calls = runner.calls();
    let login = calls.iter().rposition(|c| c.starts_with("nsenter --net="));
    let rules = calls.iter().rposition(|c| c.starts_with("iptables-save"));
    assert!(login > rules, "{calls:#?}");
    assert_eq!(testing(root.path()), "0");
    let keys = brickup::csf::conf::read_keys(
        &std::fs::read_to_string(root.path().join("etc/csf/csf.conf")).unwrap(),
    );
    assert_eq!(keys["TCP_IN"], format!("{port},9999"));
    assert_eq!(keys["IPV6"], "0");

    // check looks at what is loaded, not only at the file.
    let mut cx = Context::new(brickup::root::Root::new(root.path()), &config, &runner);
    cx.set_live(true);
    runner.answer("iptables-save", 0, &format!("*filter\n:INPUT DROP [12:345]\n-A INPUT -p tcp -m tcp --dport {port} -j ACCEPT\nCOMMIT\n"), "");
    assert_eq!(
        messages(brickup::csf::FirewallStep.check(&cx).unwrap()),
        Vec::<String>::new()
    );
    runner.answer(
        "iptables-save",
        0,
        "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n",
        "",
    );
    let drift = messages(brickup::csf::FirewallStep.check(&cx).unwrap());
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert!(drift[0].contains("INPUT policy is not DROP"), "{drift:?}");
}

/// csf's TESTING cron (`*/5 * * * * root /usr/sbin/csf -f`) fired between a reload and its
/// check (seen in the VM's drift repair): the check finds everything open, which is safe but is
/// not the policy being proven. The policy is loaded again and checked again, and the enable
/// goes on; a flush at the very end is caught the same way.
#[test]
fn a_testing_cron_flush_under_the_check_loads_the_rules_again() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = login_runner();
    accepting(&runner, port);
    units_up(&runner);
    enable_sequence_succeeds(&runner);
    let flushed =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    // The check after the first reload, and flushed()'s look at the same state.
    runner.answer_once("iptables-save", 0, flushed, "");
    runner.answer_once("iptables-save", 0, flushed, "");
    let r = enable_live(root.path(), &config, &runner);
    assert!(r.error.is_none(), "{:?}", r.error);
    let calls = service_calls(&runner);
    assert_eq!(
        calls[..6],
        [
            "/usr/sbin/csf -sf",
            "iptables-save -t filter",
            "iptables-save -t filter",
            "/usr/sbin/csf -sf",
            "iptables-save -t filter",
            "/usr/sbin/csf -sf",
        ],
        "{calls:?}"
    );
    assert!(
        !calls.contains(&"/usr/sbin/csf -f".to_string()),
        "{calls:?}"
    );
    assert_eq!(testing(root.path()), "0");
}

/// csf's message (csf.pl's `csflock`) when another csf command holds /var/lib/csf/csf.lock.
const CSF_LOCKED: &str = "Error: csf is being restarted, try again in a moment: Resource temporarily unavailable at /usr/sbin/csf line 185.";

/// A reload that meets csf's lock held by another csf command (the TESTING cron's flush, lfd, an
/// operator) is run again after a pause, and the enable goes on; any other failure is not.
#[test]
fn a_csf_command_that_meets_csfs_lock_is_run_again() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = login_runner();
    accepting(&runner, port);
    units_up(&runner);
    enable_sequence_succeeds(&runner);
    runner.answer_once("/usr/sbin/csf -sf", 11, "", CSF_LOCKED);
    runner.answer_once("/usr/sbin/csf -sf", 11, "", CSF_LOCKED);
    let r = enable_live(root.path(), &config, &runner);
    assert!(r.error.is_none(), "{:?}", r.error);
    let calls = service_calls(&runner);
    assert_eq!(
        calls[..4],
        [
            "/usr/sbin/csf -sf",
            "/usr/sbin/csf -sf",
            "/usr/sbin/csf -sf",
            "iptables-save -t filter",
        ],
        "{calls:?}"
    );
    assert_eq!(testing(root.path()), "0");

    // The same exit status without csf's lock message is a failure at once: flushed, TESTING on.
    let (root, config) = csf_root(port);
    let runner = RecordingRunner::new();
    accepting(&runner, port);
    runner.answer(
        "/usr/sbin/csf -sf",
        11,
        "",
        "Can't locate ConfigServer/Config.pm in @INC",
    );
    runner.allow("/usr/sbin/csf -f");
    let r = enable_live(root.path(), &config, &runner);
    let e = format!("{:#}", r.error.expect("a failing csf -sf fails the run"));
    assert!(e.contains("csf -sf failed"), "{e}");
    assert!(e.contains("ConfigServer/Config.pm"), "{e}");
    let reloads = runner
        .calls()
        .iter()
        .filter(|c| *c == "/usr/sbin/csf -sf")
        .count();
    assert_eq!(reloads, 1, "{:?}", service_calls(&runner));
    assert_eq!(testing(root.path()), "1");
}

/// Rules that are not a flush and do not accept SSH are not reloaded: that is a failure.
#[test]
fn rules_that_are_not_a_flush_are_not_loaded_again() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = RecordingRunner::new();
    runner.answer(
        "iptables-save",
        0,
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n",
        "",
    );
    runner.allow("/usr/sbin/csf -sf");
    runner.allow("/usr/sbin/csf -f");
    let r = enable_live(root.path(), &config, &runner);
    assert!(r.error.is_some());
    let reloads = runner
        .calls()
        .iter()
        .filter(|c| *c == "/usr/sbin/csf -sf")
        .count();
    assert_eq!(reloads, 1, "{:?}", runner.calls());
    assert_eq!(testing(root.path()), "1");
}

#[test]
fn live_enable_flushes_and_stays_in_testing_when_ssh_is_not_accepted() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = RecordingRunner::new();
    runner.answer(
        "iptables-save",
        0,
        "*filter\n-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n",
        "",
    );
    runner.allow("/usr/sbin/csf -sf");
    runner.allow("/usr/sbin/csf -f");
    let r = enable_live(root.path(), &config, &runner);
    let err = r.error.map(|e| format!("{e:#}")).expect("must fail");
    assert!(
        err.contains(&format!("do not accept TCP port {port}")),
        "{err}"
    );
    assert!(
        runner.calls().contains(&"/usr/sbin/csf -f".to_string()),
        "{:?}",
        runner.calls()
    );
    assert!(!runner
        .calls()
        .iter()
        .any(|c| c.starts_with("systemctl enable")));
    assert_eq!(testing(root.path()), "1");
}

#[test]
fn failing_csf_reload_is_flushed_and_reported() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let (root, config) = csf_root(sshd.local_addr().unwrap().port());
    let runner = RecordingRunner::new();
    runner.answer(
        "/usr/sbin/csf -sf",
        2,
        "",
        "Compilation failed in require at /usr/sbin/csf line 1.",
    );
    runner.allow("/usr/sbin/csf -f");
    let r = enable_live(root.path(), &config, &runner);
    let err = r.error.map(|e| format!("{e:#}")).expect("must fail");
    assert!(err.contains("Compilation failed in require"), "{err}");
    assert!(runner.calls().contains(&"/usr/sbin/csf -f".to_string()));
    assert_eq!(testing(root.path()), "1");
}

#[test]
fn sshd_not_listening_stops_before_enforcing() {
    let port = free_port();
    let (root, config) = csf_root(port);
    let runner = RecordingRunner::new();
    runner.answer(
        "iptables-save",
        0,
        &format!("-A INPUT -p tcp --dport {port} -j ACCEPT\n"),
        "",
    );
    runner.allow("/usr/sbin/csf -sf");
    runner.allow("/usr/sbin/csf -f");
    let r = enable_live(root.path(), &config, &runner);
    assert!(format!("{:#}", r.error.expect("must fail"))
        .contains(&format!("sshd is not listening on port {port}")));
    assert_eq!(testing(root.path()), "1");
}

fn os_root(os_release: &str, dnf: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    std::fs::write(root.path().join("etc/os-release"), os_release).unwrap();
    if dnf {
        std::fs::write(root.path().join("usr/bin/dnf"), "").unwrap();
    }
    root
}

/// Per family: which query decides "installed", and what the query prints when it is.
const FAMILIES: [(&str, bool, &str, &str, &str); 3] = [
    ("ID=debian\nVERSION_ID=\"12\"\n", false, "DEBIAN_FRONTEND=noninteractive dpkg-query", "install ok installed", "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q -y --no-install-recommends install perl libwww-perl"),
    ("ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n", true, "rpm -q --whatprovides", "perl-5.32.1-481.el9.x86_64", "dnf -y install perl perl-libwww-perl perl-LWP-Protocol-https perl-IO-Socket-SSL bind-utils e2fsprogs iptables-nft unzip cronie"),
    ("ID=centos\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\n", false, "rpm -q --whatprovides", "perl-5.16.3-299.el7_9.x86_64", "yum -y install perl perl-libwww-perl perl-LWP-Protocol-https perl-IO-Socket-SSL bind-utils e2fsprogs iptables unzip cronie"),
];

fn packages_cx<'a>(
    root: &Path,
    config: &'a brickup::config::Config,
    runner: &'a RecordingRunner,
) -> Context<'a> {
    // Lists present, so apt-get update is not needed.
    std::fs::create_dir_all(root.join("var/lib/apt/lists")).unwrap();
    std::fs::write(root.join("var/lib/apt/lists/x_Packages"), "").unwrap();
    let mut cx = Context::new(brickup::root::Root::new(root), config, runner);
    cx.set_live(true);
    cx
}

#[test]
fn package_managers_per_family() {
    let (_r, config) = csf_root(2222);
    for (os, dnf, query, installed, install) in FAMILIES {
        let root = os_root(os, dnf);
        let runner = RecordingRunner::new();
        runner.answer(query, 1, "", "not installed");
        runner.allow(install);
        let cx = packages_cx(root.path(), &config, &runner);
        let mut tx = brickup::fsops::Transaction::new(&cx.root);
        let err = brickup::packages::PackagesStep
            .apply(&cx, &mut tx)
            .unwrap_err()
            .to_string();
        // The install "succeeds" but the query still says missing: brickup notices.
        assert!(err.contains("still not installed"), "{err}");
        let calls = runner.calls();
        assert!(
            calls.iter().any(|c| c.contains(install)),
            "{os}: {calls:#?}"
        );
        assert!(
            !calls
                .iter()
                .any(|c| c.contains("apt-get -o DPkg::Lock::Timeout=600 -q update")),
            "{calls:#?}"
        );

        // Everything installed, as the family's own query says: no package work at all.
        let runner = RecordingRunner::new();
        runner.answer(query, 0, installed, "");
        let cx = packages_cx(root.path(), &config, &runner);
        let a = brickup::packages::PackagesStep.apply(&cx, &mut tx).unwrap();
        assert!(!a.changed, "{os}: {}", a.message);
        assert!(
            runner.calls().iter().all(|c| c.contains(query)),
            "{:?}",
            runner.calls()
        );
    }

    let root = os_root("ID=alpine\nVERSION_ID=3.20\n", false);
    let runner = RecordingRunner::new();
    let cx = Context::new(brickup::root::Root::new(root.path()), &config, &runner);
    let err = brickup::packages::PackagesStep
        .preflight(&cx)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ID=\"alpine\""), "{err}");
}

/// The real release's csf.service stays inactive after `csf -r` (FACTS.md): check reports it,
/// and apply starts it instead of calling the node converged.
#[test]
fn inactive_csf_service_is_drift_that_apply_repairs() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = login_runner();
    let rules = format!("*filter\n:INPUT DROP [0:0]\n-A INPUT ! -i lo -p tcp -m tcp --dport {port} -j ACCEPT\nCOMMIT\n");
    runner.answer("iptables-save", 0, &rules, "");
    units_up(&runner);
    enable_sequence_succeeds(&runner);
    assert!(enable_live(root.path(), &config, &runner).error.is_none());
    assert_eq!(testing(root.path()), "0");

    // After a first boot like the real release's: rules loaded, csf.service inactive.
    let mut cx = Context::new(brickup::root::Root::new(root.path()), &config, &runner);
    cx.set_live(true);
    runner.answer_once("systemctl is-active csf.service", 3, "inactive\n", "");
    let drift = brickup::csf::FirewallStep.check(&cx).unwrap();
    assert_eq!(
        serde_json::to_value(&drift).unwrap(),
        serde_json::json!([{
            "item": "csf.service",
            "want": "active",
            "have": "inactive",
            "source": null,
            "message": "csf.service is inactive",
        }])
    );

    let before = service_calls(&runner).len();
    runner.answer_once("systemctl is-active csf.service", 3, "inactive\n", "");
    let r = enable_live(root.path(), &config, &runner);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.steps[0].outcome, engine::Outcome::Changed);
    let calls = service_calls(&runner)[before..].to_vec();
    assert!(
        calls.contains(&"systemctl start csf.service".to_string()),
        "{calls:#?}"
    );
    assert_eq!(
        messages(brickup::csf::FirewallStep.check(&cx).unwrap()),
        Vec::<String>::new()
    );

    // Converged: a rerun runs no csf command at all.
    let before = service_calls(&runner).len();
    let r = enable_live(root.path(), &config, &runner);
    assert_eq!(r.steps[0].outcome, engine::Outcome::Unchanged);
    assert!(
        service_calls(&runner)[before..]
            .iter()
            .all(|c| c.starts_with("systemctl is-") || c.starts_with("iptables-save")),
        "{:?}",
        &service_calls(&runner)[before..]
    );
}

/// A unit that does not come up after the enable sequence fails the run and flushes.
#[test]
fn lfd_that_does_not_stay_up_fails_and_flushes() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = RecordingRunner::new();
    runner.answer(
        "iptables-save",
        0,
        &format!("-A INPUT -p tcp --dport {port} -j ACCEPT\n"),
        "",
    );
    units_up(&runner);
    enable_sequence_succeeds(&runner);
    runner.allow("/usr/sbin/csf -f");
    runner.answer("systemctl is-active lfd.service", 3, "failed\n", "");
    let r = enable_live(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(err.contains("lfd.service is failed"), "{err}");
    assert!(runner.calls().contains(&"/usr/sbin/csf -f".to_string()));
    assert_eq!(testing(root.path()), "1");
}

/// lfd forks: up when `systemctl restart` returns, dead a moment later (its own start checks).
/// The second look catches it: the run fails, flushes and leaves TESTING on, as for a unit that
/// never came up - the failure is not hidden behind an "enforcing" report.
#[test]
fn lfd_that_dies_a_moment_after_its_start_fails_and_flushes() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = RecordingRunner::new();
    runner.answer(
        "iptables-save",
        0,
        &format!("-A INPUT -p tcp --dport {port} -j ACCEPT\n"),
        "",
    );
    units_up(&runner);
    enable_sequence_succeeds(&runner);
    runner.allow("/usr/sbin/csf -f");
    runner.answer_once("systemctl is-active lfd.service", 0, "active\n", "");
    runner.answer_once("systemctl is-active lfd.service", 3, "failed\n", "");
    let r = enable_live(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(
        err.contains("3 s after enabling: lfd.service is failed"),
        "{err}"
    );
    let calls = runner.calls();
    let restart = calls
        .iter()
        .position(|c| c == "systemctl restart lfd.service")
        .unwrap();
    let flush = calls.iter().position(|c| c == "/usr/sbin/csf -f").unwrap();
    let looks = calls[restart..flush]
        .iter()
        .filter(|c| *c == "systemctl is-active lfd.service")
        .count();
    assert_eq!(looks, 2, "{calls:?}");
    assert_eq!(testing(root.path()), "1");
}

/// A stand-in syslog daemon for a test root: reads datagrams on ROOT/dev/log and, while `write`
/// says so, appends them to ROOT/var/log/auth.log in rsyslog's traditional line format.
fn fake_syslog(root: &Path, write: bool) -> std::os::unix::net::UnixDatagram {
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::create_dir_all(root.join("var/log")).unwrap();
    let sock = std::os::unix::net::UnixDatagram::bind(root.join("dev/log")).unwrap();
    let reader = sock.try_clone().unwrap();
    let log = root.join("var/log/auth.log");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n) = reader.recv(&mut buf) {
            if !write {
                continue;
            }
            let line = String::from_utf8_lossy(&buf[..n]);
            let msg = line.split_once('>').map(|(_, m)| m).unwrap_or(&line);
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&log)
                .unwrap();
            writeln!(f, "Nov 26 10:00:00 node {msg}").unwrap();
        }
    });
    sock
}

fn with_rsyslog_unit(root: &Path) {
    let dir = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rsyslog.service"), "[Service]\n").unwrap();
}

fn log_cx<'a>(
    root: &Path,
    config: &'a brickup::config::Config,
    runner: &'a RecordingRunner,
) -> Context<'a> {
    let mut cx = Context::new(brickup::root::Root::new(root), config, runner);
    cx.set_live(true);
    cx
}

#[test]
fn lfd_log_without_a_syslog_daemon_is_drift_and_a_failed_apply() {
    let (root, config) = csf_root(2222);
    let runner = RecordingRunner::new();
    let cx = log_cx(root.path(), &config, &runner);
    let drift = messages(brickup::csf::LogStep.check(&cx).unwrap());
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(
        drift[0].contains("no syslog daemon installed (rsyslog.service)"),
        "{drift:?}"
    );
    let mut tx = brickup::fsops::Transaction::new(&cx.root);
    let err = brickup::csf::LogStep.apply(&cx, &mut tx).unwrap_err();
    assert!(format!("{err:#}").contains("no syslog daemon"), "{err:#}");
}

#[test]
fn stopped_syslog_is_repaired_and_the_probe_proves_sshd_log_is_written() {
    let (root, config) = csf_root(2222);
    with_rsyslog_unit(root.path());
    let _syslog = fake_syslog(root.path(), true);
    let runner = RecordingRunner::new();
    units_up(&runner);
    runner.allow("systemctl enable --now rsyslog.service");
    runner.allow("systemctl restart lfd.service");
    let cx = log_cx(root.path(), &config, &runner);

    // rsyslog stopped and the file never written: both are named.
    runner.answer_once("systemctl is-active rsyslog.service", 3, "inactive\n", "");
    let drift = messages(brickup::csf::LogStep.check(&cx).unwrap());
    assert!(
        drift.iter().any(|d| d == "rsyslog.service is inactive"),
        "{drift:?}"
    );
    assert!(
        drift
            .iter()
            .any(|d| d.contains("SSHD_LOG /var/log/auth.log does not exist")),
        "{drift:?}"
    );

    runner.answer_once("systemctl is-active rsyslog.service", 3, "inactive\n", "");
    let mut tx = brickup::fsops::Transaction::new(&cx.root);
    let a = brickup::csf::LogStep.apply(&cx, &mut tx).unwrap();
    assert!(a.changed, "{}", a.message);
    let calls = runner.calls();
    assert!(
        calls.contains(&"systemctl enable --now rsyslog.service".to_string()),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&"systemctl restart lfd.service".to_string()),
        "{calls:#?}"
    );
    let log = std::fs::read_to_string(root.path().join("var/log/auth.log")).unwrap();
    assert!(
        log.contains("brickup["),
        "the probe went through syslog: {log}"
    );

    assert_eq!(
        messages(brickup::csf::LogStep.check(&cx).unwrap()),
        Vec::<String>::new()
    );
    let a = brickup::csf::LogStep.apply(&cx, &mut tx).unwrap();
    assert!(!a.changed, "converged: {}", a.message);
}

#[test]
fn a_silent_sshd_log_is_drift() {
    let (root, config) = csf_root(2222);
    with_rsyslog_unit(root.path());
    // The daemon reads /dev/log but writes nothing (e.g. its auth rule was removed).
    let _syslog = fake_syslog(root.path(), false);
    std::fs::write(root.path().join("var/log/auth.log"), "old line\n").unwrap();
    let runner = RecordingRunner::new();
    units_up(&runner);
    let cx = log_cx(root.path(), &config, &runner);
    let drift = messages(brickup::csf::LogStep.check(&cx).unwrap());
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(
        drift[0].contains("SSHD_LOG /var/log/auth.log is silent"),
        "{drift:?}"
    );
    let mut tx = brickup::fsops::Transaction::new(&cx.root);
    let err = brickup::csf::LogStep.apply(&cx, &mut tx).unwrap_err();
    assert!(
        format!("{err:#}").contains("lfd would see no SSH failure"),
        "{err:#}"
    );
}

/// TCP_OUT keeps open what brickup itself needs once csf enforces: a report endpoint on 8443, a
/// csf mirror on 8080 and the package sources' ports; check names a csf.conf that drops them.
#[test]
fn tcp_out_keeps_brickups_own_ports_open() {
    let (root, _) = csf_root(2222);
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = keypair(keys.path());
    std::fs::create_dir_all(root.path().join("etc/apt/sources.list.d")).unwrap();
    std::fs::write(
        root.path().join("etc/apt/sources.list.d/mirror.list"),
        "deb https://mirror.example:9443/debian bookworm main\n",
    )
    .unwrap();
    let text = format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\nfirewall:\n  masternode_ports: [9999]\n  tcp_out: [53]\n  ipv6: on\ncsf:\n  url: https://mirror.example:8080/csf.tgz\n  sha256: {}\nreport:\n  url: https://hooks.example:8443/brickup\n", "ab".repeat(32));
    let config = brickup::config::parse(&text, Path::new("t.yaml")).unwrap();
    let runner = RecordingRunner::new();
    let cx = Context::new(brickup::root::Root::new(root.path()), &config, &runner);
    let policy = brickup::csf::policy(&cx);
    assert_eq!(policy["TCP_OUT"], "53,9999,8080,8443,9443");
    assert_eq!(policy["TCP6_OUT"], policy["TCP_OUT"]);

    // A csf.conf whose TCP_OUT lacks the report port is drift that says why it matters.
    let conf = root.path().join("etc/csf/csf.conf");
    let mut p = policy.clone();
    p.insert("TCP_OUT".into(), "53,9999,8080,9443".into());
    let text =
        brickup::csf::conf::apply_policy(&std::fs::read_to_string(&conf).unwrap(), &p).unwrap();
    std::fs::write(&conf, text).unwrap();
    let drift = messages(brickup::csf::FirewallStep.check(&cx).unwrap());
    assert!(
        drift.iter().any(|d| d.contains("TCP_OUT drops port 8443")),
        "{drift:?}"
    );
}

/// csf leaves /etc/csf/csf.error when a start fails and then refuses `csf -f`: the flush that
/// keeps the owner in must still happen.
#[test]
fn flush_after_a_failed_start_clears_csf_error() {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let (root, config) = csf_root(sshd.local_addr().unwrap().port());
    let runner = RecordingRunner::new();
    runner.answer("/usr/sbin/csf -sf", 1, "", "Error: invalid port in TCP_IN");
    std::fs::write(
        root.path().join("etc/csf/csf.error"),
        "Error: invalid port\n",
    )
    .unwrap();
    runner.answer_once(
        "/usr/sbin/csf -f",
        1,
        "",
        "csf: unresolved error, see /etc/csf/csf.error",
    );
    runner.allow("/usr/sbin/csf -f");
    let r = enable_live(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(err.contains("invalid port in TCP_IN"), "{err}");
    assert!(!err.contains("flushing also failed"), "{err}");
    let flushes = runner
        .calls()
        .iter()
        .filter(|c| *c == "/usr/sbin/csf -f")
        .count();
    assert_eq!(flushes, 2, "{:?}", runner.calls());
    assert!(!root.path().join("etc/csf/csf.error").exists());
}

/// A mistyped `firewall.settings` key is refused before anything changes when the csf.conf that
/// will be used is known: installed, or in the verified tarball already cached.
#[test]
fn unknown_firewall_setting_is_refused_in_preflight() {
    let (root, _) = csf_root(2222);
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = keypair(keys.path());
    let yaml = |key: &str| {
        format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\nfirewall:\n  settings:\n    {key}: \"1\"\ncsf:\n  url: https://example.invalid/csf.tgz\n  sha256: {}\n", "ab".repeat(32))
    };
    let runner = RecordingRunner::new();
    let typo = brickup::config::parse(&yaml("LF_TRIGGERR"), Path::new("t.yaml")).unwrap();
    let cx = Context::new(brickup::root::Root::new(root.path()), &typo, &runner);
    let err = brickup::csf::FirewallStep.preflight(&cx).unwrap_err();
    let refused = err.downcast_ref::<engine::Refused>().expect("Refused");
    assert_eq!(refused.field, "firewall.settings.LF_TRIGGERR");
    let real = brickup::config::parse(&yaml("LF_DAEMON"), Path::new("t.yaml")).unwrap();
    let cx = Context::new(brickup::root::Root::new(root.path()), &real, &runner);
    brickup::csf::FirewallStep.preflight(&cx).unwrap();

    // Not installed yet, but the verified tarball is cached: its csf.generic.conf decides.
    let work = tempfile::tempdir().unwrap();
    let tarball = fixture_tarball(work.path());
    let fresh = tempfile::tempdir().unwrap();
    let cache = fresh.path().join("var/lib/brickup/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let text = yaml("LF_TRIGGERR").replace(&"ab".repeat(32), &sha256(&tarball));
    let typo = brickup::config::parse(&text, Path::new("t.yaml")).unwrap();
    std::fs::copy(&tarball, cache.join(format!("{}.tgz", sha256(&tarball)))).unwrap();
    let cx = Context::new(brickup::root::Root::new(fresh.path()), &typo, &runner);
    let err = brickup::csf::FirewallStep.preflight(&cx).unwrap_err();
    assert!(err.downcast_ref::<engine::Refused>().is_some(), "{err:#}");
}

/// Rules that accept `port`, as iptables-save prints them once csf loaded the policy.
fn accepting(runner: &RecordingRunner, port: u16) {
    runner.answer(
        "iptables-save",
        0,
        &format!("*filter\n:INPUT DROP [0:0]\n-A INPUT ! -i lo -p tcp -m tcp --dport {port} -j ACCEPT\nCOMMIT\n"),
        "",
    );
}

/// After `failed` (a systemctl command of the enable sequence) the only command is the flush,
/// TESTING is back on, and the policy itself stays written.
fn assert_flushed_after(root: &Path, runner: &RecordingRunner, failed: &str, port: u16) {
    let calls = runner.calls();
    let at = calls
        .iter()
        .position(|c| c == failed)
        .unwrap_or_else(|| panic!("{failed} not called: {calls:#?}"));
    assert_eq!(calls[at + 1..], ["/usr/sbin/csf -f"], "{calls:#?}");
    assert_eq!(testing(root), "1");
    let keys = brickup::csf::conf::read_keys(
        &std::fs::read_to_string(root.join("etc/csf/csf.conf")).unwrap(),
    );
    assert_eq!(keys["TCP_IN"], format!("{port},9999"));
}

/// The enable sequence with `command` failing (its stderr as given): the error names the command
/// and its message, the rules are flushed and TESTING stays on.
fn enable_fails_at(command: &str, stderr: &str) -> engine::RunResult {
    let sshd = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sshd.local_addr().unwrap().port();
    let (root, config) = csf_root(port);
    let runner = RecordingRunner::new();
    accepting(&runner, port);
    enable_sequence_succeeds(&runner);
    runner.answer(command, 1, "", stderr);
    runner.allow("/usr/sbin/csf -f");
    let r = enable_live(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.as_ref().expect("must fail"));
    assert!(
        err.contains("enabling csf failed; rules flushed and TESTING left on")
            && err.contains(&format!("`{command}` exited with status 1"))
            && err.contains(stderr),
        "{err}"
    );
    assert_flushed_after(root.path(), &runner, command, port);
    r
}

#[test]
fn failed_enable_of_the_units_flushes_and_leaves_testing_on() {
    let r = enable_fails_at(
        "systemctl enable csf.service lfd.service",
        "Failed to enable unit: Unit file csf.service does not exist.",
    );
    assert_eq!(r.steps[0].outcome, engine::Outcome::Failed);
}

#[test]
fn failed_start_of_csf_service_flushes_and_leaves_testing_on() {
    enable_fails_at(
        "systemctl start csf.service",
        "Job for csf.service failed because the control process exited with error code.",
    );
}

/// A root with the fixture tarball verified in brickup's cache, for the live install step.
fn install_root() -> (tempfile::TempDir, brickup::config::Config) {
    let root = tempfile::tempdir().unwrap();
    let tarball = fixture_tarball(root.path());
    let sha = sha256(&tarball);
    let cache = root.path().join("var/lib/brickup/cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::copy(&tarball, cache.join(format!("{sha}.tgz"))).unwrap();
    let (_, public) = keypair(root.path());
    let text = format!("version: 1\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\ncsf:\n  url: https://example.invalid/csf.tgz\n  sha256: {sha}\n");
    (
        root,
        brickup::config::parse(&text, Path::new("t.yaml")).unwrap(),
    )
}

fn install_live(
    root: &Path,
    config: &brickup::config::Config,
    runner: &RecordingRunner,
) -> engine::RunResult {
    let mut cx = Context::new(brickup::root::Root::new(root), config, runner);
    cx.set_live(true);
    engine::apply(
        &cx,
        &[
            Box::new(brickup::csf::InstallStep),
            Box::new(brickup::csf::FirewallStep),
        ],
    )
}

const CSFTEST: &str = "perl /usr/local/csf/bin/csftest.pl";

/// csftest's FATAL verdict (it exits 0 regardless): the run stops before any firewall command.
#[test]
fn csftest_fatal_stops_before_any_firewall_change() {
    let (root, config) = install_root();
    let runner = RecordingRunner::new();
    runner.allow("sh install.sh");
    runner.answer(
        CSFTEST,
        0,
        "Testing ip_tables/iptable_filter...FATAL\n\nRESULT: csf will not function on this server due to FATAL errors from missing modules [ip_tables/iptable_filter]\n",
        "",
    );
    runner.allow("systemctl disable csf.service lfd.service");
    let r = install_live(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(
        err.contains("csftest.pl: csf will not function on this server")
            && err.contains("no firewall change was made")
            && err.contains("csf.service and lfd.service disabled"),
        "{err}"
    );
    // The installer enabled the units: a csf that cannot work must not start at boot.
    assert_eq!(
        runner.calls(),
        vec![
            "sh install.sh",
            CSFTEST,
            "systemctl disable csf.service lfd.service"
        ]
    );
    assert_eq!(r.steps[0].outcome, engine::Outcome::Failed);
    assert_eq!(r.steps[1].outcome, engine::Outcome::Skipped);
    assert_eq!(r.steps[1].message, "not run: an earlier step failed");
}

/// csftest's WARN verdict: csf is usable, the install goes on, and the warning is in the message.
#[test]
fn csftest_warning_is_carried_in_the_step_message() {
    let (root, config) = install_root();
    let runner = RecordingRunner::new();
    runner.allow("sh install.sh");
    runner.answer(
        CSFTEST,
        0,
        "Testing xt_recent...FAILED\n\nRESULT: csf will function on this server but some features will not work due to some missing iptables modules [xt_recent]\n",
        "",
    );
    let mut cx = Context::new(brickup::root::Root::new(root.path()), &config, &runner);
    cx.set_live(true);
    let r = engine::apply(&cx, &[Box::new(brickup::csf::InstallStep)]);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.steps[0].outcome, engine::Outcome::Changed);
    assert_eq!(
        r.steps[0].message,
        "installed csf 15.10; warning from csftest: csf will function on this server but some features will not work due to some missing iptables modules [xt_recent]"
    );
    assert_eq!(runner.calls(), vec!["sh install.sh", CSFTEST]);
}

/// firewalld running and ufw enabled for boot when csf installs: both are stopped and disabled
/// (ufw's own rules turned off first); rivals neither running nor enabled are left alone.
#[test]
fn rival_firewalls_are_stopped_and_disabled_when_csf_installs() {
    let (root, config) = install_root();
    let units = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(units.join("firewalld.service"), "[Unit]\n").unwrap();
    std::fs::write(units.join("ufw.service"), "[Unit]\n").unwrap();
    std::fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
    std::fs::write(root.path().join("usr/sbin/ufw"), "").unwrap();
    let ok = "\nRESULT: csf should function on this server\n";

    let runner = RecordingRunner::new();
    runner.allow("sh install.sh");
    runner.answer(CSFTEST, 0, ok, "");
    runner.answer("systemctl is-active firewalld.service", 0, "active\n", "");
    runner.answer("systemctl is-enabled firewalld.service", 0, "enabled\n", "");
    runner.answer("systemctl is-active ufw.service", 3, "inactive\n", "");
    runner.answer("systemctl is-enabled ufw.service", 0, "enabled\n", "");
    runner.allow("systemctl disable --now firewalld.service");
    runner.allow("ufw disable");
    runner.allow("systemctl disable --now ufw.service");
    let mut cx = Context::new(brickup::root::Root::new(root.path()), &config, &runner);
    cx.set_live(true);
    let r = engine::apply(&cx, &[Box::new(brickup::csf::InstallStep)]);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(
        r.steps[0].message,
        "installed csf 15.10; disabled firewalld, ufw"
    );
    assert_eq!(
        runner.calls(),
        vec![
            "sh install.sh",
            // csf must be able to work before the node's running firewall is stopped.
            CSFTEST,
            "systemctl is-active firewalld.service",
            "systemctl is-enabled firewalld.service",
            "systemctl disable --now firewalld.service",
            "systemctl is-active ufw.service",
            "systemctl is-enabled ufw.service",
            "ufw disable",
            "systemctl disable --now ufw.service",
        ]
    );

    let runner = RecordingRunner::new();
    runner.allow("sh install.sh");
    runner.answer(CSFTEST, 0, ok, "");
    runner.answer("systemctl is-active", 3, "inactive\n", "");
    runner.answer("systemctl is-enabled", 1, "disabled\n", "");
    let mut cx = Context::new(brickup::root::Root::new(root.path()), &config, &runner);
    cx.set_live(true);
    let r = engine::apply(&cx, &[Box::new(brickup::csf::InstallStep)]);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.steps[0].message, "installed csf 15.10");
    assert!(
        !runner.calls().iter().any(|c| c.contains("disable")),
        "{:?}",
        runner.calls()
    );
}

/// dnf and yum failing (not a transient error): three attempts, then the step fails naming the
/// command and the package manager's own words, and csf is not installed after it.
#[test]
fn failing_dnf_or_yum_install_fails_the_run_before_csf() {
    let (_r, csf_config) = csf_root(2222);
    for (os, dnf, query, _, install) in &FAMILIES[1..] {
        let root = os_root(os, *dnf);
        let runner = RecordingRunner::new();
        runner.answer(query, 1, "", "no package provides it");
        runner.answer(
            install,
            1,
            "",
            "Error: Unable to find a match: perl-LWP-Protocol-https",
        );
        let mut cx = Context::new(brickup::root::Root::new(root.path()), &csf_config, &runner);
        cx.set_live(true);
        let r = engine::apply(
            &cx,
            &[
                Box::new(brickup::packages::PackagesStep),
                Box::new(brickup::csf::InstallStep),
            ],
        );
        let err = format!("{:#}", r.error.expect("must fail"));
        assert!(
            err.contains("installing packages failed: `chroot")
                && err.contains(install)
                && err.contains("Unable to find a match: perl-LWP-Protocol-https"),
            "{err}"
        );
        let calls = runner.calls();
        let installs = calls.iter().filter(|c| c.contains(install)).count();
        assert_eq!(installs, 3, "{calls:#?}");
        assert!(calls.last().unwrap().contains(install), "{calls:#?}");
        assert_eq!(r.steps[1].outcome, engine::Outcome::Skipped);
    }
}

/// `rpm -q --whatprovides` decides: what it finds is not installed again, what it does not is.
#[test]
fn rpm_query_decides_what_dnf_installs() {
    let (_r, config) = csf_root(2222);
    let (os, dnf, ..) = FAMILIES[1];
    let root = os_root(os, dnf);
    let runner = RecordingRunner::new();
    runner.answer("rpm -q --whatprovides", 0, "found-1.0-1.el9.x86_64\n", "");
    for p in ["perl-LWP-Protocol-https", "bind-utils"] {
        runner.answer_once(
            &format!("rpm -q --whatprovides {p}"),
            1,
            &format!("no package provides {p}\n"),
            "",
        );
    }
    runner.allow("dnf -y install perl-LWP-Protocol-https bind-utils");
    let cx = packages_cx(root.path(), &config, &runner);
    let mut tx = brickup::fsops::Transaction::new(&cx.root);
    let a = brickup::packages::PackagesStep.apply(&cx, &mut tx).unwrap();
    assert!(a.changed);
    assert_eq!(
        a.message,
        "installed with dnf: perl-LWP-Protocol-https bind-utils"
    );
    let calls = runner.calls();
    let installs: Vec<&String> = calls.iter().filter(|c| c.contains(" install ")).collect();
    assert_eq!(installs.len(), 1, "{calls:#?}");
    assert!(
        installs[0].ends_with("dnf -y install perl-LWP-Protocol-https bind-utils"),
        "{calls:#?}"
    );
}

/// csftest says csf cannot work here, on a node whose firewalld is running: the error says "no
/// firewall change was made", so the firewall that protects the node must still be running
/// (stopping it first would leave the node with no firewall at all under that message).
#[test]
fn csftest_fatal_leaves_a_running_rival_firewall_running() {
    let (root, config) = install_root();
    let units = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(units.join("firewalld.service"), "[Unit]\n").unwrap();
    let runner = RecordingRunner::new();
    runner.allow("sh install.sh");
    runner.answer(
        CSFTEST,
        0,
        "\nRESULT: csf will not function on this server due to FATAL errors from missing modules [ip_tables/iptable_filter]\n",
        "",
    );
    runner.answer("systemctl is-active firewalld.service", 0, "active\n", "");
    runner.answer("systemctl is-enabled firewalld.service", 0, "enabled\n", "");
    runner.allow("systemctl disable csf.service lfd.service");
    let r = install_live(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(err.contains("no firewall change was made"), "{err}");
    assert!(
        !runner
            .calls()
            .contains(&"systemctl disable --now firewalld.service".to_string()),
        "firewalld was disabled although csf cannot run here: {:#?}\n{err}",
        runner.calls()
    );
}

/// What `check` says, one sentence per drift entry.
fn messages(drift: Vec<brickup::engine::Drift>) -> Vec<String> {
    drift.into_iter().map(|d| d.message).collect()
}
