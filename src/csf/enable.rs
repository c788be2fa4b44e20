//! The firewall policy and the guide's "check you can still log in", in code: load the policy with
//! `TESTING = "1"` (csf's cron flushes within minutes if all else fails), prove sshd listens and
//! the loaded rules accept its port, only then `TESTING = "0"`, reload, and enable csf and lfd.
//! Any failure flushes the rules and leaves TESTING on.
//!
//! `csf -sf` loads rules but does not make `csf.service` active, and the release's `lfd.service`
//! does not require it (FACTS.md): both units are started here as systemd sees them, so `check`
//! (which asks systemd) agrees with what `apply` did.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::conf;
use super::{policy, CSF_CONF};
use crate::engine::{Action, Applied, Context, Drift, Step};
use crate::fsops::{write_kept, NewFile, Transaction};
use crate::runner::Cmd;

fn read_conf(cx: &Context) -> Result<String> {
    let p = cx.root.path(CSF_CONF);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// The whole wanted map (the run's policy) with TESTING set as given.
fn wanted(policy: &BTreeMap<String, String>, testing: bool) -> BTreeMap<String, String> {
    let mut m = policy.clone();
    m.insert("TESTING".into(), if testing { "1" } else { "0" }.into());
    m
}

/// Write csf.conf and keep it: a policy with TESTING on is a safe state, not one to roll back.
fn write_conf(cx: &Context, policy: &BTreeMap<String, String>, testing: bool) -> Result<bool> {
    let new = conf::apply_policy(&read_conf(cx)?, &wanted(policy, testing))
        .with_context(|| format!("editing {CSF_CONF}"))?;
    write_kept(
        &cx.root,
        Path::new(CSF_CONF),
        new.as_bytes(),
        NewFile::mode(0o600),
    )
}

/// On a node without csf yet: the values brickup will write once csf is installed, each key
/// as csf.conf will have it (the rest of the file is the pinned tarball's).
fn fresh_policy(cx: &Context) -> String {
    let mut text = format!(
        "once csf is installed, brickup writes into {CSF_CONF} (TESTING \"1\" until SSH is proven \
         through the firewall, then \"0\"; every other key stays as the pinned tarball has it):"
    );
    let policy = policy(cx);
    for (k, v) in &policy {
        text.push_str(&format!("\n#   {k} = \"{v}\""));
    }
    if !policy.contains_key("UDP_OUT") {
        text.push_str("\n#   UDP_OUT: the tarball's own list (firewall.udp_out is not set)");
    }
    if policy.get("IPV6").map(String::as_str) == Some("0") {
        text.push_str(
            "\n#   no TCP6_/UDP6_ lists: IPv6 is off (firewall.ipv6, or no global IPv6 address)",
        );
    }
    text
}

/// csf's units, in start order (`csf.service` is `Before=lfd.service`).
const UNITS: [&str; 2] = ["csf.service", "lfd.service"];
/// How long lfd must stay up after its start before the firewall counts as enabled.
const LFD_SETTLE: Duration = Duration::from_secs(3);

fn systemctl(cx: &Context, args: &[&str]) -> Result<()> {
    cx.runner
        .check(&Cmd::new("systemctl").args(args.iter().copied()))
        .map(|_| ())
}

/// What csf says when another csf command holds its lock (csf.pl's `csflock`: a non-blocking
/// `flock` on /var/lib/csf/csf.lock around every command that changes the rules). The holder is
/// csf's own TESTING cron flush, lfd, or an operator: their command is over in seconds.
const LOCKED: &str = "csf is being restarted, try again in a moment";
/// How long a csf command keeps trying while another one holds csf's lock.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Load csf.conf's rules now: `csf -sf`. Not `csf -r`: with `LFDSTART = "1"` (a csf.conf
/// setting brickup leaves to the owner) `-s`/`-r` only leave /var/lib/csf/csf.restart for lfd
/// and exit 0 (csf.pl's `lfdstart`), so the check after them would judge the old rules; and
/// while TESTING is "1" lfd does not even run. `-sf` stops and starts csf under its lock,
/// whatever LFDSTART says - what `-r` does with it "0".
fn reload(cx: &Context) -> Result<()> {
    csf(cx, "-sf")
}

/// `/usr/sbin/csf FLAG`, again after a pause while another csf command holds csf's lock.
fn csf(cx: &Context, flag: &str) -> Result<()> {
    csf_waiting(cx, flag, LOCK_WAIT)
}

/// [`csf`] with the bound on the wait for csf's lock as a parameter (tests give it a short one).
fn csf_waiting(cx: &Context, flag: &str, bound: Duration) -> Result<()> {
    let cmd = Cmd::new("/usr/sbin/csf").arg(flag);
    let start = Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        let out = cx.runner.run(&cmd)?;
        if out.success() {
            return Ok(());
        }
        let locked = out.stderr.contains(LOCKED) || out.stdout.contains(LOCKED);
        if !locked || start.elapsed() >= bound {
            let waited = match locked {
                true => format!(" (csf's lock still held after {} s)", bound.as_secs()),
                false => String::new(),
            };
            return Err(crate::runner::failure(&cmd, &out))
                .with_context(|| format!("csf {flag} failed{waited}"));
        }
        tracing::warn!("csf {flag}: another csf command holds csf's lock; again in {pause:?}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// `csf -f`. A csf whose start failed leaves `/etc/csf/csf.error`, and then refuses every
/// command, the flush included, until that file is gone: remove it and flush again.
fn flush(cx: &Context) -> Result<()> {
    let first = csf(cx, "-f");
    let marker = cx.root.path("/etc/csf/csf.error");
    if first.is_ok() || !marker.exists() {
        return first;
    }
    tracing::warn!(
        "csf -f refused while {} exists; removing it",
        marker.display()
    );
    std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
    csf(cx, "-f")
}

/// Does an `iptables-save` dump accept new TCP connections to `port` from anywhere? Only rules
/// in INPUT and the chains INPUT jumps to count (an OUTPUT rule for the port proves nothing),
/// and not rules limited to a source address or to the loopback interface.
pub(crate) fn rules_accept(dump: &str, port: u16) -> bool {
    let rules: Vec<Vec<&str>> = dump
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let chains = input_chains(&rules);
    let p = port.to_string();
    rules.iter().any(|w| {
        let flag = |f: &str, v: &str| w.windows(2).any(|x| x == [f, v]);
        let dport = w.windows(2).any(|x| {
            (x[0] == "--dport" && x[1] == p)
                || ((x[0] == "--dports" || x[0] == "--destination-ports")
                    && x[1].split(',').any(|r| in_range(r, port)))
        });
        let lo_only = w
            .windows(3)
            .any(|x| x[1] == "-i" && x[2] == "lo" && x[0] != "!")
            || w.get(2..4) == Some(&["-i", "lo"]);
        let from_some = w
            .windows(2)
            .any(|x| (x[0] == "-s" || x[0] == "--source") && x[1] != "0.0.0.0/0" && x[1] != "::/0");
        chains.contains(&w[1])
            && flag("-j", "ACCEPT")
            && flag("-p", "tcp")
            && dport
            && !lo_only
            && !from_some
    })
}

/// INPUT and every user chain reachable from it by `-j`/`-g`.
fn input_chains<'a>(rules: &[Vec<&'a str>]) -> Vec<&'a str> {
    let mut chains = vec!["INPUT"];
    let mut i = 0;
    while i < chains.len() {
        let from = chains[i];
        for w in rules.iter().filter(|w| w.get(1) == Some(&from)) {
            for x in w.windows(2) {
                if (x[0] == "-j" || x[0] == "-g") && !chains.contains(&x[1]) {
                    chains.push(x[1]);
                }
            }
        }
        i += 1;
    }
    chains
}

