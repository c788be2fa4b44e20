//! Delivery: user-data that real cloud-init accepts, `firstboot` once per instance with its
//! reports received and verified by a real `brickup receive`, and the static musl binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "s3cret-hmac-key-for-tests-only";

fn base_config(dir: &Path, extra: &str) -> PathBuf {
    let (_, public) = keypair(dir);
    let cfg = dir.join("brickup.yaml");
    std::fs::write(
        &cfg,
        format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\n{extra}"),
    )
    .unwrap();
    cfg
}

fn schema_ok(doc: &str) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), doc).unwrap();
    let o = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(f.path())
        .output()
        .expect("cloud-init must be installed (scripts/install-deps.sh)");
    assert!(
        o.status.success(),
        "cloud-init schema rejected the user-data: {}",
        text(&o)
    );
}

#[test]
fn rendered_user_data_passes_cloud_init_schema() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = base_config(dir.path(), "");
    let c = cfg.to_str().unwrap();
    let sha = "ab".repeat(32);
    let o = brickup(&[
        "render-userdata",
        "--config",
        c,
        "--binary-url",
        "https://example.com/brickup",
        "--binary-sha256",
        &sha,
        "--provider",
        "aws",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    schema_ok(&String::from_utf8(o.stdout).unwrap());

    // Embedding: a small stand-in binary keeps the test fast (the debug build is ~100 MB).
    let o = brickup(&[
        "render-userdata",
        "--config",
        c,
        "--embed-binary",
        "--binary",
        "/usr/bin/true",
        "--provider",
        "nocloud",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    schema_ok(&String::from_utf8(o.stdout).unwrap());

    // A binary does not fit a public cloud's limit: refused with what to do.
    let big = dir.path().join("big");
    let mut rng = fastrand::Rng::with_seed(7);
    std::fs::write(&big, (0..100_000).map(|_| rng.u8(..)).collect::<Vec<u8>>()).unwrap();
    let o = brickup(&[
        "render-userdata",
        "--config",
        c,
        "--embed-binary",
        "--binary",
        big.to_str().unwrap(),
        "--provider",
        "hetzner",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("over hetzner's limit"),
        "{}",
        text(&o)
    );

    // The hand-editable template is valid cloud-config too.
    schema_ok(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("cloud-init/user-data.yaml"),
        )
        .unwrap(),
    );

    // No checksum, no fetch.
    let o = brickup(&[
        "render-userdata",
        "--config",
        c,
        "--binary-url",
        "https://example.com/brickup",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// The once-per-instance setup that render-userdata puts in bootcmd, run as cloud-init-per
/// would run it (`sh -c`) in a chroot of the Debian test rootfs: the
/// config as given, the retry unit written and enabled (a later boot runs it even when this
/// boot's runcmd never ran), and all of it synced before cloud-init-per could record it done.
#[test]
fn bootcmd_setup_writes_config_and_enables_the_retry_unit() {
    let root = copy_rootfs();
    let r = root.path();
    let cfg = base_config(r, "");
    let o = brickup(&[
        "render-userdata",
        "--config",
        cfg.to_str().unwrap(),
        "--binary-url",
        "https://example.com/brickup",
        "--binary-sha256",
        &"ab".repeat(32),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_norway::from_slice(&o.stdout).unwrap();
    assert!(
        doc.get("write_files").is_none(),
        "the unit comes from the setup: {doc}"
    );
    let setup = doc["bootcmd"][0].as_array().unwrap();
    assert_eq!(
        setup[..4],
        ["cloud-init-per", "instance", "brickup-setup", "sh"]
    );
    let script = setup[5].as_str().unwrap();
    let unit = r.join("etc/systemd/system/brickup-firstboot.service");
    let wants = r.join("etc/systemd/system/multi-user.target.wants/brickup-firstboot.service");
    assert!(
        !unit.exists() && !wants.exists(),
        "control: not in the rootfs before"
    );
    let o = Command::new("chroot")
        .arg(r)
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    assert!(o.status.success(), "setup: {}", text(&o));
    assert_eq!(
        std::fs::read(r.join("etc/brickup/brickup.yaml")).unwrap(),
        std::fs::read(&cfg).unwrap()
    );
    let body = std::fs::read_to_string(&unit).unwrap();
    assert!(
        body.contains("ExecStart=/usr/local/bin/brickup firstboot\n")
            && body.contains("\nWantedBy=multi-user.target\n"),
        "the link below is right for this unit's [Install] only: {body}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&unit).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        std::fs::metadata(r.join("etc/brickup/brickup.yaml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/etc/systemd/system/brickup-firstboot.service"),
        "the link systemctl enable makes for WantedBy=multi-user.target"
    );
    assert_eq!(script.lines().last(), Some("sync"), "{script}");
}

/// The hand template (`cloud-init/user-data.yaml`), its three placeholders filled in, hardens
/// like render-userdata's output. Its once-per-instance setup, run as cloud-init-per runs it in
/// a chroot of the Debian rootfs, writes a config brickup accepts (0600), the same retry unit as
/// the image's, enabled by its link, and syncs last. Its fetch script (run on this machine with
/// the binary's path moved into the test's dir: the rootfs has no python3) installs only a
/// binary with the pinned sha256, and the early and full runs start brickup only after it.
#[test]
fn hand_template_hardens_like_rendered_user_data() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (_, public) = keypair(w);
    let ran = w.join("ran.log");
    let good = w.join("good");
    std::fs::write(
        &good,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", ran.display()),
    )
    .unwrap();
    let served = w.join("served");
    std::fs::copy(&good, &served).unwrap();
    let url = serve(served.clone());
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("cloud-init/user-data.yaml"),
    )
    .unwrap();
    let filled = template
        .replace(
            "REPLACE_WITH_YOUR_PUBLIC_KEY (the line from ~/.ssh/id_ed25519.pub)",
            &public,
        )
        .replace("REPLACE_BINARY_URL", &url)
        .replace("REPLACE_BINARY_SHA256", &sha256(&good));
    assert!(
        !filled
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("REPLACE_")),
        "a placeholder left:\n{filled}"
    );
    schema_ok(&filled);
    let doc: serde_json::Value = serde_norway::from_str(&filled).unwrap();
    let setup = doc["bootcmd"][0].as_array().unwrap();
    assert_eq!(
        setup[..4],
        ["cloud-init-per", "instance", "brickup-setup", "sh"]
    );

    // The setup, in the rootfs.
    let root = copy_rootfs();
    let r = root.path();
    let o = Command::new("chroot")
        .arg(r)
        .args(["sh", "-c", setup[5].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "setup: {}", text(&o));
    assert_eq!(setup[5].as_str().unwrap().lines().last(), Some("sync"));
    let config = r.join("etc/brickup/brickup.yaml");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&config), 0o600);
    let o = brickup(&[
        "render-userdata",
        "--config",
        config.to_str().unwrap(),
        "--binary-url",
        "https://example.com/brickup",
        "--binary-sha256",
        &"ab".repeat(32),
    ]);
    assert_eq!(o.status.code(), Some(0), "the config written: {}", text(&o));
    assert!(std::fs::read_to_string(&config).unwrap().contains(&public));
    let unit = r.join("etc/systemd/system/brickup-firstboot.service");
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("image/brickup-firstboot.service")
        )
        .unwrap(),
        "the template's retry unit is the image's"
    );
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(
        std::fs::read_link(
            r.join("etc/systemd/system/multi-user.target.wants/brickup-firstboot.service")
        )
        .unwrap(),
        Path::new("/etc/systemd/system/brickup-firstboot.service")
    );
    let fetch = r.join("usr/local/sbin/brickup-fetch");
    assert_eq!(mode(&fetch), 0o700);

    // The fetch script and the two runs, with /usr/local/... moved into the test's dir.
    let bin = w.join("bin/brickup");
    let local = |t: &str| {
        t.replace("/usr/local/bin/brickup", bin.to_str().unwrap())
            .replace(
                "/usr/local/sbin/brickup-fetch",
                &format!("sh {}", w.join("fetch").display()),
            )
    };
    std::fs::write(
        w.join("fetch"),
        local(&std::fs::read_to_string(&fetch).unwrap()),
    )
    .unwrap();
    let early = doc["bootcmd"][1].as_array().unwrap();
    let full = doc["runcmd"][0].as_array().unwrap();
    assert_eq!(early[..2], ["sh", "-c"]);
    assert_eq!(full[..2], ["sh", "-c"]);
    let run = |cmd: &serde_json::Value| {
        Command::new("sh")
            .args(["-c", &local(cmd.as_str().unwrap())])
            .output()
            .unwrap()
    };
    let ran_lines = || std::fs::read_to_string(&ran).unwrap_or_default();

    let o = run(&early[2]);
    assert!(o.status.success(), "early: {}", text(&o));
    assert_eq!(ran_lines(), "firstboot --early\n");
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&good).unwrap());
    assert_eq!(mode(&bin), 0o755);

    // The installed binary changed and the server now serves another file: neither runs.
    // (It would say so in the same log.)
    let bad = format!("#!/bin/sh\necho \"tampered $*\" >> {}\n", ran.display());
    std::fs::write(&bin, &bad).unwrap();
    std::fs::write(&served, &bad).unwrap();
    let o = run(&full[2]);
    assert!(
        !o.status.success(),
        "full run with a wrong binary: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no binary with sha256"),
        "{}",
        text(&o)
    );
    assert_eq!(ran_lines(), "firstboot --early\n", "nothing unverified ran");
    assert!(!w.join("bin/brickup.partial").exists());

    // Served right again: fetched anew, verified, run.
    std::fs::copy(&good, &served).unwrap();
    let o = run(&full[2]);
    assert!(o.status.success(), "full: {}", text(&o));
    assert_eq!(ran_lines(), "firstboot --early\nfirstboot\n");
}

