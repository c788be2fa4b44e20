//! The one place brickup runs programs: logs the command line, enforces a timeout, captures
//! output, and turns a failure into an error that carries the exit status and the tail of stderr
//! (the shape of bootc's `crates/utils/src/command.rs`).
//!
//! Tests swap in `RecordingRunner` (built only for tests, see the `testing` feature) for the
//! commands that must not run on the test machine (systemctl, csf, package managers).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use crate::progress::{Line, Throttle};

/// Default limit for one command; package installs pass a longer one.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A command still running after this gets a progress line (on a terminal), redrawn this often.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A command to run: program, arguments, environment, working directory, timeout and an optional
/// root to `chroot` into first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) chroot: Option<PathBuf>,
    pub(crate) timeout: Duration,
}

impl Cmd {
    pub(crate) fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            chroot: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub(crate) fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    pub(crate) fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Run inside `root` (via `chroot`) unless `root` is `/`.
    pub(crate) fn chroot(mut self, root: &Path) -> Self {
        if root != Path::new("/") {
            self.chroot = Some(root.to_path_buf());
        }
        self
    }

    pub(crate) fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line as a shell would read it, for logs, plans and errors.
    pub(crate) fn display(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.chroot {
            parts.push(format!("chroot {}", shell_quote(&r.to_string_lossy())));
        }
        for (k, v) in &self.env {
            parts.push(format!("{k}={}", shell_quote(v)));
        }
        parts.push(shell_quote(&self.program));
        parts.extend(self.args.iter().map(|a| shell_quote(a)));
        parts.join(" ")
    }

    /// The command for a progress line: program and arguments only (the environment and the
    /// chroot are in the debug log), any URL among them redacted.
    fn brief(&self) -> String {
        let word = |w: &str| {
            if w.contains("://") {
                crate::redact::url(w)
            } else {
                shell_quote(w)
            }
        };
        let mut parts = vec![word(&self.program)];
        parts.extend(self.args.iter().map(|a| word(a)));
        parts.join(" ")
    }
}

/// Quote a word for display the way `sh` would need it.
pub(crate) fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What a finished command printed and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub(crate) status: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Runs commands. `run` returns the output whatever the exit status; `check` fails on non-zero.
pub trait Runner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> Result<Output>;

    /// Run and fail unless it exits 0; the error names the command, its status and stderr's tail.
    fn check(&self, cmd: &Cmd) -> Result<Output> {
        let out = self.run(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(failure(cmd, &out))
        }
    }
}

/// The error for `cmd` that exited non-zero with `out`: the command, its status, stderr's tail.
pub(crate) fn failure(cmd: &Cmd, out: &Output) -> anyhow::Error {
    anyhow!(
        "`{}` exited with status {}: {}",
        cmd.display(),
        out.status,
        tail(&out.stderr, &out.stdout)
    )
}

/// The last lines of stderr (or stdout when stderr is empty), for error messages.
pub(crate) fn tail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(8);
    let t = lines[start..].join("\n");
    if t.is_empty() {
        "(no output)".to_string()
    } else {
        t
    }
}

