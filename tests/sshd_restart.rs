//! Restarting sshd the right way, with a recording runner for systemctl/semanage (they must not
//! run on the test machine). Where brickup must prove sshd answers on the new port, the listener
//! is the test machine's real sshd, started only by brickup's own scripted restart on the ports
//! the root's config names at that moment ([`RealSshd`]): nothing answers there in advance.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use brickup::engine::{self, Context};
use brickup::runner::{Cmd, Output, RecordingRunner, Runner};
use common::*;

const SSHD: &str = "/usr/sbin/sshd";
const SOCKET_OVERRIDE: &str = "etc/systemd/system/ssh.socket.d/00-brickup-port.conf";

/// The root's ssh service played by the test machine's real sshd. Commands go to the recording
/// runner; a `systemctl restart` of ssh, sshd, ssh.service or ssh.socket that it answers with
/// exit 0 (re)starts `/usr/sbin/sshd` on 127.0.0.1 on the ports the root's files name right then:
/// brickup's ssh.socket override's `ListenStream`s when it exists, else the ports sshd itself reads
/// (`sshd -T` on the root's sshd_config, its `Include` pointed into the root). Port 22 is the
/// test machine's own: a restart onto it is recorded, not started.
struct RealSshd {
    runner: RecordingRunner,
    root: PathBuf,
    dir: tempfile::TempDir,
    /// This many restarts first answer exit 0 but start nothing (a unit that dies at once).
    silent: AtomicUsize,
    sshd: Mutex<Option<Child>>,
    /// The ports each successful restart put sshd on (empty for a silent one).
    starts: Mutex<Vec<Vec<u16>>>,
}

impl RealSshd {
    fn new(root: &Path) -> RealSshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} missing: install openssh-server"
        );
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.path().join("host_key"))
            .status()
            .unwrap();
        assert!(st.success());
        // The login proof is scripted: its namespace would reach this machine's own address.
        let runner = RecordingRunner::new().passthrough(&["ssh-keygen"]);
        script_login(&runner, "root");
        RealSshd {
            runner,
            root: root.to_path_buf(),
            dir,
            silent: AtomicUsize::new(0),
            sshd: Mutex::new(None),
            starts: Mutex::new(Vec::new()),
        }
    }

    fn silent_restarts(self, n: usize) -> Self {
        self.silent.store(n, Ordering::SeqCst);
        self
    }

    fn starts(&self) -> Vec<Vec<u16>> {
        self.starts.lock().unwrap().clone()
    }

    /// The root's sshd config as a file the host's sshd reads: its own host key, loopback only,
    /// and the root's sshd_config with `Include /etc/ssh/...` resolved in the root.
    fn config_file(&self) -> PathBuf {
        let text = std::fs::read_to_string(self.root.join("etc/ssh/sshd_config")).unwrap();
        let inside = format!("Include {}/etc/ssh/", self.root.display());
        let conf = format!(
            "HostKey {}\nListenAddress 127.0.0.1\nPidFile none\n{}",
            self.dir.path().join("host_key").display(),
            text.replace("Include /etc/ssh/", &inside)
        );
        let path = self.dir.path().join("sshd_config");
        std::fs::write(&path, conf).unwrap();
        path
    }

    /// The ports sshd listens on: the socket override's, else what `sshd -T` reads. Only the
    /// test's own host key may be served (never this machine's /etc/ssh keys).
    fn ports(&self, config: &Path) -> Vec<u16> {
        let out = Command::new(SSHD)
            .arg("-T")
            .arg("-f")
            .arg(config)
            .output()
            .unwrap();
        let effective = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "sshd -T on the root's config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let own_key = format!("hostkey {}", self.dir.path().join("host_key").display());
        let keys: Vec<&str> = effective
            .lines()
            .filter(|l| l.starts_with("hostkey "))
            .collect();
        assert_eq!(keys, vec![own_key.as_str()], "{effective}");
        let mut ports: Vec<u16> = match std::fs::read_to_string(self.root.join(SOCKET_OVERRIDE)) {
            Ok(o) => o
                .lines()
                .filter_map(|l| l.strip_prefix("ListenStream="))
                .filter(|v| !v.is_empty())
                .map(|v| v.parse().unwrap())
                .collect(),
            Err(_) => effective
                .lines()
                .filter_map(|l| l.strip_prefix("port "))
                .map(|v| v.parse().unwrap())
                .collect(),
        };
        ports.sort();
        ports.dedup();
        ports
    }

    fn restart(&self) {
        let mut sshd = self.sshd.lock().unwrap();
        if let Some(mut old) = sshd.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let quiet = self
            .silent
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if quiet {
            self.starts.lock().unwrap().push(Vec::new());
            return;
        }
        let config = self.config_file();
        let ports = self.ports(&config);
        self.starts.lock().unwrap().push(ports.clone());
        if ports.is_empty() || ports.contains(&22) {
            return;
        }
        let log = std::fs::File::create(self.dir.path().join("sshd.log")).unwrap();
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"]).arg(&config);
        for p in &ports {
            cmd.arg("-p").arg(p.to_string());
        }
        *sshd = Some(cmd.stdin(Stdio::null()).stderr(log).spawn().unwrap());
    }
}

