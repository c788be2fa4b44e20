//! What brickup asks of systemd (systemctl(1)): whether a unit is installed under the root, and
//! whether it is active and enabled. One place, used by the sshd and csf steps alike.

use std::path::Path;

use anyhow::Result;

use crate::drift::Drift;
use crate::root::Root;
use crate::runner::{Cmd, Runner};

/// Where unit files live, in systemd's own lookup order for system units.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Is a unit file for `unit` (e.g. `ssh.socket`) installed under the root? A mask (a link to
/// `/dev/null`, as csf's installer leaves for firewalld) is no unit.
pub(crate) fn unit_exists(root: &Root, unit: &str) -> bool {
    UNIT_DIRS.iter().any(|d| {
        let p = root.path(Path::new(d).join(unit));
        let masked = std::fs::read_link(&p).is_ok_and(|t| t == Path::new("/dev/null"));
        !masked && p.exists()
    })
}

/// `systemctl is-active UNIT`'s word (`active`, `inactive`, `failed`, ...). It exits non-zero for
/// anything but active, so its output, not its status, is the answer.
pub(crate) fn active_state(runner: &dyn Runner, unit: &str) -> Result<String> {
    word(runner, "is-active", unit)
}

/// `systemctl is-enabled UNIT`'s word (`enabled`, `disabled`, `masked`, `static`, ...).
pub(crate) fn enabled_state(runner: &dyn Runner, unit: &str) -> Result<String> {
    word(runner, "is-enabled", unit)
}

/// Is `unit` active now (`systemctl is-active` says `active`)?
pub(crate) fn is_active(runner: &dyn Runner, unit: &str) -> Result<bool> {
    Ok(active_state(runner, unit)? == "active")
}

/// Is `unit` enabled for boot (`systemctl is-enabled` says `enabled`)?
pub(crate) fn is_enabled(runner: &dyn Runner, unit: &str) -> Result<bool> {
    Ok(enabled_state(runner, unit)? == "enabled")
}

fn word(runner: &dyn Runner, verb: &str, unit: &str) -> Result<String> {
    let out = runner.run(&Cmd::new("systemctl").args([verb, unit]))?;
    let w = out.stdout.trim();
    Ok(if w.is_empty() { "unknown" } else { w }.to_string())
}

/// Drift of units that must be active now and enabled for boot.
pub(crate) fn running_drift(runner: &dyn Runner, units: &[&str]) -> Result<Vec<Drift>> {
    let mut drift = Vec::new();
    for unit in units {
        let active = active_state(runner, unit)?;
        if active != "active" {
            drift.push(
                Drift::new(*unit, format!("{unit} is {active}")).values("active", Some(active)),
            );
        }
        let enabled = enabled_state(runner, unit)?;
        if enabled != "enabled" {
            drift.push(
                Drift::new(*unit, format!("{unit} is not enabled for boot ({enabled})"))
                    .values("enabled", Some(enabled)),
            );
        }
    }
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_units_do_not_exist() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let etc = t.path().join("etc/systemd/system");
        let lib = t.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        std::os::unix::fs::symlink("/dev/null", etc.join("firewalld.service")).unwrap();
        std::fs::write(lib.join("csf.service"), "[Unit]\n").unwrap();
        assert!(!unit_exists(&root, "firewalld.service"));
        assert!(unit_exists(&root, "csf.service"));
        assert!(!unit_exists(&root, "ufw.service"));
    }
}
