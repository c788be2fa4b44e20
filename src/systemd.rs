//! What brickup asks of systemd (systemctl(1)): whether a unit is installed under the root, and
//! whether it is active and enabled. One place, used by the sshd and csf steps alike.

use std::path::Path;

use anyhow::Result;

use crate::root::Root;
use crate::runner::{Cmd, Runner};

/// Where unit files live, in systemd's own lookup order for system units.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Is a unit file for `unit` (e.g. `ssh.socket`) installed under the root?
pub fn unit_exists(root: &Root, unit: &str) -> bool {
    UNIT_DIRS
        .iter()
        .any(|d| root.path(Path::new(d).join(unit)).exists())
}

/// `systemctl is-active UNIT`'s word (`active`, `inactive`, `failed`, ...). It exits non-zero for
/// anything but active, so its output, not its status, is the answer.
pub fn active_state(runner: &dyn Runner, unit: &str) -> Result<String> {
    word(runner, "is-active", unit)
}

/// `systemctl is-enabled UNIT`'s word (`enabled`, `disabled`, `masked`, `static`, ...).
pub fn enabled_state(runner: &dyn Runner, unit: &str) -> Result<String> {
    word(runner, "is-enabled", unit)
}

fn word(runner: &dyn Runner, verb: &str, unit: &str) -> Result<String> {
    let out = runner.run(&Cmd::new("systemctl").args([verb, unit]))?;
    let w = out.stdout.trim();
    Ok(if w.is_empty() { "unknown" } else { w }.to_string())
}

/// Drift lines for units that must be active now and enabled for boot.
pub fn running_drift(runner: &dyn Runner, units: &[&str]) -> Result<Vec<String>> {
    let mut drift = Vec::new();
    for unit in units {
        let active = active_state(runner, unit)?;
        if active != "active" {
            drift.push(format!("{unit} is {active}"));
        }
        let enabled = enabled_state(runner, unit)?;
        if enabled != "enabled" {
            drift.push(format!("{unit} is not enabled for boot ({enabled})"));
        }
    }
    Ok(drift)
}