fn in_range(spec: &str, port: u16) -> bool {
    match spec.split_once(':') {
        Some((a, b)) => {
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= port && port <= b)
        }
        None => spec.parse() == Ok(port),
    }
}

/// The checks between "loaded in TESTING" and "enforcing".
fn verify_reachable(cx: &Context, ipv6: bool) -> Result<()> {
    let port = cx.config.ssh.port.get();
    if !crate::ports::listening_ports()?.contains(&port) {
        bail!("check failed: sshd is not listening on port {port}");
    }
    for p in cx.ssh_ports() {
        verify_accepts(cx, p, ipv6)?;
    }
    Ok(())
}

/// [`verify_reachable`], with one more load when the rules were flushed under it. While TESTING
/// is "1", csf's own cron line (`*/TESTING_INTERVAL * * * * root /usr/sbin/csf -f`, FACTS.md)
/// flushes on its own schedule, and it can fire between a reload and its check: seen in the VM,
/// a drift repair's reload ran across a five-minute mark and the check found everything open.
/// A flush is safe (everything open) but is not the policy being proven, so the policy is
/// loaded again and checked again; any other mismatch is a failure.
fn verify_or_reload(cx: &Context, ipv6: bool) -> Result<()> {
    reload_if_flushed(cx, || verify_reachable(cx, ipv6))
}

