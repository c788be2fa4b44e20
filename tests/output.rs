//! Output for people: escape codes only on a terminal and never with NO_COLOR set; the commands
//! brickup runs are debug lines (info says in words what is done), except in `firstboot`, whose
//! journal is the only account of an unattended boot. A progress line for long commands and
//! downloads, on a terminal only. A pty comes from util-linux `script`.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

/// `brickup ARGS` with stderr on a pty (util-linux `script`), env applied; what the pty showed.
fn on_a_terminal(args: &str, env: &[(&str, &str)]) -> String {
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_brickup"));
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("util-linux script runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plan that runs commands: sshd's own check of an ssh.settings value, in the test rootfs
/// (read only: plan changes nothing).
fn plan_args(dir: &Path) -> String {
    let cfg = dir.join("brickup.yaml");
    std::fs::write(
        &cfg,
        "version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  password_authentication: true\n  settings:\n    MaxSessions: \"2\"\n",
    )
    .unwrap();
    format!(
        "plan --root {} --config {}",
        common::test_rootfs().display(),
        cfg.display()
    )
}

#[test]
fn no_colour_with_no_color_or_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let args = plan_args(dir.path());
    // The control: on a terminal, with a level that logs, the lines are coloured.
    let coloured = on_a_terminal(&args, &[("RUST_LOG", "debug")]);
    assert!(coloured.contains("DEBUG"), "{coloured}");
    assert!(
        coloured.contains('\x1b'),
        "no colour on a terminal: {coloured}"
    );
    for no_color in ["1", "yes", "0"] {
        let plain = on_a_terminal(&args, &[("RUST_LOG", "debug"), ("NO_COLOR", no_color)]);
        assert!(plain.contains("DEBUG"), "{plain}");
        assert!(
            !plain.contains('\x1b'),
            "NO_COLOR={no_color} on a terminal still coloured: {plain:?}"
        );
    }
    // Not a terminal: plain, NO_COLOR or not.
    let piped = Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args(args.split(' '))
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

/// plan runs sshd's own check of the settings (a chroot under --root): said at debug only. The
/// plan itself says in words what apply would do.
#[test]
fn commands_run_are_debug_lines() {
    let dir = tempfile::tempdir().unwrap();
    let args = plan_args(dir.path());
    let run = |level: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_brickup"));
        c.args(args.split(' ')).env_remove("RUST_LOG");
        if let Some(l) = level {
            c.env("RUST_LOG", l);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (plan, quiet) = run(None);
    assert!(
        !quiet.contains("running"),
        "commands at the default level: {quiet}"
    );
    assert!(plan.contains("+MaxSessions 2"), "{plan}");
    let (_, debug) = run(Some("debug"));
    assert!(
        debug.contains("running command=") && debug.contains("sshd -t"),
        "{debug}"
    );
}

/// `apply --root` that wrote sshd's config and left the restart to first boot changed the
/// system: its verdict and `--json` say so and name what is left; a second apply changes
/// nothing and says that.
#[test]
fn deferred_work_that_wrote_files_is_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg) = common::plan_root_and_config(dir.path(), "");
    let apply = || {
        let out = Command::new(env!("CARGO_BIN_EXE_brickup"))
            .args(["apply", "--json", "--root"])
            .arg(&root)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (summary, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (first, said) = apply();
    let sshd = first["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "sshd")
        .unwrap();
    assert_eq!(sshd["outcome"], "deferred", "{first}");
    assert_eq!(first["changed"], true, "{first}");
    assert!(
        said.contains("brickup: changes made; left to the live system: sshd"),
        "{said}"
    );
    let (second, said) = apply();
    assert_eq!(second["changed"], false, "{second}");
    assert!(said.contains("brickup: nothing to change"), "{said}");
}

/// On a node without csf yet, `plan` shows the csf.conf values apply will write (the ports it
/// opens), not only that it will write some.
#[test]
fn plan_on_a_fresh_node_shows_the_firewall_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg) = common::plan_root_and_config(
        dir.path(),
        &format!(
            "firewall:\n  masternode_ports: [pivx]\n  extra_udp_in: [51475]\n  ipv6: \"on\"\n\
             csf:\n  url: https://example.com/csf.tgz\n  sha256: {}\n",
            "ab".repeat(32)
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args(["plan", "--root"])
        .arg(&root)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    let firewall = plan
        .split("== firewall:")
        .nth(1)
        .and_then(|s| s.split("\n== ").next())
        .unwrap_or_else(|| panic!("no firewall part: {plan}"));
    for line in [
        "TCP_IN = \"2222,51472\"",
        "TCP6_IN = \"2222,51472\"",
        "UDP_IN = \"51475\"",
        "UDP6_IN = \"51475\"",
        "IPV6 = \"1\"",
        "TESTING \"1\" until SSH is proven",
        "UDP_OUT: the tarball's own list",
    ] {
        assert!(firewall.contains(line), "no {line:?} in: {firewall}");
    }
    assert!(
        firewall.contains("TCP_OUT = \"") && firewall.contains(",443,"),
        "{firewall}"
    );
}

/// Secret parts of the download URL: never in the progress line (nor anywhere else).
const SECRET: &str = "sig-Pr0-SECRET";

/// A server on 127.0.0.1 that sends `body` with its Content-Length in 12 pieces over ~2.75 s,
/// to every request; returns a URL with a presigned-style query.
fn dribbling_server(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let len = body.len();
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            for piece in body.chunks(len.div_ceil(12)) {
                std::thread::sleep(Duration::from_millis(250));
                if s.write_all(piece).and_then(|()| s.flush()).is_err() {
                    break;
                }
            }
        }
    });
    format!("http://127.0.0.1:{port}/csf.tgz?X-Amz-Signature={SECRET}")
}

/// `apply --root` on a small root whose first work is the csf download from `url` (the steps
/// after it fail there for want of a package manager: the download is what is watched).
fn download_args(dir: &Path, url: &str, sha: &str) -> String {
    let root = dir.join("root");
    common::plan_root(&root);
    let (_, public) = common::keypair(dir);
    let cfg = dir.join("brickup.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\n\
             csf:\n  url: \"{url}\"\n  sha256: {sha}\n  allow_http: true\n"
        ),
    )
    .unwrap();
    format!("apply --root {} --config {}", root.display(), cfg.display())
}

