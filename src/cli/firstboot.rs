//! `brickup firstboot`: apply once per instance. The instance identity (cloud-init's instance-id,
//! else the DMI product uuid, else machine-id) is recorded after a successful run; the same
//! instance then exits at once, a new one booted from a baked image runs again, and a failed run
//! is retried on the next boot. `--early` runs only the SSH key and sshd steps, before sshd first
//! starts (cloud-init's bootcmd, or `brickup-early.service`), so no password login is ever offered.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::converge::{load, load_or_report, print_result};
use super::{Exit, Target};
use crate::config::Loaded;
use crate::engine::{self, Context};
use crate::firstboot as state;
use crate::fsops::{write_kept, NewFile};
use crate::report::SshHardened;
use crate::root::Root;
use crate::run::converge;
use crate::runner::{Cmd, Runner, SystemRunner};
use crate::userdata::{UNIT as RETRY_UNIT, UNIT_PATH as RETRY_UNIT_PATH};

#[derive(Debug, clap::Args)]
pub(crate) struct Firstboot {
    #[command(flatten)]
    target: Target,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Only the SSH key and sshd steps, before sshd first starts: sshd is never restarted and no
    /// report is sent. Once per instance; cheap on every later boot.
    #[arg(long)]
    early: bool,
}

impl Firstboot {
    pub(crate) fn run(self) -> Result<Exit> {
        if self.early {
            return self.run_early();
        }
        let root = Root::new(&self.target.root);
        if root.is_live() {
            if let Err(e) = restore_retry_unit(&root, &SystemRunner) {
                tracing::error!("restoring {RETRY_UNIT_PATH}: {e:#}");
            }
        }
        let (root, loaded) = load_or_report(&self.target, true)?;
        let _lock = crate::lock::acquire(&root, Duration::from_secs(self.target.lock_wait))?;
        let id = crate::report::identity::instance_id(&root)
            .context("finding this instance's identity")?;
        if state::done(&root, &id) {
            tracing::info!(instance = %id, "first boot already done for this instance; nothing to do");
            if let Some(cfg) = &loaded.config.report {
                crate::report::resend_pending(&root, cfg);
            }
            return Ok(Exit::Ok);
        }
        tracing::info!(instance = %id, "first boot of this instance: applying");
        if root.is_live() {
            // What cloud-init wrote seconds ago (host keys, this unit, the config) sits in the
            // page cache for up to 30 s; a power cut during the run must not empty it.
            nix::unistd::sync();
        }
        let result = converge(&root, &loaded, true)?;
        print_result(&result, self.json)?;
        if let Some(e) = &result.error {
            return Ok(super::exit_for(e));
        }
        state::record_done(&root, &id)?;
        Ok(Exit::Ok)
    }

    /// The SSH key and sshd steps, once per instance, while sshd has not started yet.
    fn run_early(self) -> Result<Exit> {
        // Every boot, before sshd starts, and before anything that can fail (the config too: a
        // power cut empties a config written seconds before just as it empties host keys):
        // host keys a power cut emptied would keep sshd down. A repair that fails is said, and
        // the hardening below goes on regardless.
        let root = Root::new(&self.target.root);
        // A later boot of this instance (cloud-init made the host keys in an earlier one):
        // none left at all is a cut's doing too.
        let later_boot = crate::report::identity::instance_id(&root)
            .is_ok_and(|id| state::early_done(&root, &id));
        if let Err(e) = crate::sshd::hostkeys::repair_damaged(&root, &SystemRunner, later_boot) {
            tracing::error!("checking sshd's host keys: {e:#}");
        }
        if root.is_live() {
            // A baked image's early unit runs after cloud-init wrote the config and the host
            // keys: on disk before anything else happens.
            nix::unistd::sync();
        }
        let (root, loaded) = load(&self.target)?;
        let _lock = crate::lock::acquire(&root, Duration::from_secs(self.target.lock_wait))?;
        let id = crate::report::identity::instance_id(&root)
            .context("finding this instance's identity")?;
        if state::early_done(&root, &id) {
            tracing::info!(instance = %id, "early hardening already done for this instance");
            return Ok(Exit::Ok);
        }
        if root.is_live() && sshd_running(&loaded) {
            tracing::warn!("sshd is already running: the SSH key and sshd are left to `brickup firstboot`, which restarts it");
            return Ok(Exit::Ok);
        }
        let mut cx = Context::new(root.clone(), &loaded.config, &SystemRunner);
        cx.early = true;
        let cx = cx.with_facts()?;
        let result = engine::apply(&cx, &crate::run::early_steps());
        print_result(&result, self.json)?;
        if let Some(e) = &result.error {
            return Ok(super::exit_for(e));
        }
        if result.failed() {
            return Ok(Exit::Failed);
        }
        let hardened = SshHardened {
            by: "early".into(),
            after_start_ms: result.sshd_done.unwrap_or_default().as_millis() as u64,
            uptime_ms: crate::report::uptime_ms(&root),
        };
        state::record_early(&root, &id, hardened)?;
        Ok(Exit::Ok)
    }
}

