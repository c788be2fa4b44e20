//! Stamps `brickup --version` with the target triple and the git commit it was built from
//! (`BRICKUP_COMMIT` overrides; "unknown" outside a git checkout, e.g. from a source tarball).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BRICKUP_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    // Only paths that exist: cargo reruns a build script on every build for a missing one.
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = std::env::var("BRICKUP_COMMIT").ok().unwrap_or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => "unknown".to_string(),
        }
    });
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=BRICKUP_COMMIT={commit}");
    println!("cargo:rustc-env=BRICKUP_TARGET={target}");
}
