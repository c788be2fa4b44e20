//! `brickup firstboot`: apply once per instance. The instance identity (cloud-init's instance-id,
//! else the DMI product uuid, else machine-id) is recorded after a successful run; the same
//! instance then exits at once, a new one booted from a baked image runs again, and a failed run
//! is retried on the next boot.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::converge::{load_or_report, print_result};
use super::{Exit, Target};
use crate::fsops::{NewFile, Transaction};
use crate::run::converge;

/// Holds the instance id of the last successful first-boot run.
pub const DONE_FILE: &str = "/var/lib/brickup/firstboot-done";

#[derive(Debug, clap::Args)]
pub struct Firstboot {
    #[command(flatten)]
    target: Target,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl Firstboot {
    pub fn run(self) -> Result<Exit> {
        let (root, loaded) = load_or_report(&self.target, true)?;
        let _lock = crate::lock::acquire(&root, Duration::from_secs(self.target.lock_wait))?;
        let id = crate::identity::instance_id(&root).context("finding this instance's identity")?;
        let done = std::fs::read_to_string(root.path(DONE_FILE)).unwrap_or_default();
        if done.trim() == id {
            tracing::info!(instance = %id, "first boot already done for this instance; nothing to do");
            if let Some(cfg) = &loaded.config.report {
                crate::report::resend_pending(&root, cfg);
            }
            return Ok(Exit::Ok);
        }
        tracing::info!(instance = %id, "first boot of this instance: applying");
        let result = converge(&root, &loaded, true)?;
        print_result(&result, self.json)?;
        if let Some(e) = &result.error {
            return Ok(super::exit_for(e));
        }
        let mut tx = Transaction::new(&root);
        tx.write(
            Path::new(DONE_FILE),
            format!("{id}\n").as_bytes(),
            NewFile::mode(0o600),
        )?;
        tx.commit();
        Ok(Exit::Ok)
    }
}