impl Runner for RealSshd {
    fn run(&self, cmd: &Cmd) -> anyhow::Result<Output> {
        let out = self.runner.run(cmd)?;
        let restart = cmd.program == "systemctl"
            && cmd.args.len() == 2
            && cmd.args[0] == "restart"
            && ["ssh", "sshd", "ssh.service", "ssh.socket"].contains(&cmd.args[1].as_str());
        if restart && out.success() {
            self.restart();
        }
        Ok(out)
    }
}

impl Drop for RealSshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.sshd.get_mut().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An SSH banner on 127.0.0.1:port within `wait` (a just-started sshd needs a moment to bind).
fn ssh_banner(port: u16, wait: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                return true;
            }
        }
        if start.elapsed() >= wait {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// sshd answers on the port (waiting for a fresh start to bind).
fn answers(port: u16) -> bool {
    ssh_banner(port, Duration::from_secs(10))
}

/// Nothing answers on the port right now.
fn silent(port: u16) -> bool {
    !ssh_banner(port, Duration::ZERO)
}

fn root_with(units: &[&str], extra: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in [
        "etc/ssh/sshd_config.d",
        "root",
        "usr/lib/systemd/system",
        "bin",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    // The login shell must exist for brickup's preflight.
    std::fs::write(r.join("bin/bash"), "").unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(
        r.join("etc/ssh/sshd_config"),
        "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n",
    )
    .unwrap();
    for u in units {
        std::fs::write(r.join("usr/lib/systemd/system").join(u), "[Unit]\n").unwrap();
    }
    for f in extra {
        let p = r.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "1\n").unwrap();
    }
    root
}

fn config(dir: &Path, port: u16) -> brickup::config::Config {
    let (_, public) = keypair(dir);
    brickup::config::parse(
        &format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: {port}\n  authorized_keys:\n    - {public}\n"),
        Path::new("t.yaml"),
    )
    .unwrap()
}

fn run(root: &Path, config: &brickup::config::Config, runner: &dyn Runner) -> engine::RunResult {
    run_with(root, config, runner, false)
}

/// `run` on a host where sshd is socket-activated (ssh.socket active when the run's facts were
/// gathered).
fn run_socket(
    root: &Path,
    config: &brickup::config::Config,
    runner: &dyn Runner,
) -> engine::RunResult {
    run_with(root, config, runner, true)
}

fn run_with(
    root: &Path,
    config: &brickup::config::Config,
    runner: &dyn Runner,
    socket: bool,
) -> engine::RunResult {
    let mut cx = Context::new(brickup::root::Root::new(root), config, runner);
    cx.set_live(true);
    cx.facts.sshd_socket = Ok(socket);
    engine::apply(
        &cx,
        &[
            Box::new(brickup::keys::KeysStep),
            Box::new(brickup::sshd::SshdStep),
        ],
    )
}

#[test]
fn ssh_service_is_restarted_and_the_new_port_proven() {
    let port = free_port();
    let root = root_with(&["ssh.service"], &[]);
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path());
    sshd.runner.allow("systemctl restart ssh");
    assert!(silent(port), "nothing may answer on {port} before brickup");
    let r = run(root.path(), &config, &sshd);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(service_calls(&sshd.runner), vec!["systemctl restart ssh"]);
    // The login proof ran after the restart.
    let calls = sshd.runner.calls();
    let login = calls.iter().position(|c| c.starts_with("nsenter --net="));
    assert!(login.is_some_and(|i| i > 0), "{calls:?}");
    // brickup's restart put the real sshd there, reading brickup's drop-in.
    assert_eq!(sshd.starts(), vec![vec![port]]);
    assert!(answers(port));
}

