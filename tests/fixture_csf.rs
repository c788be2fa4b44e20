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

use brickup::csf::conf::apply_policy;

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
    assert_eq!(path, dir.join(format!("csf-firewall-v{version}.tgz")));
    path
}

/// Unpack with the `tar` crate and return the top-level directory (`csf/`, the only one).
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
/// A child process killed on drop (listeners).
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill(); // already exited is fine; wait reaps it either way
        let _ = self.0.wait();
    }
}

/// An overlay of `/`: reads see the host, writes land in `upper`. Each `sh` call mounts it in a
/// private mount namespace, so nothing stays mounted after the call. `comm` is bind-mounted over
/// the root's `/proc/1/comm` (csf's installer picks systemd units or SysV scripts by it):
/// "systemd", or "init" for a SysV machine, whatever this machine's PID 1 is.
struct OverlayRoot {
    _tmp: tempfile::TempDir,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    comm: String,
}

const MOUNT_AND_CHROOT: &str = r#"set -e
mount -t overlay overlay -o "lowerdir=/,upperdir=$1,workdir=$2" "$3"
for d in dev proc sys; do mount --rbind "/$d" "$3/$d"; done
mount --bind "$5" "$3/proc/1/comm"
exec chroot "$3" sh -c "$4""#;

impl OverlayRoot {
    fn new(systemd_init: bool) -> OverlayRoot {
        let tmp = tempfile::tempdir().unwrap();
        let [upper, work, merged] = ["upper", "work", "merged"].map(|d| tmp.path().join(d));
        for d in [&upper, &work, &merged] {
            fs::create_dir(d).unwrap();
        }
        // csf's installer picks units or SysV scripts by /proc/1/comm: the root shows it the
        // name asked for, whatever this machine's PID 1 is.
        let f = tmp.path().join("comm");
        fs::write(&f, if systemd_init { "systemd\n" } else { "init\n" }).unwrap();
        let comm = f.display().to_string();
        OverlayRoot {
            _tmp: tmp,
            upper,
            work,
            merged,
            comm,
        }
    }

    fn command(&self, ns: Option<&Netns>, script: &str) -> Command {
        let mut cmd = match ns {
            Some(ns) => ns.cmd(&["unshare"]),
            None => Command::new("unshare"),
        };
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .args([MOUNT_AND_CHROOT, "sh"])
            .args([&self.upper, &self.work, &self.merged])
            .arg(script)
            .arg(&self.comm);
        cmd
    }

    /// Run `script` with `sh` inside the root, in `ns` when given.
    fn sh(&self, ns: Option<&Netns>, script: &str) -> Output {
        run(&mut self.command(ns, script))
    }

    /// Where a file the root wrote or changed is.
    fn file(&self, path: &str) -> PathBuf {
        self.upper.join(path.trim_start_matches('/'))
    }

    /// A file as a command in the root sees it (mounts included).
    fn read_in_root(&self, path: &str) -> String {
        ok(self.sh(None, &format!("cat {path}")), "cat")
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

/// Build, unpack and install a fixture csf into a fresh overlay root whose PID 1 is systemd.
fn installed(version: &str) -> (tempfile::TempDir, PathBuf, OverlayRoot) {
    installed_with(version, true)
}

fn installed_with(version: &str, systemd_init: bool) -> (tempfile::TempDir, PathBuf, OverlayRoot) {
    require_root_and_tools();
    let tmp = tempfile::tempdir().unwrap();
    let tgz = build_tarball(&tmp.path().join("out"), version);
    let csf_dir = unpack(&tgz, &tmp.path().join("unpacked"));
    let root = OverlayRoot::new(systemd_init);
    let out = root.install(&csf_dir);
    assert!(out.contains("Installation Completed"), "{out}");
    (tmp, csf_dir, root)
}

const DEFAULT_RULES: &str = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n";

// ---------------------------------------------------------------------------------------------
// The tarball's shape

/// The layout the tarball is compared with: $BRICKUP_CSF_LAYOUT, else the shared facts' copy
/// (../shared/csf/release-15.10-layout.txt) when present, else the repository's copy.
fn layout_file() -> PathBuf {
    if let Some(p) = std::env::var_os("BRICKUP_CSF_LAYOUT") {
        return PathBuf::from(p);
    }
    let shared = Path::new(REPO).join("../shared/csf/release-15.10-layout.txt");
    if shared.is_file() {
        return shared;
    }
    Path::new(REPO).join("tests/fixtures/csf/release-15.10-layout.txt")
}

/// `path -> "drwxrwxr-x"` from a layout file (`MODE PATH` lines, `#` comments).
fn parse_layout(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (mode, path) = l.split_once(' ').expect("layout line is MODE PATH");
            (path.trim().to_string(), mode.to_string())
        })
        .collect()
}

