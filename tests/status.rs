//! `brickup status` shows the last run whether or not a report section sends it anywhere: the
//! run is recorded on the host (`/var/lib/brickup/last-report.json`) and `status` exits by it,
//! a run refused for an invalid config included.

use std::process::Command;

mod common;

#[test]
fn status_shows_the_last_run_without_a_report_section() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg) = common::plan_root_and_config(dir.path(), "");
    let brickup = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_brickup"))
            .args(args)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap()
    };
    let apply = || {
        let o = brickup(&["apply", "--report", "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    };
    let none = brickup(&["status"]);
    assert_eq!(none.status.code(), Some(1), "{}", common::text(&none));
    assert!(common::text(&none).contains("no run recorded yet"));
    // The first run wrote sshd's config and left its restart to first boot: partial, 1.
    apply();
    let partial = brickup(&["status"]);
    assert_eq!(partial.status.code(), Some(1), "{}", common::text(&partial));
    assert!(
        common::text(&partial).contains("finished partial"),
        "{}",
        common::text(&partial)
    );
    apply();
    let done = brickup(&["status", "--json"]);
    assert_eq!(done.status.code(), Some(0), "{}", common::text(&done));
    let doc: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["event"], "finished", "{doc}");

    // A later run refused for an invalid config (no report section to send it to) is the last
    // run too: status says it failed and why, and exits 3 (before, it kept the earlier success).
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&bad, text.replace("port: 2222", "port: 99999")).unwrap();
    let o = brickup(&["apply", "--report", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    assert!(
        common::text(&o).contains("recorded for `brickup status` only"),
        "{}",
        common::text(&o)
    );
    let failed = brickup(&["status", "--json"]);
    assert_eq!(failed.status.code(), Some(3), "{}", common::text(&failed));
    let doc: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(doc["status"], "failed", "{doc}");
    let error = doc["error"].to_string();
    assert!(error.contains("ssh.port"), "the field is named: {error}");
}
