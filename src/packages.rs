//! csf's prerequisites and `packages.extra`, installed with the system's own package manager:
//! apt-get on Debian/Ubuntu, dnf (or yum where there is no dnf) on the RHEL family, chosen from
//! the run's OS fact (`crate::os`). Packages already installed are never touched.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::engine::{Action, Applied, Context, Drift, Step};
use crate::fsops::Transaction;
use crate::os::{Family, Tool};
use crate::root::Root;
use crate::runner::{Cmd, Runner};

const INSTALL_TIMEOUT: Duration = Duration::from_secs(1200);
const ATTEMPTS: u32 = 3;

/// The packages that keep security updates coming (configured by the updates step).
fn updater_packages(family: Family) -> &'static [&'static str] {
    match family {
        Family::Debian => &["unattended-upgrades"],
        Family::RedHat { .. } => &["dnf-automatic"],
    }
}

/// What csf needs on each family (FACTS.md).
pub(crate) fn csf_prerequisites(family: Family) -> Vec<&'static str> {
    match family {
        Family::Debian => vec![
            "perl",
            "libwww-perl",
            "liblwp-protocol-https-perl",
            "libio-socket-ssl-perl",
            "libio-socket-inet6-perl",
            "libsocket6-perl",
            "libnet-libidn-perl",
            "e2fsprogs",
            "iptables",
            "bind9-host",
            "unzip",
            "cron",
            // lfd reads log files; Debian 12/13 have no syslog daemon to write them.
            "rsyslog",
        ],
        Family::RedHat { major } => vec![
            "perl",
            "perl-libwww-perl",
            "perl-LWP-Protocol-https",
            "perl-IO-Socket-SSL",
            "bind-utils",
            "e2fsprogs",
            if major >= 9 {
                "iptables-nft"
            } else {
                "iptables"
            },
            "unzip",
            "cronie",
            "rsyslog",
        ],
    }
}

/// A package manager.
pub(crate) trait PackageManager {
    fn name(&self) -> &'static str;
    /// Those of `pkgs` not installed.
    fn missing(&self, pkgs: &[String]) -> Result<Vec<String>>;
    /// The install command for `pkgs`.
    fn install_cmd(&self, pkgs: &[String]) -> Cmd;
    /// Install `pkgs` (non-interactively, with bounded retries).
    fn install(&self, pkgs: &[String]) -> Result<()>;
}

pub(crate) struct Apt<'a> {
    pub(crate) root: Root,
    pub(crate) runner: &'a dyn Runner,
}

pub(crate) struct Rpm<'a> {
    pub(crate) root: Root,
    pub(crate) runner: &'a dyn Runner,
    /// `dnf` or `yum`.
    pub(crate) tool: &'static str,
}

fn transient(text: &str) -> bool {
    [
        "Could not get lock",
        "Temporary failure",
        "Failed to fetch",
        "Could not resolve",
        "Connection timed out",
        "Cannot download",
        "Curl error",
    ]
    .iter()
    .any(|m| text.contains(m))
}

fn install_with_retries(
    runner: &dyn Runner,
    cmd: &Cmd,
    before_retry: &dyn Fn(&str) -> Result<()>,
) -> Result<()> {
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let out = runner.run(cmd)?;
        if out.success() {
            return Ok(());
        }
        last = crate::runner::tail(&out.stderr, &out.stdout);
        let all = format!("{}\n{}", out.stdout, out.stderr);
        tracing::warn!(attempt, "`{}` failed: {last}", cmd.display());
        if attempt < ATTEMPTS {
            before_retry(&all)?;
            if transient(&all) {
                std::thread::sleep(Duration::from_secs(5 * attempt as u64));
            }
        }
    }
    bail!("installing packages failed: `{}`: {last}", cmd.display())
}