/// `path -> "drwxrwxr-x"` for every entry of a gzip tarball (directories end in `/`).
fn tarball_tree(tgz: &Path) -> BTreeMap<String, String> {
    let file = fs::File::open(tgz).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut tree = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular | tar::EntryType::Continuous => '-',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            _ => '?',
        };
        let mode = header.mode().unwrap();
        let mut s = String::from(kind);
        for shift in [6, 3, 0] {
            let bits = (mode >> shift) & 7;
            s.push(if bits & 4 != 0 { 'r' } else { '-' });
            s.push(if bits & 2 != 0 { 'w' } else { '-' });
            s.push(if bits & 1 != 0 { 'x' } else { '-' });
        }
        let mut path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if kind == 'd' && !path.ends_with('/') {
            path.push('/');
        }
        assert!(tree.insert(path.clone(), s).is_none(), "{path} twice");
    }
    tree
}

/// Every difference between a tree and a layout, one line per path.
fn layout_diff(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> Vec<String> {
    let mut diff = Vec::new();
    for (path, mode) in want {
        match got.get(path) {
            None => diff.push(format!("missing from the fixture: {mode} {path}")),
            Some(m) if m != mode => diff.push(format!("{path}: fixture {m}, release {mode}")),
            Some(_) => {}
        }
    }
    for (path, mode) in got {
        if !want.contains_key(path) {
            diff.push(format!("not in the release: {mode} {path}"));
        }
    }
    diff
}

#[test]
fn tarball_has_the_release_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = build_tarball(tmp.path(), "15.10");
    let layout = layout_file();
    let want = parse_layout(&fs::read_to_string(&layout).unwrap());
    assert_eq!(want.len(), 468, "{} lists 468 entries", layout.display());
    let got = tarball_tree(&tgz);
    let diff = layout_diff(&got, &want);
    assert!(
        diff.is_empty(),
        "fixture tarball vs {}:\n{}",
        layout.display(),
        diff.join("\n")
    );
    // The repository's copy of the layout is the facts' copy.
    let repo_copy = Path::new(REPO).join("tests/fixtures/csf/release-15.10-layout.txt");
    assert_eq!(
        parse_layout(&fs::read_to_string(&repo_copy).unwrap()),
        want,
        "tests/fixtures/csf/release-15.10-layout.txt differs from {}",
        layout.display()
    );
    // The trap the layout sets: a second install.sh, not executable, deeper down.
    assert_eq!(got["csf/install.sh"], "-rwxrwxr-x");
    assert_eq!(got["csf/da/scripts/install.sh"], "-rw-rw-r--");
    assert_eq!(got["csf/csf.pl"], "-rw-rw-r--", "csf.pl is not executable");

    // The comparison names what differs.
    let mut broken = want.clone();
    broken.remove("csf/lfd.pl");
    broken.insert("csf/csf.pl".into(), "-rwxrwxr-x".into());
    broken.insert("csf/extra.txt".into(), "-rw-rw-r--".into());
    let diff = layout_diff(&got, &broken).join("\n");
    for needle in [
        "not in the release: -rw-rw-r-- csf/lfd.pl",
        "csf/csf.pl: fixture -rw-rw-r--, release -rwxrwxr-x",
        "missing from the fixture: -rw-rw-r-- csf/extra.txt",
    ] {
        assert!(diff.contains(needle), "{needle} not in\n{diff}");
    }

    // Reproducible: a rebuild has the same bytes, so a pinned sha256 stays valid.
    let again = build_tarball(&tmp.path().join("again"), "15.10");
    assert_eq!(fs::read(&again).unwrap(), fs::read(&tgz).unwrap());
}

