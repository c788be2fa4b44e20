//! `brickup validate`: the whole config check, offline and without root. The file is read,
//! parsed and validated exactly as `plan` and `apply` do it (each problem with its line and
//! column), and the example's placeholder `csf.sha256` (all zeros) is refused. Nothing else on
//! this machine is read: the files the config names are checked where they must be, by
//! `render-userdata` and on the node.

use std::path::PathBuf;

use anyhow::Result;

use super::{Exit, UsageError};

#[derive(Debug, clap::Args)]
pub(crate) struct Validate {
    /// The config file.
    #[arg(long, value_name = "PATH", default_value = crate::config::DEFAULT_PATH)]
    config: PathBuf,
}

impl Validate {
    pub(crate) fn run(self) -> Result<Exit> {
        let loaded = crate::config::load(&self.config)?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let config = &loaded.config;
        if let Some(csf) = &config.csf {
            if csf.sha256.bytes().all(|b| b == b'0') {
                return Err(UsageError(format!(
                    "{}: csf.sha256 is a placeholder (all zeros, as in `brickup example`): pin \
                     the sha256 of the csf tarball you install (README: \"Pinning a csf release\")",
                    self.config.display()
                ))
                .into());
            }
        }
        println!(
            "{}: valid (ssh.port {}, ssh.user {}, csf {})",
            self.config.display(),
            config.ssh.port,
            config.ssh.user,
            if config.csf.is_some() {
                "pinned"
            } else {
                "not configured"
            }
        );
        Ok(Exit::Ok)
    }
}