/// The control: the restart exits 0 but sshd never comes up on the new port (a unit that dies at
/// once). brickup must see the silence, restore the old config and restart sshd on it.
#[test]
fn a_restart_that_starts_nothing_is_rolled_back() {
    let port = free_port();
    let root = root_with(&["ssh.service"], &[]);
    let before = std::fs::read_to_string(root.path().join("etc/ssh/sshd_config")).unwrap();
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path()).silent_restarts(1);
    sshd.runner.allow("systemctl restart ssh");
    let r = run(root.path(), &config, &sshd);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(
        err.contains(&format!("not listening on port {port}")) && err.contains("restored"),
        "{err}"
    );
    assert_eq!(
        sshd.runner.calls(),
        vec!["systemctl restart ssh", "systemctl restart ssh"]
    );
    // The second restart ran on the restored config: sshd's default port, 22.
    assert_eq!(sshd.starts(), vec![vec![], vec![22]]);
    assert!(silent(port));
    assert!(!root
        .path()
        .join("etc/ssh/sshd_config.d/00-brickup.conf")
        .exists());
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/ssh/sshd_config")).unwrap(),
        before
    );
    // The key step before it succeeded and stays: the owner's key is in.
    assert!(root.path().join("root/.ssh/authorized_keys").exists());
}

#[test]
fn rhel_service_name_and_selinux_label() {
    let port = free_port();
    let root = root_with(&["sshd.service"], &["/sys/fs/selinux/enforce"]);
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path());
    let runner = &sshd.runner;
    runner.answer(
        "semanage port -a",
        1,
        "",
        "ValueError: Port tcp/2222 already defined",
    );
    runner.allow("semanage port -m");
    runner.allow("systemctl restart sshd");
    let r = run(root.path(), &config, &sshd);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(sshd.starts(), vec![vec![port]]);
    let p = port.to_string();
    assert_eq!(
        service_calls(runner),
        vec![
            format!("semanage port -a -t ssh_port_t -p tcp {p}"),
            format!("semanage port -m -t ssh_port_t -p tcp {p}"),
            "systemctl restart sshd".to_string()
        ]
    );
}

/// Reloading systemd and restarting the socket succeed (that ssh.socket is active is a fact of
/// the run: [`run_socket`]).
fn socket_up(runner: &RecordingRunner) {
    // Accept=no: ssh.service would hold the listeners once a connection started it; not here.
    runner.answer("systemctl is-active ssh.service", 3, "inactive\n", "");
    runner.allow("systemctl daemon-reload");
    runner.allow("systemctl restart ssh.socket");
}

/// The calls a socket-activated restart makes when sshd is not on the port yet: the socket moves.
fn socket_move_calls() -> Vec<String> {
    vec![
        "systemctl daemon-reload".to_string(),
        // Accept=no: a running ssh.service holds the listeners (here: not running).
        "systemctl is-active ssh.service".to_string(),
        "systemctl restart ssh.socket".to_string(),
    ]
}

/// Drift in brickup's sshd drop-in: the next apply rewrites it while sshd is on the port already.
fn drift_dropin(root: &Path) {
    std::fs::remove_file(root.join("etc/ssh/sshd_config.d/00-brickup.conf")).unwrap();
}

#[test]
fn socket_activation_without_generator_overrides_the_socket() {
    let port = free_port();
    let root = root_with(&["ssh.service", "ssh.socket"], &[]);
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path());
    socket_up(&sshd.runner);
    let r = run_socket(root.path(), &config, &sshd);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(service_calls(&sshd.runner), socket_move_calls());
    // The socket's restart listened where brickup's override says.
    assert_eq!(sshd.starts(), vec![vec![port]]);
    let o = std::fs::read_to_string(root.path().join(SOCKET_OVERRIDE)).unwrap();
    assert!(
        o.contains("ListenStream=\n") && o.contains(&format!("ListenStream={port}\n")),
        "{o}"
    );

    // Already listening on the port: new connections read the new config, no socket restart
    // (which fails while SSH sessions are open).
    drift_dropin(root.path());
    let r = run_socket(root.path(), &config, &sshd);
    assert!(r.error.is_none(), "{:?}", r.error);
    let calls = service_calls(&sshd.runner);
    assert_eq!(calls[3..], socket_move_calls()[..2], "{calls:#?}");
    assert_eq!(sshd.starts(), vec![vec![port]]);
    assert!(answers(port));
}