/// The documented differences between the fixture and the real csf 15.10: the tag of each
/// bullet in the README's "Differences" section, and a check that the difference still holds in
/// the fixture. Changing the fixture's behaviour or the README without the other fails here.
const DIFFERENCES: &[(&str, DifferenceHolds)] = &[
    ("placeholders", |f| {
        f.tree["csf/ConfigServer/Config.pm"].is_empty()
    }),
    ("shell-csf", |f| f.file("csf.pl").starts_with("#!/bin/sh\n")),
    ("flat-rules", |f| !f.file("csf.pl").contains("LOCALINPUT")),
    ("conf-keys", |f| !f.file("csf.pl").contains("csf.allow")),
    ("commands", |f| {
        f.file("csf.pl").contains(
            "usage: csf -v | -s | -r | -sf | -q | --initup | --initdown | -f | --stop | -x | -e",
        )
    }),
    ("no-faststart", |f| {
        f.file("csf.pl").contains("--initdown) ;;")
    }),
    ("csf-error", |f| f.file("csf.pl").contains("csf.error")),
    ("lfd-idle", |f| !f.file("lfd.pl").contains("SSHD_LOG")),
    ("csftest-features", |f| {
        f.file("csftest.pl").matches("\"-p tcp").count() == 7
    }),
    ("installer-scope", |f| {
        !f.file("install.generic.sh").contains("os.pl")
    }),
    ("sysv-families", |f| {
        !f.file("install.generic.sh").contains("gentoo")
    }),
    ("lfd-control", |f| {
        f.file("csf.pl").contains("kill \"$(cat /run/lfd.pid)\"")
    }),
    ("auto-updates", |f| {
        f.file("csf.pl").contains("csf -u\" >\"$UPDATE_CRON\"")
    }),
    ("messages", |f| f.file("csf.pl").contains("(generic)")),
    ("hooks", |f| {
        f.file("csf.pl").contains("fixture-fail-reload")
            && f.file("csftest.pl").contains("CSF_FIXTURE_CSFTEST_HOLD")
            && f.file("lfd.pl").contains("fixture-lfd-crash")
    }),
];

/// Whether a documented difference still holds for the built fixture.
type DifferenceHolds = fn(&Fixture) -> bool;

/// The unpacked fixture files, by name, for the difference checks.
struct Fixture {
    dir: PathBuf,
    tree: BTreeMap<String, String>,
}

impl Fixture {
    fn file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap()
    }
}

#[test]
fn readme_lists_every_difference_from_real_csf() {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = build_tarball(&tmp.path().join("out"), "15.10");
    let dir = unpack(&tgz, &tmp.path().join("unpacked"));
    // Placeholders are empty: record each file's content, not its mode, for this check.
    let tree = walk_contents(&dir, "csf");
    let fixture = Fixture { dir, tree };

    let readme = fs::read_to_string(format!("{REPO}/tests/fixtures/csf/README.md")).unwrap();
    let section = readme
        .split("\n## Differences from the real csf 15.10\n")
        .nth(1)
        .expect("README has a '## Differences from the real csf 15.10' section");
    let section = section.split("\n## ").next().unwrap();
    let mut listed: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("- **"))
        .map(|l| l.split("**").next().unwrap())
        .collect();
    listed.sort();
    let mut known: Vec<&str> = DIFFERENCES.iter().map(|(tag, _)| *tag).collect();
    known.sort();
    assert_eq!(
        listed, known,
        "the README's differences and the list in tests/fixture_csf.rs must match"
    );
    let stale: Vec<&str> = DIFFERENCES
        .iter()
        .filter(|(_, holds)| !holds(&fixture))
        .map(|(tag, _)| *tag)
        .collect();
    assert!(
        stale.is_empty(),
        "the fixture no longer differs from csf as the README says for: {stale:?} \
         (update the README and DIFFERENCES)"
    );
}

