//! Proof that the owner can log in: a real `ssh` login through the real sshd, as `ssh.user`, with
//! a throwaway key of the owner's key type placed beside the owner's key, from a short-lived
//! network namespace joined to the host by a veth pair, to the host's own address. Packets from
//! there enter the host on an interface, cross its INPUT filters (and the replies its OUTPUT
//! filters) and reach whatever sshd listens on that address, as the owner's do; loopback would
//! skip the filters and reach a loopback-only sshd. References: sshd(8) AUTHORIZED_KEYS FILE
//! FORMAT, ip-netns(8), veth(4).
//!
//! The throwaway key: its private half lives in a 0700 directory on `/run` (a tmpfs) and is
//! removed with it; its public line carries `from="<the namespace's addresses>"` (usable from no
//! other address) and the comment [`MARK`], and is added and taken out again in one
//! [`Transaction`] that is always rolled back. A line a crash left behind is recognised by that
//! comment and removed by the next run's key step ([`without_proof_lines`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};

use crate::authorized_keys::{expand_keys_file, has_usable_key, tree, PublicKey};
use crate::engine::Context;
use crate::fsops::{read_user_file, Transaction};
use crate::runner::Cmd;

/// The comment of every throwaway key line.
pub(crate) const MARK: &str = "brickup-login-proof";
/// What the proof's remote command prints first; the user name follows on the next line.
const OK: &str = "brickup-login-ok";
const RUN_DIR: &str = "/run/brickup";
const NETNS_PREFIX: &str = "brickup-proof-";
/// The host keys whose public halves the client pins (the ones brickup serves).
const HOST_KEY_PUBS: &[&str] = &[
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_rsa_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
];

/// Address families a proof logs in over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// The login failed: what the client saw and what sshd logged about it.
#[derive(Debug, thiserror::Error)]
#[error("the owner's login was not proven: {user}@{addr} port {port} from a network namespace: {client}{}", sshd_says(.sshd_log))]
pub(crate) struct NotProven {
    pub(crate) user: String,
    pub(crate) addr: String,
    pub(crate) port: u16,
    pub(crate) client: String,
    pub(crate) sshd_log: Vec<String>,
}

fn sshd_says(lines: &[String]) -> String {
    if lines.is_empty() {
        "; sshd logged nothing about it".into()
    } else {
        format!("; sshd: {}", lines.join(" | "))
    }
}

