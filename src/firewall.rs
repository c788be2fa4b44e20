//! The host firewalls a port move must not trip over: a csf that holds rules now, ufw
//! (ufw(8)) and firewalld (firewall-cmd(1)). The new SSH port is opened in each active one
//! *before* sshd moves to it; once the whole run has succeeded the old port's rule is removed
//! from ufw and firewalld (csf's TCP_IN is the firewall step's policy). Any other filter that
//! could drop the owner's packets on the new port is refused before the first change
//! ([`refuse_unmanaged`], judged in [`foreign`]).

mod foreign;

use anyhow::Result;

use crate::engine::{Context, Refused};
use crate::runner::Cmd;

/// Before any change, on the running machine: a port move must not cross a packet filter brickup
/// does not manage (csf's and ufw's rules are managed, and firewalld's table while it runs).
/// Refused, naming every such filter found, when sshd is to move; nothing else changes the path
/// the owner's packets take before csf enforces, and the login proof judges that.
pub(crate) fn refuse_unmanaged(cx: &Context) -> Result<()> {
    // Early at first boot sshd has not started: it would have served the image's port 22.
    let now: &[u16] = if cx.early {
        &[22]
    } else {
        &cx.facts.old_ssh_ports
    };
    if !cx.live() || now.is_empty() || now == [cx.config.ssh.port.get()] {
        return Ok(());
    }
    let mut found = Vec::new();
    // A csf holding rules reloads them with the new port before sshd moves: the backend its
    // `iptables` uses is csf's.
    let csf_backend = match crate::csf::holds_rules(cx)? {
        true => dump(cx, "iptables-save", &["--version"])?.map(|v| backend_of(&v)),
        false => None,
    };
    for (tool, what, backend) in [
        ("iptables-nft-save", "iptables (nft backend)", "nf_tables"),
        ("ip6tables-nft-save", "ip6tables (nft backend)", "nf_tables"),
        ("iptables-legacy-save", "iptables-legacy", "legacy"),
        ("ip6tables-legacy-save", "ip6tables-legacy", "legacy"),
    ] {
        if csf_backend.as_deref() == Some(backend) {
            continue;
        }
        let Some(dump) = dump(cx, tool, &[])? else {
            continue;
        };
        if foreign::iptables_owner(&dump).is_none() {
            if let Some(d) = foreign::iptables_drops(&dump) {
                found.push(format!("{what}: {d}"));
            }
        }
    }
    if let Some(json) = dump(cx, "nft", &["-j", "list", "ruleset"])? {
        let tables = foreign::nft_drops(&json, firewalld_active(cx)?)
            .map_err(|e| Refused::error("ssh.port", format!("nft -j list ruleset: {e}")))?;
        found.extend(tables);
    }
    if found.is_empty() {
        return Ok(());
    }
    let port = cx.config.ssh.port;
    Err(Refused::error(
        "ssh.port",
        format!(
            "moving sshd to port {port} crosses packet filters brickup does not manage: {}. \
             Open port {port} in them (or remove them) and rerun, or keep ssh.port at {:?}",
            found.join("; "),
            now
        ),
    ))
}

/// `nf_tables` or `legacy`, from `iptables-save --version` ("iptables-save v1.8.9 (nf_tables)").
fn backend_of(version: &str) -> String {
    let inner = version.rsplit_once('(').map_or("", |(_, b)| b);
    inner.trim().trim_end_matches(')').to_string()
}

/// `tool ARGS` of the root's own, when it has that tool; its failure refuses the run (an
/// unreadable filter is not an empty one).
fn dump(cx: &Context, tool: &str, args: &[&str]) -> Result<Option<String>> {
    let bin = ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .map(|d| format!("{d}/{tool}"))
        .find(|p| cx.root.path(p).symlink_metadata().is_ok());
    let Some(bin) = bin else {
        return Ok(None);
    };
    match cx.runner.check(&Cmd::new(&bin).args(args.iter().copied())) {
        Ok(o) => Ok(Some(o.stdout)),
        Err(e) => Err(Refused::error(
            "ssh.port",
            format!("could not read the packet filter's rules: {e:#}"),
        )),
    }
}

/// Open TCP `port` in every active firewall; names the firewalls changed.
pub(crate) fn open_port(cx: &Context, port: u16) -> Result<Vec<&'static str>> {
    let mut done = Vec::new();
    if !cx.live() {
        return Ok(done);
    }
    if crate::csf::open_port(cx, port)? {
        done.push("csf");
    }
    let rule = format!("{port}/tcp");
    if ufw_active(cx)? {
        cx.runner.check(&Cmd::new("ufw").args(["allow", &rule]))?;
        done.push("ufw");
    }
    if firewalld_active(cx)? {
        let add = format!("--add-port={rule}");
        cx.runner.check(&Cmd::new("firewall-cmd").arg(&add))?;
        cx.runner
            .check(&Cmd::new("firewall-cmd").args(["--permanent", &add]))?;
        done.push("firewalld");
    }
    if !done.is_empty() {
        tracing::info!(port, firewalls = ?done, "opened the new SSH port before moving sshd");
    }
    Ok(done)
}

/// Remove the rule for TCP `port` from ufw and firewalld when active.
pub(crate) fn close_port(cx: &Context, port: u16) -> Result<Vec<&'static str>> {
    let mut done = Vec::new();
    if !cx.live() {
        return Ok(done);
    }
    let rule = format!("{port}/tcp");
    if ufw_active(cx)? {
        cx.runner
            .check(&Cmd::new("ufw").args(["delete", "allow", &rule]))?;
        done.push("ufw");
    }
    if firewalld_active(cx)? {
        let remove = format!("--remove-port={rule}");
        cx.runner.check(&Cmd::new("firewall-cmd").arg(&remove))?;
        cx.runner
            .check(&Cmd::new("firewall-cmd").args(["--permanent", &remove]))?;
        done.push("firewalld");
    }
    Ok(done)
}

fn ufw_active(cx: &Context) -> Result<bool> {
    if !crate::systemd::unit_exists(&cx.root, "ufw.service")
        || !crate::systemd::is_active(cx.runner, "ufw.service")?
    {
        return Ok(false);
    }
    let status = cx.runner.run(&Cmd::new("ufw").arg("status"))?;
    Ok(status.stdout.lines().any(|l| l.trim() == "Status: active"))
}

fn firewalld_active(cx: &Context) -> Result<bool> {
    Ok(crate::systemd::unit_exists(&cx.root, "firewalld.service")
        && crate::systemd::is_active(cx.runner, "firewalld.service")?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backend_from_the_version_line() {
        assert_eq!(
            super::backend_of("iptables-save v1.8.9 (nf_tables)\n"),
            "nf_tables"
        );
        assert_eq!(super::backend_of("iptables-save v1.8.9 (legacy)"), "legacy");
        assert_eq!(super::backend_of("iptables-save v1.4.21"), "");
    }
}