/// `csf/path -> content` for every file under `dir`.
fn walk_contents(dir: &Path, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk_contents(&entry.path(), &name));
        } else {
            out.insert(
                name,
                String::from_utf8_lossy(&fs::read(entry.path()).unwrap()).into(),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The installer

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn installer_installs_like_csf_under_systemd() {
    let (_tmp, csf_dir, root) = installed("15.10");
    for (f, m) in [
        ("/usr/sbin/csf", 0o700),
        ("/usr/sbin/lfd", 0o700),
        ("/usr/local/csf/bin/csftest.pl", 0o700),
        ("/etc/csf/csf.conf", 0o600),
        ("/etc/csf/version.txt", 0o600),
    ] {
        assert!(root.file(f).is_file(), "{f} installed");
        assert_eq!(mode(&root.file(f)), m, "mode of {f}");
    }
    for d in ["/usr/local/csf/lib", "/usr/local/csf/tpl", "/var/lib/csf"] {
        assert!(root.file(d).is_dir(), "{d}");
    }
    assert_eq!(
        mode(&root.file("/etc/csf")),
        0o600,
        "csf's own dirs are 0600"
    );
    assert_eq!(
        fs::read_link(root.file("/etc/csf/csf.pl")).unwrap(),
        Path::new("/usr/sbin/csf")
    );
    assert_eq!(root.read("/etc/csf/version.txt"), "15.10\n");
    let generic = fs::read_to_string(csf_dir.join("csf.generic.conf")).unwrap();
    assert_eq!(root.read("/etc/csf/csf.conf"), generic);
    assert!(root.file("/etc/csf/csf.allow").is_file());
    assert_eq!(
        ok(root.sh(None, "/usr/sbin/csf -v"), "csf -v"),
        "csf: v15.10 (generic)\n*WARNING* TESTING mode is enabled - do not forget to disable it in the configuration\n"
    );

    // Units in /usr/lib/systemd/system, enabled (never started), none in /etc/systemd/system.
    let csf_unit = root.read("/usr/lib/systemd/system/csf.service");
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/usr/sbin/csf --initup",
        "ExecStop=/usr/sbin/csf --initdown ; /usr/sbin/csf --stop",
        "After=network.target",
        "Before=lfd.service",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            csf_unit.lines().any(|l| l == line),
            "csf.service lacks {line}"
        );
    }
    let lfd_unit = root.read("/usr/lib/systemd/system/lfd.service");
    for line in [
        "Type=forking",
        "PIDFile=/run/lfd.pid",
        "ExecStart=/usr/sbin/lfd",
        "After=network.target csf.service",
    ] {
        assert!(
            lfd_unit.lines().any(|l| l == line),
            "lfd.service lacks {line}"
        );
    }
    assert!(
        !lfd_unit.contains("Requires="),
        "lfd.service has no Requires="
    );
    for unit in ["csf.service", "lfd.service"] {
        assert!(!root.file(&format!("/etc/systemd/system/{unit}")).exists());
        let link = root.file(&format!(
            "/etc/systemd/system/multi-user.target.wants/{unit}"
        ));
        let target = fs::read_link(&link).unwrap_or_else(|e| panic!("{unit} enabled: {e}"));
        assert!(
            [
                format!("/usr/lib/systemd/system/{unit}"),
                format!("/lib/systemd/system/{unit}")
            ]
            .contains(&target.display().to_string()),
            "{unit} -> {}",
            target.display()
        );
    }
    assert_eq!(
        fs::read_link(root.file("/etc/systemd/system/firewalld.service")).unwrap(),
        Path::new("/dev/null"),
        "firewalld masked"
    );
    assert!(!root.file("/etc/init.d/csf").exists());
    assert!(
        !root.file("/etc/ufw").exists() && !root.file("/lib/systemd/system/ufw.service").exists()
    );
    // systemd itself accepts the units (ExecStop's " ; " included).
    if Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .unwrap()
        .status
        .success()
    {
        ok(
            root.sh(
                None,
                "systemd-analyze verify /usr/lib/systemd/system/csf.service /usr/lib/systemd/system/lfd.service",
            ),
            "systemd-analyze verify",
        );
    }

    // A reinstall keeps an existing csf.conf.
    root.set_conf(&[("TESTING", "0"), ("TCP_IN", "2222")]);
    let edited = root.read("/etc/csf/csf.conf");
    let script = format!("cd '{}' && sh install.generic.sh", csf_dir.display());
    ok(root.sh(None, &script), "install.generic.sh");
    assert_eq!(root.read("/etc/csf/csf.conf"), edited);

    // install.sh works from anywhere but refuses a directory that is not an unpacked release.
    let script = format!("cd / && sh '{}/install.sh'", csf_dir.display());
    assert!(ok(root.sh(None, &script), "install.sh by path").contains("Installation Completed"));
    fs::remove_file(csf_dir.join("csf.pl")).unwrap();
    let out = root.sh(
        None,
        &format!("cd '{}' && sh install.sh", csf_dir.display()),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("has no csf.pl"), "{}", stderr(&out));
}

#[test]
fn installer_uses_sysv_scripts_when_pid1_is_not_systemd() {
    let (_tmp, _dir, root) = installed_with("15.10", false);
    assert_eq!(
        root.read_in_root("/proc/1/comm"),
        "init\n",
        "the faked PID 1 name"
    );
    for s in ["/etc/init.d/csf", "/etc/init.d/lfd"] {
        assert_eq!(mode(&root.file(s)), 0o755, "{s}");
    }
    assert!(!root.file("/usr/lib/systemd/system/csf.service").exists());
    assert!(!root
        .file("/etc/systemd/system/multi-user.target.wants/csf.service")
        .exists());
}

#[test]
fn version_argument_and_bad_usage() {
    let (_tmp, _dir, root) = installed("15.11");
    let out = ok(root.sh(None, "/usr/sbin/csf -v"), "csf -v");
    assert!(out.starts_with("csf: v15.11 (generic)\n"), "{out}");
    assert_eq!(root.read("/etc/csf/version.txt"), "15.11\n");
    let script = format!("{REPO}/scripts/make-fixture-csf.sh");
    let out = run(Command::new("sh").arg(&script));
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = run(Command::new("sh").args([&script, "/nonexistent-never", "1;rm"]));
    assert_eq!(out.status.code(), Some(2), "bad version refused");
    assert!(root.sh(None, "/usr/sbin/csf --bogus").status.code() == Some(1));
}