/// Runs commands for real.
#[derive(Debug, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output> {
        tracing::debug!(command = %cmd.display(), "running");
        let mut c = match &cmd.chroot {
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(&cmd.program);
                c
            }
            None => Command::new(&cmd.program),
        };
        c.args(&cmd.args)
            .envs(&cmd.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &cmd.cwd {
            c.current_dir(dir);
        }
        let mut child = c
            .spawn()
            .with_context(|| format!("starting `{}`", cmd.display()))?;
        let out_reader = spawn_reader(child.stdout.take());
        let err_reader = spawn_reader(child.stderr.take());
        let start = Instant::now();
        // Cleared when dropped: on exit, on timeout and on a failed wait alike.
        let mut progress = Line::on_stderr(Throttle::new(PROGRESS_AFTER, PROGRESS_EVERY));
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            progress
                .update(|elapsed| format!("  running {} ({} s)", cmd.brief(), elapsed.as_secs()));
            if start.elapsed() > cmd.timeout {
                progress.finish();
                let _ = child.kill();
                let _ = child.wait();
                return Err(anyhow!(
                    "`{}` timed out after {}s",
                    cmd.display(),
                    cmd.timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        progress.finish();
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let code = status.code().unwrap_or(128 + signal_of(&status));
        tracing::debug!(command = %cmd.display(), status = code, "finished");
        Ok(Output {
            status: code,
            stdout,
            stderr,
        })
    }
}

fn signal_of(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

fn spawn_reader<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[cfg(any(test, feature = "testing"))]
pub use recording::{RecordingRunner, Script};

/// The test double: not shipped API (built for unit tests, and for integration tests through the
/// `testing` feature that the crate's dev-dependency on itself turns on).
#[cfg(any(test, feature = "testing"))]
mod recording {
    use std::path::Path;
    use std::sync::Mutex;

    use anyhow::Result;

    use super::{Cmd, Output, Runner, SystemRunner};

    /// A scripted answer for [`RecordingRunner`]: commands whose display contains `pattern` get
    /// `output`.
    #[derive(Debug, Clone)]
    pub struct Script {
        pub(crate) pattern: String,
        pub(crate) output: Output,
    }

    /// Records every command instead of running it, answering from a script. Strict: a command
    /// that no [`answer`](Self::answer), [`answer_once`](Self::answer_once) or
    /// [`allow`](Self::allow) covers fails the test with its command line, so every command a
    /// test expects is written in it. Commands listed by [`passthrough`](Self::passthrough) run
    /// for real.
    ///
    /// How an unscripted command fails the test: `run` panics at once, naming the command (so
    /// the backtrace points at the caller); the command is also kept, and dropping the runner
    /// panics again if any was seen. The second net is for code that would not let the first
    /// panic reach the test (a `catch_unwind`, a thread whose panic is dropped): an `Err` would
    /// not do, since brickup tolerates some command errors on purpose (it logs and carries on
    /// when `sshd -T` fails while reading the current ports). Dropping also fails the test when
    /// an [`answer_once`](Self::answer_once) was never used: the scripted event never happened.
    #[derive(Default)]
    pub struct RecordingRunner {
        calls: Mutex<Vec<String>>,
        scripts: Mutex<Vec<Script>>,
        /// Answers used once each, in order, before `scripts` (a state that changes mid-run).
        once: Mutex<Vec<Script>>,
        passthrough: Vec<String>,
        unscripted: Mutex<Vec<String>>,
    }

    fn script(pattern: &str, status: i32, stdout: &str, stderr: &str) -> Script {
        Script {
            pattern: pattern.to_string(),
            output: Output {
                status,
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
            },
        }
    }

    impl RecordingRunner {
        pub fn new() -> Self {
            Self::default()
        }

        /// Let these programs (e.g. `sshd`) run for real.
        pub fn passthrough(mut self, programs: &[&str]) -> Self {
            self.passthrough = programs.iter().map(|s| s.to_string()).collect();
            self
        }

        /// Answer commands whose line contains `pattern`; later scripts win over earlier ones.
        pub fn answer(&self, pattern: &str, status: i32, stdout: &str, stderr: &str) {
            self.scripts
                .lock()
                .unwrap()
                .push(script(pattern, status, stdout, stderr));
        }

        /// Expect commands whose line contains `pattern`: they exit 0 and print nothing.
        pub fn allow(&self, pattern: &str) {
            self.answer(pattern, 0, "", "");
        }

        /// Answer the next command whose line contains `pattern` once; queued answers for the
        /// same pattern are used in the order given, then the permanent ones apply again. One
        /// left unused when the runner is dropped fails the test.
        pub fn answer_once(&self, pattern: &str, status: i32, stdout: &str, stderr: &str) {
            self.once
                .lock()
                .unwrap()
                .push(script(pattern, status, stdout, stderr));
        }

        /// Every recorded command line, in order (passthrough commands are not recorded).
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn answer_for(&self, line: &str) -> Option<Output> {
            let mut once = self.once.lock().unwrap();
            if let Some(i) = once.iter().position(|s| line.contains(&s.pattern)) {
                return Some(once.remove(i).output);
            }
            drop(once);
            let scripts = self.scripts.lock().unwrap();
            let hit = scripts.iter().rev().find(|s| line.contains(&s.pattern));
            hit.map(|s| s.output.clone())
        }
    }

    impl Runner for RecordingRunner {
        fn run(&self, cmd: &Cmd) -> Result<Output> {
            let line = cmd.display();
            let base = Path::new(&cmd.program)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if self.passthrough.contains(&base) {
                return SystemRunner.run(cmd);
            }
            self.calls.lock().unwrap().push(line.clone());
            if let Some(out) = self.answer_for(&line) {
                return Ok(out);
            }
            self.unscripted.lock().unwrap().push(line.clone());
            panic!(
                "RecordingRunner: unscripted command `{line}` (script it with answer, answer_once or allow)"
            );
        }
    }

    impl Drop for RecordingRunner {
        fn drop(&mut self) {
            if std::thread::panicking() {
                return;
            }
            let unscripted = self
                .unscripted
                .get_mut()
                .map(|u| u.clone())
                .unwrap_or_default();
            if !unscripted.is_empty() {
                panic!("RecordingRunner: unscripted command(s) were run: {unscripted:#?}");
            }
            let unused: Vec<String> = self
                .once
                .get_mut()
                .map(|o| o.iter().map(|s| s.pattern.clone()).collect())
                .unwrap_or_default();
            if !unused.is_empty() {
                panic!("RecordingRunner: answer_once never used for: {unused:#?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_status_and_stderr_tail() {
        let cmd = Cmd::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"]);
        let err = SystemRunner.check(&cmd).unwrap_err().to_string();
        assert!(err.contains("status 3"), "{err}");
        assert!(err.contains("one\ntwo"), "{err}");
    }

    #[test]
    fn timeout_kills() {
        let cmd = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(200));
        let start = Instant::now();
        let err = SystemRunner.run(&cmd).unwrap_err().to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn recording_runner_answers_from_script() {
        let r = RecordingRunner::new();
        r.answer("csf -v", 0, "csf: v15.10", "");
        let out = r.run(&Cmd::new("csf").arg("-v")).unwrap();
        assert_eq!(out.stdout, "csf: v15.10");
        assert_eq!(r.calls(), vec!["csf -v".to_string()]);
    }

    #[test]
    fn recording_runner_allow_is_exit_0_and_once_comes_first() {
        let r = RecordingRunner::new();
        r.allow("systemctl restart");
        r.answer_once("systemctl restart", 1, "", "failed");
        assert_eq!(
            r.run(&Cmd::new("systemctl").arg("restart")).unwrap().status,
            1
        );
        let out = r.run(&Cmd::new("systemctl").arg("restart")).unwrap();
        assert_eq!(out, Output::default());
    }

    #[test]
    #[should_panic(expected = "unscripted command `systemctl is-active ssh.socket`")]
    fn recording_runner_panics_on_an_unscripted_command() {
        let r = RecordingRunner::new();
        r.allow("systemctl restart");
        let _ = r.run(&Cmd::new("systemctl").args(["is-active", "ssh.socket"]));
    }

    /// Code that swallows the first panic (or drops a thread's) still fails the test: the
    /// runner remembers and panics when dropped.
    #[test]
    #[should_panic(expected = "unscripted command(s) were run")]
    fn recording_runner_panics_again_on_drop_when_the_first_panic_was_swallowed() {
        let r = RecordingRunner::new();
        let swallowed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.run(&Cmd::new("csf").arg("-x"))
        }));
        assert!(swallowed.is_err());
        drop(r);
    }

    #[test]
    #[should_panic(expected = "answer_once never used for")]
    fn recording_runner_fails_on_an_unused_answer_once() {
        let r = RecordingRunner::new();
        r.answer_once("systemctl restart ssh", 1, "", "failed");
    }

    #[test]
    fn progress_names_program_and_arguments_but_no_secret_in_a_url() {
        let c = Cmd::new("apt-get")
            .env("http_proxy", "http://u:pw@proxy:3128")
            .args(["install", "-y", "libwww-perl"])
            .arg("https://u:pw@mirror.example/x.deb?sig=s3cret")
            .chroot(Path::new("/mnt/img"));
        assert_eq!(
            c.brief(),
            "apt-get install -y libwww-perl https://***@mirror.example/x.deb?***"
        );
    }

    #[test]
    fn display_quotes() {
        let c = Cmd::new("sh")
            .args(["-c", "echo 'x'"])
            .chroot(Path::new("/mnt/a b"));
        assert_eq!(c.display(), r"chroot '/mnt/a b' sh -c 'echo '\''x'\'''");
    }
}
