//! The host firewalls a port move must not trip over: a csf that holds rules now, ufw
//! (ufw(8)) and firewalld (firewall-cmd(1)). The new SSH port is opened in each active one
//! *before* sshd moves to it; once the whole run has succeeded the old port's rule is removed
//! from ufw and firewalld (csf's TCP_IN is the firewall step's policy).

use anyhow::Result;

use crate::engine::Context;
use crate::runner::Cmd;

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
        || crate::systemd::active_state(cx.runner, "ufw.service")? != "active"
    {
        return Ok(false);
    }
    let status = cx.runner.run(&Cmd::new("ufw").arg("status"))?;
    Ok(status.stdout.lines().any(|l| l.trim() == "Status: active"))
}

fn firewalld_active(cx: &Context) -> Result<bool> {
    Ok(crate::systemd::unit_exists(&cx.root, "firewalld.service")
        && crate::systemd::active_state(cx.runner, "firewalld.service")? == "active")
}