#[test]
fn socket_activation_with_generator_only_reloads() {
    let port = free_port();
    let root = root_with(
        &["ssh.service", "ssh.socket"],
        &["/usr/lib/systemd/system-generators/sshd-socket-generator"],
    );
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path());
    socket_up(&sshd.runner);
    let r = run_socket(root.path(), &config, &sshd);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(service_calls(&sshd.runner), socket_move_calls());
    // The generator turned sshd_config's Port (brickup's drop-in) into the socket's.
    assert_eq!(sshd.starts(), vec![vec![port]]);
    // A manual override would conflict with the generator's ("Address already in use").
    assert!(!root.path().join("etc/systemd/system/ssh.socket.d").exists());
}

#[test]
fn socket_activation_moving_the_port_restarts_the_socket_and_rolls_back_when_silent() {
    let port = free_port(); // the socket must move, and then nothing answers there
    let root = root_with(&["ssh.service", "ssh.socket"], &[]);
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path()).silent_restarts(1);
    socket_up(&sshd.runner);
    let r = run_socket(root.path(), &config, &sshd);
    assert!(r.error.is_some());
    // Back on the restored config: no override, sshd_config's default port.
    assert_eq!(sshd.starts(), vec![vec![], vec![22]]);
    let calls = sshd.runner.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "systemctl restart ssh.socket")
            .count(),
        2,
        "{calls:?}"
    );
    assert!(!root
        .path()
        .join("etc/systemd/system/ssh.socket.d/00-brickup-port.conf")
        .exists());
}

/// A restart that fails (e.g. the new port is taken; Debian's unit does not retry on exit 255)
/// must not leave sshd stopped: the previous config comes back and sshd is started again.
#[test]
fn failed_restart_restores_the_config_and_starts_sshd_again() {
    let port = free_port();
    let root = root_with(&["ssh.service"], &[]);
    let config = config(root.path(), port);
    let runner = RecordingRunner::new();
    runner.answer_once(
        "systemctl restart ssh",
        1,
        "",
        "Job for ssh.service failed because the control process exited with error code.",
    );
    runner.allow("systemctl restart ssh");
    let r = run(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(err.contains("restarting sshd"), "{err}");
    assert!(err.contains("Job for ssh.service failed"), "{err}");
    assert!(
        err.contains("the previous sshd config was restored and sshd restarted"),
        "{err}"
    );
    assert_eq!(
        runner.calls(),
        vec!["systemctl restart ssh", "systemctl restart ssh"]
    );
    assert!(
        !root
            .path()
            .join("etc/ssh/sshd_config.d/00-brickup.conf")
            .exists(),
        "brickup's drop-in must be rolled back"
    );
}

#[test]
fn a_failed_restore_is_named_too() {
    let port = free_port();
    let root = root_with(&["ssh.service"], &[]);
    let config = config(root.path(), port);
    let runner = RecordingRunner::new();
    runner.answer("systemctl restart ssh", 1, "", "unit ssh.service is masked");
    let r = run(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(
        err.contains("restoring the previous sshd config and restarting sshd also failed"),
        "{err}"
    );
}

fn ufw_active(root: &Path, runner: &RecordingRunner) {
    std::fs::write(root.join("usr/lib/systemd/system/ufw.service"), "[Unit]\n").unwrap();
    runner.answer("systemctl is-active ufw.service", 0, "active\n", "");
    runner.answer("ufw status", 0, "Status: active\n", "");
    runner.allow("ufw allow");
    runner.allow("ufw delete allow");
}

fn dropin_ports(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("etc/ssh/sshd_config.d/00-brickup.conf"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("Port "))
        .map(str::to_string)
        .collect()
}

fn run_moving(
    root: &Path,
    config: &brickup::config::Config,
    runner: &dyn Runner,
    old: u16,
) -> engine::RunResult {
    let mut cx = Context::new(brickup::root::Root::new(root), config, runner);
    cx.set_live(true);
    cx.facts.old_ssh_ports = vec![old];
    engine::apply(
        &cx,
        &[
            Box::new(brickup::keys::KeysStep),
            Box::new(brickup::sshd::SshdStep),
        ],
    )
}

/// A port move: the active firewall (ufw) accepts the new port before sshd moves; sshd keeps the
/// old port through the run; only the last pass drops it from sshd and from ufw.
#[test]
fn port_move_opens_first_keeps_the_old_port_and_closes_it_last() {
    let port = free_port();
    let old = free_port();
    let root = root_with(&["ssh.service"], &[]);
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path());
    let runner = &sshd.runner;
    ufw_active(root.path(), runner);
    runner.allow("systemctl restart ssh");
    let r = run_moving(root.path(), &config, &sshd, old);
    assert!(r.error.is_none(), "{:?}", r.error);
    // Through the run sshd listens on both ports; the last pass leaves only the new one.
    let mut both = vec![port, old];
    both.sort();
    assert_eq!(sshd.starts(), vec![both, vec![port]]);
    assert!(answers(port) && silent(old));
    let calls = runner.calls();
    let at = |c: &str| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("{c} not called: {calls:#?}"))
    };
    assert!(at(&format!("ufw allow {port}/tcp")) < at("systemctl restart ssh"));
    let delete = at(&format!("ufw delete allow {old}/tcp"));
    let restarts: Vec<usize> = (0..calls.len())
        .filter(|i| calls[*i] == "systemctl restart ssh")
        .collect();
    assert_eq!(restarts.len(), 2, "{calls:#?}");
    assert!(restarts[1] < delete, "{calls:#?}");
    assert_eq!(dropin_ports(root.path()), vec![port.to_string()]);
    let last = r.steps.last().unwrap();
    assert_eq!(last.name, "port-move");
    // No sshd binary in this root: the -t/-T proof is deferred, so the pass is too.
    assert_eq!(last.outcome, engine::Outcome::Deferred, "{}", last.message);
}

