//! Atomic, reversible file writes under a [`Root`]: temp file in the same directory, fsync,
//! rename, fsync the directory (afterburn's `write_ssh_keys`); original mode and owner kept; the
//! original backed up under `/var/lib/brickup/backup` the first time brickup changes it; every
//! change undone when a [`Transaction`] is dropped uncommitted (rustup's `transaction.rs`).
//!
//! Every write happens relative to a directory descriptor: [`Root::open_dir`] for the system's
//! own directories (resolved inside the root at the moment of the write), [`UserTree`] for the
//! directories a login user controls, where nothing is followed through a symlink. Modes and owners
//! are set on descriptors, never by path.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read as _, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use crate::root::Root;

mod user;
pub use user::{read_user_file, UserTree};

/// Where originals are kept, as a host path.
pub(crate) const BACKUP_DIR: &str = "/var/lib/brickup/backup";

/// Mode and owner a new file gets when there is no original to copy them from.
#[derive(Debug, Clone, Copy)]
pub struct NewFile {
    pub(crate) mode: u32,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
}

impl NewFile {
    pub const fn mode(mode: u32) -> Self {
        NewFile {
            mode,
            uid: None,
            gid: None,
        }
    }
}

/// Write `content` to `path` atomically with the given mode and owner.
pub(crate) fn atomic_write(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let (dir, name) = split(path)?;
    let fd = rustix::fs::open(dir, dir_flags(), Mode::empty())
        .with_context(|| format!("opening directory {}", dir.display()))?;
    write_in(&fd, dir, name, content, mode, owner)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// A path's directory and last component.
fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => bail!("{} has no parent directory", path.display()),
    }
}