impl Apt<'_> {
    fn cmd(&self, program: &str) -> Cmd {
        Cmd::new(program)
            .chroot(self.root.dir())
            .env("DEBIAN_FRONTEND", "noninteractive")
            .timeout(INSTALL_TIMEOUT)
    }

    fn update(&self) -> Result<()> {
        self.runner
            .check(
                &self
                    .cmd("apt-get")
                    .args(["-o", "DPkg::Lock::Timeout=600", "-q", "update"]),
            )
            .map(|_| ())
    }

    /// dpkg left pending work behind (a power cut or kill during an install): its journal in
    /// /var/lib/dpkg/updates is not empty, and apt refuses to run until `dpkg --configure -a`.
    fn dpkg_interrupted(&self) -> bool {
        std::fs::read_dir(self.root.path("/var/lib/dpkg/updates"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    }

    /// Packages dpkg's status marks as needing a reinstall (`reinstreq`, `half-installed`).
    fn needs_reinstall(&self) -> Vec<String> {
        let status =
            std::fs::read_to_string(self.root.path("/var/lib/dpkg/status")).unwrap_or_default();
        status
            .split("\n\n")
            .filter_map(|stanza| {
                let field = |name: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                };
                let st = field("Status")?;
                (st.contains("reinstreq") || st.contains("half-installed"))
                    .then(|| field("Package").map(str::to_string))?
            })
            .collect()
    }

    /// What apt asks the admin to run after an interrupted dpkg.
    fn finish_interrupted(&self) -> Result<()> {
        tracing::warn!("dpkg was interrupted earlier: running `dpkg --configure -a` first");
        self.runner
            .check(&self.cmd("dpkg").args(["--configure", "-a"]))
            .map(|_| ())
            .context("finishing the interrupted dpkg run (`dpkg --configure -a`)")
    }

    /// Removes the downloaded package lists (not the lock, not `partial/`), so the next update
    /// fetches every index again.
    fn drop_lists(&self) -> Result<()> {
        tracing::warn!("the package lists did not help after an update: fetching them anew");
        let dir = self.root.resolve("/var/lib/apt/lists")?;
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            if e.file_type()?.is_file() && e.file_name() != "lock" {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
        Ok(())
    }

    fn lists_empty(&self) -> bool {
        std::fs::read_dir(self.root.path("/var/lib/apt/lists"))
            .map(|d| {
                !d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            })
            .unwrap_or(true)
    }
}

impl PackageManager for Apt<'_> {
    fn name(&self) -> &'static str {
        "apt-get"
    }

    fn missing(&self, pkgs: &[String]) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for p in pkgs {
            let out = self.runner.run(&self.cmd("dpkg-query").args([
                "-W",
                "-f=${Status}",
                p.as_str(),
            ]))?;
            if !(out.success() && out.stdout.trim().ends_with("install ok installed")) {
                missing.push(p.clone());
            }
        }
        Ok(missing)
    }

    fn install_cmd(&self, pkgs: &[String]) -> Cmd {
        self.cmd("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=600",
                "-q",
                "-y",
                "--no-install-recommends",
                "install",
            ])
            .args(pkgs.iter().cloned())
    }

    fn install(&self, pkgs: &[String]) -> Result<()> {
        if self.lists_empty() {
            self.update()?;
        }
        if self.dpkg_interrupted() {
            self.finish_interrupted()?;
        }
        let refreshed = std::cell::Cell::new(false);
        let before_retry = |out: &str| {
            if out.contains("dpkg was interrupted") {
                return self.finish_interrupted();
            }
            // Stale or missing lists: refresh once the install says so. If that did not help,
            // the lists themselves may be damaged (a power cut soon after `apt-get update`
            // leaves a Packages file cut short or empty, which the next update takes as
            // current): fetch anew.
            if out.contains("Unable to locate package")
                || out.contains("has no installation candidate")
                || out.contains("can't find an archive")
                || out.contains("404")
            {
                if refreshed.replace(true) {
                    self.drop_lists()?;
                }
                self.update()?;
            }
            Ok(())
        };
        // A package a cut left half-unpacked (any package: a dependency too) is reinstalled
        // first; apt would otherwise go on around it.
        let broken = self.needs_reinstall();
        if !broken.is_empty() {
            tracing::warn!(
                ?broken,
                "dpkg left packages half-installed: reinstalling them"
            );
            let cmd = self.install_cmd(&[]).arg("--reinstall").args(broken);
            install_with_retries(self.runner, &cmd, &before_retry)?;
        }
        install_with_retries(self.runner, &self.install_cmd(pkgs), &before_retry)
    }
}