/// When the last pass fails, the old port stays: sshd's config keeps both ports.
#[test]
fn a_failed_last_pass_leaves_the_old_port_open() {
    let port = free_port();
    let old = free_port();
    let root = root_with(&["ssh.service"], &[]);
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path());
    let runner = &sshd.runner;
    runner.answer_once("systemctl restart ssh", 0, "", "");
    runner.answer_once(
        "systemctl restart ssh",
        1,
        "",
        "Job for ssh.service failed.",
    );
    runner.allow("systemctl restart ssh");
    let r = run_moving(root.path(), &config, &sshd, old);
    let err = format!("{:#}", r.error.expect("the last pass must fail"));
    assert!(
        err.contains(&format!("closing the old SSH port(s) [{old}]")),
        "{err}"
    );
    assert!(err.contains("they stay open with key logins"), "{err}");
    let mut ports = dropin_ports(root.path());
    ports.sort();
    let mut want = vec![port.to_string(), old.to_string()];
    want.sort();
    assert_eq!(ports, want, "both ports stay in sshd's config");
    // The failed restart changed nothing; the recovery restarted sshd on both ports.
    let mut both = vec![port, old];
    both.sort();
    assert_eq!(sshd.starts(), vec![both.clone(), both]);
    assert!(answers(port) && answers(old));
    let text =
        std::fs::read_to_string(root.path().join("etc/ssh/sshd_config.d/00-brickup.conf")).unwrap();
    assert!(text.contains("PasswordAuthentication no"), "{text}");
}

/// Preflight refusals change nothing: a user whose shell refuses logins, a port taken by a
/// program that is not sshd.
#[test]
fn preflight_refuses_a_nologin_user_and_a_taken_port() {
    let root = root_with(&["ssh.service"], &[]);
    let config = config(root.path(), free_port());
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/usr/sbin/nologin\n",
    )
    .unwrap();
    let runner = RecordingRunner::new();
    let r = run(root.path(), &config, &runner);
    let err = r.error.expect("must refuse");
    let refused = err
        .downcast_ref::<engine::Refused>()
        .expect("a Refused error");
    assert_eq!(refused.field, "ssh.user");
    assert!(refused.message.contains("refuses logins"), "{err:#}");
    assert!(runner.calls().is_empty(), "{:?}", runner.calls());
    assert!(!root
        .path()
        .join("etc/ssh/sshd_config.d/00-brickup.conf")
        .exists());

    // A web server (no SSH banner) on the wanted port.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let root = root_with(&["ssh.service"], &[]);
    let taken_config = self::config(root.path(), port);
    let runner = RecordingRunner::new();
    let r = run(root.path(), &taken_config, &runner);
    let err = r.error.expect("must refuse");
    let refused = err
        .downcast_ref::<engine::Refused>()
        .expect("a Refused error");
    assert_eq!(refused.field, "ssh.port");
    assert!(
        refused.message.contains("in use by another program"),
        "{err:#}"
    );
    assert!(runner.calls().is_empty(), "{:?}", runner.calls());
}

