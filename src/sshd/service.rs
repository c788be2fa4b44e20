//! Validating and restarting sshd the right way: `sshd -t`, `sshd -T` against the intended
//! values, the `ssh`/`sshd` service name, `ssh.socket` activation (with or without Ubuntu's
//! `sshd-socket-generator`), SELinux port labels; then proof that the new port answers.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::{read_order, sshd_cmd, LockoutGuard, SSHD_CONFIG};
use crate::engine::Context;
use crate::fsops::{NewFile, Transaction};
use crate::runner::Cmd;

const SOCKET_OVERRIDE: &str = "/etc/systemd/system/ssh.socket.d/00-brickup-port.conf";
const GENERATORS: &[&str] = &[
    "/usr/lib/systemd/system-generators/sshd-socket-generator",
    "/lib/systemd/system-generators/sshd-socket-generator",
];

pub enum Verified {
    Yes,
    Deferred(String),
}

/// The `sshd -t` command plan shows.
pub fn validate_cmd(cx: &Context) -> Cmd {
    sshd_cmd(&cx.root)
        .unwrap_or_else(|| Cmd::new("/usr/sbin/sshd"))
        .args(["-t", "-f", SSHD_CONFIG])
}

fn test_spec(cx: &Context) -> String {
    format!("user={},host=localhost,addr=127.0.0.1", cx.config.ssh.user)
}

/// `sshd -T` for the configured user: keyword -> values (Port repeats).
fn effective(cx: &Context) -> Result<Option<BTreeMap<String, Vec<String>>>> {
    let Some(cmd) = sshd_cmd(&cx.root) else {
        return Ok(None);
    };
    // sshd refuses to run without its privilege separation directory.
    let run_sshd = cx.root.path("/run/sshd");
    if !run_sshd.exists() {
        std::fs::create_dir_all(&run_sshd)
            .with_context(|| format!("creating {}", run_sshd.display()))?;
    }
    let t = cx
        .runner
        .run(&cmd.clone().args(["-t", "-f", SSHD_CONFIG]))?;
    if !t.success() {
        if t.stderr.contains("no hostkeys available") {
            return Ok(None);
        }
        bail!(
            "`sshd -t` rejected the config: {}",
            crate::runner::tail(&t.stderr, &t.stdout)
        );
    }
    let out = cx
        .runner
        .check(&cmd.args(["-T", "-C", &test_spec(cx), "-f", SSHD_CONFIG]))?;
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

fn normalise(keyword: &str, value: &str) -> String {
    let v = value.to_ascii_lowercase();
    if keyword == "permitrootlogin" && v == "without-password" {
        return "prohibit-password".into();
    }
    v
}

/// (keyword, wanted, effective) for each owned setting sshd would not use as brickup wants.
fn mismatches(cx: &Context, eff: &BTreeMap<String, Vec<String>>) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let owned = super::owned_settings(cx);
    let mut ports: Vec<String> = owned
        .iter()
        .filter(|(k, _)| k == "Port")
        .map(|(_, v)| v.clone())
        .collect();
    ports.sort();
    let mut got_ports = eff.get("port").cloned().unwrap_or_default();
    got_ports.sort();
    if got_ports != ports {
        out.push(("port".into(), ports.join(","), got_ports.join(",")));
    }
    for (k, v) in owned {
        let k = k.to_ascii_lowercase();
        if k == "port" || k == "challengeresponseauthentication" {
            continue; // ports above; an alias sshd -T prints as kbdinteractiveauthentication.
        }
        let got: Vec<String> = eff.get(&k).cloned().unwrap_or_default();
        if got.first().map(|g| normalise(&k, g)) != Some(normalise(&k, &v)) {
            out.push((k, v, got.join(",")));
        }
    }
    out
}

/// sshd's ports as its current config and socket override say (before any change).
pub fn current_ports(cx: &Context) -> Vec<u16> {
    let mut ports: Vec<u16> = match effective(cx) {
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
    let over = std::fs::read_to_string(cx.root.path(SOCKET_OVERRIDE)).unwrap_or_default();
    ports.extend(
        over.lines()
            .filter_map(|l| l.trim().strip_prefix("ListenStream="))
            .filter_map(|v| v.rsplit(':').next()?.parse::<u16>().ok()),
    );
    ports
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
        "an unknown source".into()
    } else {
        found.join(", ")
    }
}

/// Check the candidate config with the target's own sshd; an override is a [`LockoutGuard`].
pub fn verify_effective(cx: &Context) -> Result<Verified> {
    let Some(eff) = effective(cx)? else {
        return Ok(Verified::Deferred(
            "sshd -t/-T checks deferred: no usable sshd under the root".into(),
        ));
    };
    if let Some((keyword, wanted, effective)) = mismatches(cx, &eff).into_iter().next() {
        let by = culprits(cx, &keyword, &wanted);
        return Err(LockoutGuard::Overridden {
            keyword,
            wanted,
            effective,
            by,
        }
        .into());
    }
    let akf = eff
        .get("authorizedkeysfile")
        .and_then(|v| v.first())
        .and_then(|v| v.split_whitespace().next().map(str::to_string));
    let ours = super::authorized_keys_file(&cx.root)?;
    if let Some(akf) = akf {
        if akf != ours {
            bail!(
                "sshd reads keys from {akf:?} but brickup resolved {ours:?} from the config files"
            );
        }
    }
    Ok(Verified::Yes)
}