// ---------------------------------------------------------------------------------------------
// csftest and lfd

#[test]
fn csftest_inserts_its_9999_rules_only_while_it_runs() {
    let (_tmp, _dir, root) = installed("15.10");
    let ns = Netns::new("t");
    let last_line = |out: Output| ok(out, "csftest.pl").lines().last().unwrap().to_string();
    let csftest = "perl /usr/local/csf/bin/csftest.pl";
    assert_eq!(
        last_line(root.sh(Some(&ns), csftest)),
        "RESULT: csf should function on this server"
    );
    assert_eq!(ns.check(&["iptables", "-w", "-S"]), DEFAULT_RULES);

    // Held half-way: the rules on port 9999 are there, and gone once csftest carries on.
    let mut child = root
        .command(Some(&ns), &format!("CSF_FIXTURE_CSFTEST_HOLD=1 {csftest}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        use std::io::BufRead as _;
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "csftest ended: {seen}"
        );
        seen.push_str(&line);
        if line == "HOLD\n" {
            break;
        }
    }
    let during = ns.check(&["iptables", "-w", "-S", "OUTPUT"]);
    assert!(during.contains("--dport 9999 -j ACCEPT"), "{during}");
    assert!(during.contains("--dports 9998,9999"), "{during}");
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.ends_with("RESULT: csf should function on this server\n"),
        "{rest}"
    );
    assert_eq!(
        ns.check(&["iptables", "-w", "-S"]),
        DEFAULT_RULES,
        "9999 rules removed"
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
}

/// The state letter of a live process (None once it is gone or a zombie).
fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields[0].chars().next()?;
    let session: i32 = fields[3].parse().ok()?;
    (state != 'Z' && state != 'X').then_some((state, session))
}

fn wait_gone(pid: i32) -> bool {
    (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        proc_state(pid).is_none()
    })
}

#[test]
fn lfd_refuses_testing_mode_then_daemonizes() {
    let (_tmp, _dir, root) = installed("15.10");
    let out = root.sh(None, "/usr/sbin/lfd");
    assert_eq!(
        out.status.code(),
        Some(1),
        "lfd must refuse in TESTING mode"
    );
    assert!(stderr(&out).contains("TESTING"), "{}", stderr(&out));
    assert!(!root.file("/run/lfd.pid").exists());

    root.set_conf(&[("TESTING", "0")]);
    let started = Instant::now();
    ok(root.sh(None, "/usr/sbin/lfd"), "lfd");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the parent returns at once"
    );
    let pid: i32 = root.read("/run/lfd.pid").trim().parse().unwrap();
    let (_, session) = proc_state(pid).expect("the daemon runs after its parent exited");
    assert_eq!(session, pid, "the daemon leads its own session");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    assert!(wait_gone(pid), "lfd stops on SIGTERM");
    assert!(
        !root.file("/run/lfd.pid").exists(),
        "and removes its pidfile"
    );

    // The crash hook: up, then dead a second later with its pidfile left behind.
    fs::write(root.file("/etc/csf/fixture-lfd-crash"), "1\n").unwrap();
    ok(root.sh(None, "/usr/sbin/lfd"), "lfd");
    let pid: i32 = root.read("/run/lfd.pid").trim().parse().unwrap();
    assert!(proc_state(pid).is_some(), "started");
    assert!(wait_gone(pid), "crashed");
    assert!(root.file("/run/lfd.pid").exists(), "stale pidfile");
}

// ---------------------------------------------------------------------------------------------
// Rules

fn rules(ns: &Netns, bin: &str) -> String {
    ns.check(&[bin, "-w", "-S"])
}

fn host_rules() -> String {
    ok(
        run(Command::new("iptables").args(["-w", "-S"])),
        "host iptables -S",
    )
}

