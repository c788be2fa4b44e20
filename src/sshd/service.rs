//! Validating and restarting sshd the right way: `sshd -t`, `sshd -T` against the intended
//! values, the `ssh`/`sshd` service name, `ssh.socket` activation (with or without Ubuntu's
//! `sshd-socket-generator`), SELinux port labels; then proof that the new port answers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::effective::{effective, effective_for, test_specs, Probe, SOCKET_OVERRIDE};
use super::{read_order, sshd_cmd, LockoutGuard, SSHD_CONFIG};
use crate::engine::{Context, Drift};
use crate::fsops::{NewFile, Transaction};
use crate::ports::{answers, listening_ports};
use crate::runner::Cmd;

const GENERATORS: &[&str] = &[
    "/usr/lib/systemd/system-generators/sshd-socket-generator",
    "/lib/systemd/system-generators/sshd-socket-generator",
];

/// What sshd's effective config is judged with, from the run's context.
pub(super) fn probe<'a>(cx: &'a Context) -> Probe<'a> {
    Probe {
        root: &cx.root,
        runner: cx.runner,
        ssh: &cx.config.ssh,
        kept: cx.kept_ssh_ports(),
    }
}

pub(crate) enum Verified {
    Yes,
    Deferred(String),
}

/// The `sshd -t` command plan shows.
pub(crate) fn validate_cmd(cx: &Context) -> Cmd {
    sshd_cmd(&cx.root)
        .unwrap_or_else(|| Cmd::new("/usr/sbin/sshd"))
        .args(["-t", "-f", SSHD_CONFIG])
}

fn normalise(keyword: &str, value: &str) -> String {
    let v = value.to_ascii_lowercase();
    if keyword == "permitrootlogin" && v == "without-password" {
        return "prohibit-password".into();
    }
    v
}

/// One keyword sshd -T does not show as brickup wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub(crate) keyword: String,
    pub(crate) wanted: String,
    pub(crate) effective: String,
    /// An owned keyword (the owner's way in depends on it), not one of brickup's defaults.
    pub(crate) owned: bool,
}

/// Keywords sshd -T prints once per value: compared as sets.
const MULTI: &[&str] = &["port", "hostkey"];

/// Each setting brickup wants (owned ones and its defaults) that sshd would not use as wanted.
fn mismatches(cx: &Context, eff: &BTreeMap<String, Vec<String>>) -> Vec<Mismatch> {
    let owned = super::owned_settings(cx);
    let n_owned = owned.len();
    let wanted: Vec<(usize, String, String)> = owned
        .into_iter()
        .chain(super::defaults(cx))
        .enumerate()
        .map(|(i, (k, v))| (i, k.to_ascii_lowercase(), v))
        .collect();
    let mut out = Vec::new();
    for multi in MULTI {
        let mut want: Vec<String> = wanted
            .iter()
            .filter(|w| w.1 == *multi)
            .map(|w| normalise(multi, &w.2))
            .collect();
        if want.is_empty() {
            continue;
        }
        let mut got: Vec<String> = eff
            .get(*multi)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|g| normalise(multi, g))
            .collect();
        want.sort();
        got.sort();
        if got != want {
            let owned = wanted.iter().any(|w| w.1 == *multi && w.0 < n_owned);
            out.push(Mismatch {
                keyword: multi.to_string(),
                wanted: want.join(","),
                effective: got.join(","),
                owned,
            });
        }
    }
    for (i, k, v) in wanted {
        if MULTI.contains(&k.as_str()) || k == "challengeresponseauthentication" {
            continue; // above; an alias sshd -T prints as kbdinteractiveauthentication.
        }
        let got: Vec<String> = eff.get(&k).cloned().unwrap_or_default();
        if got.first().map(|g| normalise(&k, g)) != Some(normalise(&k, &v)) {
            out.push(Mismatch {
                keyword: k,
                wanted: v,
                effective: got.join(","),
                owned: i < n_owned,
            });
        }
    }
    out
}

/// The files (file:line) that set `keyword` to something other than `wanted`.
fn culprits(cx: &Context, keyword: &str, wanted: &str) -> String {
    let found: Vec<String> = read_order(&cx.root)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| {
            d.keyword == keyword && normalise(keyword, &d.value) != normalise(keyword, wanted)
        })
        .map(|d| {
            format!(
                "{}:{}{}",
                d.file.display(),
                d.line,
                if d.in_match {
                    " (in a Match block)"
                } else {
                    ""
                }
            )
        })
        .collect();
    if found.is_empty() {
        // sshd -T shows sshd's own default for a keyword no file sets.
        "no config file (sshd's compiled-in default, or an -o on its command line)".into()
    } else {
        found.join(", ")
    }
}