/// `text` without the lines of throwaway keys (a proof a crash interrupted left them).
pub(crate) fn without_proof_lines(text: &str) -> String {
    if !text.lines().any(is_proof_line) {
        return text.to_string();
    }
    let mut out: String = text
        .lines()
        .filter(|l| !is_proof_line(l))
        .collect::<Vec<_>>()
        .join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn is_proof_line(line: &str) -> bool {
    line.split_whitespace().last() == Some(MARK)
}

/// The families a proof after an sshd restart or in `check` logs in over: IPv4, and IPv6 when the
/// host has a global IPv6 address and `firewall.ipv6` is not off (csf then serves it; csf's own
/// enable proves what csf.conf's IPV6 says).
pub(crate) fn families(cx: &Context) -> Vec<Family> {
    let v6 = cx.facts.global_ipv6 && cx.config.firewall.ipv6 != crate::config::Ipv6Mode::Off;
    match v6 {
        true => vec![Family::V4, Family::V6],
        false => vec![Family::V4],
    }
}

/// Log in as `ssh.user` on `port` over each family; Ok(what was proven). Only on the running
/// machine; nothing is changed when it returns, whatever it returns.
pub(crate) fn prove(cx: &Context, port: u16, families: &[Family]) -> Result<String> {
    prove_pinned(cx, port, families, HOST_KEY_PUBS)
}

/// [`prove`], the client pinning the host keys whose public halves are the files `host_keys`
/// (the early run's throwaway sshd serves a throwaway key).
pub(crate) fn prove_pinned(
    cx: &Context,
    port: u16,
    families: &[Family],
    host_keys: &[&str],
) -> Result<String> {
    let Some(owner) = cx
        .config
        .ssh
        .authorized_keys
        .iter()
        .find_map(|k| PublicKey::parse(k).ok())
    else {
        return Ok("no key configured: the login cannot be proven".into());
    };
    let user = cx.facts.user()?;
    let keys_file = expand_keys_file(cx.facts.authorized_keys_file()?, user);
    let started = SystemTime::now();
    let ns = Netns::up(cx, families)?;
    let work = WorkDir::new(cx)?;
    let key = work.keygen(cx, &owner.kind)?;
    let mut tx = Transaction::new(&cx.root);
    let result = add_line(cx, &mut tx, &keys_file, &ns, &key)
        .and_then(|()| login_all(cx, &ns, &work, port, host_keys, started));
    let restored = tx
        .rollback()
        .context("removing the throwaway key line from authorized_keys");
    let proven = result?;
    restored?;
    Ok(proven)
}

fn login_all(
    cx: &Context,
    ns: &Netns,
    work: &WorkDir,
    port: u16,
    host_keys: &[&str],
    started: SystemTime,
) -> Result<String> {
    let user = &cx.config.ssh.user;
    let mut proven = Vec::new();
    for (family, addr) in &ns.targets {
        let pinned = work.pin_host_keys(cx, host_keys, addr, port)?;
        let out = cx
            .runner
            .run(&ssh_cmd(ns, work, pinned, user, addr, port))?;
        let mut lines = out.stdout.lines();
        if out.success() && lines.next() == Some(OK) && lines.next() == Some(user.as_str()) {
            proven.push(format!("{family:?} {addr}"));
            continue;
        }
        let client = if out.success() {
            format!("the session printed {:?}, not the proof", out.stdout.trim())
        } else {
            crate::runner::tail(&out.stderr, &out.stdout)
        };
        return Err(NotProven {
            user: user.clone(),
            addr: addr.clone(),
            port,
            client,
            sshd_log: {
                // syslog writes a moment after sshd sends it.
                std::thread::sleep(Duration::from_millis(500));
                sshd_log(cx, ns.sources(), started)
            },
        }
        .into());
    }
    let ms = started.elapsed().map_or(0, |d| d.as_millis());
    tracing::info!(
        port,
        "the owner's login is proven in {ms} ms: {}",
        proven.join(", ")
    );
    Ok(format!(
        "a key login as {user} on port {port} proven over {}",
        proven.join(", ")
    ))
}

fn ssh_cmd(ns: &Netns, work: &WorkDir, pinned: bool, user: &str, addr: &str, port: u16) -> Cmd {
    let opt = |o: String| ["-o".to_string(), o];
    let known = work.real.join("known_hosts");
    let strict = if pinned { "yes" } else { "no" };
    Cmd::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .args(["--", "ssh", "-F", "/dev/null", "-T", "-i"])
        .arg(work.real.join("key").display().to_string())
        .args(["-p", &port.to_string()])
        .args(opt("BatchMode=yes".into()))
        .args(opt("IdentitiesOnly=yes".into()))
        .args(opt("IdentityAgent=none".into()))
        .args(opt("ConnectTimeout=15".into()))
        .args(opt("ServerAliveInterval=5".into()))
        .args(opt("LogLevel=ERROR".into()))
        .args(opt("GlobalKnownHostsFile=/dev/null".into()))
        .args(opt(format!("UserKnownHostsFile={}", known.display())))
        .args(opt(format!("StrictHostKeyChecking={strict}")))
        .arg(format!("{user}@{addr}"))
        .arg(format!("echo {OK}; id -un"))
        .timeout(Duration::from_secs(60))
}

/// The throwaway line beside the owner's key, in the file where sshd reads the owner's key. The
/// owner's key must be usable there first: the throwaway key alone would prove nothing.
fn add_line(cx: &Context, tx: &mut Transaction, path: &Path, ns: &Netns, key: &str) -> Result<()> {
    let user = cx.facts.user()?;
    let tree = tree(path, user);
    let file = read_user_file(&cx.root, &tree, path)?;
    let text = file
        .as_ref()
        .map(|f| String::from_utf8_lossy(&f.content).into_owned())
        .unwrap_or_default();
    if !has_usable_key(&text, &cx.config.ssh.authorized_keys) {
        bail!(
            "no configured key is usable in {}, the file the owner's key goes to",
            path.display()
        );
    }
    let mut new = without_proof_lines(&text);
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&format!("from=\"{}\" {key}\n", ns.sources().join(",")));
    let mode = file.map_or(0o600, |f| f.mode & 0o7777);
    tx.write_user_file(&tree, path, new.as_bytes(), mode)?;
    Ok(())
}

/// The 0700 directory on /run holding the throwaway key and the pinned host keys. The proof runs
/// only on the running machine, where the root is `/`: commands get the same path.
struct WorkDir {
    real: PathBuf,
}

