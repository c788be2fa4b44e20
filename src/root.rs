//! Resolves host paths against the root brickup works on: `/` in production, a temp dir in tests,
//! a mounted image when baking (bootc's `install/osconfig.rs` hands the root in the same way).
//!
//! Every file brickup reads or writes goes through [`Root::path`]; no literal host path is opened
//! directly. Under a root other than `/` a path is resolved the way the target will see it: the
//! kernel walks it with openat2(2) `RESOLVE_IN_ROOT`, so an absolute symlink in the image
//! (`/etc/resolv.conf`, `/etc/alternatives/*`, or a planted one) and `..` stay inside the root
//! instead of reaching the machine that bakes the image.
//!
//! What remains: [`Root::path`] returns a path string, and whoever opens it later walks it again
//! with ordinary host semantics. A symlink swapped into the image between the resolution and that
//! open is followed on the host (a TOCTOU window). brickup's own writes close it: fsops opens the
//! directory it writes in with [`Root::open_dir`] (openat2 again, at the moment of the write) and
//! creates, renames and removes relative to that descriptor. Reads by path keep the window; they
//! only matter for images someone changes while brickup runs.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Symlinks followed in one resolution before giving up, as Linux does (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Where [`Root::path`] points when a path cannot be resolved: a name that does not exist under
/// the root, so reads find nothing and nothing outside the root is touched.
const UNRESOLVED: &str = ".brickup-unresolved-path";

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
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when brickup works on the machine it runs on: services may be restarted and live
    /// checks (listening ports, firewall rules) are meaningful.
    pub(crate) fn is_live(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// The path of a host path (absolute, as seen from inside the root) on this machine.
    ///
    /// Under `/` that is the path itself: the kernel resolves it as the target does, and nothing
    /// can escape `/`. Under any other root the existing part is resolved inside the root (see
    /// [`Root::resolve`]). When that fails (a symlink loop, an unreadable directory) the error is
    /// logged and the result names a directory that does not exist under the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let host_path = host_path.as_ref();
        if self.is_live() {
            return Path::new("/").join(host_path);
        }
        if !self.dir.exists() {
            // No tree yet, so no link to follow: the path is where the tree will be made.
            let parts = lexical(host_path);
            let parts: Vec<&OsStr> = parts.iter().collect();
            let mut out = self.dir.clone();
            out.extend(cancel_dotdot(&parts).iter().filter(|c| *c != ".."));
            return out;
        }
        match self.resolve(host_path) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("{e:#}");
                let mut out = self.dir.join(UNRESOLVED);
                out.extend(lexical(host_path).iter().filter(|c| *c != ".."));
                out
            }
        }
    }

    /// The path on this machine of `host_path` resolved as the target would resolve it: symlinks
    /// followed with absolute ones re-rooted, `..` taken against the real parent, never leaving the
    /// root. A part that does not exist yet is appended with its `..` resolved lexically.
    pub(crate) fn resolve(&self, host_path: impl AsRef<Path>) -> Result<PathBuf> {
        let inner = self.resolve_host(host_path.as_ref())?;
        Ok(self.dir.join(inner.strip_prefix("/").unwrap_or(&inner)))
    }

    /// The host path (as seen from inside the root) of a path under this root, for messages.
    pub fn host_path(&self, real: &Path) -> PathBuf {
        match real.strip_prefix(&self.dir) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => real.to_path_buf(),
        }
    }

    /// Open the directory at `host_path`, resolved inside the root at this moment; brickup's
    /// writes happen relative to the returned descriptor.
    pub(crate) fn open_dir(&self, host_path: &Path) -> Result<OwnedFd> {
        let root = self.open_root()?;
        self.open_in(
            &root,
            &lexical(host_path),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        )
        .with_context(|| format!("opening directory {}", self.shown(host_path)))
    }

    /// `host_path` fully resolved inside the root, as a host path (starts with `/`).
    pub(crate) fn resolve_host(&self, host_path: &Path) -> Result<PathBuf> {
        let root = self.open_root()?;
        let root_real = fd_path(&root)?;
        let mut want = lexical(host_path);
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > MAX_LINKS {
                bail!(
                    "resolving {}: too many levels of symbolic links",
                    self.shown(host_path)
                );
            }
            let parts: Vec<&OsStr> = want.iter().collect();
            let (fd, n) = self.longest_existing(&root, &parts, host_path)?;
            let rest = &parts[n..];
            let stat = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
                // The last existing component is a link (dangling, or the path's own last part):
                // follow it here, re-rooting an absolute target, so a write lands where the target
                // would put it.
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                    .with_context(|| format!("reading a link in {}", self.shown(host_path)))?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                let mut next: PathBuf = if target.is_absolute() {
                    PathBuf::new()
                } else {
                    parts[..n - 1].iter().collect()
                };
                next.push(lexical(target));
                next.extend(rest);
                want = next;
                continue;
            }
            let cleaned = cancel_dotdot(rest);
            if cleaned.iter().count() != rest.len() {
                // `missing/..` in the part that does not exist: drop the pair and look again, as
                // what remains may exist (and be a link).
                want = parts[..n].iter().collect::<PathBuf>().join(cleaned);
                continue;
            }
            if rest.first() == Some(&OsStr::new("..")) {
                bail!("resolving {}: not a directory", self.shown(host_path));
            }
            let real = fd_path(&fd)?;
            let inner = real.strip_prefix(&root_real).with_context(|| {
                format!(
                    "{} resolved to {}, outside the root {}",
                    host_path.display(),
                    real.display(),
                    root_real.display()
                )
            })?;
            let mut out = Path::new("/").join(inner);
            out.extend(rest);
            return Ok(out);
        }
    }

    /// The longest prefix of `parts` that exists, opened without following its last component.
    fn longest_existing(
        &self,
        root: &OwnedFd,
        parts: &[&OsStr],
        shown: &Path,
    ) -> Result<(OwnedFd, usize)> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for n in (0..=parts.len()).rev() {
            let prefix: PathBuf = parts[..n].iter().collect();
            match self.open_in(root, &prefix, flags) {
                Ok(fd) => return Ok((fd, n)),
                Err(Errno::NOENT | Errno::NOTDIR) if n > 0 => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("resolving {}", self.shown(shown)))
                }
            }
        }
        unreachable!("the root itself always opens or errors")
    }

    /// openat2 relative to the root, `RESOLVE_IN_ROOT`. `rel` is relative (see [`lexical`]).
    fn open_in(&self, root: &OwnedFd, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        for _ in 0..16 {
            match rustix::fs::openat2(root, rel, flags, Mode::empty(), how) {
                // A rename elsewhere on the filesystem raced a `..` lookup: try again.
                Err(Errno::AGAIN) => continue,
                // Kernels before 5.6: under `/` plain resolution is the same thing.
                Err(Errno::NOSYS) if self.is_live() => {
                    return rustix::fs::openat(root, rel, flags, Mode::empty())
                }
                r => return r,
            }
        }
        Err(Errno::AGAIN)
    }

    fn open_root(&self) -> Result<OwnedFd> {
        rustix::fs::open(
            &self.dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening the root {}", self.dir.display()))
    }

    fn shown(&self, host_path: &Path) -> String {
        if self.is_live() {
            host_path.display().to_string()
        } else {
            format!("{} under {}", host_path.display(), self.dir.display())
        }
    }
}

