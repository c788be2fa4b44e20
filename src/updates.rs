//! Automatic security updates: unattended-upgrades limited to the security origin on
//! Debian/Ubuntu (apt.conf(5), unattended-upgrades' README), dnf-automatic with
//! `upgrade_type = security` on the RHEL family (dnf-automatic(8)). No automatic reboot unless
//! `updates.reboot` sets a window. `check` reports a disabled timer or a failed last run.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::engine::{Action, Applied, Context, Drift, Step};
use crate::fsops::{NewFile, Transaction};
use crate::os::Family;
use crate::runner::Cmd;

const AUTO_UPGRADES: &str = "/etc/apt/apt.conf.d/20auto-upgrades";
/// Sorts after the package's `50unattended-upgrades`, so its `#clear` empties that file's lists.
const SECURITY_ONLY: &str = "/etc/apt/apt.conf.d/52brickup-security-only";
const DNF_AUTOMATIC: &str = "/etc/dnf/automatic.conf";
const DNF_TIMER_DROPIN: &str = "/etc/systemd/system/dnf-automatic.timer.d/50-brickup.conf";
const HEADER: &str = "// Written by brickup (the updates section of /etc/brickup/brickup.yaml).\n";

/// The timer that runs the updater, and the service whose last result counts.
pub(crate) fn timer(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::Debian => ("apt-daily-upgrade.timer", "apt-daily-upgrade.service"),
        Family::RedHat { .. } => ("dnf-automatic.timer", "dnf-automatic.service"),
    }
}

/// `20auto-upgrades`: refresh the lists and run unattended-upgrade daily.
pub(crate) fn render_auto_upgrades() -> String {
    format!("{HEADER}APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n")
}

/// The security origins of Debian (its `-security` suite; before Debian 11 the suite was the
/// codename with label Debian-Security) and Ubuntu (`-security`, and ESM's where attached).
fn security_origins(ubuntu: bool) -> &'static [&'static str] {
    if ubuntu {
        &[
            "origin=Ubuntu,archive=${distro_codename}-security",
            "origin=UbuntuESMApps,archive=${distro_codename}-apps-security",
            "origin=UbuntuESM,archive=${distro_codename}-infra-security",
        ]
    } else {
        &[
            "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
            "origin=Debian,codename=${distro_codename},label=Debian-Security",
        ]
    }
}

/// The drop-in that limits unattended-upgrades to the security origin. apt appends lists
/// across files, so `#clear` first empties what `50unattended-upgrades` allowed.
pub(crate) fn render_security_only(ubuntu: bool, reboot_window: Option<&str>) -> String {
    let mut s = String::from(HEADER);
    s.push_str("#clear Unattended-Upgrade::Allowed-Origins;\n#clear Unattended-Upgrade::Origins-Pattern;\nUnattended-Upgrade::Origins-Pattern {\n");
    for o in security_origins(ubuntu) {
        s.push_str(&format!("        \"{o}\";\n"));
    }
    s.push_str("};\n");
    match reboot_window {
        Some(t) => s.push_str(&format!(
            "Unattended-Upgrade::Automatic-Reboot \"true\";\nUnattended-Upgrade::Automatic-Reboot-Time \"{t}\";\n"
        )),
        None => s.push_str("Unattended-Upgrade::Automatic-Reboot \"false\";\n"),
    }
    s
}

/// Set `key = value` lines in one `[section]` of an INI text: existing keys are replaced in
/// place, missing ones appended to the section (which is added when absent).
pub(crate) fn set_ini(text: &str, section: &str, pairs: &[(&str, &str)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut inside = false;
    let mut missing: Vec<(&str, &str)> = pairs.to_vec();
    let header = format!("[{section}]");
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if inside {
                flush(&mut out, &mut missing);
            }
            inside = t == header;
        } else if inside {
            let key = t.split('=').next().unwrap_or("").trim();
            if let Some(i) = missing.iter().position(|(k, _)| *k == key) {
                let (k, v) = missing.remove(i);
                out.push(format!("{k} = {v}"));
                continue;
            }
        }
        out.push(line.to_string());
    }
    if inside {
        flush(&mut out, &mut missing);
    } else if !missing.is_empty() {
        out.push(header);
        flush(&mut out, &mut missing);
    }
    out.join("\n") + "\n"
}