#[test]
fn csf_enforces_both_directions_and_flushes_in_a_netns() {
    let host_before = host_rules();
    let (_tmp, _dir, root) = installed("15.10");
    let ns = Netns::new("r");
    let csf = |arg: &str| root.sh(Some(&ns), &format!("/usr/sbin/csf {arg}"));
    root.set_conf(&[
        ("TESTING", "0"),
        ("TCP_IN", "2222,9999,30000:30010"),
        ("TCP_OUT", "80,443"),
        ("UDP_IN", "53"),
        ("UDP_OUT", "123"),
        ("IPV6", "1"),
        ("TCP6_IN", "2222"),
        ("TCP6_OUT", "443"),
        ("UDP6_IN", ""),
        ("UDP6_OUT", ""),
    ]);
    ok(csf("-r"), "csf -r");
    let v4 = rules(&ns, "iptables");
    let v4_lines: Vec<&str> = v4.lines().collect();
    assert_eq!(
        &v4_lines[..3],
        ["-P INPUT DROP", "-P FORWARD DROP", "-P OUTPUT DROP"],
        "{v4}"
    );
    let new = "-m conntrack --ctstate NEW -m tcp";
    for rule in [
        "-A INPUT -i lo -j ACCEPT".to_string(),
        "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
        format!("-A INPUT -p tcp {new} --dport 2222 -j ACCEPT"),
        format!("-A INPUT -p tcp {new} --dport 9999 -j ACCEPT"),
        format!("-A INPUT -p tcp {new} --dport 30000:30010 -j ACCEPT"),
        "-A INPUT -p udp -m udp --dport 53 -j ACCEPT".into(),
        "-A OUTPUT -o lo -j ACCEPT".into(),
        "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
        format!("-A OUTPUT -p tcp {new} --dport 80 -j ACCEPT"),
        format!("-A OUTPUT -p tcp {new} --dport 443 -j ACCEPT"),
        "-A OUTPUT -p udp -m udp --dport 123 -j ACCEPT".into(),
        "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable".into(),
    ] {
        assert!(v4_lines.contains(&rule.as_str()), "missing {rule} in\n{v4}");
    }
    assert!(!v4.contains("--dport 8080 "), "{v4}");
    let v6 = rules(&ns, "ip6tables");
    assert!(
        v6.starts_with("-P INPUT DROP\n-P FORWARD DROP\n-P OUTPUT DROP\n"),
        "{v6}"
    );
    assert!(
        v6.contains(&format!("-A INPUT -p tcp {new} --dport 2222 -j ACCEPT")),
        "{v6}"
    );
    assert!(
        v6.contains(&format!("-A OUTPUT -p tcp {new} --dport 443 -j ACCEPT")),
        "{v6}"
    );
    assert!(v6.contains("-A INPUT -p ipv6-icmp -j ACCEPT"), "{v6}");
    assert!(
        !v6.contains("9999") && !v6.contains("-A INPUT -p udp"),
        "{v6}"
    );

    ok(csf("-f"), "csf -f");
    assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES);
    assert_eq!(rules(&ns, "ip6tables"), DEFAULT_RULES);

    // Disable (csf refuses to start, says so on stdout), enable.
    ok(csf("-r"), "csf -r");
    ok(csf("-x"), "csf -x");
    assert!(root.file("/etc/csf/csf.disable").exists());
    assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES);
    let out = csf("-s");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("use 'csf -e' to enable"),
        "{out:?}"
    );
    ok(csf("-e"), "csf -e");
    assert!(!root.file("/etc/csf/csf.disable").exists());
    assert!(rules(&ns, "iptables").starts_with("-P INPUT DROP\n"));

    // A malformed csf.conf is refused when csf loads it, before anything changes.
    let loaded = rules(&ns, "iptables");
    let good = root.read("/etc/csf/csf.conf");
    let conf = root.file("/etc/csf/csf.conf");
    fs::write(&conf, good.replace("\nUDP_IN = \"53\"", "\nUDP_IN = 53")).unwrap();
    let out = csf("-r");
    assert!(
        !out.status.success() && stderr(&out).contains("malformed"),
        "{out:?}"
    );
    assert_eq!(rules(&ns, "iptables"), loaded);
    assert!(!root.file("/etc/csf/csf.error").exists());
    // A bad port is found only while the rules are built, after the stop every start begins
    // with: all open, csf.error written, and every other command (-f too) refused until a start
    // succeeds.
    fs::write(
        &conf,
        good.replace("\nUDP_IN = \"53\"", "\nUDP_IN = \"53,x\""),
    )
    .unwrap();
    let out = csf("-r");
    assert!(
        !out.status.success() && stderr(&out).contains("Invalid UDP_IN port [x]"),
        "{out:?}"
    );
    assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES);
    assert!(root.file("/etc/csf/csf.error").exists());
    let out = csf("-f");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unresolved error"),
        "{out:?}"
    );
    fs::write(&conf, &good).unwrap();
    ok(csf("-r"), "csf -r after fixing the conf");
    assert!(!root.file("/etc/csf/csf.error").exists());
    assert_eq!(rules(&ns, "iptables"), loaded);

    // A broken release fails every loading command before touching anything.
    fs::write(root.file("/etc/csf/fixture-fail-reload"), "").unwrap();
    for arg in ["--initup", "-r", "-s"] {
        let out = csf(arg);
        assert_eq!(out.status.code(), Some(2), "{arg}");
        assert!(stderr(&out).contains("Compilation failed in require"));
    }
    assert_eq!(rules(&ns, "iptables"), loaded);
    fs::remove_file(root.file("/etc/csf/fixture-fail-reload")).unwrap();

    // The unit's start and stop commands.
    ok(csf("--initdown"), "csf --initdown");
    assert_eq!(
        rules(&ns, "iptables"),
        loaded,
        "--initdown alone changes nothing"
    );
    ok(csf("--stop"), "csf --stop");
    assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES);
    ok(csf("--initup"), "csf --initup");
    assert_eq!(rules(&ns, "iptables"), loaded);

    assert_eq!(
        host_rules(),
        host_before,
        "the host's firewall must not change"
    );
}

