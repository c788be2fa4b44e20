//! The README's exit-code table, row by row: every command a row names is run in a situation
//! that must end in that row's code, and the table and the situations here must name the same
//! (code, command) pairs. Mostly under `--root` on a copy of the Debian test rootfs; `plan` and
//! `check` wait on a root's lock file without writing it, and take the lock on a live system:
//! their "busy" rows run both ways (a live root: tests/common/live.rs). Needs root, like the
//! other rootfs tests.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::live::{LiveConfig, LiveRoot, CONFIG_IN_ROOT};
use common::{brickup, copy_rootfs, keypair, text};

/// (code, command) pairs the README's table names.
fn documented() -> BTreeSet<(i32, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = readme
        .split("| code | meaning | commands |")
        .nth(1)
        .expect("the README's exit-code table");
    let mut pairs = BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let code: i32 = cells[1].parse().unwrap();
        for cmd in cells[3].split(',') {
            pairs.insert((code, cmd.trim().trim_matches('`').to_string()));
        }
    }
    assert!(pairs.len() > 10, "{pairs:?}");
    pairs
}

/// A rootfs copy with a config (ssh only, so an apply is quick) and the test key.
struct Host {
    root: tempfile::TempDir,
    config: PathBuf,
}

const REPORT: &str = "report:\n  url: http://127.0.0.1:9/brickup\n  allow_http: true\n  token: exit-codes\n  total_timeout_secs: 1\n  attempt_timeout_secs: 1\n";

impl Host {
    fn new(extra: &str) -> Host {
        let root = copy_rootfs();
        let (_, public) = keypair(root.path());
        let config = root.path().join("brickup-test.yaml");
        std::fs::write(
            &config,
            format!("version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\n{extra}"),
        )
        .unwrap();
        let id = root.path().join("var/lib/cloud/data/instance-id");
        std::fs::create_dir_all(id.parent().unwrap()).unwrap();
        std::fs::write(id, "i-exit-codes\n").unwrap();
        Host { root, config }
    }

    fn r(&self) -> &str {
        self.root.path().to_str().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--root", self.r()]);
        if !matches!(args[0], "status") {
            a.extend(["--config", self.config.to_str().unwrap()]);
        }
        brickup(&a)
    }

    /// `flock` holds the root's run lock until the returned child is killed.
    fn hold_lock(&self) -> Child {
        let lock = self.root.path().join("run/brickup.lock");
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        let child = Command::new("flock")
            .arg(&lock)
            .args(["sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let held = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            !Command::new("flock")
                .args(["-n"])
                .arg(&lock)
                .arg("true")
                .status()
                .unwrap()
                .success()
        });
        assert!(held, "flock did not take {}", lock.display());
        child
    }
}

/// The (code, command) pairs seen, each checked against the code it must give.
#[derive(Default)]
struct Seen(BTreeSet<(i32, String)>);

impl Seen {
    fn expect(&mut self, code: i32, command: &str, o: &Output) {
        assert_eq!(o.status.code(), Some(code), "{command}: {}", text(o));
        self.0.insert((code, command.to_string()));
    }
}

