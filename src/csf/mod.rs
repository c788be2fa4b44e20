//! csf (ConfigServer Security & Firewall, now the Aetherinox/csf-firewall continuation): the
//! pinned, sha256-verified tarball; its install (`sh install.sh`, `csftest.pl`'s RESULT line);
//! and the firewall policy in `/etc/csf/csf.conf`, enabled only once SSH is proven reachable.

pub mod conf;
mod enable;
pub(crate) mod installed;
mod logs;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::config::{CsfConfig, Ipv6Mode};
use crate::download::{self, Sha256Digest};
use crate::engine::{Action, Applied, Context, Drift, Step};
use crate::fsops::Transaction;
use crate::runner::Cmd;

pub use enable::FirewallStep;
pub(crate) use enable::{holds_rules, open_port};
use installed::{conf_damaged, install_interrupted, version_in};
pub(crate) use installed::{installed_version, CSF_CONF, INSTALL_MARK};
pub use logs::LogStep;

/// Verified tarballs, kept so a rerun or repair needs no network.
pub(crate) const CACHE_DIR: &str = "/var/lib/brickup/cache";
const UNPACK_PARENT: &str = "/var/lib/brickup";

/// The guide's outbound TCP ports.
pub(crate) const DEFAULT_TCP_OUT: &[u16] = &[25, 53, 587, 80, 443];

/// lfd's blocks, chosen so an owner's own mistake (an agent that offers more keys than
/// `MaxAuthTries`, a typo'd user, a script retrying) costs at worst an hour, never the host: csf's
/// defaults block an sshd offender for good at the first trigger (`LF_SSHD_PERM "1"`) and make
/// four temporary blocks in a day permanent (`LF_PERMBLOCK "1"`). Bots still get the hour, and
/// with passwords off guessing gains them nothing. Defaults: `firewall.settings` overrides them.
pub(crate) const LFD_DEFAULTS: &[(&str, &str)] = &[("LF_SSHD_PERM", "3600"), ("LF_PERMBLOCK", "0")];

fn csf_config<'a>(cx: &'a Context) -> Result<&'a CsfConfig> {
    cx.config
        .csf
        .as_ref()
        .context("no csf section in the config")
}

fn digest(cfg: &CsfConfig) -> Result<Sha256Digest> {
    cfg.sha256
        .parse()
        .with_context(|| format!("csf.sha256 {:?}", cfg.sha256))
}

/// Where the verified tarball lives once downloaded (host path).
pub(crate) fn cached_tarball(cfg: &CsfConfig) -> PathBuf {
    Path::new(CACHE_DIR).join(format!("{}.tgz", cfg.sha256.to_ascii_lowercase()))
}

fn fetch(cx: &Context) -> Result<PathBuf> {
    let cfg = csf_config(cx)?;
    let mut opts = download::FetchOptions {
        allow_http: cfg.allow_http,
        ..Default::default()
    };
    opts.http.ca_file = cfg.ca_file.clone();
    download::fetch_verified(&cfg.url, &digest(cfg)?, &cx.root.path(CACHE_DIR), &opts)
}

/// Downloads the pinned tarball and verifies its sha256 before anything is installed.
pub(crate) struct DownloadStep;

impl Step for DownloadStep {
    fn name(&self) -> &'static str {
        "csf-download"
    }

    fn skip_reason(&self, cx: &Context) -> Option<String> {
        cx.config
            .csf
            .is_none()
            .then(|| "no csf section in the config".to_string())
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        let cfg = csf_config(cx)?;
        Ok(if cx.root.path(cached_tarball(cfg)).exists() {
            vec![]
        } else {
            vec![Action::Note(format!(
                "download {} and verify sha256 {}",
                crate::redact::url(&cfg.url),
                cfg.sha256
            ))]
        })
    }

    fn apply(&self, cx: &Context, _tx: &mut Transaction) -> Result<Applied> {
        let cfg = csf_config(cx)?;
        let had = cx.root.path(cached_tarball(cfg)).exists();
        let path = fetch(cx)?;
        let msg = format!(
            "{} verified (sha256 {})",
            cx.root.host_path(&path).display(),
            cfg.sha256
        );
        Ok(if had {
            Applied::unchanged(msg)
        } else {
            Applied::changed(msg)
        })
    }

    fn check(&self, _cx: &Context) -> Result<Vec<Drift>> {
        Ok(vec![])
    }
}