#[test]
fn ipv6_off_leaves_ip6tables_alone() {
    let (_tmp, _dir, root) = installed("15.10");
    let ns = Netns::new("6");
    // Someone else's IPv6 rules: csf with IPV6 "0" must neither load nor flush them.
    ns.check(&[
        "ip6tables",
        "-w",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "7",
        "-j",
        "DROP",
    ]);
    ns.check(&["ip6tables", "-w", "-P", "FORWARD", "DROP"]);
    let before = rules(&ns, "ip6tables");
    root.set_conf(&[("TESTING", "0"), ("IPV6", "0"), ("TCP_IN", "2222")]);
    for arg in ["-r", "-f", "-s", "--initup", "--stop", "-x", "-e"] {
        ok(root.sh(Some(&ns), &format!("/usr/sbin/csf {arg}")), arg);
        assert_eq!(rules(&ns, "ip6tables"), before, "after csf {arg}");
    }
    assert!(rules(&ns, "iptables").starts_with("-P INPUT DROP\n"));
}

/// csf's lock: a command that changes the rules while another one holds `/var/lib/csf/csf.lock`
/// (a reload running into the TESTING cron's flush) changes nothing and dies with csf's message.
#[test]
fn rule_commands_refuse_while_another_holds_the_csf_lock() {
    let (_tmp, _dir, root) = installed("15.10");
    let ns = Netns::new("l");
    root.set_conf(&[("TESTING", "0"), ("TCP_IN", "2222")]);
    for arg in ["-r", "-f", "-s", "-sf", "--initup", "-x", "-e"] {
        let out = root.sh(
            Some(&ns),
            &format!("flock /var/lib/csf/csf.lock /usr/sbin/csf {arg}"),
        );
        assert_eq!(out.status.code(), Some(11), "csf {arg}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("csf is being restarted, try again in a moment"),
            "csf {arg}: {}",
            stderr(&out)
        );
        assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES, "after csf {arg}");
        assert!(!root.file("/etc/csf/csf.disable").exists(), "csf {arg}");
    }
    // Not a rule command: no lock. And with the lock free the same reload works.
    ok(
        root.sh(Some(&ns), "flock /var/lib/csf/csf.lock /usr/sbin/csf -v"),
        "csf -v under the lock",
    );
    ok(root.sh(Some(&ns), "/usr/sbin/csf -r"), "csf -r");
    assert!(rules(&ns, "iptables").starts_with("-P INPUT DROP\n"));
}