/// Debian's ssh.socket is Accept=no: once a connection started ssh.service, that service holds the
/// listening sockets and the config it read. A port move stops it first (else the socket cannot
/// bind again: "Failed to listen", seen in the VM); a config change alone restarts it.
#[test]
fn accept_no_socket_stops_the_listening_service_to_move_and_restarts_it_for_config() {
    let port = free_port();
    let root = root_with(&["ssh.service", "ssh.socket"], &[]);
    let config = config(root.path(), port);
    let sshd = RealSshd::new(root.path());
    let runner = &sshd.runner;
    runner.answer("systemctl is-active ssh.service", 0, "active\n", "");
    runner.allow("systemctl daemon-reload");
    runner.allow("systemctl stop ssh.service");
    runner.allow("systemctl restart ssh.socket");
    runner.allow("systemctl restart ssh.service");
    // A move: nothing listens on the port until the socket's restart.
    let r = run_socket(root.path(), &config, &sshd);
    assert!(r.error.is_none(), "{:?}", r.error);
    let calls = runner.calls();
    let stop = calls.iter().position(|c| c == "systemctl stop ssh.service");
    let restart = calls
        .iter()
        .position(|c| c == "systemctl restart ssh.socket");
    assert!(stop.is_some() && stop < restart, "{calls:#?}");
    assert!(
        !calls.contains(&"systemctl restart ssh.service".to_string()),
        "{calls:#?}"
    );
    assert_eq!(sshd.starts(), vec![vec![port]]);

    // A config change alone, sshd on the port already: the service restarts, the socket stays.
    drift_dropin(root.path());
    let r = run_socket(root.path(), &config, &sshd);
    assert!(r.error.is_none(), "{:?}", r.error);
    let calls = runner.calls()[calls.len()..].to_vec();
    assert!(
        calls.contains(&"systemctl restart ssh.service".to_string()),
        "{calls:#?}"
    );
    assert!(
        !calls.contains(&"systemctl restart ssh.socket".to_string())
            && !calls.contains(&"systemctl stop ssh.service".to_string()),
        "{calls:#?}"
    );
    assert_eq!(sshd.starts(), vec![vec![port], vec![port]]);
    assert!(answers(port));
}

/// Every file under the root's sshd and systemd config, for "what the owner keeps" assertions.
fn ssh_state(root: &Path) -> std::collections::BTreeMap<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for d in ["etc/ssh", "etc/systemd"] {
        walk(&root.join(d), root, &mut out);
    }
    out
}

/// The failure, the restore and the restart that followed it are all named.
fn assert_restored(err: &str, cause: &str) {
    assert!(err.contains("restarting sshd"), "{err}");
    assert!(err.contains(cause), "{err}");
    assert!(
        err.contains("the previous sshd config was restored and sshd restarted"),
        "{err}"
    );
}