/// Append the keys not yet written, before the section's trailing blank lines.
fn flush(out: &mut Vec<String>, missing: &mut Vec<(&str, &str)>) {
    let blanks = out.iter().rev().take_while(|l| l.trim().is_empty()).count();
    let at = out.len() - blanks;
    for (i, (k, v)) in missing.drain(..).enumerate() {
        out.insert(at + i, format!("{k} = {v}"));
    }
}

/// dnf-automatic: security updates, applied; a reboot only when a window is configured.
pub(crate) fn edit_dnf_automatic(current: &str, reboot: bool) -> String {
    let mut pairs = vec![("upgrade_type", "security"), ("apply_updates", "yes")];
    pairs.push(("reboot", if reboot { "when-needed" } else { "never" }));
    set_ini(current, "commands", &pairs)
}

/// dnf-automatic.timer at the reboot window (the run that updates is the one that reboots).
pub(crate) fn render_dnf_timer(window: &str) -> String {
    format!("# Written by brickup: security updates, and reboots when needed, at {window}.\n[Timer]\nOnCalendar=\nOnCalendar=*-*-* {window}:00\nRandomizedDelaySec=0\n")
}

fn read(cx: &Context, path: &str) -> Result<String> {
    let real = cx.root.path(path);
    match std::fs::read_to_string(&real) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", real.display())),
    }
}

/// (host path, current, wanted) for every file that differs.
fn desired(cx: &Context, family: Family) -> Result<Vec<(PathBuf, String, String)>> {
    let u = &cx.config.updates;
    let mut files: Vec<(&str, String)> = Vec::new();
    match family {
        Family::Debian => {
            let ubuntu = cx.facts.os()?.ubuntu;
            files.push((AUTO_UPGRADES, render_auto_upgrades()));
            files.push((
                SECURITY_ONLY,
                render_security_only(ubuntu, u.reboot_window()),
            ));
        }
        Family::RedHat { .. } => {
            let current = read(cx, DNF_AUTOMATIC)?;
            files.push((DNF_AUTOMATIC, edit_dnf_automatic(&current, u.reboot)));
            if let Some(w) = u.reboot_window() {
                files.push((DNF_TIMER_DROPIN, render_dnf_timer(w)));
            }
        }
    }
    let mut out = Vec::new();
    for (path, new) in files {
        let old = read(cx, path)?;
        if old != new {
            out.push((PathBuf::from(path), old, new));
        }
    }
    Ok(out)
}

fn family(cx: &Context) -> Result<Family> {
    Ok(cx.facts.os()?.family)
}

/// Keeps security updates on.
pub(crate) struct UpdatesStep;

