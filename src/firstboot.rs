//! First-boot state: what `brickup firstboot` recorded on this machine, once per instance. The
//! done-file holds the instance id of the last successful run; the early record says which
//! instance `firstboot --early` hardened sshd on, and when. Both written durably (fsops).

use std::path::Path;

use anyhow::Result;

use crate::fsops::{write_kept, NewFile};
use crate::report::SshHardened;
use crate::root::Root;

/// Holds the instance id of the last successful first-boot run.
pub(crate) const DONE_FILE: &str = "/var/lib/brickup/firstboot-done";
/// The last successful early run: instance id and when sshd was hardened (JSON).
pub(crate) const EARLY_FILE: &str = "/var/lib/brickup/firstboot-early.json";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EarlyRecord {
    instance_id: String,
    #[serde(flatten)]
    hardened: SshHardened,
}

/// Whether the whole first-boot run succeeded on `instance`. A done-file that cannot be read
/// for another reason than its absence is said, and counts as not done (the run is retried).
pub(crate) fn done(root: &Root, instance: &str) -> bool {
    match std::fs::read_to_string(root.path(DONE_FILE)) {
        Ok(text) => text.trim() == instance,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!("reading {DONE_FILE}: {e}: taking the first boot as not done");
            false
        }
    }
}

/// What the early run on `instance` recorded, if it ran there.
pub(crate) fn early_record(root: &Root, instance: &str) -> Option<SshHardened> {
    let text = std::fs::read_to_string(root.path(EARLY_FILE)).ok()?;
    let record: EarlyRecord = serde_json::from_str(&text)
        .map_err(|e| tracing::warn!("reading {EARLY_FILE}: {e}"))
        .ok()?;
    (record.instance_id == instance).then_some(record.hardened)
}

/// Whether sshd is hardened on `instance` already: by the early run, or by a whole run.
pub(crate) fn early_done(root: &Root, instance: &str) -> bool {
    done(root, instance) || early_record(root, instance).is_some()
}

/// Records the whole run done on `instance`.
pub(crate) fn record_done(root: &Root, instance: &str) -> Result<()> {
    write(root, DONE_FILE, format!("{instance}\n").as_bytes())
}

/// Records the early run done on `instance`.
pub(crate) fn record_early(root: &Root, instance: &str, hardened: SshHardened) -> Result<()> {
    let record = EarlyRecord {
        instance_id: instance.to_string(),
        hardened,
    };
    write(root, EARLY_FILE, &serde_json::to_vec_pretty(&record)?)
}

/// A record outlives any rollback: it says what happened.
fn write(root: &Root, path: &str, content: &[u8]) -> Result<()> {
    write_kept(root, Path::new(path), content, NewFile::mode(0o600)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_per_instance() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert!(!done(&root, "i-1") && !early_done(&root, "i-1"));
        let hardened = SshHardened {
            by: "early".into(),
            after_start_ms: 5,
            uptime_ms: Some(30_000),
        };
        record_early(&root, "i-1", hardened).unwrap();
        assert!(early_done(&root, "i-1") && !done(&root, "i-1"));
        assert!(
            !early_done(&root, "i-2"),
            "another instance (a baked image's next node)"
        );
        assert_eq!(early_record(&root, "i-1").unwrap().after_start_ms, 5);
        record_done(&root, "i-2").unwrap();
        assert!(done(&root, "i-2") && early_done(&root, "i-2") && !done(&root, "i-1"));
    }
}