/// The atomic write relative to the open directory `dir` (`shown` names it in messages): a temp
/// file created there with O_EXCL|O_NOFOLLOW, owner and mode set on its descriptor, fsync,
/// renameat over `name`, fsync the directory.
fn write_in(
    dir: &OwnedFd,
    shown: &Path,
    name: &OsStr,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let (tmp, fd) = create_temp(dir, name)
        .with_context(|| format!("creating a temp file in {}", shown.display()))?;
    let done = (|| -> std::io::Result<()> {
        let mut f = File::from(fd);
        f.write_all(content)?;
        if let Some((uid, gid)) = owner {
            // Before the mode: chown clears set-id bits.
            rustix::fs::fchown(&f, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
        f.sync_all()?;
        rustix::fs::renameat(dir, &tmp, dir, name)?;
        Ok(())
    })();
    if let Err(e) = done {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
        return Err(e).with_context(|| format!("writing {}", shown.join(name).display()));
    }
    sync_dir_fd(dir, shown)
}

/// fsyncs a directory so a rename inside it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let fd = rustix::fs::open(dir, dir_flags(), Mode::empty())
        .with_context(|| format!("opening directory {}", dir.display()))?;
    sync_dir_fd(&fd, dir)
}

fn sync_dir_fd(dir: &OwnedFd, shown: &Path) -> Result<()> {
    rustix::fs::fsync(dir).with_context(|| format!("syncing directory {}", shown.display()))
}

fn create_temp(dir: &OwnedFd, name: &OsStr) -> std::io::Result<(OsString, OwnedFd)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    loop {
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".brickup-{:08x}", fastrand::u32(..)));
        match rustix::fs::openat(dir, &tmp, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((tmp, fd)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Make directory `name` in `dir` and set its mode and owner on the new directory's descriptor.
fn mkdir_in(dir: &OwnedFd, shown: &Path, name: &OsStr, new: NewFile) -> Result<OwnedFd> {
    let path = shown.join(name);
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
        .with_context(|| format!("creating directory {}", path.display()))?;
    let fd = rustix::fs::openat(dir, name, dir_flags() | OFlags::NOFOLLOW, Mode::empty())
        .with_context(|| format!("opening directory {}", path.display()))?;
    if new.uid.is_some() || new.gid.is_some() {
        rustix::fs::fchown(&fd, new.uid.map(Uid::from_raw), new.gid.map(Gid::from_raw))
            .with_context(|| format!("setting owner of {}", path.display()))?;
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(new.mode))
        .with_context(|| format!("setting mode of {}", path.display()))?;
    Ok(fd)
}

/// A file as found: content, mode, uid, gid.
type Before = (Vec<u8>, u32, u32, u32);

/// `name` in `dir`, not following a link, or None when it does not exist.
fn read_at(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<Option<(OwnedFd, Before)>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", shown.display())),
    };
    let st = rustix::fs::fstat(&fd).with_context(|| format!("reading {}", shown.display()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        bail!("{} is not a regular file", shown.display());
    }
    let mut content = Vec::new();
    File::from(fd.try_clone()?)
        .read_to_end(&mut content)
        .with_context(|| format!("reading {}", shown.display()))?;
    Ok(Some((
        fd,
        (content, st.st_mode & 0o7777, st.st_uid, st.st_gid),
    )))
}

struct Original {
    /// Host path written, with links resolved.
    host: PathBuf,
    /// Content, mode, uid, gid - or None when the file did not exist.
    before: Option<Before>,
    /// The user tree the file lies in, if any: undone without following links too.
    tree: Option<UserTree>,
}

/// A set of file changes that is undone unless [`Transaction::commit`] is called.
pub struct Transaction {
    root: Root,
    originals: Vec<Original>,
    created_dirs: Vec<(PathBuf, Option<UserTree>)>,
    committed: bool,
}

impl Transaction {
    pub fn new(root: &Root) -> Self {
        Transaction {
            root: root.clone(),
            originals: Vec::new(),
            created_dirs: Vec::new(),
            committed: false,
        }
    }

    /// Files this transaction has changed so far (host paths).
    pub fn changed(&self) -> Vec<PathBuf> {
        self.originals.iter().map(|o| o.host.clone()).collect()
    }

    /// The path on this machine of a resolved host path, for messages.
    fn real(&self, host: &Path) -> PathBuf {
        self.root.dir().join(host.strip_prefix("/").unwrap_or(host))
    }

    /// Make a directory (and its parents) with `new`'s mode and owner; noted for rollback.
    pub(crate) fn create_dir(&mut self, host_path: &Path, new: NewFile) -> Result<()> {
        let mut made = Vec::new();
        let r = mkdir_p(&self.root, host_path, new, &mut made);
        self.created_dirs
            .extend(made.into_iter().map(|d| (d, None)));
        r
    }

    /// Write `content` to the host path unless it already holds exactly that.
    /// Returns whether the file changed.
    pub fn write(&mut self, host_path: &Path, content: &[u8], new: NewFile) -> Result<bool> {
        let host = self.root.resolve_host(host_path)?;
        let (parent, name) = split(&host)?;
        let current = if self.real(parent).is_dir() {
            let dir = self.root.open_dir(parent)?;
            read_at(&dir, name, &self.real(&host))?.map(|(_, b)| b)
        } else {
            None
        };
        if current.as_ref().map(|c| c.0.as_slice()) == Some(content) {
            return Ok(false);
        }
        self.create_dir(parent, NewFile::mode(0o755))?;
        if let Some((content, mode, uid, gid)) = &current {
            self.backup_once(&host, content, *mode, *uid, *gid)?;
        }
        let (mode, owner) = match &current {
            Some((_, mode, uid, gid)) => (*mode, Some((*uid, *gid))),
            None => (new.mode, new.uid.map(|u| (u, new.gid.unwrap_or(u)))),
        };
        self.note(&host, current, None);
        let dir = self.root.open_dir(parent)?;
        write_in(&dir, &self.real(parent), name, content, mode, owner)?;
        if host != host_path {
            tracing::info!(path = %host_path.display(), resolved = %host.display(), "wrote");
        } else {
            tracing::info!(path = %host_path.display(), "wrote");
        }
        Ok(true)
    }

    /// Remove the file at the host path (backed up and noted for rollback like a write).
    /// Returns whether there was one.
    pub(crate) fn remove(&mut self, host_path: &Path) -> Result<bool> {
        let host = self.root.resolve_host(host_path)?;
        let (parent, name) = split(&host)?;
        if !self.real(parent).is_dir() {
            return Ok(false);
        }
        let dir = self.root.open_dir(parent)?;
        let Some((_, current)) = read_at(&dir, name, &self.real(&host))? else {
            return Ok(false);
        };
        let (content, mode, uid, gid) = &current;
        self.backup_once(&host, content, *mode, *uid, *gid)?;
        self.note(&host, Some(current), None);
        rustix::fs::unlinkat(&dir, name, AtFlags::empty())
            .with_context(|| format!("removing {}", self.real(&host).display()))?;
        sync_dir_fd(&dir, &self.real(parent))?;
        tracing::info!(path = %host_path.display(), "removed");
        Ok(true)
    }

    fn note(&mut self, host: &Path, before: Option<Before>, tree: Option<UserTree>) {
        if !self.originals.iter().any(|o| o.host == host) {
            self.originals.push(Original {
                host: host.to_path_buf(),
                before,
                tree,
            });
        }
    }

    fn backup_once(
        &self,
        host_path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let rel = host_path.strip_prefix("/").unwrap_or(host_path);
        let backup = self.root.resolve_host(&Path::new(BACKUP_DIR).join(rel))?;
        if self.real(&backup).exists() {
            return Ok(());
        }
        let (dir, name) = split(&backup)?;
        mkdir_p(&self.root, dir, NewFile::mode(0o700), &mut Vec::new())?;
        let fd = self.root.open_dir(dir)?;
        write_in(&fd, &self.real(dir), name, content, mode, Some((uid, gid)))
            .with_context(|| format!("backing up {}", host_path.display()))
    }

    /// Keep the changes.
    pub(crate) fn commit(mut self) {
        self.committed = true;
    }
}

/// Writes `host_path` atomically and durably, outside any step's transaction: the write stands
/// at once and no rollback undoes it. Only for state that must outlive a failure: a record of
/// progress (csf's install mark, the first-boot records), a safe state to stay in (csf.conf with
/// TESTING on), a unit a power cut emptied. Returns whether the content changed.
pub(crate) fn write_kept(
    root: &Root,
    host_path: &Path,
    content: &[u8],
    new: NewFile,
) -> Result<bool> {
    let mut tx = Transaction::new(root);
    let changed = tx.write(host_path, content, new)?;
    tx.commit();
    Ok(changed)
}

impl Transaction {
    /// Undo every change, newest first. Errors are collected, not swallowed.
    pub(crate) fn rollback(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        while let Some(o) = self.originals.pop() {
            match self.restore(&o) {
                Ok(()) => tracing::warn!(path = %o.host.display(), "restored"),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        while let Some((d, tree)) = self.created_dirs.pop() {
            // Only an empty directory we made is removed; anything else stays.
            if let (Ok((_, name)), Ok(Some(fd))) = (split(&d), self.parent_fd(&d, &tree)) {
                let _ = rustix::fs::unlinkat(&fd, name, AtFlags::REMOVEDIR);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("rollback incomplete: {}", errors.join("; "))
        }
    }

    /// The directory holding `host`, opened the way it was written: inside the root, or without
    /// following links in a user's tree. None when it is gone.
    fn parent_fd(&self, host: &Path, tree: &Option<UserTree>) -> Result<Option<OwnedFd>> {
        let (parent, _) = split(host)?;
        match tree {
            Some(t) => t.walk(&self.root, parent, None),
            None => self.root.open_dir(parent).map(Some),
        }
    }

    fn restore(&self, o: &Original) -> Result<()> {
        let (_, name) = split(&o.host)?;
        let fd = self
            .parent_fd(&o.host, &o.tree)?
            .with_context(|| format!("restoring {}: its directory is gone", o.host.display()))?;
        let shown = self.real(o.host.parent().unwrap_or(Path::new("/")));
        match &o.before {
            Some((content, mode, uid, gid)) => {
                write_in(&fd, &shown, name, content, *mode, Some((*uid, *gid)))
            }
            None => rustix::fs::unlinkat(&fd, name, AtFlags::empty())
                .with_context(|| format!("removing {}", self.real(&o.host).display())),
        }
    }
}

/// Make `host_path` and its missing parents inside the root, pushing each one made onto `made`.
fn mkdir_p(root: &Root, host_path: &Path, new: NewFile, made: &mut Vec<PathBuf>) -> Result<()> {
    let host = root.resolve_host(host_path)?;
    let real = root.dir().join(host.strip_prefix("/").unwrap_or(&host));
    if real.is_dir() {
        return Ok(());
    }
    let (parent, name) = split(&host)?;
    mkdir_p(root, parent, NewFile::mode(0o755), made)?;
    let fd = root.open_dir(parent)?;
    let shown = real.parent().unwrap_or(&real).to_path_buf();
    mkdir_in(&fd, &shown, name, new)?;
    made.push(host);
    Ok(())
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = self.rollback() {
                tracing::error!("{e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn setup() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let r = Root::new(d.path());
        fs::create_dir_all(r.path("/etc")).unwrap();
        (d, r)
    }

    #[test]
    fn dropped_transaction_undoes_everything() {
        let (_d, root) = setup();
        let a = root.path("/etc/a");
        fs::write(&a, "old").unwrap();
        fs::set_permissions(&a, fs::Permissions::from_mode(0o640)).unwrap();
        {
            let mut tx = Transaction::new(&root);
            assert!(tx
                .write(Path::new("/etc/a"), b"new", NewFile::mode(0o600))
                .unwrap());
            assert!(tx
                .write(Path::new("/etc/sub/b"), b"b", NewFile::mode(0o600))
                .unwrap());
            assert_eq!(fs::read_to_string(&a).unwrap(), "new");
            // Mode kept from the original.
            assert_eq!(fs::metadata(&a).unwrap().mode() & 0o777, 0o640);
        }
        assert_eq!(fs::read_to_string(&a).unwrap(), "old");
        assert!(!root.path("/etc/sub/b").exists());
        assert!(!root.path("/etc/sub").exists());
        // The original was backed up on first change and stays backed up.
        let backup = root.path("/var/lib/brickup/backup/etc/a");
        assert_eq!(fs::read_to_string(backup).unwrap(), "old");
    }

    #[test]
    fn committed_transaction_keeps_and_backup_is_first_original() {
        let (_d, root) = setup();
        fs::write(root.path("/etc/a"), "v1").unwrap();
        for v in ["v2", "v3"] {
            let mut tx = Transaction::new(&root);
            tx.write(Path::new("/etc/a"), v.as_bytes(), NewFile::mode(0o600))
                .unwrap();
            tx.commit();
        }
        assert_eq!(fs::read_to_string(root.path("/etc/a")).unwrap(), "v3");
        assert_eq!(
            fs::read_to_string(root.path("/var/lib/brickup/backup/etc/a")).unwrap(),
            "v1"
        );
        let mut tx = Transaction::new(&root);
        assert!(!tx
            .write(Path::new("/etc/a"), b"v3", NewFile::mode(0o600))
            .unwrap());
        assert!(tx.changed().is_empty());
    }

    #[test]
    fn no_temp_files_left_behind() {
        let (_d, root) = setup();
        let mut tx = Transaction::new(&root);
        tx.write(Path::new("/etc/x"), b"1", NewFile::mode(0o600))
            .unwrap();
        tx.commit();
        let names: Vec<_> = fs::read_dir(root.path("/etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x")]);
    }
}
