//! A "live root": the real brickup binary running as if on a booted Debian 12 machine, inside a
//! throwaway copy of the test rootfs. Everything happens in namespaces this harness creates:
//!
//! - an overlay of the cached rootfs (scripts/build-test-rootfs.sh; the cache is only read) whose
//!   writes land in a temp dir, with `/proc`, a minimal `/dev`, `/run` (tmpfs), a read-only
//!   `/sys` and `/proc/sys`, the local apt repository (read-only, a `file:` source) and the
//!   cargo-built brickup binary (read-only, as `/usr/local/bin/brickup`) mounted in;
//! - a private mount, PID, UTS and IPC namespace whose PID 1 runs chrooted in that root and is
//!   called `systemd` (csf's installer picks units or SysV scripts by `/proc/1/comm`); killing it
//!   at the end kills every process the test started (sshd, lfd, rsyslogd, cron, listeners) and
//!   takes the mounts with it;
//! - a network namespace joined to the host by a veth: the host side is 10.199.N.1/30 (and
//!   2001:db8:N::1/64), the root's side 10.199.N.2/30 (2001:db8:N::2/64). Nothing else is routed,
//!   so brickup's real iptables/csf rules and sshd live only there.
//!
//! Commands run in the root with `nsenter` into those namespaces plus PID 1's root directory -
//! the same thing as `ip netns exec NS chroot ROOT CMD`, plus the PID namespace - with a clean
//! environment and without CAP_SYSLOG (so rsyslogd's imklog cannot read the host's kernel log).
//! Only systemd is missing: `tests/fixtures/systemctl-shim` is installed as `/usr/bin/systemctl`
//! (`/bin` is `usr/bin` in the merged-/usr rootfs) and `/run/systemd/system` exists, so Debian's
//! maintainer scripts and csf's installer talk to it as they would to systemd.
//!
//! `LIVE_ROOT_VERBOSE=1` prints every brickup run's output; `LIVE_ROOT_HOLD_SECS=N` keeps each
//! root up for N seconds before cleaning up, printing the nsenter command to look inside;
//! `LIVE_ROOT_BRICKUP=PATH` runs another brickup build instead of cargo's.
//!
//! Needs root, `ip`, `nsenter`/`unshare` (util-linux), `iptables-save`, `ssh`, `sshpass`, `nc`.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};
use std::time::{Duration, Instant};