/// Check the candidate config with the target's own sshd, for every connection of
/// [`test_specs`]: brickup's values win, the user may log in, and a configured key is usable in
/// the file(s) sshd reads for the user. Anything else is a [`LockoutGuard`].
pub(crate) fn verify_effective(cx: &Context) -> Result<Verified> {
    if sshd_cmd(&cx.root).is_none() {
        // No sshd to ask: the candidate files, read as sshd would, are the next best truth.
        super::guard_key_usable(cx, &[super::authorized_keys_file(&cx.root)?])?;
        return Ok(Verified::Deferred(
            "sshd -t/-T checks deferred: no usable sshd under the root".into(),
        ));
    }
    // The public generic connections' configs of the current port, by family: what the login
    // proof, connecting from an address no Match names, is served.
    let mut baseline: Vec<(bool, BTreeMap<String, Vec<String>>)> = Vec::new();
    let p = probe(cx);
    for (spec, addr) in test_specs(&p) {
        let Some(eff) = effective_for(&p, &spec)? else {
            super::guard_key_usable(cx, &[super::authorized_keys_file(&cx.root)?])?;
            return Ok(Verified::Deferred(
                "sshd -t/-T checks deferred: the root's sshd has no host keys".into(),
            ));
        };
        let (owned, defaults): (Vec<Mismatch>, Vec<Mismatch>) =
            mismatches(cx, &eff).into_iter().partition(|m| m.owned);
        if let Some(m) = owned.into_iter().next() {
            let by = culprits(cx, &m.keyword, &m.wanted);
            return Err(LockoutGuard::Overridden {
                keyword: m.keyword,
                wanted: m.wanted,
                effective: m.effective,
                by: format!("{by} (for {spec})"),
            }
            .into());
        }
        // A default another file overrides is not a lockout: `check` reports it as drift.
        for m in defaults {
            tracing::warn!(
                "sshd would use {} {:?}, not brickup's default {:?} (set by {}, for {spec})",
                m.keyword,
                m.effective,
                m.wanted,
                culprits(cx, &m.keyword, &m.wanted)
            );
        }
        user_allowed(cx, &eff, addr).with_context(|| format!("sshd -T -C {spec}"))?;
        let files: Vec<String> = eff
            .get("authorizedkeysfile")
            .into_iter()
            .flatten()
            .flat_map(|v| v.split_whitespace().map(str::to_string))
            .collect();
        super::guard_key_usable(cx, &files).with_context(|| format!("sshd -T -C {spec}"))?;
        if spec.contains(",host=brickup-check,") {
            // Each port's public generic connections come before its owner connections.
            if !addr.is_loopback() {
                baseline.retain(|(v4, _)| *v4 != addr.is_ipv4());
                baseline.push((addr.is_ipv4(), eff));
            }
        } else if let Some((_, base)) = baseline.iter().find(|(v4, _)| *v4 == addr.is_ipv4()) {
            owner_served_as_proof(base, &eff, addr)
                .with_context(|| format!("sshd -T -C {spec}"))?;
        }
    }
    Ok(Verified::Yes)
}

/// Keywords whose value cannot keep a key login from opening a session: a `Match Address` may
/// set them for the owner's address differently from what the login proof was served.
const HARMLESS_PER_ADDRESS: &[&str] = &[
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "banner",
    "loglevel",
    "x11forwarding",
    "allowtcpforwarding",
    "allowagentforwarding",
    "allowstreamlocalforwarding",
    "gatewayports",
    "permittunnel",
    "permitopen",
    "permitlisten",
    "clientaliveinterval",
    "clientalivecountmax",
    "printmotd",
    "printlastlog",
];

/// The owner's address (one of `ssh.owner_addresses`) is served the config the login proof
/// proved, but for [`HARMLESS_PER_ADDRESS`]: otherwise a `Match Address` block (a ForceCommand,
/// PubkeyAuthentication no, another AuthorizedKeysFile) could refuse the owner while the proof,
/// from its own namespace, passes.
fn owner_served_as_proof(
    proof: &BTreeMap<String, Vec<String>>,
    owner: &BTreeMap<String, Vec<String>>,
    addr: IpAddr,
) -> Result<()> {
    let keys: std::collections::BTreeSet<&String> = proof.keys().chain(owner.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| !HARMLESS_PER_ADDRESS.contains(&k.as_str()) && proof.get(*k) != owner.get(*k))
        .map(|k| {
            let show = |m: &BTreeMap<String, Vec<String>>| {
                m.get(k).map_or("(unset)".to_string(), |v| v.join(" "))
            };
            format!("{k} {} (the proof had {})", show(owner), show(proof))
        })
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    bail!(
        "sshd serves your address {addr} (ssh.owner_addresses) another config than the one \
         brickup's login proof proves: {}; a Match block in sshd_config makes the difference",
        differ.join("; ")
    )
}

