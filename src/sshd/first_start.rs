//! The early run's login proof (`firstboot --early`, before sshd first starts): there is no
//! running sshd and no old port to fall back on, so the candidate config is proven by a
//! throwaway sshd instance (`sshd -D -e`, sshd(8)) started on it, on the real port, and the owner's
//! login proven through it as after a restart (src/login.rs). It is stopped before this returns;
//! the real sshd then first starts on exactly the files that were proven. When the proof fails
//! the engine restores the files, so sshd first starts on the image's own config instead.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::SSHD_CONFIG;
use crate::engine::Context;

/// sshd's own host keys; when none exists yet (cloud-init makes them after bootcmd) the
/// throwaway instance serves the config check's throwaway key, and the client pins that one.
const HOST_KEYS: &[&str] = &[
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
];
/// How long the instance and the host's address may take to come up.
const UP_WITHIN: Duration = Duration::from_secs(30);

/// Start a throwaway sshd on the candidate config, prove the owner's login through it, stop it.
pub(crate) fn prove(cx: &Context, port: u16) -> Result<String> {
    let Some(bin) = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|b| cx.root.path(b).exists())
    else {
        anyhow::bail!("no sshd to prove the candidate config with");
    };
    let own: Vec<&str> = HOST_KEYS
        .iter()
        .copied()
        .filter(|k| std::fs::metadata(cx.root.path(k)).is_ok_and(|m| m.len() > 0))
        .collect();
    let throwaway = match own.is_empty() {
        true => Some(
            super::effective::throwaway_host_key(&cx.root, cx.runner)?
                .context("no ssh-keygen to make a throwaway host key with")?,
        ),
        false => None,
    };
    std::fs::create_dir_all(cx.root.path("/run/sshd")).context("creating /run/sshd")?;
    let families = wait_for_address(cx)?;
    let _held = NologinHeld::take(cx)?;
    let port_opt = format!("Port={port}");
    let mut cmd = Command::new(bin);
    cmd.args([
        "-D",
        "-e",
        "-f",
        SSHD_CONFIG,
        "-o",
        &port_opt,
        "-o",
        "PidFile=none",
    ]);
    if let Some(key) = throwaway {
        cmd.args(["-h", key]);
    }
    tracing::info!(port, "starting a throwaway sshd on the candidate config to prove the owner's login before sshd first starts");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {bin} -D on the candidate config"))?;
    let log = drain(&mut child);
    let result = listening(&mut child, port).and_then(|()| {
        let pubs: Vec<String> = match throwaway {
            Some(k) => vec![format!("{k}.pub")],
            None => own.iter().map(|k| format!("{k}.pub")).collect(),
        };
        let pubs: Vec<&str> = pubs.iter().map(String::as_str).collect();
        crate::login::prove_pinned(cx, port, &families, &pubs)
    });
    stop(&mut child);
    let said = log.join().unwrap_or_default();
    result.map_err(|e| {
        let tail: Vec<&str> = said.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        e.context(format!(
            "proving the candidate sshd config before sshd first starts (the throwaway sshd said: {})",
            tail.join(" | ")
        ))
    })
}

/// systemd's boot-time `/run/nologin` ("System is booting up"), held aside while the proof runs
/// and put back when it ends. Its pam_nologin refuses every user but root until
/// systemd-user-sessions.service removes it; the early run comes before that unit (cloud-init.service
/// and brickup-early.service are both ordered Before= it), so a login proof as a named user would
/// otherwise always fail there ("Access denied ... by PAM account configuration"), while the same
/// login works once the boot is done. Being before that unit is also why putting the file back
/// cannot undo its removal. Root's proof needs nothing held; an `/etc/nologin` (an admin's) is
/// never touched. Should brickup die in between, the file stays away: non-root key logins are
/// then let in a few seconds before the boot would let them, never locked out.
struct NologinHeld {
    file: std::path::PathBuf,
    held: std::path::PathBuf,
}

const RUN_NOLOGIN: &str = "/run/nologin";

impl NologinHeld {
    fn take(cx: &Context) -> Result<Option<NologinHeld>> {
        let file = cx.root.path(RUN_NOLOGIN);
        if cx.config.ssh.user == "root" || std::fs::symlink_metadata(&file).is_err() {
            return Ok(None);
        }
        let dir = cx.root.path("/run/brickup");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let held = dir.join("nologin.held");
        std::fs::rename(&file, &held).with_context(|| {
            format!(
                "holding {RUN_NOLOGIN} aside for the login proof as {}",
                cx.config.ssh.user
            )
        })?;
        tracing::info!(
            "held {RUN_NOLOGIN} (the boot's \"not yet\" for users other than root) aside while the login proof runs"
        );
        Ok(Some(NologinHeld { file, held }))
    }
}

impl Drop for NologinHeld {
    fn drop(&mut self) {
        match std::fs::rename(&self.held, &self.file) {
            Ok(()) => tracing::info!("{RUN_NOLOGIN} put back"),
            Err(e) => tracing::warn!("cannot put {RUN_NOLOGIN} back: {e}"),
        }
    }
}

/// The families the host has a global address of, waiting for one (bootcmd can run before
/// DHCPv4 has answered); IPv4 when it has one.
fn wait_for_address(cx: &Context) -> Result<Vec<crate::login::Family>> {
    use crate::login::Family;
    let start = Instant::now();
    loop {
        let v4 = crate::login::host_address(cx, Family::V4).is_ok();
        if v4 {
            return Ok(vec![Family::V4]);
        }
        if start.elapsed() > UP_WITHIN {
            if crate::login::host_address(cx, Family::V6).is_ok() {
                return Ok(vec![Family::V6]);
            }
            anyhow::bail!(
                "the host has no global address after {} s: the owner's login cannot be proven",
                UP_WITHIN.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Collect the instance's stderr (sshd -e logs there) without ever blocking it.
fn drain(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take();
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    })
}

/// Wait until the instance listens on `port`; an instance that exits has refused the config.
fn listening(child: &mut Child, port: u16) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for the throwaway sshd")? {
            anyhow::bail!("the throwaway sshd exited ({status}) before listening on port {port}");
        }
        if crate::ports::listening_ports()?.contains(&port) {
            return Ok(());
        }
        if start.elapsed() > UP_WITHIN {
            anyhow::bail!(
                "the throwaway sshd did not listen on port {port} within {} s",
                UP_WITHIN.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then SIGKILL after 5 s; always reaped.
fn stop(child: &mut Child) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
