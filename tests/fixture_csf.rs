//! Runs brickup's own fixture csf (tests/fixtures/csf, built by scripts/make-fixture-csf.sh) for
//! real: `install.sh` and `csf` run chrooted in an overlay of `/` whose writes land in a temp dir,
//! and every firewall change happens inside network namespaces this test creates. The host's
//! root filesystem and firewall are never touched (the last test checks the host's rules).
//!
//! Needs root, `ip` (iproute2), `iptables`/`ip6tables`, `unshare`/`mount` (util-linux, mount),
//! `nc` (netcat-openbsd), `perl` and overlayfs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brickup::csfconf::apply_policy;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/fixture_csf.rs needs root (ip netns, mount, iptables); CI runs it as root"
    );
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("ip6tables", "iptables"),
        ("unshare", "util-linux"),
        ("mount", "mount"),
        ("chroot", "coreutils"),
        ("nc", "netcat-openbsd"),
        ("perl", "perl"),
        ("gzip", "gzip"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .expect("running sh")
            .success();
        assert!(found, "`{tool}` not found: apt-get install -y {package}");
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Stdout of a command that must succeed; the panic shows both streams.
fn ok(out: Output, what: &str) -> String {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{so}\nstderr:\n{se}",
        out.status
    );
    so.into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Build the fixture tarball into `dir` and return its path.
fn build_tarball(dir: &Path, version: &str) -> PathBuf {
    let script = format!("{REPO}/scripts/make-fixture-csf.sh");
    let out = run(Command::new("sh").arg(&script).arg(dir).arg(version));
    let path = PathBuf::from(ok(out, "make-fixture-csf.sh").trim());
    assert_eq!(path, dir.join(format!("csf-fixture-{version}.tgz")));
    path
}

/// Unpack with the `tar` crate (as brickup will) and return the one top-level directory.
fn unpack(tgz: &Path, into: &Path) -> PathBuf {
    let file = fs::File::open(tgz).expect("opening tarball");
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(into)
        .expect("unpacking tarball");
    let tops: Vec<_> = fs::read_dir(into)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(tops, ["csf"], "one top-level directory");
    into.join("csf")
}

/// A network namespace, deleted on drop even when the test fails.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("brickup-t-{}-{tag}{n}", std::process::id());
        ok(
            run(Command::new("ip").args(["netns", "add", &name])),
            "ip netns add",
        );
        let ns = Netns(name);
        ns.check(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    fn check(&self, args: &[&str]) -> String {
        ok(run(&mut self.cmd(args)), &args.join(" "))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip").args(["netns", "del", &self.0]).output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("warning: could not delete netns {}: {out:?}", self.0);
        }
    }
}

/// A child process killed on drop (listeners).
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill(); // already exited is fine; wait reaps it either way
        let _ = self.0.wait();
    }
}

/// An overlay of `/`: reads see the host, writes land in `upper`. Each `sh` call mounts it in a
/// private mount namespace, so nothing stays mounted after the call.
struct OverlayRoot {
    _tmp: tempfile::TempDir,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

const MOUNT_AND_CHROOT: &str = r#"set -e
mount -t overlay overlay -o "lowerdir=/,upperdir=$1,workdir=$2" "$3"
for d in dev proc sys; do mount --rbind "/$d" "$3/$d"; done
exec chroot "$3" sh -c "$4""#;

impl OverlayRoot {
    fn new() -> OverlayRoot {
        let tmp = tempfile::tempdir().unwrap();
        let [upper, work, merged] = ["upper", "work", "merged"].map(|d| tmp.path().join(d));
        for d in [&upper, &work, &merged] {
            fs::create_dir(d).unwrap();
        }
        OverlayRoot {
            _tmp: tmp,
            upper,
            work,
            merged,
        }
    }

    /// Run `script` with `sh` inside the root, in `ns` when given.
    fn sh(&self, ns: Option<&Netns>, script: &str) -> Output {
        let mut cmd = match ns {
            Some(ns) => ns.cmd(&["unshare"]),
            None => Command::new("unshare"),
        };
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .args([MOUNT_AND_CHROOT, "sh"])
            .args([&self.upper, &self.work, &self.merged])
            .arg(script);
        run(&mut cmd)
    }

    /// Where a file the root wrote or changed is.
    fn file(&self, path: &str) -> PathBuf {
        self.upper.join(path.trim_start_matches('/'))
    }