/// `systemctl restart ssh.socket` fails while moving the port: the socket override and the
/// sshd drop-in are removed, and the socket is restarted on the old config.
#[test]
fn failed_socket_restart_restores_the_config_and_restarts_the_socket() {
    let port = free_port(); // not listening: the socket must move
    let root = root_with(&["ssh.service", "ssh.socket"], &[]);
    let before = ssh_state(root.path());
    let config = config(root.path(), port);
    let runner = RecordingRunner::new();
    socket_up(&runner);
    runner.answer_once(
        "systemctl restart ssh.socket",
        1,
        "",
        "Job for ssh.socket failed: Address already in use",
    );
    let r = run_socket(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert_restored(&err, "Address already in use");
    assert_eq!(
        runner.calls(),
        vec![
            "systemctl daemon-reload",
            "systemctl is-active ssh.service",
            "systemctl restart ssh.socket",
            // The engine restored the files; sshd comes back on them.
            "systemctl daemon-reload",
            "systemctl is-active ssh.service",
            "systemctl restart ssh.socket",
        ]
    );
    assert_eq!(ssh_state(root.path()), before);
}

/// `systemctl daemon-reload` fails after the socket override is written: nothing is restarted
/// on the new config; the override goes, systemd is reloaded and the socket restarted on the old.
#[test]
fn failed_daemon_reload_restores_the_config_and_restarts_the_socket() {
    let port = free_port();
    let root = root_with(&["ssh.service", "ssh.socket"], &[]);
    let before = ssh_state(root.path());
    let config = config(root.path(), port);
    let runner = RecordingRunner::new();
    socket_up(&runner);
    runner.answer_once(
        "systemctl daemon-reload",
        1,
        "",
        "Failed to reload daemon: Access denied",
    );
    let r = run_socket(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert_restored(&err, "Failed to reload daemon: Access denied");
    assert_eq!(
        runner.calls(),
        vec![
            "systemctl daemon-reload",
            // The engine restored the files; sshd comes back on them.
            "systemctl daemon-reload",
            "systemctl is-active ssh.service",
            "systemctl restart ssh.socket",
        ]
    );
    assert_eq!(ssh_state(root.path()), before);
}

/// `semanage port -a` fails for another reason than "already defined": sshd is not restarted
/// onto a port SELinux would refuse, and the config is rolled back.
#[test]
fn failed_selinux_label_stops_before_any_restart() {
    let port = free_port();
    let root = root_with(&["sshd.service"], &["/sys/fs/selinux/enforce"]);
    let before = ssh_state(root.path());
    let config = config(root.path(), port);
    let runner = RecordingRunner::new();
    runner.answer(
        "semanage port -a",
        1,
        "",
        "ValueError: SELinux policy is not managed or store cannot be accessed.",
    );
    let r = run(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(
        err.contains(&format!("SELinux: labelling port {port} ssh_port_t failed"))
            && err.contains("store cannot be accessed"),
        "{err}"
    );
    assert_eq!(
        runner.calls(),
        vec![format!("semanage port -a -t ssh_port_t -p tcp {port}")]
    );
    assert_eq!(ssh_state(root.path()), before);
    assert!(root.path().join("root/.ssh/authorized_keys").exists());
}

/// The port is labelled already (`-a` says "already defined") and `semanage port -m` fails:
/// same outcome, no restart and the config rolled back.
#[test]
fn failed_selinux_relabel_stops_before_any_restart() {
    let port = free_port();
    let root = root_with(&["sshd.service"], &["/sys/fs/selinux/enforce"]);
    let before = ssh_state(root.path());
    let config = config(root.path(), port);
    let runner = RecordingRunner::new();
    runner.answer(
        "semanage port -a",
        1,
        "",
        &format!("ValueError: Port tcp/{port} already defined"),
    );
    runner.answer(
        "semanage port -m",
        1,
        "",
        "ValueError: Could not modify port",
    );
    let r = run(root.path(), &config, &runner);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(
        err.contains(&format!(
            "`semanage port -m -t ssh_port_t -p tcp {port}` exited"
        )) && err.contains("Could not modify port"),
        "{err}"
    );
    assert_eq!(
        runner.calls(),
        vec![
            format!("semanage port -a -t ssh_port_t -p tcp {port}"),
            format!("semanage port -m -t ssh_port_t -p tcp {port}"),
        ]
    );
    assert_eq!(ssh_state(root.path()), before);
}

/// ufw refuses the new port before a port move: sshd is not restarted (it would listen where the
/// firewall drops), its config is rolled back, and ufw's old rule is not touched.
#[test]
fn failed_ufw_allow_keeps_sshd_where_it_was() {
    let port = free_port();
    let old = free_port();
    let root = root_with(&["ssh.service"], &[]);
    let before = ssh_state(root.path());
    let config = config(root.path(), port);
    let runner = RecordingRunner::new();
    ufw_active(root.path(), &runner);
    runner.answer(
        "ufw allow",
        1,
        "",
        "ERROR: Could not update running firewall",
    );
    let r = run_moving(root.path(), &config, &runner, old);
    let err = format!("{:#}", r.error.expect("must fail"));
    assert!(
        err.contains(&format!("`ufw allow {port}/tcp` exited with status 1"))
            && err.contains("Could not update running firewall"),
        "{err}"
    );
    assert_eq!(
        runner.calls(),
        vec![
            "systemctl is-active ufw.service".to_string(),
            "ufw status".to_string(),
            format!("ufw allow {port}/tcp"),
        ]
    );
    assert_eq!(ssh_state(root.path()), before);
    let sshd = r.steps.iter().find(|s| s.name == "sshd").unwrap();
    assert_eq!(sshd.outcome, engine::Outcome::Failed);
    assert!(!r.steps.iter().any(|s| s.name == "port-move"));
}
