//! sshd's effective config as the root's own sshd computes it: `sshd -t` of the files (with a
//! throwaway host key before the real ones exist), then `sshd -T -C` for the connections brickup's
//! login proof and the owner make; and the ports sshd is configured on now. A reader of the host
//! for the facts and the sshd step: it imports no step.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Context as _, Result};

use super::files::{sshd_cmd, SSHD_CONFIG};
use crate::config::SshConfig;
use crate::root::Root;
use crate::runner::{Cmd, Runner};

pub(super) const SOCKET_OVERRIDE: &str = "/etc/systemd/system/ssh.socket.d/00-brickup-port.conf";

/// What sshd is asked with: the root and its runner, the config's ssh section, and the old
/// ports a port move keeps beside `ssh.port` (none outside an apply).
pub(crate) struct Probe<'a> {
    pub(crate) root: &'a Root,
    pub(crate) runner: &'a dyn Runner,
    pub(crate) ssh: &'a SshConfig,
    pub(crate) kept: &'a [u16],
}

/// The connections sshd -T is asked about (spec, client address): every port it will listen
/// on, from a local, a public IPv4 and a public IPv6 address (documentation ranges), and from
/// each of `ssh.owner_addresses` (its host name the address, as with sshd's `UseDNS no`), so
/// `Match Address`, `Match LocalPort` and `Match LocalAddress` blocks that apply to the owner
/// are seen.
pub(super) fn test_specs(probe: &Probe) -> Vec<(String, IpAddr)> {
    let user = &probe.ssh.user;
    let ports = std::iter::once(probe.ssh.port.get()).chain(probe.kept.iter().copied());
    let laddr = |a: &IpAddr| {
        if a.is_ipv4() {
            "192.0.2.7"
        } else {
            "2001:db8::1"
        }
    };
    ports
        .flat_map(|p| {
            let generic = [
                ("127.0.0.1", "127.0.0.1"),
                ("203.0.113.7", "192.0.2.7"),
                ("2001:db8::7", "2001:db8::1"),
            ]
            .map(|(addr, laddr)| {
                (
                    format!("user={user},host=brickup-check,addr={addr},laddr={laddr},lport={p}"),
                    addr.parse().expect("a literal address"),
                )
            });
            let owners = probe.ssh.owner_addresses.iter().map(move |a| {
                (
                    format!("user={user},host={a},addr={a},laddr={},lport={p}", laddr(a)),
                    *a,
                )
            });
            generic.into_iter().chain(owners).collect::<Vec<_>>()
        })
        .collect()
}

/// `sshd -t` of the candidate config, then `sshd -T -C SPEC`: keyword -> values (Port repeats).
/// None when the root has no usable sshd.
pub(super) fn effective(p: &Probe) -> Result<Option<BTreeMap<String, Vec<String>>>> {
    let (spec, _) = test_specs(p).swap_remove(0);
    effective_for(p, &spec)
}

/// Where the throwaway host key for checking a config lives (inside the root, in sshd's own
/// runtime directory, which is not kept across boots).
const CHECK_HOST_KEY: &str = "/run/sshd/brickup-check-hostkey";

/// An ed25519 key made with the target's own ssh-keygen for `sshd -t -h`; None without one.
pub(super) fn throwaway_host_key(root: &Root, runner: &dyn Runner) -> Result<Option<&'static str>> {
    let keygen = ["/usr/bin/ssh-keygen", "/bin/ssh-keygen"]
        .into_iter()
        .find(|b| root.path(b).exists());
    let Some(keygen) = keygen else {
        return Ok(None);
    };
    if !root.path(CHECK_HOST_KEY).exists() {
        runner.check(
            &Cmd::new(keygen)
                .chroot(root.dir())
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "brickup-check", "-f"])
                .arg(CHECK_HOST_KEY),
        )?;
    }
    Ok(Some(CHECK_HOST_KEY))
}

pub(super) fn effective_for(
    p: &Probe,
    spec: &str,
) -> Result<Option<BTreeMap<String, Vec<String>>>> {
    let Some(cmd) = sshd_cmd(p.root) else {
        return Ok(None);
    };
    // sshd refuses to run without its privilege separation directory.
    let run_sshd = p.root.path("/run/sshd");
    if !run_sshd.exists() {
        std::fs::create_dir_all(&run_sshd)
            .with_context(|| format!("creating {}", run_sshd.display()))?;
    }
    let mut t = p.runner.run(&cmd.clone().args(["-t", "-f", SSHD_CONFIG]))?;
    // Before its host keys exist (early at first boot, or an image) sshd cannot check anything;
    // a throwaway key lets it judge the candidate config all the same, since a config sshd
    // rejects would keep it from starting at all.
    let mut cmd = cmd;
    if !t.success() && t.stderr.contains("no hostkeys available") {
        let Some(key) = throwaway_host_key(p.root, p.runner)? else {
            return Ok(None);
        };
        cmd = cmd.args(["-h", key]);
        t = p.runner.run(&cmd.clone().args(["-t", "-f", SSHD_CONFIG]))?;
    }
    if !t.success() {
        bail!(
            "`sshd -t` rejected the config: {}",
            crate::runner::tail(&t.stderr, &t.stdout)
        );
    }
    let out = p
        .runner
        .check(&cmd.args(["-T", "-C", spec, "-f", SSHD_CONFIG]))?;
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.stdout.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            map.entry(k.to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    Ok(Some(map))
}

/// sshd's ports as its current config and socket override say (before any change).
pub(crate) fn current_ports(p: &Probe) -> Vec<u16> {
    let mut ports: Vec<u16> = match effective(p) {
        Ok(Some(eff)) => eff
            .get("port")
            .into_iter()
            .flatten()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Ok(None) => vec![],
        Err(e) => {
            tracing::warn!("reading sshd's current ports: {e:#}");
            vec![]
        }
    };
    let over = std::fs::read_to_string(p.root.path(SOCKET_OVERRIDE)).unwrap_or_default();
    ports.extend(
        over.lines()
            .filter_map(|l| l.trim().strip_prefix("ListenStream="))
            .filter_map(|v| v.rsplit(':').next()?.parse::<u16>().ok()),
    );
    ports
}