/// Drift between the effective config and brickup's settings.
pub fn effective_drift(cx: &Context) -> Result<Vec<String>> {
    let Some(eff) = effective(cx)? else {
        return Ok(vec![]);
    };
    Ok(mismatches(cx, &eff)
        .into_iter()
        .map(|(k, want, got)| {
            format!(
                "sshd effective {k} is {got:?}, want {want:?} (set by {})",
                culprits(cx, &k, &want)
            )
        })
        .collect())
}

/// TCP ports in LISTEN state, from /proc/net/tcp and tcp6.
pub fn listening_ports() -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {f}")),
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == "0A" {
                if let Some(p) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
                {
                    ports.push(p);
                }
            }
        }
    }
    Ok(ports)
}

/// The SSH port not listening, or port 22 listening when it is neither the port nor kept.
pub fn listening_drift(port: u16, kept: &[u16]) -> Result<Vec<String>> {
    let ports = listening_ports()?;
    let mut drift = Vec::new();
    for p in std::iter::once(port).chain(kept.iter().copied()) {
        if !ports.contains(&p) {
            drift.push(format!("nothing is listening on the SSH port {p}"));
        }
    }
    if port != 22 && !kept.contains(&22) && ports.contains(&22) {
        drift.push("port 22 is still listening".into());
    }
    Ok(drift)
}

/// Wait for an SSH banner on 127.0.0.1:port.
pub fn answers(port: u16, within: Duration) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

fn systemctl(cx: &Context, args: &[&str]) -> Result<crate::runner::Output> {
    cx.runner
        .check(&Cmd::new("systemctl").args(args.iter().copied()))
}

fn unit_exists(cx: &Context, unit: &str) -> bool {
    crate::systemd::unit_exists(&cx.root, unit)
}

fn socket_active(cx: &Context) -> Result<bool> {
    if !unit_exists(cx, "ssh.socket") {
        return Ok(false);
    }
    Ok(crate::systemd::active_state(cx.runner, "ssh.socket")? == "active")
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
pub fn restart_if_needed(cx: &Context, tx: &mut Transaction, changed: bool) -> Result<()> {
    let port = cx.config.ssh.port.get();
    if !changed && listening_drift(port, cx.kept_ssh_ports())?.is_empty() {
        return Ok(());
    }
    label_port_for_selinux(cx, port)?;
    // Every active firewall accepts the new port before sshd moves to it.
    crate::firewall::open_port(cx, port)?;
    let socket = socket_active(cx)?;
    let proven = restart(cx, tx, socket, port)
        .context("restarting sshd")
        .and_then(|()| {
            if answers(port, Duration::from_secs(20)) {
                Ok(())
            } else {
                Err(LockoutGuard::NotListening { port }.into())
            }
        });
    let Err(e) = proven else {
        tracing::info!(port, "sshd answers on its new port");
        return close_old_ports(cx);
    };
    // Whatever failed, sshd must not stay down or on an unproven config: restore and restart.
    tracing::error!(port, "{e:#}; restoring the previous sshd config");
    let restored = tx
        .rollback()
        .and_then(|()| restart(cx, &mut Transaction::new(&cx.root), socket, 0));
    Err(match restored {
        Ok(()) => e.context("the previous sshd config was restored and sshd restarted"),
        Err(r) => e.context(format!(
            "restoring the previous sshd config and restarting sshd also failed: {r:#}"
        )),
    })
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

fn restart(cx: &Context, tx: &mut Transaction, socket: bool, port: u16) -> Result<()> {
    if socket {
        let generator = GENERATORS.iter().any(|g| cx.root.path(g).exists());
        if !generator && port != 0 {
            // Without the generator the socket unit owns the port: override its ListenStream.
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
        }
        systemctl(cx, &["daemon-reload"])?;
        // Each connection starts a fresh sshd that reads the new config, so the socket is only
        // restarted to move the port: a restart fails while connections (ssh@ instances) are open,
        // as when repairing over SSH. port 0 is the rollback, which always restarts.
        if port == 0 || !listening_drift(port, cx.kept_ssh_ports())?.is_empty() {
            systemctl(cx, &["restart", "ssh.socket"])?;
        }
    } else {
        let unit = if unit_exists(cx, "ssh.service") {
            "ssh"
        } else {
            "sshd"
        };
        systemctl(cx, &["restart", unit])?;
    }
    Ok(())
}