/// LFDSTART (csf.pl's dispatch): with "1", `-s`/`-r` only leave /var/lib/csf/csf.restart for lfd
/// and exit 0 with the rules untouched; lfd restarts csf when it finds the file; `-sf` loads the
/// rules itself whatever LFDSTART says; `-q` always asks lfd.
#[test]
fn lfdstart_hands_the_restart_to_lfd_except_for_sf() {
    let (_tmp, _dir, root) = installed("15.10");
    let ns = Netns::new("q");
    root.set_conf(&[
        ("TESTING", "0"),
        ("TCP_IN", "2222"),
        ("LFDSTART", "1"),
        ("LF_PARSE", "1"),
    ]);
    let restart = root.file("/var/lib/csf/csf.restart");
    for arg in ["-r", "-s"] {
        let out = ok(root.sh(Some(&ns), &format!("/usr/sbin/csf {arg}")), arg);
        assert!(
            out.contains("lfd will restart csf within the next 1 seconds"),
            "csf {arg}: {out}"
        );
        assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES, "after csf {arg}");
        assert!(restart.exists(), "csf {arg} leaves csf.restart");
    }
    // lfd (in the same network namespace) finds the file and restarts csf.
    ok(root.sh(Some(&ns), "/usr/sbin/lfd"), "lfd");
    let pid: i32 = root.read("/run/lfd.pid").trim().parse().unwrap();
    let loaded = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        rules(&ns, "iptables").starts_with("-P INPUT DROP\n") && !restart.exists()
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    assert!(wait_gone(pid), "lfd stops on SIGTERM");
    assert!(
        loaded,
        "lfd did not restart csf: {}",
        rules(&ns, "iptables")
    );

    ok(root.sh(Some(&ns), "/usr/sbin/csf -f"), "csf -f");
    assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES);
    ok(root.sh(Some(&ns), "/usr/sbin/csf -sf"), "csf -sf");
    assert!(rules(&ns, "iptables").starts_with("-P INPUT DROP\n"));
    assert!(!restart.exists(), "csf -sf asks nothing of lfd");

    root.set_conf(&[("LFDSTART", "0")]);
    ok(root.sh(Some(&ns), "/usr/sbin/csf -f"), "csf -f");
    ok(root.sh(Some(&ns), "/usr/sbin/csf -q"), "csf -q");
    assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES, "after csf -q");
    assert!(restart.exists(), "csf -q leaves csf.restart");
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
    assert!(out.contains("RESTRICT_SYSLOG is disabled"), "{out}");
    assert_eq!(count(&line(5)), 1, "{}", root.read("/etc/crontab"));
    // TESTING loads the same DROP policies: only the cron line differs.
    assert!(rules(&ns, "iptables").starts_with("-P INPUT DROP\n-P FORWARD DROP\n-P OUTPUT DROP\n"));
    root.set_conf(&[("TESTING_INTERVAL", "3")]);
    ok(root.sh(Some(&ns), "/usr/sbin/csf -s"), "csf -s");
    assert_eq!((count(&line(3)), count(&line(5))), (1, 0));
    // What the cron line runs: a flush, which (in TESTING) also takes the line out.
    ok(root.sh(Some(&ns), "/usr/sbin/csf -f"), "csf -f");
    assert_eq!(count(&line(3)), 0);
    assert_eq!(rules(&ns, "iptables"), DEFAULT_RULES);

    root.set_conf(&[
        ("TESTING", "0"),
        ("AUTO_UPDATES", "0"),
        ("RESTRICT_SYSLOG", "3"),
    ]);
    let out = ok(root.sh(Some(&ns), "/usr/sbin/csf -r"), "csf -r");
    assert!(!out.contains("WARNING"), "{out}");
    let crontab = root.read("/etc/crontab");
    assert!(!crontab.contains("/usr/sbin/csf"), "{crontab}");
    assert!(
        crontab.starts_with("SHELL=/bin/sh\n17 * * * * root cd /"),
        "{crontab}"
    );
    assert!(!root.file("/etc/cron.d/csf_update").exists());
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
fn only_allowed_ports_pass_through_a_veth_both_ways() {
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
    let listen = |ns: &Netns, addr: &str, port: &str| {
        let child = ns
            .cmd(&["nc", "-lk", addr, port])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting nc listener");
        Kid(child)
    };
    let (srv_addr, cli_addr) = ("198.18.0.1", "198.18.0.2");
    let _listeners = (
        listen(&srv, srv_addr, "2222"),
        listen(&srv, srv_addr, "8080"),
        listen(&cli, cli_addr, "443"),
        listen(&cli, cli_addr, "4444"),
    );
    assert!(
        wait_connects(&cli, srv_addr, 2222),
        "baseline: 2222 reachable"
    );
    assert!(
        wait_connects(&cli, srv_addr, 8080),
        "baseline: 8080 reachable"
    );
    assert!(wait_connects(&srv, cli_addr, 443), "baseline: out to 443");
    assert!(wait_connects(&srv, cli_addr, 4444), "baseline: out to 4444");

    root.set_conf(&[
        ("TESTING", "0"),
        ("TCP_IN", "2222"),
        ("UDP_IN", ""),
        ("TCP_OUT", "443"),
    ]);
    ok(root.sh(Some(&srv), "/usr/sbin/csf -r"), "csf -r");
    // In: TCP_IN decides; blocked packets are dropped (the client waits for its timeout).
    assert!(connects(&cli, srv_addr, 2222).0, "2222 is in TCP_IN");
    let (open, took) = connects(&cli, srv_addr, 8080);
    assert!(!open, "port 8080 is not in TCP_IN");
    assert!(
        took >= Duration::from_millis(1500),
        "dropped, not refused: {took:?}"
    );
    // Out: TCP_OUT decides; blocked connections are rejected at once.
    assert!(connects(&srv, cli_addr, 443).0, "443 is in TCP_OUT");
    let (open, took) = connects(&srv, cli_addr, 4444);
    assert!(!open, "port 4444 is not in TCP_OUT");
    assert!(
        took < Duration::from_millis(1500),
        "rejected, not dropped: {took:?}"
    );

    ok(root.sh(Some(&srv), "/usr/sbin/csf -f"), "csf -f");
    assert!(connects(&cli, srv_addr, 8080).0, "after csf -f all is open");
    assert!(connects(&srv, cli_addr, 4444).0, "after csf -f all is open");
}