/// `verify`, and when it fails on rules that are a flush's, one more `csf -sf` and `verify` again.
fn reload_if_flushed(cx: &Context, verify: impl Fn() -> Result<()>) -> Result<()> {
    let Err(e) = verify() else {
        return Ok(());
    };
    if !flushed(cx)? {
        return Err(e);
    }
    tracing::warn!("the rules were flushed under the check (csf's TESTING cron?): loading again");
    reload(cx)?;
    verify()
}

/// The loaded IPv4 rules are a flush's: no rule at all and INPUT accepting.
fn flushed(cx: &Context) -> Result<bool> {
    let dump = dump(cx, "iptables-save")?;
    Ok(is_flush(&dump))
}

/// An `iptables-save` dump of a flush: no rule at all and INPUT accepting.
fn is_flush(dump: &str) -> bool {
    dump.lines().any(|l| l.starts_with(":INPUT ACCEPT"))
        && !dump.lines().any(|l| l.starts_with("-A "))
}

/// The loaded rules (IPv4, and IPv6 when on) accept TCP `port`.
fn verify_accepts(cx: &Context, port: u16, ipv6: bool) -> Result<()> {
    for (save, dump) in loaded(cx, ipv6)? {
        if !rules_accept(&dump, port) {
            bail!("check failed: the rules loaded by csf ({save}) do not accept TCP port {port}");
        }
    }
    Ok(())
}

/// Before sshd moves to `port` on a node where csf holds rules (a rerun), add the port to TCP_IN
/// (and TCP6_IN) and reload, proving the loaded rules accept it. True when anything changed.
pub(crate) fn open_port(cx: &Context, port: u16) -> Result<bool> {
    let Ok(conf) = read_conf(cx) else {
        return Ok(false);
    };
    let keys = conf::read_keys(&conf);
    let ipv6 = ipv6_on(&keys);
    let mut want = BTreeMap::new();
    // TCP6_IN only while csf loads IPv6 rules: with IPV6 "0" csf never reads it, and a change
    // there would only cost a reload (the firewall step's policy writes it when IPv6 is on).
    let lists: &[&str] = match ipv6 {
        true => &["TCP_IN", "TCP6_IN"],
        false => &["TCP_IN"],
    };
    for key in lists {
        let Some(list) = keys.get(*key) else { continue };
        if !list.split(',').any(|r| in_range(r.trim(), port)) {
            let sep = if list.trim().is_empty() { "" } else { "," };
            want.insert(key.to_string(), format!("{list}{sep}{port}"));
        }
    }
    if want.is_empty() {
        return Ok(false);
    }
    let new = conf::apply_policy(&conf, &want)?;
    // Kept whatever the calling step's fate: a rollback of sshd's move must not close the port
    // sshd listens on now.
    write_kept(
        &cx.root,
        Path::new(CSF_CONF),
        new.as_bytes(),
        NewFile::mode(0o600),
    )?;
    if holds_rules(cx)? {
        reload(cx)?;
        reload_if_flushed(cx, || verify_accepts(cx, port, ipv6))?;
    }
    Ok(true)
}

/// Does this csf.conf (or policy) have csf load IPv6 rules?
fn ipv6_on(keys: &BTreeMap<String, String>) -> bool {
    keys.get("IPV6").map(String::as_str) == Some("1")
}

/// Does csf hold rules now (the loaded INPUT policy is DROP)?
pub(crate) fn holds_rules(cx: &Context) -> Result<bool> {
    if !cx.root.path("/usr/sbin/csf").exists() {
        return Ok(false);
    }
    let dump = dump(cx, "iptables-save")?;
    Ok(dump.lines().any(|l| l.starts_with(":INPUT DROP")))
}