/// `path` as a relative path of its normal and `..` components (a leading `/` and `.` dropped).
fn lexical(path: &Path) -> PathBuf {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            Component::ParentDir => Some(OsStr::new("..")),
            _ => None,
        })
        .collect()
}

/// `rest` with every `name/..` pair removed; leading `..` stay.
fn cancel_dotdot(rest: &[&OsStr]) -> PathBuf {
    let mut out: Vec<&OsStr> = Vec::new();
    for c in rest {
        if *c == ".." && out.last().is_some_and(|l| *l != "..") {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

/// The path the kernel has for an open descriptor.
fn fd_path(fd: &impl AsFd) -> Result<PathBuf> {
    let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    std::fs::read_link(&link)
        .with_context(|| format!("reading {link} (brickup needs /proc to resolve paths)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn live_root_is_the_plain_path() {
        let r = Root::new("/");
        assert!(r.is_live());
        assert_eq!(r.path("/etc/x"), Path::new("/etc/x"));
        assert_eq!(r.path("etc/x"), Path::new("/etc/x"));
        assert_eq!(r.host_path(Path::new("/etc/x")), Path::new("/etc/x"));
    }

    #[test]
    fn resolves_under_root_and_never_escapes() {
        let d = tempfile::tempdir().unwrap();
        let r = Root::new(d.path());
        assert!(!r.is_live());
        std::fs::create_dir_all(d.path().join("etc/ssh")).unwrap();
        assert_eq!(
            r.path("/etc/ssh/sshd_config"),
            d.path().join("etc/ssh/sshd_config")
        );
        assert_eq!(r.path("/../../etc/passwd"), d.path().join("etc/passwd"));
        assert_eq!(r.path("/"), d.path().join(""));
        assert_eq!(r.host_path(&d.path().join("etc/x")), Path::new("/etc/x"));
    }

    #[test]
    fn absolute_links_are_re_rooted() {
        let d = tempfile::tempdir().unwrap();
        let r = Root::new(d.path());
        std::fs::create_dir_all(d.path().join("usr/lib/x")).unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        symlink("/usr/lib/x", d.path().join("etc/x")).unwrap();
        // A dangling absolute link, as in a baked image.
        symlink("/nowhere/file", d.path().join("etc/dangling")).unwrap();
        symlink("/etc/loop", d.path().join("etc/loop")).unwrap();
        assert_eq!(r.path("/etc/x/f"), d.path().join("usr/lib/x/f"));
        assert_eq!(r.path("/etc/dangling"), d.path().join("nowhere/file"));
        assert_eq!(r.path("/etc/x/../../y"), d.path().join("usr/y"));
        assert_eq!(r.path("/etc/missing/../x"), d.path().join("usr/lib/x"));
        assert!(r.resolve("/etc/loop").is_err());
        assert!(r.path("/etc/loop").starts_with(d.path().join(UNRESOLVED)));
    }

    #[test]
    fn dotdot_cancels_only_missing_names() {
        let c = |v: &[&str]| cancel_dotdot(&v.iter().map(OsStr::new).collect::<Vec<_>>());
        assert_eq!(c(&["a", "..", "b"]), Path::new("b"));
        assert_eq!(c(&["..", "a"]), Path::new("../a"));
        assert_eq!(c(&["a", "b", "..", ".."]), Path::new(""));
    }
}