impl WorkDir {
    fn new(cx: &Context) -> Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        let host = Path::new(RUN_DIR).join(format!("login-proof-{}", std::process::id()));
        let real = cx.root.path(&host);
        if real.exists() {
            std::fs::remove_dir_all(&real)
                .with_context(|| format!("removing {}", real.display()))?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&real)
            .with_context(|| format!("creating {}", real.display()))?;
        Ok(WorkDir { real })
    }

    /// A key of the owner's type (hardware-backed types cannot be made without the token: their
    /// software counterparts stand in); its public line.
    fn keygen(&self, cx: &Context, kind: &str) -> Result<String> {
        let (t, bits) = match kind {
            "ssh-rsa" => ("rsa", Some("3072")),
            "ecdsa-sha2-nistp256" | "sk-ecdsa-sha2-nistp256@openssh.com" => ("ecdsa", Some("256")),
            "ecdsa-sha2-nistp384" => ("ecdsa", Some("384")),
            "ecdsa-sha2-nistp521" => ("ecdsa", Some("521")),
            _ => ("ed25519", None),
        };
        let key = self.real.join("key");
        let mut cmd = Cmd::new("ssh-keygen").args(["-q", "-t", t, "-N", "", "-C", MARK]);
        if let Some(b) = bits {
            cmd = cmd.args(["-b", b]);
        }
        cx.runner
            .check(&cmd.arg("-f").arg(key.display().to_string()))?;
        let public = self.real.join("key.pub");
        let line = std::fs::read_to_string(&public)
            .with_context(|| format!("reading {}", public.display()))?;
        Ok(line.trim().to_string())
    }

    /// known_hosts for `addr` on `port` with the host's public keys, so the client talks to this
    /// host's sshd and nothing else; without any (an unusual host key setup) nothing is pinned.
    /// True when a key was pinned.
    fn pin_host_keys(&self, cx: &Context, pubs: &[&str], addr: &str, port: u16) -> Result<bool> {
        let mut lines = String::new();
        for pubkey in pubs {
            let Ok(text) = std::fs::read_to_string(cx.root.path(pubkey)) else {
                continue;
            };
            let mut words = text.split_whitespace();
            if let (Some(kind), Some(blob)) = (words.next(), words.next()) {
                // ssh looks a host up as `addr` on port 22, as `[addr]:port` elsewhere.
                let host = if port == 22 {
                    addr.to_string()
                } else {
                    format!("[{addr}]:{port}")
                };
                lines.push_str(&format!("{host} {kind} {blob}\n"));
            }
        }
        let path = self.real.join("known_hosts");
        std::fs::write(&path, &lines).with_context(|| format!("writing {}", path.display()))?;
        if lines.is_empty() {
            tracing::warn!("no host public key found: the login proof does not pin sshd's key");
        }
        Ok(!lines.is_empty())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.real) {
            tracing::warn!("removing {}: {e}", self.real.display());
        }
    }
}

/// The namespace the client logs in from, and the host's addresses it logs in to.
struct Netns<'a> {
    cx: &'a Context<'a>,
    name: String,
    host_if: String,
    /// (family, the namespace's own address) per family proven.
    sources: Vec<(Family, String)>,
    /// (family, the host's address to log in to).
    targets: Vec<(Family, String)>,
}