use super::{apt_repo, keypair, test_rootfs, text};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Where the fixture csf tarball is put inside the root (the config's file:// URL).
pub const TARBALL_IN_ROOT: &str = "/var/lib/brickup-test/csf-firewall-v15.10.tgz";
pub const CONFIG_IN_ROOT: &str = "/etc/brickup/brickup.yaml";
/// The root password set in the root (password logins must be refused after brickup).
pub const ROOT_PASSWORD: &str = "correct-horse-battery-staple";
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Live roots run one at a time, across test threads and test processes (cargo-nextest runs
/// each test in its own): two cores are shared, and brickup's own time limits (sshd must answer
/// within 20 s, a syslog probe within 5 s) should not race other apt-get runs. An flock on a
/// file in cargo's temp dir for integration tests; the kernel drops it if the process dies.
fn one_live_root_at_a_time() -> Flock<fs::File> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-roots.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", path.display()))
}

/// Mounts the overlay and the API filesystems, then becomes PID 1 (`systemd`) in the root.
/// Arguments: lower upper work merged brickup-binary apt-repo.
const SETUP: &str = r#"set -e
r=$4
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$r"
mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
mount --bind "$r/proc/sys" "$r/proc/sys"
mount -o remount,bind,ro "$r/proc/sys"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$r/run"
mkdir -p "$r/run/systemd/system" "$r/run/lock"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
for n in null zero full random urandom tty; do
	touch "$r/dev/$n"
	mount --bind "/dev/$n" "$r/dev/$n"
done
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
ln -s pts/ptmx "$r/dev/ptmx"
ln -s ../proc/self/fd "$r/dev/fd"
ln -s ../proc/self/fd/0 "$r/dev/stdin"
ln -s ../proc/self/fd/1 "$r/dev/stdout"
ln -s ../proc/self/fd/2 "$r/dev/stderr"
mkdir -p "$r/usr/local/bin" "$r/srv/brickup-repo"
touch "$r/usr/local/bin/brickup"
mount --bind "$5" "$r/usr/local/bin/brickup"
mount -o remount,bind,ro "$r/usr/local/bin/brickup"
mount --bind "$6" "$r/srv/brickup-repo"
mount -o remount,bind,ro "$r/srv/brickup-repo"
hostname brickup-live
echo ready
exec chroot "$r" /usr/bin/setpriv --inh-caps=-syslog --bounding-set=-syslog \
	/usr/bin/perl -e '$0 = "systemd"; while (1) { sleep 1 if waitpid(-1, 0) <= 0 }' \
	</dev/null >/dev/null 2>&1
"#;

/// What goes into the root's /etc/brickup/brickup.yaml.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub port: u16,
    pub ipv6: bool,
    /// Overrides the fixture tarball's real sha256 (a wrong pin).
    pub sha256: Option<String>,
    pub extra_packages: Vec<String>,
    pub masternode_ports: Vec<u16>,
    /// `ssh.password_authentication` (written only when true; brickup's default is false).
    pub password_authentication: bool,
    /// `report:` section: URL (http, allowed) and an inline token.
    pub report_url: Option<String>,
    /// `firewall.settings`: further csf.conf keys and values.
    pub firewall_settings: Vec<(&'static str, &'static str)>,
    /// `ssh.settings`: further sshd_config keywords and values.
    pub ssh_settings: Vec<(&'static str, &'static str)>,
    /// Write the `firewall:` and `csf:` sections (false: brickup manages no firewall).
    pub csf: bool,
    /// The owner's key line as configured (default: the test key's public line), written as a
    /// double-quoted YAML string so that any byte of it reaches brickup as it is.
    pub key_line: Option<String>,
    /// `ssh.owner_addresses`.
    pub owner_addresses: Vec<IpAddr>,
    /// `ssh.user`, created by brickup (`ssh.create_user`, sudo nopasswd); None: root.
    pub user: Option<&'static str>,
}

impl LiveConfig {
    pub fn new(port: u16) -> LiveConfig {
        LiveConfig {
            port,
            ipv6: false,
            sha256: None,
            extra_packages: vec![],
            masternode_ports: vec![9999],
            password_authentication: false,
            report_url: None,
            firewall_settings: vec![],
            ssh_settings: vec![],
            csf: true,
            key_line: None,
            owner_addresses: vec![],
            user: None,
        }
    }
}

