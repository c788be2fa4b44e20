//! Keeping reports on disk: the last report for `brickup status`, and an undelivered `finished`
//! report that the next run sends first. Writes are atomic (afterburn's `write_ssh_keys`: temp
//! file in the target directory, fsync, rename, fsync the directory).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::config::ReportConfig;
use super::send::Sender;
use super::{Event, Report};
use crate::root::Root;

/// The last report built, delivered or not (host path).
pub const LAST_REPORT: &str = "/var/lib/brickup/last-report.json";
/// An undelivered `finished` report, sent first by the next run (host path).
pub const PENDING_REPORT: &str = "/var/lib/brickup/pending-report.json";

/// What became of a report. Never an error: a report that cannot be sent must not fail the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Not delivered; stored at [`PENDING_REPORT`] for the next run.
    StoredPending {
        error: String,
    },
    /// Not delivered and not stored (a `started` report, or storing failed too).
    Undelivered {
        error: String,
    },
}

/// What became of a pending report from an earlier run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResendOutcome {
    NothingPending,
    /// Delivered and removed.
    Resent,
    /// Still undelivered; the file stays for the next run.
    StillPending {
        error: String,
    },
}

/// Records `doc` as the last report (what `brickup status` shows), with no report section to
/// send it to as well.
pub(crate) fn record(root: &Root, doc: &Report) {
    record_body(root, doc);
}

fn record_body(root: &Root, doc: &Report) -> Vec<u8> {
    let body = doc.to_json();
    if let Err(e) = write_atomic(&root.path(LAST_REPORT), &body) {
        tracing::warn!("cannot record the last report: {e:#}");
    }
    body
}

/// Records `doc` as the last report, sends it, and on failure logs and keeps a `finished`
/// report for the next run.
pub(crate) fn deliver(root: &Root, cfg: &ReportConfig, doc: &Report) -> DeliveryOutcome {
    deliver_with(root, Sender::new(root, cfg), doc)
}

/// [`deliver`] with a prepared sender (tests shorten its backoff); a sender that could not be
/// prepared counts as a failed delivery.
pub fn deliver_with(root: &Root, sender: Result<Sender>, doc: &Report) -> DeliveryOutcome {
    let body = record_body(root, doc);
    let error = match sender.and_then(|s| s.send_body(&body)) {
        Ok(()) => return DeliveryOutcome::Delivered,
        Err(e) => format!("{e:#}"),
    };
    tracing::warn!("status report not delivered: {error}");
    if doc.event != Event::Finished {
        return DeliveryOutcome::Undelivered { error };
    }
    let pending = root.path(PENDING_REPORT);
    if pending.exists() {
        tracing::warn!("replacing an older undelivered report at {PENDING_REPORT}");
    }
    match write_atomic(&pending, &body) {
        Ok(()) => {
            tracing::warn!("kept the undelivered report at {PENDING_REPORT} for the next run");
            DeliveryOutcome::StoredPending { error }
        }
        Err(e) => {
            tracing::warn!("cannot keep the undelivered report: {e:#}");
            DeliveryOutcome::Undelivered { error }
        }
    }
}

/// Sends a report left by an earlier run, if any, and removes it once delivered.
pub fn resend_pending(root: &Root, cfg: &ReportConfig) -> ResendOutcome {
    let path = root.path(PENDING_REPORT);
    if !path.exists() {
        return ResendOutcome::NothingPending;
    }
    resend_pending_with(root, Sender::new(root, cfg))
}

/// [`resend_pending`] with a prepared sender.
pub fn resend_pending_with(root: &Root, sender: Result<Sender>) -> ResendOutcome {
    let path = root.path(PENDING_REPORT);
    let body = match fs::read(&path) {
        Ok(body) => body,
        Err(e) if e.kind() == ErrorKind::NotFound => return ResendOutcome::NothingPending,
        Err(e) => {
            return still_pending(
                anyhow::Error::new(e).context(format!("reading {PENDING_REPORT}")),
            )
        }
    };
    // The stored bytes are sent as they are: the receiver sees the report the earlier run made.
    if let Err(e) = sender.and_then(|s| s.send_body(&body)) {
        return still_pending(e.context(format!("resending {PENDING_REPORT}")));
    }
    if let Err(e) = fs::remove_file(&path) {
        tracing::warn!("delivered {PENDING_REPORT} but cannot remove it: {e}");
    } else {
        tracing::info!("delivered the report left by an earlier run");
    }
    ResendOutcome::Resent
}

fn still_pending(e: anyhow::Error) -> ResendOutcome {
    let error = format!("{e:#}");
    tracing::warn!("{error}");
    ResendOutcome::StillPending { error }
}

/// The last report recorded under `root`, for `brickup status`.
pub fn status(root: &Root) -> Result<Report> {
    let path = root.path(LAST_REPORT);
    let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Writes `data` to `path` with mode 0600 through brickup's one atomic writer
/// ([`crate::fsops::atomic_write`]). Creates the parent directory (0700) when missing.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    crate::fsops::atomic_write(path, data, 0o600, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn atomic_write_replaces_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/report.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }
}