/// Do the loaded rules let a new connection reach one of `ports`, in IPv4 and (when csf loads
/// them) IPv6? A flush's rules (INPUT accepting, no rule) let everything in.
fn open_to_any(cx: &Context, ports: &[u16], ipv6: bool) -> Result<bool> {
    Ok(loaded(cx, ipv6)?
        .iter()
        .all(|(_, dump)| is_flush(dump) || ports.iter().any(|p| rules_accept(dump, *p))))
}

/// The loaded filter table of IPv4, and of IPv6 when on: (the `*-save` program, its dump).
fn loaded(cx: &Context, ipv6: bool) -> Result<Vec<(&'static str, String)>> {
    let mut families = vec!["iptables-save"];
    if ipv6 {
        families.push("ip6tables-save");
    }
    families
        .into_iter()
        .map(|save| Ok((save, dump(cx, save)?)))
        .collect()
}

/// `SAVE -t filter`'s output.
fn dump(cx: &Context, save: &str) -> Result<String> {
    Ok(cx
        .runner
        .check(&Cmd::new(save).args(["-t", "filter"]))?
        .stdout)
}

/// Ports brickup needs (report, csf download, package sources) that csf.conf's TCP_OUT would drop.
fn blocked_own_ports(cx: &Context, conf: &str) -> Vec<Drift> {
    let keys = conf::read_keys(conf);
    let out = keys.get("TCP_OUT").map(String::as_str).unwrap_or("");
    super::own_ports(cx)
        .into_iter()
        .filter(|p| !out.split(',').any(|r| in_range(r.trim(), *p)))
        .map(|p| {
            Drift::new(
                "csf.conf TCP_OUT",
                format!("csf.conf TCP_OUT drops port {p}, which brickup's report, csf download or package sources use"),
            )
            .values(format!("port {p} open"), Some(out.to_string()))
            .source(CSF_CONF)
        })
        .collect()
}

/// Writes the policy and enables the firewall safely.
pub struct FirewallStep;

impl FirewallStep {
    fn enable(cx: &Context, policy: &BTreeMap<String, String>) -> Result<()> {
        let ipv6 = ipv6_on(policy);
        reload(cx)?;
        verify_or_reload(cx, ipv6)?;
        write_conf(cx, policy, false)?;
        reload(cx)?;
        verify_or_reload(cx, ipv6)?;
        systemctl(cx, &["enable", UNITS[0], UNITS[1]])?;
        // A no-op when csf.service is already active: `csf -sf` above loaded the new rules.
        systemctl(cx, &["start", UNITS[0]])?;
        verify_or_reload(cx, ipv6)?;
        systemctl(cx, &["restart", UNITS[1]])?;
        let down = crate::systemd::running_drift(cx.runner, &UNITS)?;
        if !down.is_empty() {
            bail!("after enabling: {}", Drift::join(&down));
        }
        // lfd forks: `systemctl restart` returns once the parent wrote the PID file, and the
        // daemon can still die on its own checks a moment later (the unit has no Restart=).
        // Looked at again after a pause, so such a death fails the run instead of hiding.
        if cx.live() {
            std::thread::sleep(LFD_SETTLE);
            let down = crate::systemd::running_drift(cx.runner, &UNITS)?;
            if !down.is_empty() {
                bail!(
                    "{} s after enabling: {}",
                    LFD_SETTLE.as_secs(),
                    Drift::join(&down)
                );
            }
        }
        // A TESTING cron flush that started before the TESTING "0" reload can end after it.
        verify_or_reload(cx, ipv6)?;
        // The rules accept the port on paper; the owner's login through them is the proof.
        let mut families = vec![crate::login::Family::V4];
        if ipv6 {
            families.push(crate::login::Family::V6);
        }
        crate::login::prove(cx, cx.config.ssh.port.get(), &families)?;
        Ok(())
    }

    fn enforcing(cx: &Context) -> Result<bool> {
        Ok(conf::read_keys(&read_conf(cx)?)
            .get("TESTING")
            .map(String::as_str)
            == Some("0"))
    }