impl PackageManager for Rpm<'_> {
    fn name(&self) -> &'static str {
        self.tool
    }

    fn missing(&self, pkgs: &[String]) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for p in pkgs {
            // `rpm -q --whatprovides` also finds a package installed under another name.
            let out = self
                .runner
                .run(&Cmd::new("rpm").chroot(self.root.dir()).args([
                    "-q",
                    "--whatprovides",
                    p.as_str(),
                ]))?;
            if !out.success() {
                missing.push(p.clone());
            }
        }
        Ok(missing)
    }

    fn install_cmd(&self, pkgs: &[String]) -> Cmd {
        Cmd::new(self.tool)
            .chroot(self.root.dir())
            .timeout(INSTALL_TIMEOUT)
            .args(["-y", "install"])
            .args(pkgs.iter().cloned())
    }

    fn install(&self, pkgs: &[String]) -> Result<()> {
        install_with_retries(self.runner, &self.install_cmd(pkgs), &|_| Ok(()))
    }
}

/// The package manager for the target's OS, from the run's facts.
pub(crate) fn manager<'a>(cx: &Context<'a>) -> Result<(Family, Box<dyn PackageManager + 'a>)> {
    let os = cx.facts.os()?;
    let pm: Box<dyn PackageManager + 'a> = match os.tool {
        Tool::AptGet => Box::new(Apt {
            root: cx.root.clone(),
            runner: cx.runner,
        }),
        tool @ (Tool::Dnf | Tool::Yum) => Box::new(Rpm {
            root: cx.root.clone(),
            runner: cx.runner,
            tool: tool.command(),
        }),
    };
    Ok((os.family, pm))
}

/// All packages wanted: csf's prerequisites (when csf is configured), the security updater
/// (when `updates.enabled`), plus `packages.extra`.
pub(crate) fn wanted(cx: &Context, fam: Family) -> Vec<String> {
    let mut pkgs: Vec<String> = Vec::new();
    if cx.config.csf.is_some() {
        pkgs.extend(csf_prerequisites(fam).into_iter().map(String::from));
    }
    if cx.config.updates.enabled {
        pkgs.extend(updater_packages(fam).iter().map(|p| p.to_string()));
    }
    for p in &cx.config.packages.extra {
        if !pkgs.contains(p) {
            pkgs.push(p.clone());
        }
    }
    pkgs
}

/// Installs the missing packages.
pub struct PackagesStep;

impl Step for PackagesStep {
    fn name(&self) -> &'static str {
        "packages"
    }

    fn skip_reason(&self, cx: &Context) -> Option<String> {
        (cx.config.csf.is_none()
            && cx.config.packages.extra.is_empty()
            && !cx.config.updates.enabled)
            .then(|| "no csf section, no packages.extra and updates off".to_string())
    }

    fn preflight(&self, cx: &Context) -> Result<()> {
        manager(cx).map(|_| ())
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        let (fam, pm) = manager(cx)?;
        let missing = pm.missing(&wanted(cx, fam))?;
        Ok(if missing.is_empty() {
            vec![]
        } else {
            vec![Action::Command(pm.install_cmd(&missing).display())]
        })
    }

    fn apply(&self, cx: &Context, _tx: &mut Transaction) -> Result<Applied> {
        let (fam, pm) = manager(cx)?;
        let missing = pm.missing(&wanted(cx, fam))?;
        if missing.is_empty() {
            return Ok(Applied::unchanged("all packages already installed"));
        }
        pm.install(&missing)?;
        let still = pm.missing(&missing)?;
        if !still.is_empty() {
            bail!(
                "{} reported success but these are still not installed: {}",
                pm.name(),
                still.join(" ")
            );
        }
        Ok(Applied::changed(format!(
            "installed with {}: {}",
            pm.name(),
            missing.join(" ")
        )))
    }

    fn check(&self, cx: &Context) -> Result<Vec<Drift>> {
        let (fam, pm) = manager(cx)?;
        Ok(pm
            .missing(&wanted(cx, fam))?
            .into_iter()
            .map(|p| {
                Drift::new(
                    format!("package {p}"),
                    format!("package {p} is not installed"),
                )
                .values("installed", Some("not installed".into()))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn el9_uses_nft_iptables() {
        assert!(csf_prerequisites(Family::RedHat { major: 9 }).contains(&"iptables-nft"));
        assert!(csf_prerequisites(Family::RedHat { major: 8 }).contains(&"iptables"));
        assert!(csf_prerequisites(Family::Debian).contains(&"libwww-perl"));
    }
}