/// csf.conf as the verified, cached tarball ships it (`<top>/csf.generic.conf`), when cached.
pub(crate) fn generic_conf_from_cache(cx: &Context) -> Result<Option<String>> {
    use std::io::Read as _;
    let cfg = csf_config(cx)?;
    let path = cx.root.path(cached_tarball(cfg));
    let Ok(file) = fs::File::open(&path) else {
        return Ok(None);
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let name = entry.path()?.into_owned();
        let parts: Vec<_> = name.components().collect();
        if parts.len() == 2 && parts[1].as_os_str() == "csf.generic.conf" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .with_context(|| format!("reading csf.generic.conf from {}", path.display()))?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// An unpack directory inside the root (so a chroot can see it), removed when dropped.
fn unpack(cx: &Context, tarball: &Path) -> Result<(tempfile::TempDir, PathBuf)> {
    let parent = cx.root.path(UNPACK_PARENT);
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("csf-unpack-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    let install_dir = crate::archive::unpack_safely(tarball, dir.path())?;
    Ok((dir, install_dir))
}

/// csftest.pl always exits 0: its last RESULT line is the verdict.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CsfTest {
    Ok,
    Warn(String),
    Fatal(String),
}

pub(crate) fn parse_csftest(output: &str) -> Result<CsfTest> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("RESULT:"))
        .map(str::trim)
        .context("csftest.pl printed no RESULT line")?;
    Ok(if line.contains("will not function") {
        CsfTest::Fatal(line.to_string())
    } else if line.contains("some features will not work") {
        CsfTest::Warn(line.to_string())
    } else if line.contains("should function") {
        CsfTest::Ok
    } else {
        CsfTest::Fatal(format!("unrecognised csftest RESULT: {line}"))
    })
}

/// Installs csf from the verified tarball unless that version is already installed.
pub struct InstallStep;

impl InstallStep {
    /// Records the installer's progress in [`INSTALL_MARK`], durably (fsync'd, atomic).
    fn mark(cx: &Context, state: &str, version: &str) -> Result<()> {
        crate::fsops::write_kept(
            &cx.root,
            Path::new(INSTALL_MARK),
            format!("{state} {version}\n").as_bytes(),
            crate::fsops::NewFile::mode(0o644),
        )
        .map(|_| ())
    }

    /// csf will not run beside firewalld, and ufw would fight it: stop and disable whichever is
    /// installed and running or enabled (csf's installer masks firewalld but never touches ufw).
    fn stop_rivals(cx: &Context) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for unit in ["firewalld", "ufw"] {
            let service = format!("{unit}.service");
            if !crate::systemd::unit_exists(&cx.root, &service) {
                continue;
            }
            let active = crate::systemd::is_active(cx.runner, &service)?;
            let enabled = crate::systemd::is_enabled(cx.runner, &service)?;
            if !active && !enabled {
                continue;
            }
            if unit == "ufw" && cx.root.path("/usr/sbin/ufw").exists() {
                cx.runner.check(&Cmd::new("ufw").arg("disable"))?;
            }
            cx.runner
                .check(&Cmd::new("systemctl").args(["disable", "--now", &service]))?;
            done.push(unit.to_string());
        }
        Ok(done)
    }

    fn csftest(cx: &Context) -> Result<Option<String>> {
        let out = cx
            .runner
            .check(&Cmd::new("perl").arg("/usr/local/csf/bin/csftest.pl"))?;
        match parse_csftest(&out.stdout)? {
            CsfTest::Ok => Ok(None),
            CsfTest::Warn(w) => Ok(Some(w)),
            CsfTest::Fatal(f) => {
                // The installer enabled the units: a csf that cannot work must not start at
                // boot with its default policy.
                let disabled = cx.runner.check(&Cmd::new("systemctl").args([
                    "disable",
                    "csf.service",
                    "lfd.service",
                ]));
                let also = match disabled {
                    Ok(_) => "csf.service and lfd.service disabled".to_string(),
                    Err(e) => format!("disabling csf.service and lfd.service also failed: {e:#}"),
                };
                bail!("csftest.pl: {f}; no firewall change was made; {also}")
            }
        }
    }
}