impl Step for UpdatesStep {
    fn name(&self) -> &'static str {
        "updates"
    }

    fn skip_reason(&self, cx: &Context) -> Option<String> {
        (!cx.config.updates.enabled).then(|| "updates.enabled is false".to_string())
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        let fam = family(cx)?;
        let mut actions = Action::files(desired(cx, fam)?);
        if cx.live() {
            actions.push(Action::Command(enable_cmd(fam).display()));
        }
        Ok(actions)
    }

    fn apply(&self, cx: &Context, tx: &mut Transaction) -> Result<Applied> {
        let fam = family(cx)?;
        let files = desired(cx, fam)?;
        for (path, _, new) in &files {
            tx.write(path, new.as_bytes(), NewFile::mode(0o644))?;
        }
        let mut applied = match files.is_empty() {
            true => Applied::unchanged("security updates already configured"),
            false => Applied::changed(format!(
                "wrote {}",
                files
                    .iter()
                    .map(|f| f.0.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        let (timer, _) = timer(fam);
        if cx.live() {
            cx.runner
                .check(&Cmd::new("systemctl").arg("daemon-reload"))?;
            cx.runner.check(&enable_cmd(fam))?;
        } else if matches!(fam, Family::RedHat { .. }) {
            applied = applied.deferring(format!("enabling {timer} left to first boot"));
        }
        Ok(applied)
    }

    fn check(&self, cx: &Context) -> Result<Vec<Drift>> {
        let fam = family(cx)?;
        let mut drift: Vec<Drift> = desired(cx, fam)?
            .into_iter()
            .map(|(p, _, _)| {
                let path = p.display().to_string();
                Drift::new(
                    &path,
                    format!("{path} differs from brickup's updates settings"),
                )
                .source(&path)
            })
            .collect();
        if cx.live() {
            drift.extend(timer_drift(cx, fam)?);
        }
        Ok(drift)
    }
}

fn enable_cmd(fam: Family) -> Cmd {
    Cmd::new("systemctl").args(["enable", "--now", timer(fam).0])
}

/// The updater's timer must be enabled and active, and its last run must not have failed.
fn timer_drift(cx: &Context, fam: Family) -> Result<Vec<Drift>> {
    let (timer, service) = timer(fam);
    let mut drift = crate::systemd::running_drift(cx.runner, &[timer])?;
    let out = cx.runner.run(&Cmd::new("systemctl").args([
        "show",
        "--property=Result",
        "--value",
        service,
    ]))?;
    let result = out.stdout.trim();
    if !result.is_empty() && result != "success" {
        drift.push(
            Drift::new(
                service,
                format!("the last run of {service} failed (Result={result})"),
            )
            .values("success", Some(result.to_string())),
        );
    }
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_only_table() {
        let cases = [
            (
                false,
                None,
                &["label=Debian-Security", "Automatic-Reboot \"false\""][..],
                &["Automatic-Reboot-Time", "Ubuntu"][..],
            ),
            (
                true,
                None,
                &[
                    "origin=Ubuntu,archive=${distro_codename}-security",
                    "Automatic-Reboot \"false\"",
                ][..],
                &["Debian"][..],
            ),
            (
                false,
                Some("04:00"),
                &[
                    "Automatic-Reboot \"true\"",
                    "Automatic-Reboot-Time \"04:00\"",
                ][..],
                &["\"false\""][..],
            ),
        ];
        for (ubuntu, window, has, lacks) in cases {
            let s = render_security_only(ubuntu, window);
            assert!(s.starts_with(HEADER), "{s}");
            // The package's own lists are cleared before the security origin is added.
            assert!(
                s.find("#clear Unattended-Upgrade::Origins-Pattern;")
                    .unwrap()
                    < s.find("Origins-Pattern {").unwrap()
            );
            for h in has {
                assert!(s.contains(h), "{ubuntu} {window:?} lacks {h}: {s}");
            }
            for l in lacks {
                assert!(!s.contains(l), "{ubuntu} {window:?} has {l}: {s}");
            }
        }
        assert!(render_auto_upgrades().contains("APT::Periodic::Unattended-Upgrade \"1\";"));
    }

    #[test]
    fn dnf_automatic_table() {
        let stock = "[commands]\n#  What kind of upgrades\nupgrade_type = default\nrandom_sleep = 0\n\ndownload_updates = yes\napply_updates = no\n\n[emitters]\nemit_via = stdio\n";
        let want = "[commands]\n#  What kind of upgrades\nupgrade_type = security\nrandom_sleep = 0\n\ndownload_updates = yes\napply_updates = yes\nreboot = never\n\n[emitters]\nemit_via = stdio\n";
        let cases = [
            (stock, false, want.to_string()),
            // Rerun: nothing changes.
            (want, false, want.to_string()),
            // No file (dnf5 keeps its defaults elsewhere): a [commands] section of our own.
            (
                "",
                false,
                "[commands]\nupgrade_type = security\napply_updates = yes\nreboot = never\n"
                    .to_string(),
            ),
            (
                stock,
                true,
                want.replace("reboot = never", "reboot = when-needed"),
            ),
        ];
        for (input, reboot, want) in cases {
            assert_eq!(edit_dnf_automatic(input, reboot), want, "{input:?}");
        }
        assert!(render_dnf_timer("03:30").contains("OnCalendar=*-*-* 03:30:00"));
    }
}
