//! Resolves host paths against the root brickup works on: `/` in production, a temp dir in tests,
//! a mounted image when baking (bootc's `install/osconfig.rs` hands the root in the same way).
//!
//! Every file brickup reads or writes goes through [`Root::path`]; no literal host path is opened
//! directly.

use std::path::{Component, Path, PathBuf};

/// The filesystem root brickup works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root { dir: dir.into() }
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when brickup works on the machine it runs on: services may be restarted and live
    /// checks (listening ports, firewall rules) are meaningful.
    pub fn is_live(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// The path of a host path (absolute, as seen from inside the root) on this machine.
    /// `..` components are dropped so a path can never leave the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let mut out = self.dir.clone();
        for c in host_path.as_ref().components() {
            if let Component::Normal(part) = c {
                out.push(part);
            }
        }
        out
    }

    /// The host path (as seen from inside the root) of a path under this root, for messages.
    pub fn host_path(&self, real: &Path) -> PathBuf {
        match real.strip_prefix(&self.dir) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => real.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_under_root_and_never_escapes() {
        let r = Root::new("/tmp/r");
        assert_eq!(
            r.path("/etc/ssh/sshd_config"),
            Path::new("/tmp/r/etc/ssh/sshd_config")
        );
        assert_eq!(r.path("/../../etc/passwd"), Path::new("/tmp/r/etc/passwd"));
        assert_eq!(r.host_path(Path::new("/tmp/r/etc/x")), Path::new("/etc/x"));
        assert!(!r.is_live());
        assert!(Root::new("/").is_live());
        assert_eq!(Root::new("/").path("/etc/x"), Path::new("/etc/x"));
    }
}
