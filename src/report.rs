//! The status report brickup sends to a callback URL: a versioned JSON document
//! (`brickup.dev/v1`, `BrickupReport`), signed, delivered with bounded retries, and kept on disk
//! when undelivered. It replaces cloud-init's `phone_home` module
//! (<https://cloudinit.readthedocs.io/en/latest/reference/modules.html#phone-home>), which POSTs
//! form fields with no run status, no authentication and no JSON.

pub(crate) mod config;
pub mod identity;
pub mod receive;
mod send;
pub mod sign;
mod store;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::root::Root;
use identity::HostKey;

pub use config::{Credentials, ReportConfig, Secret};
pub use send::{send, Sender};
pub use sign::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
pub(crate) use store::{deliver, record};
pub use store::{
    deliver_with, resend_pending, resend_pending_with, status, DeliveryOutcome, ResendOutcome,
    LAST_REPORT, PENDING_REPORT,
};

pub(crate) const API_VERSION: &str = "brickup.dev/v1";
pub(crate) const KIND: &str = "BrickupReport";

pub use crate::outcome::{Firewall, Outcome, Status, StepResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Event {
    Started,
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OsInfo {
    pub(crate) id: String,
    pub(crate) version_id: String,
}

/// The report document. Field names are the wire format; new fields may be added within v1,
/// so receivers must ignore fields they do not know.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) event: Event,
    pub status: Status,
    pub instance_id: String,
    pub hostname: String,
    pub(crate) os: OsInfo,
    pub(crate) brickup_version: String,
    pub(crate) config_sha256: String,
    pub(crate) ssh_port: u16,
    pub(crate) firewall: Firewall,
    pub(crate) host_keys: Vec<HostKey>,
    pub(crate) steps: Vec<StepResult>,
    /// RFC 3339, UTC.
    pub(crate) started_at: String,
    /// RFC 3339, UTC; absent on `started`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<String>,
    /// The error chain, outermost first; only on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<Vec<String>>,
    /// When sshd was hardened; absent when no run has hardened it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ssh_hardened: Option<SshHardened>,
}

/// When sshd's hardening was done, as the run that did it measured: `firstboot --early` (before
/// sshd first started) or the run reporting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SshHardened {
    /// `early` (before sshd first accepted a connection) or `run` (the run reporting).
    pub(crate) by: String,
    /// Milliseconds from that brickup's start to the end of its sshd step.
    pub(crate) after_start_ms: u64,
    /// The machine's uptime at that moment (ms since the kernel started, /proc/uptime); absent
    /// under a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uptime_ms: Option<u64>,
}

/// The running machine's uptime in ms (/proc/uptime), when `root` is the machine itself.
pub(crate) fn uptime_ms(root: &Root) -> Option<u64> {
    if !root.is_live() {
        return None;
    }
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// What the engine knows about the run; it builds both the `started` and `finished` reports.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub(crate) instance_id: String,
    pub(crate) hostname: String,
    pub(crate) os: OsInfo,
    pub(crate) brickup_version: String,
    pub(crate) config_sha256: String,
    pub(crate) ssh_port: u16,
    pub(crate) host_keys: Vec<HostKey>,
    pub(crate) started_at: OffsetDateTime,
}

impl RunFacts {
    /// Gathers identity facts under `root`. A fact that cannot be read is logged and reported
    /// as `unknown` (or no host keys): a report with a gap beats no report.
    pub fn gather(root: &Root, config_bytes: &[u8], ssh_port: u16) -> RunFacts {
        let (os_id, version_id) = or_unknown("OS release", identity::os_release(root))
            .unwrap_or_else(|| ("unknown".into(), String::new()));
        RunFacts {
            instance_id: or_unknown("instance id", identity::instance_id(root))
                .unwrap_or_else(|| "unknown".into()),
            hostname: or_unknown("hostname", identity::hostname(root))
                .unwrap_or_else(|| "unknown".into()),
            os: OsInfo {
                id: os_id,
                version_id,
            },
            brickup_version: env!("CARGO_PKG_VERSION").to_string(),
            config_sha256: hex::encode(Sha256::digest(config_bytes)),
            ssh_port,
            host_keys: served_host_keys(root),
            started_at: OffsetDateTime::now_utc(),
        }
    }

    /// The report sent when the run begins.
    pub fn started(&self, firewall: Firewall) -> Report {
        self.report(Event::Started, Status::Running, firewall, Vec::new())
    }

    /// The report sent when the run ends. Status: `failed` if the run returned an error,
    /// `partial` if any step failed or was deferred, `succeeded` otherwise.
    pub fn finished(
        &self,
        steps: Vec<StepResult>,
        firewall: Firewall,
        error: Option<&anyhow::Error>,
        finished_at: OffsetDateTime,
    ) -> Report {
        let status = Status::of(&steps, error.is_some());
        let mut report = self.report(Event::Finished, status, firewall, steps);
        report.finished_at = Some(rfc3339(finished_at));
        report.error = error.map(|e| e.chain().map(|c| c.to_string()).collect());
        report
    }

    fn report(&self, event: Event, status: Status, fw: Firewall, steps: Vec<StepResult>) -> Report {
        Report {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            event,
            status,
            instance_id: self.instance_id.clone(),
            hostname: self.hostname.clone(),
            os: self.os.clone(),
            brickup_version: self.brickup_version.clone(),
            config_sha256: self.config_sha256.clone(),
            ssh_port: self.ssh_port,
            firewall: fw,
            host_keys: self.host_keys.clone(),
            steps,
            started_at: rfc3339(self.started_at),
            finished_at: None,
            error: None,
            ssh_hardened: None,
        }
    }
}

/// The host keys sshd serves (`sshd -T` under the root), or none when that cannot be read.
/// A root without sshd (an image being prepared) has nothing to ask: its key files are listed.
pub fn served_host_keys(root: &Root) -> Vec<HostKey> {
    if crate::sshd::files::sshd_cmd(root).is_none() {
        return or_unknown("SSH host key files", identity::host_key_fingerprints(root))
            .unwrap_or_default();
    }
    or_unknown(
        "SSH host keys sshd serves",
        crate::sshd::hostkeys::served(root, &crate::runner::SystemRunner),
    )
    .unwrap_or_default()
}

fn or_unknown<T>(what: &str, value: anyhow::Result<T>) -> Option<T> {
    value
        .map_err(|e| tracing::warn!("report: cannot read the {what}: {e:#}"))
        .ok()
}

/// RFC 3339 in UTC with whole seconds, e.g. `2026-11-25T15:04:05Z`.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 ns is valid");
    t.format(&Rfc3339)
        .expect("a UTC time always formats as RFC 3339")
}

impl Report {
    /// The body as sent on the wire.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a report always serializes")
    }
}

fn lower<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One line per report: `<instanceId> <hostname> <event> <status> ssh=<port> firewall=<state>`,
/// followed by the first error line when there is one.
pub fn summary_line(r: &Report) -> String {
    let mut line = format!(
        "{} {} {} {} ssh={} firewall={}",
        r.instance_id,
        r.hostname,
        lower(&r.event),
        lower(&r.status),
        r.ssh_port,
        lower(&r.firewall)
    );
    if let Some(first) = r.error.as_ref().and_then(|e| e.first()) {
        line.push_str(&format!(" error={first:?}"));
    }
    line
}