pub struct LiveRoot {
    /// The test's name, for the wall-time line printed at the end.
    name: &'static str,
    /// When this root got its turn (live roots run one at a time).
    since: Instant,
    /// Host pid of the namespaces' PID 1 (`systemd`).
    pub init: i32,
    holder: Option<Child>,
    pub netns: String,
    host_if: String,
    /// The third octet of 10.199.N.0/30 (and 2001:db8:N::/64).
    pub net: u8,
    pub key: PathBuf,
    pub public_key: String,
    pub tarball_sha256: String,
    tmp: tempfile::TempDir,
    /// Released last, once the root's namespaces are gone.
    _serial: Flock<fs::File>,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn must(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let o = run(cmd);
    assert!(o.status.success(), "{what} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/live_root.rs needs root: network/mount/PID namespaces, overlayfs, iptables in a \
         netns; CI runs it as root"
    );
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
        ("iptables-save", "iptables"),
        ("ssh", "openssh-client"),
        ("sshpass", "sshpass"),
        ("nc", "netcat-openbsd"),
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

/// Network namespaces left by live roots of test processes that died without cleaning up
/// (SIGKILL): `brk-live-PID-N` whose PID is gone. Their veth goes with them.
fn remove_stale_netns() {
    let list = must(Command::new("ip").args(["netns", "list"]));
    for name in list
        .split_whitespace()
        .filter(|n| n.starts_with("brk-live-"))
    {
        let pid = name.split('-').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A 10.199.N.0/30 not in use on this host (other live roots, other test runs).
fn free_net() -> u8 {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let addrs = must(Command::new("ip").args(["-4", "-o", "addr"]));
    let base = (std::process::id() as usize * 7 + SEQ.fetch_add(1, Ordering::SeqCst)) % 200;
    (0..200)
        .map(|i| ((base + i) % 200 + 20) as u8)
        .find(|n| !addrs.contains(&format!("10.199.{n}.")))
        .expect("no free 10.199.N.0/30")
}

/// The brickup binary put into the root: cargo's, or `$LIVE_ROOT_BRICKUP` (another build, e.g.
/// an older commit's, to see a test fail against it).
fn brickup_binary() -> PathBuf {
    std::env::var_os("LIVE_ROOT_BRICKUP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_brickup")))
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(fs::read(p).unwrap()))
}

impl LiveRoot {
    /// A booted root: namespaces up, shim installed, root password set, a VPS-like sshd
    /// config (root password logins allowed, as many provider images have them) and
    /// `ssh.service` started on port 22. brickup has not run yet.
    /// `name` is the test's, for the wall time printed when the root is dropped.
    pub fn new(name: &'static str) -> LiveRoot {
        require_root_and_tools();
        let serial = one_live_root_at_a_time();
        let since = Instant::now();
        let tmp = tempfile::tempdir().unwrap();
        let [upper, work, merged, keys, out] =
            ["upper", "work", "merged", "keys", "out"].map(|d| tmp.path().join(d));
        for d in [&upper, &work, &merged, &keys, &out] {
            fs::create_dir(d).unwrap();
        }
        let tarball = fixture_tarball(&out);
        let (key, public_key) = keypair(&keys);

        remove_stale_netns();
        let net = free_net();
        let netns = format!("brk-live-{}-{net}", std::process::id());
        let host_if = format!("brkl{net}h");
        // The guard exists before anything that needs cleaning up does.
        let mut root = LiveRoot {
            name,
            since,
            init: 0,
            holder: None,
            netns: netns.clone(),
            host_if: host_if.clone(),
            net,
            key,
            public_key,
            tarball_sha256: sha256_file(&tarball),
            tmp,
            _serial: serial,
        };
        root.network();

        let mut holder = Command::new("nsenter");
        holder
            .arg(format!("--net=/run/netns/{netns}"))
            .args([
                "--",
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--uts",
                "--ipc",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                SETUP,
                "sh",
            ])
            .arg(test_rootfs())
            .args([&upper, &work, &merged])
            .arg(brickup_binary())
            .arg(apt_repo())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If the test process dies without unwinding, unshare gets SIGKILL, and with it (by
        // --kill-child) PID 1 and so every process in the root.
        unsafe {
            holder.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut holder = holder.spawn().expect("starting unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let mut err = String::new();
            let _ = holder.stderr.take().unwrap().read_to_string(&mut err);
            let _ = holder.kill();
            let _ = holder.wait();
            panic!("setting up the live root failed:\n{err}");
        }
        let pid = holder.id();
        root.holder = Some(holder);
        let children = (0..50)
            .find_map(|_| {
                let c = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default();
                if c.trim().is_empty() {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                } else {
                    Some(c)
                }
            })
            .expect("unshare's child (PID 1 of the root)");
        root.init = children.split_whitespace().next().unwrap().parse().unwrap();
        // PID 1 execs perl as its last step: wait until it is called systemd.
        let comm = (0..50).find_map(|_| {
            let c = fs::read_to_string(format!("/proc/{}/comm", root.init)).unwrap_or_default();
            if c.trim() == "systemd" {
                Some(c)
            } else {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        });
        assert!(comm.is_some(), "PID 1 of the root never became `systemd`");
        root.provision(&tarball);
        root
    }

    /// Netns, veth, addresses. The host side gets .1, the root's side .2.
    fn network(&self) {
        let ns = &self.netns;
        let n = self.net;
        must(Command::new("ip").args(["netns", "add", ns]));
        let ip = |args: &[&str]| must(Command::new("ip").args(args));
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("10.199.{n}.1/30"),
            "dev",
            &self.host_if,
        ]);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("2001:db8:{n:x}::1/64"),
            "dev",
            &self.host_if,
            "nodad",
        ]);
        ip(&["link", "set", &self.host_if, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.199.{n}.2/30"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            ns,
            "-6",
            "addr",
            "add",
            &format!("2001:db8:{n:x}::2/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    /// Shim, apt source, csf tarball, password, VPS-like sshd, `ssh.service` started.
    fn provision(&self, tarball: &Path) {
        let shim = fs::read(format!("{REPO}/tests/fixtures/systemctl-shim")).unwrap();
        self.write_mode("/usr/bin/systemctl", &shim, 0o755);
        self.write(
            "/etc/apt/sources.list.d/local.list",
            "deb [trusted=yes] file:/srv/brickup-repo ./\n",
        );
        self.write_mode(TARBALL_IN_ROOT, &fs::read(tarball).unwrap(), 0o644);
        let v = self.sh("/usr/local/bin/brickup --version");
        assert!(
            v.status.success() && String::from_utf8_lossy(&v.stdout).contains("brickup"),
            "the cargo-built brickup does not run inside the root: {}",
            text(&v)
        );
        self.must_sh(&format!(
            "echo 'root:{ROOT_PASSWORD}' | chpasswd && ssh-keygen -A"
        ));
        // What many VPS images ship: root may log in with the emailed password.
        self.write(
            "/etc/ssh/sshd_config.d/50-cloud-init.conf",
            "PasswordAuthentication yes\nPermitRootLogin yes\n",
        );
        self.must_sh("systemctl start ssh.service");
    }

    /// The host path of a path inside the root (through PID 1's root directory).
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.init)).join(p.trim_start_matches('/'))
    }