#[test]
fn every_documented_exit_code_is_what_the_command_gives() {
    let mut seen = Seen::default();
    let sha = "ab".repeat(32);
    let render = |cfg: &str| {
        brickup(&[
            "render-userdata",
            "--config",
            cfg,
            "--binary-url",
            "https://example.com/brickup",
            "--binary-sha256",
            &sha,
        ])
    };

    // 0, then 1 and 3 on the same host.
    {
        let h = Host::new(REPORT);
        seen.expect(1, "status", &h.run(&["status"]));
        seen.expect(0, "plan", &h.run(&["plan"]));
        seen.expect(0, "apply", &h.run(&["apply", "--report"]));
        // Under --root sshd's restart is left to first boot: partial, not there yet.
        let o = h.run(&["status"]);
        assert!(text(&o).contains("partial"), "{}", text(&o));
        seen.expect(1, "status", &o);
        seen.expect(0, "check", &h.run(&["check"]));
        seen.expect(0, "firstboot", &h.run(&["firstboot"]));
        // Done for this instance: the early run has nothing to do.
        seen.expect(0, "firstboot --early", &h.run(&["firstboot", "--early"]));
        seen.expect(0, "render-userdata", &render(h.config.to_str().unwrap()));
        seen.expect(0, "example", &brickup(&["example"]));
        let cfg = h.config.to_str().unwrap();
        seen.expect(0, "validate", &brickup(&["validate", "--config", cfg]));
        let dropin = h.root.path().join("etc/ssh/sshd_config.d/00-brickup.conf");
        let body = std::fs::read_to_string(&dropin).unwrap();
        std::fs::write(
            &dropin,
            body.replace("PasswordAuthentication no", "PasswordAuthentication yes"),
        )
        .unwrap();
        let o = h.run(&["check"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("drift"),
            "{}",
            text(&o)
        );
        seen.expect(1, "check", &o);
    }

    // 2: a missing config, and a preflight refusal.
    {
        let h = Host::new("");
        let missing = h.root.path().join("nowhere.yaml");
        let m = missing.to_str().unwrap();
        for cmd in [
            &["plan"][..],
            &["apply"],
            &["check"],
            &["firstboot"],
            &["firstboot", "--early"],
        ] {
            let mut a = cmd.to_vec();
            a.extend(["--root", h.r(), "--config", m]);
            let o = brickup(&a);
            assert!(text(&o).contains("cannot read config"), "{}", text(&o));
            seen.expect(2, &cmd.join(" "), &o);
        }
        seen.expect(2, "render-userdata", &render(m));
        seen.expect(2, "validate", &brickup(&["validate", "--config", m]));
        // The example as printed: its csf.sha256 is a placeholder, refused.
        let example = h.root.path().join("example.yaml");
        std::fs::write(&example, brickup(&["example"]).stdout).unwrap();
        let o = brickup(&["validate", "--config", example.to_str().unwrap()]);
        assert!(text(&o).contains("placeholder"), "{}", text(&o));
        seen.expect(2, "validate", &o);
        // What apply refuses, plan refuses the same way.
        let h = Host::new("");
        let cfg = std::fs::read_to_string(&h.config).unwrap();
        std::fs::write(
            &h.config,
            cfg.replace("ssh:\n", "ssh:\n  user: nosuchuser\n"),
        )
        .unwrap();
        for cmd in ["plan", "apply"] {
            let o = h.run(&[cmd]);
            assert!(text(&o).contains("ssh.user"), "{}", text(&o));
            assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        }
        // A value the target's sshd rejects, named by the config's own field.
        let h = Host::new("");
        let cfg = std::fs::read_to_string(&h.config).unwrap();
        std::fs::write(
            &h.config,
            cfg.replace("ssh:\n", "ssh:\n  settings:\n    LogLevel: LOUDEST\n"),
        )
        .unwrap();
        for cmd in ["plan", "apply"] {
            let o = h.run(&[cmd]);
            assert!(
                text(&o).contains("ssh.settings.LogLevel: the target's sshd rejects it"),
                "{}",
                text(&o)
            );
            assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        }
        // Values sshd accepts one by one but not with brickup's own: `password` in
        // AuthenticationMethods is fine on today's config (passwords on) and impossible beside
        // the drop-in's `PasswordAuthentication no`. Both refuse before any change (before, plan
        // said 0 and apply wrote the drop-in and failed its `sshd -t` with 3).
        let h = Host::new("");
        let cfg = std::fs::read_to_string(&h.config).unwrap();
        let together = "ssh:\n  settings:\n    AuthenticationMethods: \"publickey,password\"\n";
        std::fs::write(&h.config, cfg.replace("ssh:\n", together)).unwrap();
        for cmd in ["plan", "apply"] {
            let o = h.run(&[cmd]);
            assert!(
                text(&o)
                    .contains("ssh.settings: the target's sshd rejects brickup's candidate config")
                    && text(&o).contains("AuthenticationMethods cannot be satisfied"),
                "{}",
                text(&o)
            );
            assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
            let dropin = h.root.path().join("etc/ssh/sshd_config.d/00-brickup.conf");
            assert!(!dropin.exists(), "{cmd} wrote the drop-in");
        }
    }

    // 3: a run that fails (the csf tarball cannot be fetched), recorded as failed.
    {
        let csf = format!(
            "csf:\n  url: file:///nonexistent/csf.tgz\n  sha256: {}\n",
            "cd".repeat(32)
        );
        let h = Host::new(&format!("{csf}{REPORT}"));
        seen.expect(3, "apply", &h.run(&["apply", "--report"]));
        seen.expect(3, "status", &h.run(&["status"]));
        seen.expect(3, "firstboot", &h.run(&["firstboot"]));
        // The key cannot be written: /root/.ssh is a file, not a directory.
        let h = Host::new("");
        std::fs::write(h.root.path().join("root/.ssh"), "not a directory\n").unwrap();
        seen.expect(3, "firstboot --early", &h.run(&["firstboot", "--early"]));
        // The receiver cannot listen: the port is taken.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let token = h.root.path().join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let out = h.root.path().join("reports.jsonl");
        let o = brickup(&[
            "receive",
            "--listen",
            &addr,
            "--token-file",
            token.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        seen.expect(3, "receive", &o);
    }

    // 4: another run holds the lock.
    {
        let h = Host::new("");
        let mut holder = h.hold_lock();
        for cmd in [
            &["apply"][..],
            &["firstboot"],
            &["firstboot", "--early"],
            &["plan"],
            &["check"],
        ] {
            let mut a = cmd.to_vec();
            a.extend(["--lock-wait", "0"]);
            let o = h.run(&a);
            assert!(text(&o).contains("holds"), "{}", text(&o));
            assert!(
                !String::from_utf8_lossy(&o.stdout).contains("converged"),
                "{}",
                text(&o)
            );
            seen.expect(4, &cmd.join(" "), &o);
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
    }
    // A live run that succeeds; then plan and check wait for the lock on a live system only
    // (and then say nothing else).
    {
        let lr = LiveRoot::new("exit_codes_live");
        let sink = lr.report_sink();
        let mut c = LiveConfig::new(2851);
        c.csf = false;
        c.report_url = Some(sink.url.clone());
        lr.configure(&c);
        let (o, _) = lr.apply();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        seen.expect(0, "status", &lr.brickup(&["status"]));
        lr.must_sh("(flock /run/brickup.lock sleep 30 </dev/null >/dev/null 2>&1 &) ; sleep 1");
        for cmd in ["plan", "check"] {
            let o = lr.brickup(&[cmd, "--config", CONFIG_IN_ROOT, "--lock-wait", "1"]);
            assert!(
                !String::from_utf8_lossy(&o.stdout).contains("converged"),
                "{}",
                text(&o)
            );
            seen.expect(4, cmd, &o);
        }
    }

    assert_eq!(
        seen.0,
        documented(),
        "the README's exit-code table and the situations run here differ"
    );
}
