//! What a run needs to know about the host, gathered once after the config loads and before any
//! step changes anything; steps plan from the config and these facts.

use std::time::Duration;

use anyhow::Result;

use crate::engine::Context;

/// The host as found at the start of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Ports other than `ssh.port` on which sshd answers now. A port move keeps sshd (and every
    /// active firewall) on them until the whole run has succeeded, so no failure in between can
    /// leave the owner without a way in.
    pub old_ssh_ports: Vec<u16>,
    /// A global IPv6 address is configured (`firewall.ipv6: auto` turns csf's IPv6 on then).
    pub global_ipv6: bool,
    /// OS family and package tool (None: unsupported or unreadable; the packages step says why).
    pub os: Option<crate::packages::Os>,
}

impl Facts {
    /// Look at the host. Under a root other than `/` nothing is running to look at: no facts.
    pub fn gather(cx: &Context) -> Result<Facts> {
        let os = crate::packages::detect(&cx.root).ok();
        if !cx.live() {
            return Ok(Facts {
                os,
                ..Facts::default()
            });
        }
        let global_ipv6 = std::fs::read_to_string("/proc/net/if_inet6")
            .map(|t| crate::csf::has_global_ipv6(&t))
            .unwrap_or(false);
        Ok(Facts {
            old_ssh_ports: old_ssh_ports(cx),
            global_ipv6,
            os,
        })
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