/// A minimal root: users, a stock-looking sshd_config, cloud-init's instance id.
fn small_root(instance: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/ssh/sshd_config.d")).unwrap();
    std::fs::create_dir_all(r.join("root")).unwrap();
    std::fs::create_dir_all(r.join("run/cloud-init")).unwrap();
    std::fs::create_dir_all(r.join("bin")).unwrap();
    // The preflight refuses a user whose login shell is missing.
    std::fs::write(r.join("bin/bash"), "").unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(r.join("etc/ssh/sshd_config"), "Include /etc/ssh/sshd_config.d/*.conf\n#Port 22\nKbdInteractiveAuthentication no\nUsePAM yes\n").unwrap();
    std::fs::write(r.join("etc/hostname"), "node-1\n").unwrap();
    std::fs::write(r.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    std::fs::write(
        r.join("run/cloud-init/.instance-id"),
        format!("{instance}\n"),
    )
    .unwrap();
    root
}

struct Receiver {
    _child: Killer,
    out: PathBuf,
    port: u16,
}

fn receiver(dir: &Path) -> Receiver {
    let port = free_port();
    let secret = dir.join("hmac.key");
    std::fs::write(&secret, SECRET).unwrap();
    let out = dir.join("reports.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args([
            "receive",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--hmac-secret-file",
        ])
        .arg(&secret)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    Receiver {
        _child: Killer(child),
        out,
        port,
    }
}