impl<'a> Netns<'a> {
    fn up(cx: &'a Context<'a>, families: &[Family]) -> Result<Netns<'a>> {
        remove_stale(cx);
        let pid = std::process::id();
        let mut targets = Vec::new();
        for f in families {
            targets.push((*f, host_address(cx, *f)?));
        }
        let mut ns = Netns {
            cx,
            name: format!("{NETNS_PREFIX}{pid}"),
            host_if: format!("bkp{}h", pid % 10_000_000),
            sources: Vec::new(),
            targets,
        };
        ns.create(families)
            .context("making the network namespace the login proof connects from")?;
        Ok(ns)
    }

    fn create(&mut self, families: &[Family]) -> Result<()> {
        let peer = format!("bkp{}n", std::process::id() % 10_000_000);
        let (name, host_if) = (self.name.clone(), self.host_if.clone());
        self.ip(&["netns", "add", &name])?;
        self.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer, "netns", &name,
        ])?;
        let r = fastrand::u32(..);
        for f in families {
            let (host, inner, len) = proof_net(*f, r);
            // Duplicate address detection would hold an IPv6 address back for a second or two.
            let (fam, dad): (&str, &[&str]) = match f {
                Family::V4 => ("-4", &[]),
                Family::V6 => ("-6", &["nodad"]),
            };
            let (host_cidr, inner_cidr) = (format!("{host}/{len}"), format!("{inner}/{len}"));
            let mut add = vec![fam, "addr", "add", &host_cidr, "dev", &host_if];
            add.extend(dad);
            self.ip(&add)?;
            let mut add = vec!["-n", &name, fam, "addr", "add", &inner_cidr, "dev", &peer];
            add.extend(dad);
            self.ip(&add)?;
            self.sources.push((*f, inner));
            if self.sources.len() == 1 {
                self.ip(&["link", "set", &host_if, "up"])?;
                self.ip(&["-n", &name, "link", "set", &peer, "up"])?;
                self.ip(&["-n", &name, "link", "set", "lo", "up"])?;
            }
            self.ip(&["-n", &name, fam, "route", "add", "default", "via", &host])?;
        }
        Ok(())
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        self.cx
            .runner
            .check(&Cmd::new("ip").args(args.iter().copied()))?;
        Ok(())
    }

    fn sources(&self) -> Vec<String> {
        self.sources.iter().map(|(_, a)| a.clone()).collect()
    }
}

impl Drop for Netns<'_> {
    fn drop(&mut self) {
        // The veth pair goes with the namespace its peer is in.
        if let Err(e) = self.ip(&["netns", "del", &self.name]) {
            tracing::warn!("removing the login proof's network namespace: {e:#}");
        }
    }
}

/// The host's and the namespace's addresses on the veth for random `r`: a /30 in 198.18.0.0/15
/// (RFC 2544's benchmarking range, routed nowhere) or a /64 of a fixed ULA prefix. A random net
/// per proof: an lfd block of one proof's address does not fail the next.
fn proof_net(family: Family, r: u32) -> (String, String, &'static str) {
    match family {
        Family::V4 => {
            let (b, c, d) = (18 + (r >> 16 & 1), r >> 8 & 0xff, (r & 63) * 4);
            let at = |n: u32| format!("198.{b}.{c}.{}", d + n);
            (at(1), at(2), "30")
        }
        Family::V6 => {
            let net = format!("fd62:7269:636b:{:x}", r & 0xffff);
            (format!("{net}::1"), format!("{net}::2"), "64")
        }
    }
}

/// Namespaces of proofs whose brickup died (SIGKILL, power cut with /run kept) are removed.
fn remove_stale(cx: &Context) {
    let Ok(entries) = std::fs::read_dir(cx.root.path("/run/netns")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| p == std::process::id() || cx.root.path(format!("/proc/{p}")).exists());
        if !alive {
            if let Err(e) = cx
                .runner
                .check(&Cmd::new("ip").args(["netns", "del", &name]))
            {
                tracing::warn!("removing a stale login-proof namespace: {e:#}");
            }
        }
    }
}

/// The host's own address of `family` that the owner reaches it at: the first global one that is
/// not a login proof's own.
pub(crate) fn host_address(cx: &Context, family: Family) -> Result<String> {
    let fam = if family == Family::V6 { "-6" } else { "-4" };
    let out = cx
        .runner
        .check(&Cmd::new("ip").args(["-o", fam, "addr", "show", "scope", "global"]))?;
    first_global(&out.stdout).with_context(|| {
        format!("the host has no global {family:?} address to prove the owner's login on")
    })
}

/// The first address in `ip -o addr` output that is not on a login proof's veth.
fn first_global(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "inet" || *w == "inet6")?;
        let ifname = words.get(1)?;
        let addr = words.get(at + 1)?.split('/').next()?;
        let tentative = words.iter().any(|w| *w == "tentative" || *w == "dadfailed");
        (!ifname.starts_with("bkp") && !tentative).then(|| addr.to_string())
    })
}