impl Step for InstallStep {
    fn name(&self) -> &'static str {
        "csf-install"
    }

    fn skip_reason(&self, cx: &Context) -> Option<String> {
        DownloadStep.skip_reason(cx)
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        Ok(match &cx.facts.csf_version {
            Some(v) => vec![Action::Note(format!(
                "csf {v} installed; reinstalled only if the pinned tarball is another version"
            ))],
            None => vec![
                Action::Command("sh install.sh (from the verified tarball)".into()),
                Action::Command("perl /usr/local/csf/bin/csftest.pl".into()),
            ],
        })
    }

    fn apply(&self, cx: &Context, _tx: &mut Transaction) -> Result<Applied> {
        if !cx.live() {
            // csf's installer chooses systemd units or SysV scripts by PID 1's name, which a
            // chroot cannot show truthfully: the verified tarball waits in the cache instead.
            return Ok(Applied::unchanged("").deferring(
                "csf install deferred to first boot (its installer must see the booted system)",
            ));
        }
        let cfg = csf_config(cx)?;
        let tarball = cx.root.path(cached_tarball(cfg));
        let (_guard, dir) = unpack(cx, &tarball)?;
        let version = version_in(&dir).context("the tarball has no version.txt")?;
        let mut applied = if cx.facts.csf_version.as_deref() == Some(version.as_str()) {
            Applied::unchanged(format!("csf {version} already installed"))
        } else {
            let cmd = Cmd::new("sh").arg("install.sh").cwd(&dir);
            Self::mark(cx, "installing", &version)?;
            if conf_damaged(&cx.root) {
                // Kept for a look, out of the installer's way: it writes csf's default then.
                let aside = format!("{CSF_CONF}.damaged");
                fs::rename(cx.root.path(CSF_CONF), cx.root.path(&aside))
                    .with_context(|| format!("moving the damaged {CSF_CONF} to {aside}"))?;
                tracing::warn!(
                    "{CSF_CONF} was damaged (empty or no TESTING line): moved to {aside}"
                );
            }
            cx.runner
                .check(&cmd.timeout(std::time::Duration::from_secs(600)))
                .context("csf's install.sh failed")?;
            // The installer writes without fsync: its files reach the disk before the mark
            // says they are there, or a power cut soon after would leave them empty for good.
            nix::unistd::sync();
            Self::mark(cx, "installed", &version)?;
            Applied::changed(format!("installed csf {version}"))
        };
        // csftest first: a csf that cannot work must not cost the node the firewall it has.
        let warning = Self::csftest(cx)?;
        let stopped = Self::stop_rivals(cx)?;
        if !stopped.is_empty() {
            applied.changed = true;
            applied
                .message
                .push_str(&format!("; disabled {}", stopped.join(", ")));
        }
        if let Some(w) = warning {
            tracing::warn!("csftest.pl: {w}");
            applied
                .message
                .push_str(&format!("; warning from csftest: {w}"));
        }
        Ok(applied)
    }

    fn check(&self, cx: &Context) -> Result<Vec<Drift>> {
        // Drift is the state now, not as the run found it.
        let installed = |have: &str, message: String| {
            vec![Drift::new("csf", message).values("installed", Some(have.into()))]
        };
        Ok(match installed_version(&cx.root) {
            Some(_) => vec![],
            None if install_interrupted(&cx.root) => installed(
                "install interrupted",
                "csf's install was interrupted; apply runs it again".into(),
            ),
            None if conf_damaged(&cx.root) => installed(
                "csf.conf damaged",
                format!(
                    "{CSF_CONF} is damaged (empty or no TESTING line); apply installs csf again"
                ),
            ),
            // Under --root the install waits for first boot (see apply).
            None if !cx.live() => vec![],
            None => installed("not installed", "csf is not installed".into()),
        })
    }
}

/// The firewall's state for the report, from csf.conf and csf's disable flag.
pub(crate) fn firewall_state(root: &crate::root::Root) -> crate::outcome::Firewall {
    use crate::outcome::Firewall;
    let Ok(conf) = fs::read_to_string(root.path(CSF_CONF)) else {
        return Firewall::Off;
    };
    if root.path("/etc/csf/csf.disable").exists() {
        return Firewall::Off;
    }
    match conf::read_keys(&conf).get("TESTING").map(String::as_str) {
        Some("0") => Firewall::Enforcing,
        Some(_) => Firewall::Testing,
        None => Firewall::Unknown,
    }
}