fn reports(r: &Receiver) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&r.out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn firstboot_runs_once_per_instance_and_reports_signed() {
    let dir = tempfile::tempdir().unwrap();
    let recv = receiver(dir.path());
    let cfg = base_config(dir.path(), &format!("report:\n  url: http://127.0.0.1:{}/report\n  hmac_secret: {SECRET}\n  total_timeout_secs: 10\n", recv.port));
    let root = small_root("i-0001");
    let (r, c) = (root.path().to_str().unwrap(), cfg.to_str().unwrap());

    let o = brickup(&["firstboot", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !text(&o).contains(SECRET),
        "the secret leaked into the output"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("var/lib/brickup/firstboot-done")).unwrap(),
        "i-0001\n"
    );
    let got = reports(&recv);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["event"], "started");
    assert_eq!(got[1]["event"], "finished");
    assert_eq!(got[1]["instanceId"], "i-0001");
    assert_eq!(got[1]["hostname"], "node-1");
    assert_eq!(got[1]["sshPort"], 2222);
    assert_eq!(
        got[1]["status"], "partial",
        "sshd restart deferred under a root"
    );
    assert!(!std::fs::read_to_string(&recv.out).unwrap().contains(SECRET));

    // Same instance: nothing done, nothing sent.
    let o = brickup(&["firstboot", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already done"),
        "{}",
        text(&o)
    );
    assert_eq!(reports(&recv).len(), 2);

    // A new instance booted from the same image runs again.
    std::fs::write(root.path().join("run/cloud-init/.instance-id"), "i-0002\n").unwrap();
    let o = brickup(&["firstboot", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(reports(&recv).len(), 4);
    assert_eq!(
        std::fs::read_to_string(root.path().join("var/lib/brickup/firstboot-done")).unwrap(),
        "i-0002\n"
    );
    let o = brickup(&["status", "--root", r, "--json"]);
    let last: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(last["instanceId"], "i-0002");
}

#[test]
fn failed_firstboot_is_retried_and_its_report_says_failed() {
    let dir = tempfile::tempdir().unwrap();
    let recv = receiver(dir.path());
    // The csf tarball cannot be had: the run fails after hardening SSH.
    let closed = free_port();
    let cfg = base_config(
        dir.path(),
        &format!("csf:\n  url: http://127.0.0.1:{closed}/csf.tgz\n  sha256: {}\n  allow_http: true\nreport:\n  url: http://127.0.0.1:{}/report\n  hmac_secret: {SECRET}\n", "ab".repeat(32), recv.port),
    );
    let root = small_root("i-0003");
    let (r, c) = (root.path().to_str().unwrap(), cfg.to_str().unwrap());
    let o = brickup(&["firstboot", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        !root.path().join("var/lib/brickup/firstboot-done").exists(),
        "a failed run must be retried"
    );
    let got = reports(&recv);
    assert_eq!(got.last().unwrap()["status"], "failed", "{got:?}");
    assert!(got.last().unwrap()["error"]
        .as_array()
        .is_some_and(|e| !e.is_empty()));
    // The next boot tries again (and fails again here): the work is not skipped.
    let o = brickup(&["firstboot", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("first boot of this instance"),
        "{}",
        text(&o)
    );
}

/// Build the release musl binary (the shipped artifact) if it is not there yet.
pub fn musl_binary() -> PathBuf {
    // Where `cargo build` below puts it: CARGO_TARGET_DIR when set, else ./target.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = target_dir.join("x86_64-unknown-linux-musl/release/brickup");
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "x86_64-unknown-linux-musl",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "building the musl binary (rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools)");
    bin
}

#[test]
fn release_binary_is_fully_static() {
    let bin = musl_binary();
    let headers = Command::new("readelf")
        .args(["-lW"])
        .arg(&bin)
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout);
    assert!(headers.contains("LOAD"), "{headers}");
    assert!(
        !headers.contains("INTERP"),
        "the binary asks for a program interpreter:\n{headers}"
    );
    let dynamic = Command::new("readelf")
        .args(["-dW"])
        .arg(&bin)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        !dynamic.contains("(NEEDED)"),
        "the binary needs shared libraries:\n{dynamic}"
    );
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        size <= 4_000_000,
        "the binary is {size} bytes, over the budget of 4,000,000 bytes"
    );
    // And it runs with no libc of its own: under an empty root via chroot.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(&bin, empty.path().join("brickup")).unwrap();
    let o = Command::new("chroot")
        .arg(empty.path())
        .args(["/brickup", "--version"])
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("brickup"),
        "{}",
        text(&o)
    );
    assert_version_line(
        &String::from_utf8_lossy(&o.stdout),
        "x86_64-unknown-linux-musl",
    );
}

