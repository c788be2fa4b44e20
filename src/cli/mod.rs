//! The command line: one file per subcommand, each with `run(self) -> Result<Exit>`.

mod converge;
pub(crate) mod firstboot;
mod report;
mod userdata;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, or converged.
    Ok = 0,
    /// `check` found drift.
    Drift = 1,
    /// Bad config or usage; nothing was changed.
    Usage = 2,
    /// Apply failed; the system is in its last safe state.
    Failed = 3,
    /// Another brickup run held the lock past `--lock-wait`; nothing was done.
    Busy = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error that carries its exit code (config errors and preflight refusals are 2, a held lock
/// 4, the rest 3).
pub fn exit_for(e: &anyhow::Error) -> Exit {
    if e.chain().any(|c| c.is::<crate::lock::Busy>()) {
        return Exit::Busy;
    }
    if e.chain().any(|c| {
        c.is::<crate::config::ConfigError>()
            || c.is::<crate::config::Unreadable>()
            || c.is::<UsageError>()
            || c.is::<crate::engine::Refused>()
    }) {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

/// A usage mistake found after argument parsing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// `brickup --version`: the version, the target it was built for and the commit.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BRICKUP_TARGET"),
    ", commit ",
    env!("BRICKUP_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "brickup",
    version = VERSION,
    about = "First-boot hardening for masternode VPSes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options shared by the commands that work on a system.
#[derive(Debug, clap::Args, Clone)]
pub(crate) struct Target {
    /// Config file (default: /etc/brickup/brickup.yaml under --root).
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Work on the filesystem under DIR (tests, image baking) instead of this machine.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub(crate) root: PathBuf,
    /// Seconds to wait for another brickup run to finish.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub(crate) lock_wait: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Show what apply would do: diffs and commands. Changes nothing.
    Plan(converge::Plan),
    /// Converge the system to the config.
    Apply(converge::Apply),
    /// Report drift of the effective state. Exit 1 on drift.
    Check(converge::Check),
    /// Apply once per instance (run at first boot by cloud-init or the baked unit).
    Firstboot(firstboot::Firstboot),
    /// Show the last run's report.
    Status(report::Status),
    /// Accept signed reports from nodes (the reference receiver).
    Receive(report::Receive),
    /// Print cloud-init user-data that installs and runs brickup at first boot.
    RenderUserdata(userdata::RenderUserdata),
    /// Print a commented example config.
    Example,
    /// Check a config file offline, without root: exit 0 when apply would take it, 2 otherwise.
    Validate(validate::Validate),
}

impl Cli {
    /// The log filter without RUST_LOG: what is being done, in words (`info`); the commands run
    /// are `debug`. `firstboot` runs unattended and its journal is the only account of the boot
    /// afterwards, so it logs its commands too.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Firstboot(_) => "info,brickup::runner=debug",
            _ => "info",
        }
    }

    pub fn run(self) -> anyhow::Result<Exit> {
        match self.command {
            Command::Plan(c) => c.run(),
            Command::Apply(c) => c.run(),
            Command::Check(c) => c.run(),
            Command::Firstboot(c) => c.run(),
            Command::Status(c) => c.run(),
            Command::Receive(c) => c.run(),
            Command::RenderUserdata(c) => c.run(),
            Command::Validate(c) => c.run(),
            Command::Example => {
                print!("{}", crate::config::EXAMPLE);
                Ok(Exit::Ok)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unattended first boot logs the commands it runs; the commands people type do not.
    #[test]
    fn only_firstboot_logs_its_commands_by_default() {
        let filter = |args: &[&str]| Cli::try_parse_from(args).unwrap().default_log_filter();
        assert_eq!(filter(&["brickup", "plan"]), "info");
        assert_eq!(filter(&["brickup", "check"]), "info");
        assert_eq!(filter(&["brickup", "apply"]), "info");
        let fb = filter(&["brickup", "firstboot", "--early"]);
        let parsed: tracing_subscriber::EnvFilter = fb.parse().unwrap();
        assert_eq!(
            parsed.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::DEBUG)
        );
        assert!(fb.contains("brickup::runner=debug"), "{fb}");
    }
}
