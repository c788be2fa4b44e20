//! lfd's eyes: lfd reads log *files* only (csf.conf's `SSHD_LOG`), and Debian 12/13 ship no
//! syslog daemon, so without one `/var/log/auth.log` never exists and lfd sees no SSH failure
//! (FACTS.md). rsyslog comes with csf's prerequisites (`packages.rs`); this step keeps it enabled
//! and running, and proves each watched file is written: a probe message sent to syslog with the
//! facility sshd uses must arrive in the file within seconds.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::conf;
use super::CSF_CONF;
use crate::engine::{Action, Applied, Context, Drift, Step};
use crate::fsops::Transaction;
use crate::runner::Cmd;

/// The csf.conf keys naming log files brickup relies on: lfd's SSH brute-force detection.
pub(crate) const WATCHED_LOGS: &[&str] = &["SSHD_LOG"];
/// The syslog daemon that writes them, installed as a csf prerequisite on every family.
pub(crate) const WRITER: &str = "rsyslog.service";
/// How long a probe may take to reach the file.
const PROBE_WAIT: Duration = Duration::from_secs(5);
/// authpriv.notice: Debian's rsyslog routes `auth,authpriv.*` to auth.log, the RHEL family's
/// `authpriv.*` to /var/log/secure, so this reaches SSHD_LOG on both.
const PROBE_PRIORITY: u8 = 10 * 8 + 5;

/// The watched (key, file) pairs as csf.conf names them.
fn watched(cx: &Context) -> Result<Vec<(&'static str, String)>> {
    let p = cx.root.path(CSF_CONF);
    let conf = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let keys = conf::read_keys(&conf);
    Ok(WATCHED_LOGS
        .iter()
        .filter_map(|k| keys.get(*k).map(|v| (*k, v.clone())))
        .filter(|(_, v)| !v.is_empty())
        .collect())
}

/// Sends a probe line to the root's `/dev/log` and waits for it in `file`.
fn probe_arrives(cx: &Context, file: &str) -> Result<bool> {
    let nonce = format!("{:016x}", fastrand::u64(..));
    let msg = format!(
        "<{PROBE_PRIORITY}>brickup[{}]: probe for lfd's log file, {nonce}",
        std::process::id()
    );
    let dev_log = cx.root.path("/dev/log");
    UnixDatagram::unbound()
        .and_then(|s| s.send_to(msg.as_bytes(), &dev_log))
        .with_context(|| format!("sending a probe to {}", dev_log.display()))?;
    let path = cx.root.path(file);
    let start = Instant::now();
    while start.elapsed() < PROBE_WAIT {
        // Read the whole file: auth.log stays small between rotations.
        if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&nonce)) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(false)
}

fn drift(cx: &Context) -> Result<Vec<Drift>> {
    if !crate::systemd::unit_exists(&cx.root, WRITER) {
        return Ok(vec![Drift::new(WRITER, format!(
            "no syslog daemon installed ({WRITER}): nothing writes SSHD_LOG, so lfd sees no SSH failure"
        ))
        .values("installed", Some("not installed".into()))]);
    }
    if !cx.live() {
        return Ok(vec![]);
    }
    let mut drift = crate::systemd::running_drift(cx.runner, &[WRITER])?;
    let writer_up = drift.is_empty();
    for (key, file) in watched(cx)? {
        // A fresh rsyslog creates the file with its first auth message: probe before judging.
        if writer_up && probe_arrives(cx, &file)? {
            continue;
        }
        let (have, message) = if cx.root.path(&file).exists() {
            (
                "silent",
                format!(
                    "{key} {file} is silent: a probe sent to syslog did not arrive within {} s",
                    PROBE_WAIT.as_secs()
                ),
            )
        } else {
            (
                "missing",
                format!("{key} {file} does not exist: lfd sees no SSH failure"),
            )
        };
        drift.push(
            Drift::new(format!("csf.conf {key}"), message)
                .values("written by syslog", Some(have.into()))
                .source(format!("{CSF_CONF} {key} = {file}")),
        );
    }
    Ok(drift)
}

/// Keeps the files lfd watches written.
pub struct LogStep;

impl Step for LogStep {
    fn name(&self) -> &'static str {
        "csf-logs"
    }

    fn skip_reason(&self, cx: &Context) -> Option<String> {
        super::DownloadStep.skip_reason(cx)
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        if !cx.live() || !cx.root.path(CSF_CONF).exists() {
            return Ok(vec![]);
        }
        let down = crate::systemd::running_drift(cx.runner, &[WRITER])?;
        Ok(if down.is_empty() {
            vec![]
        } else {
            vec![Action::Command(format!("systemctl enable --now {WRITER}"))]
        })
    }

    fn apply(&self, cx: &Context, _tx: &mut Transaction) -> Result<Applied> {
        if !crate::systemd::unit_exists(&cx.root, WRITER) {
            bail!("no syslog daemon installed ({WRITER}); it comes with csf's prerequisites");
        }
        if !cx.live() {
            return Ok(Applied::unchanged("")
                .deferring("checking that SSHD_LOG is written deferred to a live run"));
        }
        let mut applied = Applied::unchanged("SSHD_LOG is written");
        if !crate::systemd::running_drift(cx.runner, &[WRITER])?.is_empty() {
            cx.runner
                .check(&Cmd::new("systemctl").args(["enable", "--now", WRITER]))?;
            // lfd opens its files at start: let it find the file that now exists.
            if crate::systemd::is_active(cx.runner, "lfd.service")? {
                cx.runner
                    .check(&Cmd::new("systemctl").args(["restart", "lfd.service"]))?;
            }
            applied = Applied::changed(format!("enabled and started {WRITER}"));
        }
        let left = drift(cx)?;
        if !left.is_empty() {
            bail!("lfd would see no SSH failure: {}", Drift::join(&left));
        }
        Ok(applied)
    }

    fn check(&self, cx: &Context) -> Result<Vec<Drift>> {
        drift(cx)
    }
}