/// `brickup --version`: "brickup VERSION (TARGET, commit HEX)", the commit this checkout's HEAD
/// when git can say.
fn assert_version_line(out: &str, target: &str) {
    let line = out.trim();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let commit = std::env::var("BRICKUP_COMMIT").unwrap_or(head);
    assert_eq!(
        line,
        format!(
            "brickup {} ({target}, commit {commit})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn version_names_the_target_and_the_commit() {
    let o = brickup(&["--version"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let target = if cfg!(target_env = "musl") {
        "x86_64-unknown-linux-musl"
    } else {
        "x86_64-unknown-linux-gnu"
    };
    assert_version_line(&String::from_utf8_lossy(&o.stdout), target);
}

#[test]
fn a_lockout_config_is_refused_changes_nothing_and_the_report_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let recv = receiver(dir.path());
    let cfg = dir.path().join("brickup.yaml");
    std::fs::write(&cfg, format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys: []\nreport:\n  url: http://127.0.0.1:{}/report\n  hmac_secret: {SECRET}\n", recv.port)).unwrap();
    let root = small_root("i-0004");
    let sshd_before = std::fs::read_to_string(root.path().join("etc/ssh/sshd_config")).unwrap();
    let o = brickup(&[
        "firstboot",
        "--root",
        root.path().to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/ssh/sshd_config")).unwrap(),
        sshd_before
    );
    assert!(!root
        .path()
        .join("etc/ssh/sshd_config.d/00-brickup.conf")
        .exists());
    assert!(!root.path().join("root/.ssh").exists());
    let got = reports(&recv);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["status"], "failed");
    assert!(
        got[0]["error"].to_string().contains("locked out"),
        "{}",
        got[0]
    );
    use sha2::Digest;
    assert_eq!(
        got[0]["configSha256"],
        hex::encode(sha2::Sha256::digest(std::fs::read(&cfg).unwrap()))
    );
}

/// A receiver that is down costs the run one attempt's time before the work, not the whole retry
/// budget: `started` is news; `finished` gets the budget and is kept for the next run.
#[test]
fn a_receiver_that_is_down_does_not_hold_the_hardening_up() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let cfg = base_config(
        dir.path(),
        &format!("report:\n  url: http://127.0.0.1:{closed}/report\n  hmac_secret: {SECRET}\n  total_timeout_secs: 6\n  attempt_timeout_secs: 2\n"),
    );
    let root = small_root("i-0009");
    let (r, c) = (root.path().to_str().unwrap(), cfg.to_str().unwrap());
    let o = brickup(&["firstboot", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let log = String::from_utf8_lossy(&o.stderr);
    let work = log.find("applying step=").expect("the steps ran");
    let (before, after) = log.split_at(work);
    assert!(
        before.contains("(report.total_timeout_secs = 2)"),
        "started: one attempt's time: {log}"
    );
    assert!(
        after.contains("(report.total_timeout_secs = 6)"),
        "finished: the whole budget: {log}"
    );
    assert!(root
        .path()
        .join("var/lib/brickup/pending-report.json")
        .exists());
}

/// A report secret the config names by file reaches the node: render-userdata refuses (exit 2,
/// the field and the fix named) when it cannot read it, carries it from `--file` into bootcmd's
/// once-per-instance setup, which writes
/// it root-owned 0600 before the early run, and into write_files (0600) with an embedded binary;
/// `--on-node` leaves it out. Both documents pass cloud-init's schema.
#[test]
fn a_secret_named_by_file_is_carried_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node_path = "/etc/brickup/report.key";
    let cfg = base_config(
        dir.path(),
        &format!("report:\n  url: https://example.com/hook\n  hmac_secret_file: {node_path}\n"),
    );
    let c = cfg.to_str().unwrap();
    let sha = "ab".repeat(32);
    let render = |extra: &[&str]| {
        let mut args = vec![
            "render-userdata",
            "--config",
            c,
            "--binary-url",
            "https://example.com/brickup",
            "--binary-sha256",
            &sha,
        ];
        args.extend_from_slice(extra);
        brickup(&args)
    };
    // This machine has no /etc/brickup/report.key and no --file says where it is.
    assert!(
        !Path::new(node_path).exists(),
        "control: not on this machine"
    );
    let o = render(&[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("report.hmac_secret_file") && out.contains("--file /etc/brickup/report.key="),
        "{out}"
    );
    let o = render(&["--file", "/etc/brickup/other.key=/nowhere"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the config names no such file"),
        "{}",
        text(&o)
    );

    let local = dir.path().join("report.key");
    std::fs::write(&local, format!("{SECRET}\n")).unwrap();
    let spec = format!("{node_path}={}", local.display());
    let o = render(&["--file", &spec]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc = String::from_utf8(o.stdout).unwrap();
    schema_ok(&doc);
    let v: serde_json::Value = serde_norway::from_str(&doc).unwrap();
    let script = v["bootcmd"][0][5].as_str().unwrap();
    // Run the setup as cloud-init-per would, in a root of its own.
    let root = copy_rootfs();
    let r = root.path();
    let o = Command::new("chroot")
        .arg(r)
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    assert!(o.status.success(), "setup: {}", text(&o));
    let on_node = r.join(node_path.trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(&on_node).unwrap(),
        format!("{SECRET}\n")
    );
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let m = std::fs::metadata(&on_node).unwrap();
    assert_eq!((m.permissions().mode() & 0o777, m.uid()), (0o600, 0));
    // Written before the early run's bootcmd entry, which is the setup's successor.
    assert!(v["bootcmd"][2][2]
        .as_str()
        .unwrap()
        .contains("firstboot --early"));

    // Embedded binary: write_files, 0600.
    let stand_in = dir.path().join("brickup-stand-in");
    std::fs::write(&stand_in, b"#!/bin/sh\n").unwrap();
    let o = brickup(&[
        "render-userdata",
        "--config",
        c,
        "--embed-binary",
        "--binary",
        stand_in.to_str().unwrap(),
        "--file",
        &spec,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc = String::from_utf8(o.stdout).unwrap();
    schema_ok(&doc);
    let v: serde_json::Value = serde_norway::from_str(&doc).unwrap();
    let entry = v["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == node_path)
        .expect("the secret in write_files");
    assert_eq!(entry["permissions"], "0600");
    assert_eq!(entry["owner"], "root:root");

    // The node's image has it: not carried at all.
    let o = render(&["--on-node", node_path]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&b64(SECRET)));
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{s}\n"))
}

/// A `--binary-url` with `user:password@` is refused at render time (exit 2) without repeating
/// the password; the rendered fetch names a presigned URL without its query when the download
/// does not match the pin (real python3 against a local server).
#[test]
fn binary_url_credentials_are_refused_and_a_query_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = base_config(dir.path(), "");
    let sha = "ab".repeat(32);
    let render = |url: &str| {
        brickup(&[
            "render-userdata",
            "--config",
            cfg.to_str().unwrap(),
            "--binary-url",
            url,
            "--binary-sha256",
            &sha,
        ])
    };
    let o = render("https://owner:hunter2-SEKRIT@downloads.example/brickup");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("carries credentials"), "{err}");
    assert!(!err.contains("SEKRIT") && !err.contains("hunter2"), "{err}");
    let o = render("ftp://downloads.example/brickup");
    assert_eq!(o.status.code(), Some(2), "ftp: {}", text(&o));

    // Control for the query: the same URL shape without credentials renders, and its fetch,
    // served a file that is not the pinned one, fails naming the path only.
    let served = dir.path().join("served");
    std::fs::write(&served, b"not brickup").unwrap();
    let url = format!("{}?X-Amz-Signature=SEKRIT", serve(served));
    let o = render(&url);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The fetch script as cloud-init writes it (the bootcmd setup's heredoc).
    let v: serde_json::Value = serde_norway::from_slice(&o.stdout).unwrap();
    let setup = v["bootcmd"][0][5].as_str().unwrap();
    let script = setup
        .split("<<'BRICKUP_FETCH_EOF'\n")
        .nth(1)
        .and_then(|rest| rest.split("BRICKUP_FETCH_EOF").next())
        .expect("the fetch script in the bootcmd setup");
    assert!(script.contains("SEKRIT"), "the URL is in the script");
    let dest = dir.path().join("bin/brickup");
    let local = script.replace("/usr/local/bin/brickup", dest.to_str().unwrap());
    let f = dir.path().join("fetch.py");
    std::fs::write(&f, local).unwrap();
    let o = Command::new("python3").arg(&f).output().unwrap();
    assert!(
        !o.status.success(),
        "a wrong binary is refused: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sha256 mismatch for http://127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("SEKRIT"), "the query was printed: {err}");
    assert!(!dest.exists(), "nothing installed");
}
