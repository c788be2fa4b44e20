//! `brickup status` shows the last run whether or not a report section sends it anywhere: the
//! run is recorded on the host (`/var/lib/brickup/last-report.json`) and `status` exits by it.

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
}