    fn read(&self, path: &str) -> String {
        let p = self.file(path);
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    fn install(&self, csf_dir: &Path) -> String {
        let script = format!("cd '{}' && sh install.sh", csf_dir.display());
        ok(self.sh(None, &script), "install.sh")
    }

    fn set_conf(&self, pairs: &[(&str, &str)]) {
        let wanted: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let conf = apply_policy(&self.read("/etc/csf/csf.conf"), &wanted).unwrap();
        fs::write(self.file("/etc/csf/csf.conf"), conf).unwrap();
    }
}

/// Build, unpack and install a fixture csf into a fresh overlay root.
fn installed(version: &str) -> (tempfile::TempDir, PathBuf, OverlayRoot) {
    require_root_and_tools();
    let tmp = tempfile::tempdir().unwrap();
    let tgz = build_tarball(&tmp.path().join("out"), version);
    let csf_dir = unpack(&tgz, &tmp.path().join("unpacked"));
    let root = OverlayRoot::new();
    let out = root.install(&csf_dir);
    assert!(out.contains("Installation Completed"), "{out}");
    (tmp, csf_dir, root)
}

const DEFAULT_RULES: &str = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n";

#[test]
fn tarball_installs_like_csf() {
    let (tmp, csf_dir, root) = installed("15.10");
    let mut names: Vec<_> = fs::read_dir(&csf_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let want = "csf csf.generic.conf csf.service csftest.pl install.generic.sh install.sh lfd lfd.service version.txt";
    assert_eq!(names.join(" "), want);
    // Reproducible: a rebuild has the same bytes, so a pinned sha256 stays valid.
    let again = build_tarball(&tmp.path().join("again"), "15.10");
    assert_eq!(
        fs::read(&again).unwrap(),
        fs::read(tmp.path().join("out/csf-fixture-15.10.tgz")).unwrap()
    );

    for f in [
        "/usr/sbin/csf",
        "/usr/sbin/lfd",
        "/usr/local/csf/bin/csftest.pl",
    ] {
        assert!(root.file(f).is_file(), "{f} installed");
    }
    assert!(root.file("/usr/local/csf/lib").is_dir() && root.file("/usr/local/csf/tpl").is_dir());
    let unit = root.read("/etc/systemd/system/csf.service");
    for line in [
        "Type=oneshot",
        "ExecStart=/usr/sbin/csf --initup",
        "RemainAfterExit=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "csf.service lacks {line}");
    }
    assert!(root
        .read("/etc/systemd/system/lfd.service")
        .contains("ExecStart=/usr/sbin/lfd"));
    assert_eq!(root.read("/etc/csf/version.txt"), "15.10\n");
    let generic =
        fs::read_to_string(format!("{REPO}/tests/fixtures/csf/csf.generic.conf")).unwrap();
    assert_eq!(root.read("/etc/csf/csf.conf"), generic);
    assert!(root.file("/etc/csf/csf.allow").is_file());
    assert_eq!(
        ok(root.sh(None, "/usr/sbin/csf -v"), "csf -v"),
        "csf: v15.10 (fixture)\n"
    );

    // A reinstall (through install.generic.sh) keeps an existing csf.conf.
    root.set_conf(&[("TESTING", "0"), ("TCP_IN", "2222")]);
    let edited = root.read("/etc/csf/csf.conf");
    let script = format!("cd '{}' && sh install.generic.sh", csf_dir.display());
    let out = ok(root.sh(None, &script), "install.generic.sh");
    assert!(out.contains("Keeping existing /etc/csf/csf.conf"), "{out}");
    assert_eq!(root.read("/etc/csf/csf.conf"), edited);
}

#[test]
fn version_argument_and_bad_usage() {
    let (_tmp, _dir, root) = installed("15.11");
    assert_eq!(
        ok(root.sh(None, "/usr/sbin/csf -v"), "csf -v"),
        "csf: v15.11 (fixture)\n"
    );
    assert_eq!(root.read("/etc/csf/version.txt"), "15.11\n");
    let script = format!("{REPO}/scripts/make-fixture-csf.sh");
    let out = run(Command::new("sh").arg(&script));
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = run(Command::new("sh").args([&script, "/nonexistent-never", "1;rm"]));
    assert_eq!(out.status.code(), Some(2), "bad version refused");
    assert!(root.sh(None, "/usr/sbin/csf --bogus").status.code() == Some(1));
}

#[test]
fn csftest_and_lfd_behave_like_csf() {
    let (_tmp, _dir, root) = installed("15.10");
    let ns = Netns::new("t");
    let last_line = |out: Output| ok(out, "csftest.pl").lines().last().unwrap().to_string();
    let csftest = "perl /usr/local/csf/bin/csftest.pl";
    assert_eq!(
        last_line(root.sh(Some(&ns), csftest)),
        "RESULT: csf should function on this server"
    );
    let fatal = "RESULT: csf will not function on this server due to FATAL errors from missing modules [ip_tables]";
    fs::write(
        root.file("/etc/csf/fixture-csftest-result"),
        format!("{fatal}\n"),
    )
    .unwrap();
    assert_eq!(last_line(root.sh(Some(&ns), csftest)), fatal);
    let warn = "csf will function on this server but some features will not work due to some missing iptables modules [x]";
    let env_script = format!("CSF_FIXTURE_CSFTEST_RESULT='{warn}' {csftest}");
    assert_eq!(
        last_line(root.sh(Some(&ns), &env_script)),
        format!("RESULT: {warn}")
    );

    let out = root.sh(Some(&ns), "/usr/sbin/lfd");
    assert_eq!(
        out.status.code(),
        Some(1),
        "lfd must refuse in TESTING mode"
    );
    assert!(stderr(&out).contains("TESTING"), "{}", stderr(&out));
    root.set_conf(&[("TESTING", "0")]);
    let out = root.sh(Some(&ns), "timeout 2 /usr/sbin/lfd");
    assert_eq!(
        out.status.code(),
        Some(124),
        "lfd keeps running: {}",
        stderr(&out)
    );
}

fn rules(ns: &Netns, bin: &str) -> String {
    ns.check(&[bin, "-w", "-S", "INPUT"])
}

fn host_rules() -> String {
    ok(
        run(Command::new("iptables").args(["-w", "-S"])),
        "host iptables -S",
    )
}

#[test]
fn csf_enforces_and_flushes_in_a_netns() {
    let host_before = host_rules();
    let (_tmp, _dir, root) = installed("15.10");
    let ns = Netns::new("r");
    let csf = |arg: &str| root.sh(Some(&ns), &format!("/usr/sbin/csf {arg}"));
    root.set_conf(&[
        ("TESTING", "0"),
        ("TCP_IN", "2222,9999,30000:30010"),
        ("UDP_IN", "53"),
        ("IPV6", "1"),
        ("TCP6_IN", "2222"),
        ("UDP6_IN", ""),
    ]);
    ok(csf("-r"), "csf -r");
    let v4 = rules(&ns, "iptables");
    let v4_lines: Vec<&str> = v4.lines().collect();
    assert_eq!(v4_lines[0], "-P INPUT DROP", "{v4}");
    for rule in [
        "-A INPUT -i lo -j ACCEPT",
        "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT",
        "-A INPUT -p tcp -m tcp --dport 9999 -j ACCEPT",
        "-A INPUT -p tcp -m tcp --dport 30000:30010 -j ACCEPT",
        "-A INPUT -p udp -m udp --dport 53 -j ACCEPT",
    ] {
        assert!(v4_lines.contains(&rule), "missing {rule} in\n{v4}");
    }
    assert!(!v4.contains("--dport 80 "), "port 80 is not listed:\n{v4}");
    assert_eq!(v4_lines.len(), 7, "{v4}");
    let v6 = rules(&ns, "ip6tables");
    assert!(v6.starts_with("-P INPUT DROP\n"), "{v6}");
    assert!(
        v6.contains("-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT"),
        "{v6}"
    );
    assert!(!v6.contains("9999") && !v6.contains("-p udp"), "{v6}");

    ok(csf("-f"), "csf -f");
    assert_eq!(rules(&ns, "iptables"), "-P INPUT ACCEPT\n");
    assert_eq!(rules(&ns, "ip6tables"), "-P INPUT ACCEPT\n");
    assert_eq!(ns.check(&["iptables", "-w", "-S"]), DEFAULT_RULES);

    // Disable, refuse to start, enable.
    ok(csf("-r"), "csf -r");
    ok(csf("-x"), "csf -x");
    assert!(root.file("/etc/csf/csf.disable").exists());
    assert_eq!(rules(&ns, "iptables"), "-P INPUT ACCEPT\n");
    let out = csf("-s");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("disabled"), "{}", stderr(&out));
    ok(csf("-e"), "csf -e");
    assert!(!root.file("/etc/csf/csf.disable").exists());
    assert!(rules(&ns, "iptables").starts_with("-P INPUT DROP\n"));

    // A malformed conf or a broken release fails loudly and leaves the loaded rules alone.
    let loaded = rules(&ns, "iptables");
    let good = root.read("/etc/csf/csf.conf");
    fs::write(
        root.file("/etc/csf/csf.conf"),
        good.replace("\nUDP_IN = \"53\"", "\nUDP_IN = 53"),
    )
    .unwrap();
    let out = csf("-r");
    assert!(
        !out.status.success() && stderr(&out).contains("malformed"),
        "{out:?}"
    );
    assert_eq!(rules(&ns, "iptables"), loaded);
    fs::write(root.file("/etc/csf/csf.conf"), good).unwrap();
    fs::write(root.file("/etc/csf/fixture-fail-reload"), "").unwrap();
    let out = csf("--initup");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Compilation failed in require"));
    assert_eq!(rules(&ns, "iptables"), loaded);

    assert_eq!(
        host_rules(),
        host_before,
        "the host's firewall must not change"
    );
}

#[test]
fn testing_mode_manages_the_crontab_line() {
    let (_tmp, _dir, root) = installed("15.10");
    let ns = Netns::new("c");
    fs::write(
        root.file("/etc/crontab"),
        "SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n",
    )
    .unwrap();
    let line = |n: u32| format!("*/{n} * * * * root /usr/sbin/csf -f");
    let count = |l: &str| {
        root.read("/etc/crontab")
            .lines()
            .filter(|x| *x == l)
            .count()
    };

    root.set_conf(&[("TESTING", "1"), ("TESTING_INTERVAL", "5")]);
    let out = ok(
        root.sh(Some(&ns), "/usr/sbin/csf -r && /usr/sbin/csf -r"),
        "csf -r twice",
    );
    assert!(out.contains("TESTING mode is enabled"), "{out}");
    assert_eq!(count(&line(5)), 1, "{}", root.read("/etc/crontab"));
    root.set_conf(&[("TESTING_INTERVAL", "3")]);
    ok(root.sh(Some(&ns), "/usr/sbin/csf -s"), "csf -s");
    assert_eq!((count(&line(3)), count(&line(5))), (1, 0));

    root.set_conf(&[("TESTING", "0")]);
    ok(root.sh(Some(&ns), "/usr/sbin/csf -r"), "csf -r");
    let crontab = root.read("/etc/crontab");
    assert!(!crontab.contains("/usr/sbin/csf"), "{crontab}");
    assert!(
        crontab.starts_with("SHELL=/bin/sh\n17 * * * * root cd /"),
        "{crontab}"
    );
}

/// Whether a TCP connect from `client` to addr:port succeeds, and how long it took.
fn connects(client: &Netns, addr: &str, port: u16) -> (bool, Duration) {
    let start = Instant::now();
    let port = port.to_string();
    let out = run(&mut client.cmd(&["timeout", "10", "nc", "-z", "-w", "2", addr, &port]));
    (out.status.success(), start.elapsed())
}

fn wait_connects(client: &Netns, addr: &str, port: u16) -> bool {
    (0..20).any(|_| {
        let ok = connects(client, addr, port).0;
        if !ok {
            std::thread::sleep(Duration::from_millis(250));
        }
        ok
    })
}

#[test]
fn only_allowed_ports_are_reachable_through_a_veth() {
    let (_tmp, _dir, root) = installed("15.10");
    let (srv, cli) = (Netns::new("s"), Netns::new("k"));
    // 198.18.0.0/15 is the benchmarking range; these addresses exist only in the two namespaces.
    srv.check(&[
        "ip", "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", &cli.0,
    ]);
    srv.check(&["ip", "addr", "add", "198.18.0.1/30", "dev", "vs"]);
    srv.check(&["ip", "link", "set", "vs", "up"]);
    cli.check(&["ip", "addr", "add", "198.18.0.2/30", "dev", "vc"]);
    cli.check(&["ip", "link", "set", "vc", "up"]);
    let listen = |port: &str| {
        let child = srv
            .cmd(&["nc", "-lk", "198.18.0.1", port])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting nc listener");
        Kid(child)
    };
    let _listeners = (listen("2222"), listen("8080"));
    let addr = "198.18.0.1";
    assert!(wait_connects(&cli, addr, 2222), "baseline: 2222 reachable");
    assert!(wait_connects(&cli, addr, 8080), "baseline: 8080 reachable");

    root.set_conf(&[("TESTING", "0"), ("TCP_IN", "2222"), ("UDP_IN", "")]);
    ok(root.sh(Some(&srv), "/usr/sbin/csf -r"), "csf -r");
    assert!(
        connects(&cli, addr, 2222).0,
        "allowed port 2222 must connect"
    );
    let (open, took) = connects(&cli, addr, 8080);
    assert!(!open, "port 8080 is not in TCP_IN");
    assert!(
        took >= Duration::from_millis(1500),
        "dropped, not refused: {took:?}"
    );

    ok(root.sh(Some(&srv), "/usr/sbin/csf -f"), "csf -f");
    assert!(connects(&cli, addr, 8080).0, "after csf -f all is open");
}
