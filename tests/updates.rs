//! Security updates on the real Debian 12 rootfs: `apply --root` installs unattended-upgrades
//! from the local repository and writes its configuration, which the real `apt-config` then
//! reads as "security origin only, no automatic reboot".

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn apt_config(root: &Path, key: &str) -> String {
    let o = Command::new("chroot")
        .arg(root)
        .args(["apt-config", "dump", key])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn unattended_upgrades_installed_and_limited_to_security() {
    let root = rootfs_with_local_repo();
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keypair(dir.path());
    let cfg = dir.path().join("brickup.yaml");
    let text_cfg = format!("version: 1\nssh:\n  port: 2222\n  authorized_keys:\n    - {public}\n");
    std::fs::write(&cfg, text_cfg).unwrap();
    let (r, c) = (root.path().to_str().unwrap(), cfg.to_str().unwrap());

    let o = brickup(&["plan", "--root", r, "--config", c]);
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(plan.contains("install unattended-upgrades"), "{}", text(&o));
    assert!(
        plan.contains("+APT::Periodic::Unattended-Upgrade \"1\";"),
        "{}",
        text(&o)
    );

    let o = brickup(&["apply", "--root", r, "--config", c, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = summary["steps"].as_array().unwrap();
    let pos = |n: &str| steps.iter().position(|s| s["name"] == n).unwrap();
    assert!(pos("packages") < pos("updates"), "{summary}");
    assert_eq!(steps[pos("updates")]["outcome"], "changed", "{summary}");
    assert!(root.path().join("usr/bin/unattended-upgrade").exists());

    // What the real apt reads: the package's own origins cleared, only the security ones left.
    let origins = apt_config(root.path(), "Unattended-Upgrade::Origins-Pattern");
    assert!(origins.contains("label=Debian-Security"), "{origins}");
    assert!(
        !origins.contains("label=Debian\""),
        "the regular origin is still allowed: {origins}"
    );
    assert!(!origins.contains("proposed-updates"), "{origins}");
    let reboot = apt_config(root.path(), "Unattended-Upgrade::Automatic-Reboot");
    assert!(
        reboot.contains("Unattended-Upgrade::Automatic-Reboot \"false\";"),
        "{reboot}"
    );
    let periodic = apt_config(root.path(), "APT::Periodic");
    assert!(
        periodic.contains("APT::Periodic::Unattended-Upgrade \"1\";"),
        "{periodic}"
    );
    assert!(
        periodic.contains("APT::Periodic::Update-Package-Lists \"1\";"),
        "{periodic}"
    );

    let o = brickup(&["check", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A hand edit back to every origin is drift.
    let dropin = root
        .path()
        .join("etc/apt/apt.conf.d/52brickup-security-only");
    std::fs::write(&dropin, "// emptied\n").unwrap();
    let o = brickup(&["check", "--root", r, "--config", c]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("52brickup-security-only"),
        "{}",
        text(&o)
    );
}