    /// What is loaded in the kernel, not just what the file says.
    fn rules_drift(cx: &Context) -> Result<Vec<Drift>> {
        let port = cx.config.ssh.port.get();
        let dump = dump(cx, "iptables-save")?;
        let mut drift = Vec::new();
        if !dump.lines().any(|l| l.starts_with(":INPUT DROP")) {
            drift.push(
                Drift::new(
                    "iptables INPUT policy",
                    "the loaded IPv4 rules do not drop by default (INPUT policy is not DROP)",
                )
                .values("DROP", None)
                .source("iptables-save"),
            );
        }
        if !rules_accept(&dump, port) {
            drift.push(
                Drift::new(
                    format!("iptables TCP port {port}"),
                    format!("the loaded IPv4 rules do not accept the SSH port {port}"),
                )
                .values("accepted", Some("not accepted".into()))
                .source("iptables-save"),
            );
        }
        Ok(drift)
    }

    fn running(cx: &Context) -> Result<Vec<Drift>> {
        crate::systemd::running_drift(cx.runner, &UNITS)
    }
}

impl Step for FirewallStep {
    fn name(&self) -> &'static str {
        "firewall"
    }

    /// csf holds rules (a past run enforced them, or this one) that accept none of the ports
    /// sshd listens on - seen in the VM when csf's TESTING cron flush ran into a reload: load
    /// csf.conf's rules again (they accept the SSH port: brickup put it in TCP_IN before sshd
    /// moved); if that does not do it, flush - an open firewall with key-only SSH over a lockout.
    fn keep_access(&self, cx: &Context) -> Result<Option<String>> {
        if !cx.live() || !holds_rules(cx)? {
            return Ok(None);
        }
        let mut socket_ports = vec![cx.config.ssh.port.get(), 22];
        socket_ports.extend(&cx.facts.old_ssh_ports);
        let ports = crate::ports::sshd_listening_ports(&socket_ports)?;
        if ports.is_empty() {
            // sshd is down: no rule brings it back (the sshd step's recovery says so).
            return Ok(None);
        }
        let ipv6 = read_conf(cx)
            .map(|c| ipv6_on(&conf::read_keys(&c)))
            .unwrap_or(false);
        if open_to_any(cx, &ports, ipv6)? {
            return Ok(None);
        }
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let lost = format!(
            "the loaded firewall rules accepted none of the ports sshd listens on ({})",
            list.join(", ")
        );
        tracing::error!("{lost}: loading csf's rules again");
        let reloaded = reload(cx);
        if reloaded.is_ok() && open_to_any(cx, &ports, ipv6)? {
            return Ok(Some(format!(
                "{lost}: csf -sf loaded csf.conf's rules again, which accept it"
            )));
        }
        let why = match reloaded {
            Ok(()) => "csf -sf loaded rules that still drop it".to_string(),
            Err(e) => format!("{e:#}"),
        };
        tracing::error!("{lost}; {why}: flushing");
        flush(cx).with_context(|| format!("{lost}; {why}; and flushing"))?;
        if !open_to_any(cx, &ports, ipv6)? {
            bail!("{lost}; {why}; and still after csf -f");
        }
        Ok(Some(format!(
            "{lost}; {why}: csf -f flushed them, the firewall is open until the next apply"
        )))
    }

    fn holds_ssh_ports(&self) -> bool {
        true
    }

    /// `firewall.settings` keys must exist in the csf.conf that will be used (installed, or the
    /// cached tarball's): csf ignores unknown keys, and a typo would fail only after SSH moved.
    fn preflight(&self, cx: &Context) -> Result<()> {
        let settings = &cx.config.firewall.settings;
        if settings.is_empty() {
            return Ok(());
        }
        let conf = match read_conf(cx) {
            Ok(c) => c,
            Err(_) => match super::generic_conf_from_cache(cx)? {
                Some(c) => c,
                // Not downloaded yet: the firewall step checks before it writes anything.
                None => return Ok(()),
            },
        };
        let known = conf::read_keys(&conf);
        match settings.keys().find(|k| !known.contains_key(*k)) {
            Some(k) => Err(crate::engine::Refused::error(
                format!("firewall.settings.{k}"),
                "not a key of this csf's csf.conf",
            )),
            None => Ok(()),
        }
    }

    fn skip_reason(&self, cx: &Context) -> Option<String> {
        super::DownloadStep.skip_reason(cx)
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        let Ok(old) = read_conf(cx) else {
            return Ok(vec![Action::Note(fresh_policy(cx))]);
        };
        let new = conf::apply_policy(&old, &wanted(&policy(cx), !cx.live()))?;
        let mut a = Vec::new();
        if old != new {
            a.push(Action::File {
                path: CSF_CONF.into(),
                old,
                new,
            });
        }
        if cx.live() && (!a.is_empty() || !Self::running(cx)?.is_empty()) {
            a.push(Action::Note("csf -sf with TESTING 1, verify SSH is accepted, TESTING 0, csf -sf, enable and start csf.service and lfd.service".into()));
        }
        Ok(a)
    }

    fn apply(&self, cx: &Context, _tx: &mut Transaction) -> Result<Applied> {
        if !cx.live() && !cx.root.path(CSF_CONF).exists() {
            return Ok(Applied::unchanged("")
                .deferring("policy written at first boot, once csf is installed"));
        }
        let was_enforcing = Self::enforcing(cx)?;
        // The policy is computed once for the whole step (it depends only on the config and
        // the facts), and csf.conf is read once to tell whether it changes.
        let policy = policy(cx);
        let old = read_conf(cx)?;
        let policy_changed = conf::apply_policy(&old, &wanted(&policy, !was_enforcing))? != old;
        if !cx.live() {
            let changed = write_conf(cx, &policy, true)?;
            let a = if changed {
                Applied::changed("policy written with TESTING on")
            } else {
                Applied::unchanged("policy already written")
            };
            return Ok(a.deferring("enabling the firewall deferred to first boot"));
        }
        if was_enforcing
            && !policy_changed
            && Self::running(cx)?.is_empty()
            && Self::rules_drift(cx)?.is_empty()
        {
            return Ok(Applied::unchanged("csf enforcing with brickup's policy"));
        }
        write_conf(cx, &policy, true)?;
        if let Err(e) = Self::enable(cx, &policy) {
            // Keep the owner in: open everything, leave TESTING on, say what failed.
            let flushed = flush(cx);
            let testing = write_conf(cx, &policy, true);
            let mut e = e.context("enabling csf failed; rules flushed and TESTING left on");
            if let Err(f) = flushed {
                e = e.context(format!("flushing also failed: {f:#}"));
            }
            if let Err(t) = testing {
                e = e.context(format!("setting TESTING back failed: {t:#}"));
            }
            return Err(e);
        }
        let tcp_in = policy.get("TCP_IN").map_or("(none)", String::as_str);
        Ok(Applied::changed(format!("csf enforcing: TCP_IN {tcp_in}")))
    }

    fn check(&self, cx: &Context) -> Result<Vec<Drift>> {
        let conf = match read_conf(cx) {
            Ok(c) => c,
            // Under --root csf (and so its csf.conf) arrives at first boot.
            Err(_) if !cx.live() => return Ok(vec![]),
            Err(_) => return Ok(vec![Drift::new(CSF_CONF, format!("{CSF_CONF} is missing"))]),
        };
        let mut drift: Vec<Drift> = conf::drift(&conf, &policy(cx))
            .into_iter()
            .map(|(k, found, want)| {
                let message = format!(
                    "csf.conf {k} is {}, want {want:?}",
                    found
                        .as_ref()
                        .map(|f| format!("{f:?}"))
                        .unwrap_or("missing".into())
                );
                Drift::new(format!("csf.conf {k}"), message)
                    .values(want, found)
                    .source(CSF_CONF)
            })
            .collect();
        drift.extend(blocked_own_ports(cx, &conf));
        if cx.live() {
            let testing = conf::read_keys(&conf).get("TESTING").cloned();
            if testing.as_deref() != Some("0") {
                drift.push(
                    Drift::new(
                        "csf.conf TESTING",
                        "csf TESTING is not \"0\": the firewall is flushed every few minutes",
                    )
                    .values("0", testing)
                    .source(CSF_CONF),
                );
            }
            drift.extend(Self::running(cx)?);
            drift.extend(Self::rules_drift(cx)?);
        }
        Ok(drift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example config: a csf section, port 2222.
    fn config() -> crate::config::Config {
        crate::config::parse(crate::config::EXAMPLE, Path::new("e.yaml")).unwrap()
    }

    /// open_port adds the new SSH port to the port lists csf loads: TCP_IN, and TCP6_IN only
    /// while IPV6 is "1" (else csf never reads it, and the edit cost a reload per sshd change).
    #[test]
    fn open_port_edits_tcp6_in_only_with_ipv6_on() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/csf")).unwrap();
        let config = config();
        // No /usr/sbin/csf in the root: nothing is loaded, so no command may run.
        let runner = crate::runner::RecordingRunner::new();
        let cx = Context::new(crate::root::Root::new(root.path()), &config, &runner);
        let conf = root.path().join("etc/csf/csf.conf");
        for (ipv6, tcp6) in [("0", "22"), ("1", "22,2222")] {
            std::fs::write(
                &conf,
                format!("IPV6 = \"{ipv6}\"\nTCP_IN = \"22\"\nTCP6_IN = \"22\"\n"),
            )
            .unwrap();
            assert!(open_port(&cx, 2222).unwrap());
            let keys = conf::read_keys(&std::fs::read_to_string(&conf).unwrap());
            assert_eq!(keys["TCP_IN"], "22,2222", "IPV6 {ipv6}");
            assert_eq!(keys["TCP6_IN"], tcp6, "IPV6 {ipv6}");
            // Already open: nothing to do.
            assert!(!open_port(&cx, 2222).unwrap());
        }
        assert!(runner.calls().is_empty(), "{:?}", runner.calls());
    }

    /// A lock that is never released ends the wait at its bound: the command fails, saying so,
    /// after a few tries spaced by growing pauses (not a busy loop, not a wait without end).
    #[test]
    fn a_lock_never_released_ends_the_wait_at_its_bound() {
        let root = tempfile::tempdir().unwrap();
        let config = config();
        let runner = crate::runner::RecordingRunner::new();
        let held = format!("Error: {LOCKED}: /var/lib/csf/csf.lock\n");
        runner.answer("/usr/sbin/csf -sf", 11, "", &held);
        let cx = Context::new(crate::root::Root::new(root.path()), &config, &runner);
        let start = Instant::now();
        let e = format!(
            "{:#}",
            csf_waiting(&cx, "-sf", Duration::from_millis(1200)).unwrap_err()
        );
        let waited = start.elapsed();
        assert!(e.contains("csf -sf failed"), "{e}");
        assert!(e.contains("csf's lock still held after 1 s"), "{e}");
        // Tries at 0, 0.5 and 1.5 s: the third is past the bound, so it is the last.
        assert_eq!(runner.calls().len(), 3, "{:?}", runner.calls());
        assert!(waited >= Duration::from_millis(1200), "{waited:?}");
    }

    #[test]
    fn rule_matching() {
        let csf_like =
            "-A INPUT ! -i lo -p tcp -m conntrack --ctstate NEW -m tcp --dport 2222 -j ACCEPT\n";
        assert!(rules_accept(csf_like, 2222));
        assert!(!rules_accept(csf_like, 22));
        assert!(rules_accept(
            "-A INPUT -p tcp -m multiport --dports 80,2000:3000 -j ACCEPT\n",
            2222
        ));
        assert!(!rules_accept(
            "-A INPUT -p tcp --dport 2222 -j DROP\n",
            2222
        ));
        assert!(!rules_accept(
            "-A INPUT -p udp --dport 2222 -j ACCEPT\n",
            2222
        ));
        // Only INPUT and the chains it reaches count; no source-limited rules.
        assert!(!rules_accept(
            "-A OUTPUT -p tcp -m tcp --dport 2222 -j ACCEPT\n",
            2222
        ));
        assert!(rules_accept(
            "-A INPUT -j ALLOWIN\n-A ALLOWIN -p tcp -m tcp --dport 2222 -j ACCEPT\n",
            2222
        ));
        assert!(!rules_accept(
            "-A ORPHAN -p tcp -m tcp --dport 2222 -j ACCEPT\n",
            2222
        ));
        assert!(!rules_accept(
            "-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 2222 -j ACCEPT\n",
            2222
        ));
    }
}