/// What sshd logged about connections from the proof's addresses since it started: syslog's
/// files, else the journal.
fn sshd_log(cx: &Context, sources: Vec<String>, since: SystemTime) -> Vec<String> {
    let mut text = String::new();
    for f in ["/var/log/auth.log", "/var/log/secure"] {
        if let Ok(bytes) = std::fs::read(cx.root.path(f)) {
            let tail = &bytes[bytes.len().saturating_sub(256 * 1024)..];
            text.push_str(&String::from_utf8_lossy(tail));
        }
    }
    let mut found = about(&text, &sources);
    if found.is_empty() && cx.root.path("/run/systemd/journal/socket").exists() {
        let secs = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cmd = Cmd::new("journalctl").args([
            "--no-pager",
            "-q",
            "-o",
            "short",
            "--since",
            &format!("@{secs}"),
        ]);
        match cx.runner.run(&cmd) {
            Ok(out) => found = about(&out.stdout, &sources),
            Err(e) => tracing::warn!("reading sshd's log from the journal: {e:#}"),
        }
    }
    let skip = found.len().saturating_sub(6);
    found.into_iter().skip(skip).collect()
}

/// The syslog lines of the sshd processes that logged one of `sources` (`sshd[PID]:` or
/// `sshd-session[PID]:`): a refusal such as "signature algorithm ... not in
/// PubkeyAcceptedAlgorithms" names no address, the connection line of the same process does.
/// Each line from the process tag on.
fn about(text: &str, sources: &[String]) -> Vec<String> {
    let tag = |l: &str| -> Option<String> {
        let at = l.find("sshd")?;
        let end = l[at..].find("]:")? + at + 2;
        Some(l[at..end].to_string())
    };
    let names = |l: &str| {
        sources
            .iter()
            .any(|s| l.contains(&format!(" {s} ")) || l.ends_with(&format!(" {s}")))
    };
    let tags: Vec<String> = text.lines().filter(|l| names(l)).filter_map(tag).collect();
    text.lines()
        .filter_map(|l| {
            let t = tag(l)?;
            tags.contains(&t)
                .then(|| l[l.find(&t).unwrap_or(0)..].to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_lines_are_recognised_and_removed() {
        let owner = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi owner";
        let left = format!("from=\"198.18.4.2\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZj {MARK}");
        let text = format!("# mine\n{owner}\n{left}\n");
        assert_eq!(without_proof_lines(&text), format!("# mine\n{owner}\n"));
        // A comment that only mentions the mark is the owner's line, kept byte for byte.
        let mention = format!("{owner} not-{MARK}\n");
        assert_eq!(without_proof_lines(&mention), mention);
        assert_eq!(without_proof_lines("no newline"), "no newline");
        assert_eq!(without_proof_lines(&format!("{left}\n")), "");
    }

    #[test]
    fn the_first_global_address_not_on_a_proof_veth() {
        let text = "3: bkp123h    inet 198.18.3.1/30 scope global bkp123h\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.199.7.2/30 brd 10.199.7.3 scope global eth0\\       valid_lft forever preferred_lft forever
";
        assert_eq!(first_global(text).as_deref(), Some("10.199.7.2"));
        let v6 =
            "2: eth0    inet6 2001:db8::10/64 scope global tentative \\       valid_lft forever
2: eth0    inet6 2001:db8::11/64 scope global \\       valid_lft forever
";
        assert_eq!(first_global(v6).as_deref(), Some("2001:db8::11"));
        assert_eq!(first_global(""), None);
    }

    /// The refusal line names no address: it is found through the process that logged one.
    #[test]
    fn sshd_lines_of_the_proofs_connection() {
        let log = "Dec  2 08:20:22 h sshd[700]: Connection from 198.18.4.2 port 40000 on 10.199.7.2 port 2222 rdomain \"\"
Dec  2 08:20:22 h sshd[701]: Connection from 203.0.113.9 port 5 on 10.199.7.2 port 2222 rdomain \"\"
Dec  2 08:20:22 h sshd[700]: userauth_pubkey: signature algorithm ssh-ed25519 not in PubkeyAcceptedAlgorithms [preauth]
Dec  2 08:20:22 h sshd[701]: Failed password for root from 203.0.113.9 port 5 ssh2
Dec  2 08:20:22 h sshd-session[702]: User root from 198.18.4.2 not allowed because none of user's groups are listed in AllowGroups
";
        let got = about(log, &["198.18.4.2".to_string()]);
        assert_eq!(
            got,
            [
                "sshd[700]: Connection from 198.18.4.2 port 40000 on 10.199.7.2 port 2222 rdomain \"\"",
                "sshd[700]: userauth_pubkey: signature algorithm ssh-ed25519 not in PubkeyAcceptedAlgorithms [preauth]",
                "sshd-session[702]: User root from 198.18.4.2 not allowed because none of user's groups are listed in AllowGroups",
            ]
        );
        assert!(about(log, &["198.18.9.9".to_string()]).is_empty());
    }
}