    pub fn write(&self, p: &str, contents: &str) {
        self.write_mode(p, contents.as_bytes(), 0o644);
    }

    pub fn write_mode(&self, p: &str, contents: &[u8], mode: u32) {
        let path = self.path(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {p} in the root: {e}"));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn read(&self, p: &str) -> String {
        fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("reading {p} in the root: {e}"))
    }

    /// nsenter into every namespace and the root directory of PID 1, clean environment.
    fn enter(&self, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.init))
            .args([
                "--pid",
                "--mount",
                "--net",
                "--uts",
                "--ipc",
                "--root",
                "--wd",
                "--",
                "/usr/bin/setpriv",
                "--inh-caps=-syslog",
                "--bounding-set=-syslog",
                "/usr/bin/env",
                "-i",
                PATH,
                "HOME=/root",
                "LANG=C.UTF-8",
                "TERM=dumb",
            ])
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .stdin(Stdio::null());
        c
    }

    /// `sh -c CMD` inside the root (chroot + netns + PID namespace).
    pub fn sh(&self, cmd: &str) -> Output {
        run(self.enter(&[]).args(["/bin/sh", "-c", cmd]))
    }

    /// Like [`LiveRoot::sh`]; panics with both streams unless it exits 0. Returns stdout.
    pub fn must_sh(&self, cmd: &str) -> String {
        let o = self.sh(cmd);
        assert!(
            o.status.success(),
            "`{cmd}` in the root failed:\n{}",
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The real brickup binary inside the root, live (root `/`), RUST_LOG=info.
    pub fn brickup(&self, args: &[&str]) -> Output {
        self.brickup_env(&[], args)
    }

    pub fn brickup_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut e = vec![("RUST_LOG", "info")];
        e.extend_from_slice(env);
        let o = run(self.enter(&e).arg("/usr/local/bin/brickup").args(args));
        if std::env::var_os("LIVE_ROOT_VERBOSE").is_some() {
            eprintln!("--- brickup {}:\n{}", args.join(" "), text(&o));
        }
        o
    }

    /// `brickup apply --config ... --json`: the output and the parsed summary.
    pub fn apply(&self) -> (Output, serde_json::Value) {
        self.apply_env(&[])
    }

    pub fn apply_env(&self, env: &[(&str, &str)]) -> (Output, serde_json::Value) {
        let o = self.brickup_env(env, &["apply", "--config", CONFIG_IN_ROOT, "--json"]);
        let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
        (o, v)
    }

    /// `brickup check --config ...`.
    pub fn check(&self) -> Output {
        self.brickup(&["check", "--config", CONFIG_IN_ROOT])
    }

    /// Writes /etc/brickup/brickup.yaml (mode 0600).
    pub fn configure(&self, c: &LiveConfig) {
        let sha = c.sha256.clone().unwrap_or(self.tarball_sha256.clone());
        let mn: Vec<String> = c.masternode_ports.iter().map(u16::to_string).collect();
        let key = match &c.key_line {
            Some(line) => serde_json::to_string(line).unwrap(),
            None => self.public_key.clone(),
        };
        let mut y = format!(
            "version: 1\nupdates:\n  enabled: false\nssh:\n  port: {}\n  authorized_keys:\n    - {}\nfirewall:\n  masternode_ports: [{}]\n  ipv6: {}\ncsf:\n  url: file://{TARBALL_IN_ROOT}\n  sha256: {sha}\n",
            c.port,
            key,
            mn.join(", "),
            if c.ipv6 { "on" } else { "off" },
        );
        if !c.firewall_settings.is_empty() {
            let settings: String = c
                .firewall_settings
                .iter()
                .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
                .collect();
            y = y.replacen(
                "firewall:\n",
                &format!("firewall:\n  settings:\n{settings}"),
                1,
            );
        }
        if !c.ssh_settings.is_empty() {
            let settings: String = c
                .ssh_settings
                .iter()
                .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
                .collect();
            y = y.replacen("ssh:\n", &format!("ssh:\n  settings:\n{settings}"), 1);
        }
        if !c.csf {
            let at = y.find("firewall:\n").expect("a firewall section");
            y.truncate(at);
        }
        if c.password_authentication {
            y = y.replacen("ssh:\n", "ssh:\n  password_authentication: true\n", 1);
        }
        if !c.owner_addresses.is_empty() {
            let list: Vec<String> = c
                .owner_addresses
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect();
            y = y.replacen(
                "ssh:\n",
                &format!("ssh:\n  owner_addresses: [{}]\n", list.join(", ")),
                1,
            );
        }
        if let Some(user) = c.user {
            y = y.replacen(
                "ssh:\n",
                &format!("ssh:\n  user: {user}\n  create_user: {{}}\n"),
                1,
            );
        }
        if !c.extra_packages.is_empty() {
            y.push_str(&format!(
                "packages:\n  extra: [{}]\n",
                c.extra_packages.join(", ")
            ));
        }
        if let Some(url) = &c.report_url {
            y.push_str(&format!(
                "report:\n  url: {url}\n  allow_http: true\n  token: live-root-test-token\n  total_timeout_secs: 20\n"
            ));
        }
        self.write_mode(CONFIG_IN_ROOT, y.as_bytes(), 0o600);
    }

    /// The root's address on the veth.
    pub fn addr4(&self) -> IpAddr {
        format!("10.199.{}.2", self.net).parse().unwrap()
    }

    pub fn addr6(&self) -> IpAddr {
        format!("2001:db8:{:x}::2", self.net).parse().unwrap()
    }

    /// The host side of the veth (where a test's own servers listen for the root).
    pub fn host_addr4(&self) -> IpAddr {
        format!("10.199.{}.1", self.net).parse().unwrap()
    }

    /// An HTTP receiver for brickup's reports on the host side of the veth (reachable from the
    /// root only through its firewall's TCP_OUT).
    pub fn report_sink(&self) -> ReportSink {
        let server = Arc::new(
            tiny_http::Server::http(SocketAddr::new(self.host_addr4(), 0))
                .expect("report receiver on the veth"),
        );
        let port = server.server_addr().to_ip().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (s, g) = (server.clone(), got.clone());
        std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let doc = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
                g.lock().unwrap().push(doc);
                let _ = req.respond(tiny_http::Response::empty(204));
            }
        });
        ReportSink {
            url: format!("http://{}:{port}/report", self.host_addr4()),
            server,
            got,
        }
    }

    /// A real `ssh` key login from the host side of the veth, running `cmd`.
    pub fn host_ssh(&self, addr: IpAddr, port: u16, cmd: &str) -> Output {
        self.host_ssh_as("root", addr, port, cmd)
    }

    /// [`LiveRoot::host_ssh`] as `user`.
    pub fn host_ssh_as(&self, user: &str, addr: IpAddr, port: u16, cmd: &str) -> Output {
        run(Command::new("ssh")
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
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(&self.key)
            .args(["-p", &port.to_string(), &format!("{user}@{addr}"), cmd])
            .stdin(Stdio::null()))
    }

    /// Whether a key login on `port` runs a command and prints its marker.
    pub fn key_login_works(&self, addr: IpAddr, port: u16) -> bool {
        let o = self.host_ssh(addr, port, "echo key-login-ok");
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("key-login-ok")
    }

    /// A password login attempt from the host side (sshpass, no key offered).
    pub fn host_password_ssh(&self, addr: IpAddr, port: u16) -> Output {
        run(Command::new("sshpass")
            .args([
                "-p",
                ROOT_PASSWORD,
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
                "-o",
                "NumberOfPasswordPrompts=1",
                "-p",
                &port.to_string(),
                &format!("root@{addr}"),
                "echo password-login-ok",
            ])
            .stdin(Stdio::null()))
    }

    /// The first line a TCP server at addr:port sends within `wait` (an SSH banner), from the
    /// host side.
    pub fn banner(&self, addr: IpAddr, port: u16, wait: Duration) -> Option<String> {
        let s = TcpStream::connect_timeout(&SocketAddr::new(addr, port), wait).ok()?;
        s.set_read_timeout(Some(wait)).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim().to_string()).filter(|l| !l.is_empty())
    }

    /// Whether a TCP connect from the host to addr:port succeeds within `wait`.
    pub fn connects(&self, addr: IpAddr, port: u16, wait: Duration) -> bool {
        TcpStream::connect_timeout(&SocketAddr::new(addr, port), wait).is_ok()
    }

    /// Whether a TCP connect from inside the network namespace succeeds (host `nc`).
    pub fn connects_inside(&self, addr: IpAddr, port: u16) -> bool {
        Command::new("nsenter")
            .arg(format!("--target={}", self.init))
            .args(["--net", "--", "nc", "-z", "-w", "3"])
            .arg(addr.to_string())
            .arg(port.to_string())
            .stdin(Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// A TCP listener (host `nc -lk`, IPv4 or IPv6) inside the network and PID namespaces;
    /// killed when dropped (and with PID 1 in any case).
    pub fn listen_inside(&self, port: u16, v6: bool) -> Listener {
        let family = if v6 { "-6" } else { "-4" };
        let c = Command::new("nsenter")
            .arg(format!("--target={}", self.init))
            .args([
                "--net",
                "--pid",
                "--",
                "nc",
                family,
                "-lk",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nc in the namespace");
        let listener = Listener(c);
        let up = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            self.listening_ports().contains(&port)
        });
        assert!(up, "nc did not listen on {port} in the namespace");
        listener
    }

    /// TCP ports in LISTEN state in the network namespace (v4 and v6).
    pub fn listening_ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        for f in ["tcp", "tcp6"] {
            let t = fs::read_to_string(format!("/proc/{}/net/{f}", self.init)).unwrap_or_default();
            ports.extend(brickup::ports::listening_in(&t));
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// `iptables-save -t filter` (or ip6tables-save) in the network namespace.
    pub fn rules(&self, v6: bool) -> String {
        let save = if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        };
        must(
            Command::new("nsenter")
                .arg(format!("--target={}", self.init))
                .args(["--net", "--", save, "-t", "filter"]),
        )
    }

    /// Makes the shim fail the next `times` calls of `systemctl VERB UNIT` (start, restart,
    /// try-restart; a restart still stops the unit first), as a unit whose start fails would.
    pub fn fail_next(&self, verb: &str, unit: &str, times: u32) {
        self.write(
            &format!("/run/shim/fail.{verb}.{unit}"),
            &format!("{times}\n"),
        );
    }

    /// The shim's log of systemctl calls.
    pub fn systemctl_calls(&self) -> String {
        fs::read_to_string(self.path("/run/shim/calls.log")).unwrap_or_default()
    }

    /// Everything that helps explain a failure: the shim's calls and unit logs, listeners,
    /// rules. For assertion messages.
    pub fn diagnostics(&self) -> String {
        let mut d = format!(
            "listening: {:?}\n--- iptables-save:\n{}",
            self.listening_ports(),
            self.rules(false)
        );
        d.push_str(&format!(
            "--- /run/shim:\n{}",
            String::from_utf8_lossy(
                &self
                    .sh("cd /run/shim && for f in *.state *.log; do echo \"== $f\"; tail -n 15 \"$f\"; done; echo '== calls'; tail -n 40 calls.log")
                    .stdout
            )
        ));
        d
    }
}

impl Drop for LiveRoot {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(secs) = std::env::var("LIVE_ROOT_HOLD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            eprintln!(
                "live root held for {secs} s: nsenter -t {} -p -m -n -u -i -r -w sh",
                self.init
            );
            std::thread::sleep(Duration::from_secs(secs));
        }
        // PID 1 of the namespace: the kernel kills every process in it, and with the last one
        // the mount namespace (overlay, /proc, /run, /dev) goes away.
        if self.init > 0 {
            let _ = kill(Pid::from_raw(self.init), Signal::SIGKILL);
        }
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        // Anything that joined only the network namespace.
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let del = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        if !matches!(&del, Ok(o) if o.status.success()) {
            eprintln!("warning: could not delete netns {}: {del:?}", self.netns);
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let how = if std::thread::panicking() {
            "FAILED"
        } else {
            "ok"
        };
        eprintln!(
            "live_root: {} {how} after {:.1} s (setup, test and cleanup)",
            self.name,
            self.since.elapsed().as_secs_f64()
        );
    }
}

/// Reports POSTed by brickup, parsed as JSON.
pub struct ReportSink {
    pub url: String,
    server: Arc<tiny_http::Server>,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl ReportSink {
    /// The reports received so far, once at least `n` arrived (waits up to 10 s).
    pub fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..100 {
            if self.got.lock().unwrap().len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.got.lock().unwrap().clone()
    }
}

impl Drop for ReportSink {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// A process started with `nsenter --pid`: nsenter forks, so the listener is nsenter's child.
pub struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let pid = self.0.id();
        let children =
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the fixture csf tarball into `dir`; the script prints its path.
pub fn fixture_tarball(dir: &Path) -> PathBuf {
    let o = run(Command::new("sh")
        .arg(format!("{REPO}/scripts/make-fixture-csf.sh"))
        .arg(dir));
    assert!(o.status.success(), "make-fixture-csf.sh: {}", text(&o));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}