/// TCP ports brickup itself needs once csf enforces: the report URL's, the csf URL's (repairs
/// may download again) and the package sources' (prerequisites, updates).
pub(crate) fn own_ports(cx: &Context) -> Vec<u16> {
    let mut urls = Vec::new();
    if let Some(r) = &cx.config.report {
        urls.push(r.url.as_str());
    }
    if let Some(c) = &cx.config.csf {
        urls.push(c.url.as_str());
    }
    let mut ports: Vec<u16> = urls
        .into_iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .filter(|u| u.scheme() != "file")
        .filter_map(|u| u.port_or_known_default())
        .collect();
    ports.extend(&cx.facts.mirror_ports);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The csf.conf values brickup owns, TESTING excepted (the enable sequence sets it).
pub fn policy(cx: &Context) -> BTreeMap<String, String> {
    let fw = &cx.config.firewall;
    let ports = |v: &[crate::config::Port]| v.iter().map(|p| p.get()).collect::<Vec<u16>>();
    let mn = ports(&fw.masternode());
    let mut tcp_in = cx.ssh_ports();
    tcp_in.extend(&mn);
    tcp_in.extend(ports(&fw.extra_tcp_in));
    let mut tcp_out = fw
        .tcp_out
        .as_deref()
        .map(ports)
        .unwrap_or_else(|| DEFAULT_TCP_OUT.to_vec());
    tcp_out.extend(&mn);
    for p in own_ports(cx) {
        if !tcp_out.contains(&p) {
            tcp_out.push(p);
        }
    }
    let udp_in = ports(&fw.extra_udp_in);
    let ipv6 = match fw.ipv6 {
        Ipv6Mode::On => true,
        Ipv6Mode::Off => false,
        Ipv6Mode::Auto => cx.facts.global_ipv6,
    };
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("TCP_IN", conf::port_list(&tcp_in));
    put("TCP_OUT", conf::port_list(&tcp_out));
    put("UDP_IN", conf::port_list(&udp_in));
    if let Some(u) = &fw.udp_out {
        put("UDP_OUT", conf::port_list(&ports(u)));
    }
    put("IPV6", if ipv6 { "1" } else { "0" }.into());
    if ipv6 {
        put("TCP6_IN", conf::port_list(&tcp_in));
        put("TCP6_OUT", conf::port_list(&tcp_out));
        put("UDP6_IN", conf::port_list(&udp_in));
        if let Some(u) = &fw.udp_out {
            put("UDP6_OUT", conf::port_list(&ports(u)));
        }
    }
    put(
        "AUTO_UPDATES",
        if fw.auto_updates { "1" } else { "0" }.into(),
    );
    put("RESTRICT_SYSLOG", fw.restrict_syslog.to_string());
    for (k, v) in LFD_DEFAULTS {
        put(k, v.to_string());
    }
    for (k, v) in &fw.settings {
        m.insert(k.clone(), v.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lfd blocks sshd offenders for an hour and never for good, unless firewall.settings says
    /// otherwise (csf's own defaults: permanent at the first trigger, and after four temporary).
    #[test]
    fn lfd_never_blocks_for_good_by_default() {
        let root = tempfile::tempdir().unwrap();
        let runner = crate::runner::RecordingRunner::new();
        let mut config = crate::config::parse(crate::config::EXAMPLE, Path::new("e.yaml")).unwrap();
        let cx = Context::new(crate::root::Root::new(root.path()), &config, &runner);
        let p = policy(&cx);
        assert_eq!(p["LF_SSHD_PERM"], "3600");
        assert_eq!(p["LF_PERMBLOCK"], "0");
        config
            .firewall
            .settings
            .insert("LF_SSHD_PERM".into(), "1".into());
        let cx = Context::new(crate::root::Root::new(root.path()), &config, &runner);
        assert_eq!(policy(&cx)["LF_SSHD_PERM"], "1", "the owner's choice wins");
    }

    #[test]
    fn a_damaged_csf_conf_is_one_without_its_testing_line() {
        let d = tempfile::tempdir().unwrap();
        let root = crate::root::Root::new(d.path());
        assert!(!conf_damaged(&root), "missing: the installer writes it");
        fs::create_dir_all(d.path().join("etc/csf")).unwrap();
        let conf = d.path().join("etc/csf/csf.conf");
        for (text, damaged) in [
            (&b""[..], true),
            (b"\0\0\0\0", true),
            (b"# TESTING = \"1\"\nTESTING_INTERVAL = \"5\"\n", true),
            (b"TESTING = \"0\"\n", false),
            (b"TESTING=\"1\"\n", false),
            (b"# caf\xe9\nTESTING = \"1\"\n", false),
        ] {
            fs::write(&conf, text).unwrap();
            assert_eq!(
                conf_damaged(&root),
                damaged,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn csftest_verdicts() {
        assert_eq!(
            parse_csftest("x\nRESULT: csf should function on this server\n").unwrap(),
            CsfTest::Ok
        );
        assert!(matches!(parse_csftest("RESULT: csf will function on this server but some features will not work due to some missing iptables modules [x]").unwrap(), CsfTest::Warn(_)));
        assert!(matches!(parse_csftest("RESULT: csf will not function on this server due to FATAL errors from missing modules [y]").unwrap(), CsfTest::Fatal(_)));
        assert!(parse_csftest("no verdict").is_err());
    }
}