/// The retry unit as a power cut leaves it when cloud-init wrote it seconds before: the file
/// there, empty. systemd takes an empty unit file for a mask, so runcmd's `systemctl enable`
/// fails and a run cut short would never be retried (seen in the fault matrix). Written again
/// (durably) and enabled; any other state of the file is left as it is. Returns whether it acted.
fn restore_retry_unit(root: &Root, runner: &dyn Runner) -> Result<bool> {
    let empty = std::fs::symlink_metadata(root.path(RETRY_UNIT_PATH))
        .is_ok_and(|m| m.file_type().is_file() && m.len() == 0);
    if !empty {
        return Ok(false);
    }
    tracing::warn!(
        "{RETRY_UNIT_PATH} is empty (cut short by a power loss?): writing it again and enabling it"
    );
    write_kept(
        root,
        Path::new(RETRY_UNIT_PATH),
        crate::userdata::FIRSTBOOT_UNIT.as_bytes(),
        NewFile::mode(0o644),
    )?;
    runner.check(&Cmd::new("systemctl").arg("daemon-reload"))?;
    runner.check(&Cmd::new("systemctl").args(["enable", RETRY_UNIT]))?;
    Ok(true)
}

/// Does an sshd answer already, on port 22 or the configured one?
fn sshd_running(loaded: &Loaded) -> bool {
    let quick = Duration::from_millis(300);
    [22, loaded.config.ssh.port.get()]
        .into_iter()
        .any(|p| crate::ports::answers(p, quick))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RecordingRunner;

    /// Only the empty file a power cut leaves is written again and enabled; a good unit, a
    /// missing one (not delivered this way) and a mask (a link to /dev/null) are left alone.
    #[test]
    fn an_emptied_retry_unit_is_written_again_and_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let path = root.path(RETRY_UNIT_PATH);
        let untouched = RecordingRunner::new();
        assert!(!restore_retry_unit(&root, &untouched).unwrap(), "missing");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(dir.path().join("null"), &path).unwrap();
        assert!(!restore_retry_unit(&root, &untouched).unwrap(), "a link");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "[Unit]\n").unwrap();
        assert!(!restore_retry_unit(&root, &untouched).unwrap(), "not empty");
        assert!(untouched.calls().is_empty(), "{:?}", untouched.calls());

        std::fs::write(&path, "").unwrap();
        let runner = RecordingRunner::new();
        runner.allow("systemctl daemon-reload");
        runner.allow("systemctl enable brickup-firstboot.service");
        assert!(restore_retry_unit(&root, &runner).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            crate::userdata::FIRSTBOOT_UNIT
        );
        assert_eq!(
            runner.calls(),
            [
                "systemctl daemon-reload",
                "systemctl enable brickup-firstboot.service"
            ]
        );
        // An enable that fails is an error to report, with the unit left written.
        std::fs::write(&path, "").unwrap();
        let failing = RecordingRunner::new();
        failing.allow("systemctl daemon-reload");
        failing.answer("systemctl enable", 1, "", "Failed to enable unit");
        assert!(restore_retry_unit(&root, &failing).is_err());
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
    }
}
