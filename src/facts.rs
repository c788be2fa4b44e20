//! What a run needs to know about the host, gathered once after the config loads and before any
//! step changes anything; steps plan from the config and these facts.

use std::time::Duration;

use anyhow::Result;

use crate::engine::Context;
use crate::sshd::crypto::OpensshVersion;

/// The host as found at the start of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Ports other than `ssh.port` on which sshd answers now. A port move keeps sshd (and every
    /// active firewall) on them until the whole run has succeeded, so no failure in between can
    /// leave the owner without a way in.
    pub old_ssh_ports: Vec<u16>,
    /// A global IPv6 address is configured (`firewall.ipv6: auto` turns csf's IPv6 on then).
    pub(crate) global_ipv6: bool,
    /// OS family and package tool (None: unsupported or unreadable; the packages step says why).
    pub(crate) os: Option<crate::packages::Os>,
    /// The target's OpenSSH (`sshd -V` of the root's own sshd): the SSH crypto is chosen by it.
    pub(crate) openssh: Option<OpensshVersion>,
}

impl Facts {
    /// Look at the host. Under a root other than `/` nothing is running to look at: only the
    /// installed software is read. Early at boot (before sshd first starts) no port is asked.
    pub(crate) fn gather(cx: &Context) -> Result<Facts> {
        let mut facts = Facts {
            openssh: openssh_version(cx),
            os: crate::packages::detect(&cx.root).ok(),
            ..Facts::default()
        };
        if cx.live() {
            facts.global_ipv6 = std::fs::read_to_string("/proc/net/if_inet6")
                .map(|t| crate::csf::has_global_ipv6(&t))
                .unwrap_or(false);
            if !cx.early {
                facts.old_ssh_ports = old_ssh_ports(cx);
            }
        }
        Ok(facts)
    }
}

/// `sshd -V` of the target's sshd (older releases print the version in their usage text).
fn openssh_version(cx: &Context) -> Option<OpensshVersion> {
    let cmd = crate::sshd::sshd_cmd(&cx.root)?;
    match cx.runner.run(&cmd.arg("-V")) {
        Ok(out) => OpensshVersion::parse(&format!("{}\n{}", out.stderr, out.stdout)),
        Err(e) => {
            tracing::warn!("asking sshd for its version: {e:#}");
            None
        }
    }
}

/// sshd's ports now (its effective config, the socket override, and the default 22) that answer
/// with an SSH banner, other than the configured one.
fn old_ssh_ports(cx: &Context) -> Vec<u16> {
    let wanted = cx.config.ssh.port.get();
    let mut candidates = crate::sshd::current_ports(cx);
    candidates.push(22);
    candidates.sort_unstable();
    candidates.dedup();
    candidates
        .into_iter()
        .filter(|p| *p != wanted)
        .filter(|p| crate::sshd::answers(*p, Duration::from_millis(500)))
        .collect()
}