/// The cached tarball of a download_args run, once it was verified.
fn cached(dir: &Path, sha: &str) -> std::path::PathBuf {
    dir.join(format!("root/var/lib/brickup/cache/{sha}.tgz"))
}

fn body_and_sha() -> (Vec<u8>, String) {
    use sha2::Digest as _;
    let body: Vec<u8> = (0..48 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&body));
    (body, sha)
}

#[test]
fn a_slow_download_on_a_terminal_shows_a_progress_line() {
    let dir = tempfile::tempdir().unwrap();
    let (body, sha) = body_and_sha();
    let url = dribbling_server(body);
    // The URL is quoted inside the config file, not on the command line `script` runs.
    let args = download_args(dir.path(), &url, &sha);
    let shown = on_a_terminal(&args, &[]);
    assert!(cached(dir.path(), &sha).exists(), "not downloaded: {shown}");
    // Redrawn in place as the bytes arrive, with the announced total, then blanked.
    let lines: Vec<&str> = shown
        .split('\r')
        .filter(|l| l.starts_with("  downloading: "))
        .collect();
    assert!(lines.len() >= 2, "no progress redraws: {shown:?}");
    assert!(
        lines.iter().all(|l| l.contains(" of 48.0 KiB (")),
        "{lines:?}"
    );
    assert_ne!(
        lines.first(),
        lines.last(),
        "the count never moved: {lines:?}"
    );
    let last = lines.last().unwrap().trim_end();
    let blank = format!("\r{}\r", " ".repeat(last.len()));
    assert!(
        shown.contains(&blank),
        "the line was not blanked: {shown:?}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
}

#[test]
fn a_download_with_stderr_piped_shows_no_progress_line() {
    let dir = tempfile::tempdir().unwrap();
    let (body, sha) = body_and_sha();
    let url = dribbling_server(body);
    let args = download_args(dir.path(), &url, &sha);
    let out = Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args(args.split(' '))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The control: the download ran (and took its ~3 s).
    assert!(cached(dir.path(), &sha).exists(), "{}", common::text(&out));
    assert!(stderr.contains("download verified"), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(!stderr.contains("downloading:"), "{stderr}");
}

/// The root's sshd made slow (3 s a call): `plan` waits on it through the real runner.
fn slow_sshd_args(dir: &Path) -> (tempfile::TempDir, String) {
    let root = common::copy_rootfs();
    let sshd = root.path().join("usr/sbin/sshd");
    std::fs::rename(&sshd, sshd.with_extension("real")).unwrap();
    std::fs::write(
        &sshd,
        "#!/bin/sh\nsleep 3\nexec /usr/sbin/sshd.real \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&sshd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = plan_args(dir).replace(
        &common::test_rootfs().display().to_string(),
        &root.path().display().to_string(),
    );
    (root, args)
}

#[test]
fn a_slow_command_shows_a_progress_line_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, args) = slow_sshd_args(dir.path());
    let shown = on_a_terminal(&args, &[]);
    assert!(
        shown.contains(
            "\r  running /usr/sbin/sshd -t -f /etc/ssh/sshd_config -o MaxSessions=2 (2 s)"
        ),
        "{shown:?}"
    );
    assert!(
        !shown.contains("(0 s)") && !shown.contains("(1 s)"),
        "drawn before 2 s: {shown:?}"
    );
    let piped = Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args(args.split(' '))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(piped.status.code(), Some(0), "{}", common::text(&piped));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(!stderr.contains("running"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&piped.stdout).contains("+MaxSessions 2"),
        "{}",
        common::text(&piped)
    );
}