/// AllowUsers/DenyUsers must let the configured user in from `addr`, as sshd matches them
/// (src/patterns.rs: `user@host` entries with address lists and CIDR). Without
/// `ssh.owner_addresses`, `user@host` entries were refused in the preflight.
fn user_allowed(cx: &Context, eff: &BTreeMap<String, Vec<String>>, addr: IpAddr) -> Result<()> {
    let user = &cx.config.ssh.user;
    // A generic connection's address is no one's: entries by address are judged for the owner's
    // addresses (and by the proof), not for a documentation range.
    let generic = !cx.config.ssh.owner_addresses.contains(&addr);
    let list = |key: &str| -> Vec<String> {
        let entries = eff.get(key).into_iter().flatten();
        entries
            .flat_map(|v| v.split_whitespace())
            .filter(|e| !(generic && e.contains('@')))
            .map(str::to_string)
            .collect()
    };
    match crate::patterns::admits(user, addr, &list("allowusers"), &list("denyusers")) {
        Ok(true) => Ok(()),
        Ok(false) => Err(LockoutGuard::UserNotAllowed { user: user.clone() }.into()),
        Err(e) => bail!("sshd would refuse to run: {e}"),
    }
}

/// Drift between the effective config and brickup's settings.
pub(crate) fn effective_drift(cx: &Context) -> Result<Vec<Drift>> {
    let Some(eff) = effective(&probe(cx))? else {
        return Ok(vec![]);
    };
    Ok(mismatches(cx, &eff)
        .into_iter()
        .map(|m| {
            let by = culprits(cx, &m.keyword, &m.wanted);
            Drift::new(
                format!("sshd {}", m.keyword),
                format!(
                    "sshd effective {} is {:?}, want {:?} (set by {by})",
                    m.keyword, m.effective, m.wanted
                ),
            )
            .values(m.wanted, Some(m.effective))
            .source(by)
        })
        .collect())
}

/// The SSH port not listening, or port 22 listening when it is neither the port nor kept.
pub(crate) fn listening_drift(port: u16, kept: &[u16]) -> Result<Vec<Drift>> {
    let ports = listening_ports()?;
    let mut drift = Vec::new();
    for p in std::iter::once(port).chain(kept.iter().copied()) {
        if !ports.contains(&p) {
            drift.push(
                Drift::new(
                    format!("sshd port {p}"),
                    format!("nothing is listening on the SSH port {p}"),
                )
                .values("listening", Some("not listening".into())),
            );
        }
    }
    if port != 22 && !kept.contains(&22) && ports.contains(&22) {
        drift.push(
            Drift::new("sshd port 22", "port 22 is still listening")
                .values("not listening", Some("listening".into())),
        );
    }
    Ok(drift)
}

fn systemctl(cx: &Context, args: &[&str]) -> Result<crate::runner::Output> {
    cx.runner
        .check(&Cmd::new("systemctl").args(args.iter().copied()))
}

fn label_port_for_selinux(cx: &Context, port: u16) -> Result<()> {
    if port == 22 || !cx.root.path("/sys/fs/selinux/enforce").exists() {
        return Ok(());
    }
    let p = port.to_string();
    let semanage =
        |op: &str| Cmd::new("semanage").args(["port", op, "-t", "ssh_port_t", "-p", "tcp", &p]);
    let add = cx.runner.run(&semanage("-a"))?;
    if add.success() {
        return Ok(());
    }
    if add.stderr.contains("already defined") {
        cx.runner.check(&semanage("-m"))?;
        return Ok(());
    }
    bail!("SELinux: labelling port {port} ssh_port_t failed (install policycoreutils-python-utils): {}", crate::runner::tail(&add.stderr, &add.stdout))
}

/// Restart sshd when its config changed or it is not on the wanted port; prove it answers.
pub(crate) fn restart_if_needed(cx: &Context, tx: &mut Transaction, changed: bool) -> Result<()> {
    let port = cx.config.ssh.port.get();
    if cx.early {
        return prepare_first_start(cx, tx, port);
    }
    if !changed && listening_drift(port, cx.kept_ssh_ports())?.is_empty() {
        return Ok(());
    }
    label_port_for_selinux(cx, port)?;
    // Every active firewall accepts the new port before sshd moves to it.
    crate::firewall::open_port(cx, port)?;
    let socket = cx.facts.sshd_socket()?;
    if socket {
        write_socket_override(cx, tx, port)?;
    }
    // From here on sshd may be down or on an unproven config: a failure is marked so that, once
    // the engine has restored the files, sshd is started again on them (`recover`).
    restart(cx, socket, Some(port))
        .context("restarting sshd")
        .context(Restarted)?;
    if !answers(port, Duration::from_secs(20)) {
        return Err(anyhow::Error::from(LockoutGuard::NotListening { port }).context(Restarted));
    }
    // An answer is not a way in: the owner's login, through the host's filters, is the proof.
    crate::login::prove(cx, port, &crate::login::families(cx)).context(Restarted)?;
    close_old_ports(cx)
}

/// `firstboot --early`, before sshd first starts: never a restart (this runs ordered before
/// ssh.service, so a systemctl job for it would wait on us). What the first start needs is
/// prepared instead: the SELinux port label, and an enabled ssh.socket's port (its override, or
/// Ubuntu's generator) loaded with a daemon-reload; then the owner's login is proven on the
/// candidate config (src/sshd/first_start.rs).
fn prepare_first_start(cx: &Context, tx: &mut Transaction, port: u16) -> Result<()> {
    label_port_for_selinux(cx, port)?;
    if cx.facts.sshd_socket()? {
        write_socket_override(cx, tx, port)?;
        systemctl(cx, &["daemon-reload"])?;
    }
    // No old port to fall back on: the candidate is proven by a throwaway sshd before the real
    // one first starts on it.
    if cx.live() {
        super::first_start::prove(cx, port)?;
    }
    Ok(())
}

/// Marks a failure after sshd was (being) restarted with the candidate config.
#[derive(Debug)]
pub(crate) struct Restarted;

impl std::fmt::Display for Restarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sshd was restarted with the new config")
    }
}

/// After the engine restored sshd's files for a failure marked [`Restarted`]: start sshd on
/// them again, so it is never left down or on the unproven config. None when nothing was needed.
pub(crate) fn recover(cx: &Context, error: &anyhow::Error) -> Result<Option<String>> {
    if error.downcast_ref::<Restarted>().is_none() || !cx.live() {
        return Ok(None);
    }
    tracing::error!("{error:#}; restarting sshd on the restored config");
    // The socket model as found before the run: a failed socket restart may have left ssh.socket
    // failed, and it is still the socket that must come back.
    restart(cx, cx.facts.sshd_socket()?, None)
        .context("restoring the previous sshd config and restarting sshd also failed")?;
    Ok(Some(
        "the previous sshd config was restored and sshd restarted".into(),
    ))
}

/// Without Ubuntu's generator the socket unit owns the port: override its ListenStream.
fn write_socket_override(cx: &Context, tx: &mut Transaction, port: u16) -> Result<()> {
    if GENERATORS.iter().any(|g| cx.root.path(g).exists()) {
        return Ok(());
    }
    let listen: String = std::iter::once(port)
        .chain(cx.kept_ssh_ports().iter().copied())
        .map(|p| format!("ListenStream={p}\n"))
        .collect();
    let text = format!("# Written by brickup: sshd's port lives in the socket unit here.\n[Socket]\nListenStream=\n{listen}");
    tx.write(
        Path::new(SOCKET_OVERRIDE),
        text.as_bytes(),
        NewFile::mode(0o644),
    )?;
    Ok(())
}

/// The last pass of a port move: sshd left the old ports, so ufw/firewalld drop their rules.
fn close_old_ports(cx: &Context) -> Result<()> {
    if cx.keep_old_ports {
        return Ok(());
    }
    for p in &cx.facts.old_ssh_ports {
        let closed = crate::firewall::close_port(cx, *p)?;
        if !closed.is_empty() {
            tracing::info!(port = p, firewalls = ?closed, "closed the old SSH port");
        }
    }
    Ok(())
}

/// Restart sshd on its config as written: moving to `port`, or (None) back on a restored one.
///
/// Socket activation: Debian's and Ubuntu's `ssh.socket` are `Accept=no`, so the first connection
/// starts `ssh.service`, which then holds the listening sockets and the config it read. A port
/// move stops it (its `KillMode=process` keeps open sessions alive) so the socket can bind the
/// new set; a config change alone restarts it. With `Accept=yes` no `ssh.service` runs and each
/// connection's sshd reads the config afresh.
fn restart(cx: &Context, socket: bool, port: Option<u16>) -> Result<()> {
    if !socket {
        systemctl(cx, &["restart", cx.facts.sshd_service])?;
        return Ok(());
    }
    systemctl(cx, &["daemon-reload"])?;
    let moves = match port {
        Some(p) => !listening_drift(p, cx.kept_ssh_ports())?.is_empty(),
        None => true,
    };
    // Whether ssh.service runs now is a live read: the restarts change it.
    let listener =
        cx.facts.sshd_service == "ssh" && crate::systemd::is_active(cx.runner, "ssh.service")?;
    if moves {
        if listener {
            systemctl(cx, &["stop", "ssh.service"])?;
        }
        systemctl(cx, &["restart", "ssh.socket"])?;
    } else if listener {
        systemctl(cx, &["restart", "ssh.service"])?;
    }
    Ok(())
}
