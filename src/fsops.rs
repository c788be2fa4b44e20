//! Atomic, reversible file writes under a [`Root`]: temp file in the same directory, fsync,
//! rename, fsync the directory (afterburn's `write_ssh_keys`); original mode and owner kept; the
//! original backed up under `/var/lib/brickup/backup` the first time brickup changes it; every
//! change undone when a [`Transaction`] is dropped uncommitted (rustup's `transaction.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::root::Root;

/// Where originals are kept, as a host path.
pub const BACKUP_DIR: &str = "/var/lib/brickup/backup";

/// Mode and owner a new file gets when there is no original to copy them from.
#[derive(Debug, Clone, Copy)]
pub struct NewFile {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
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
pub fn atomic_write(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.brickup-"))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(content)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", tmp.path().display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(tmp.path(), Some(uid), Some(gid))
            .with_context(|| format!("setting owner of {}", tmp.path().display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    fsync_dir(dir)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Read a file that may not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

struct Original {
    path: PathBuf,
    /// Content, mode, uid, gid - or None when the file did not exist.
    before: Option<(Vec<u8>, u32, u32, u32)>,
}

/// A set of file changes that is undone unless [`Transaction::commit`] is called.
pub struct Transaction {
    root: Root,
    originals: Vec<Original>,
    created_dirs: Vec<PathBuf>,
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
        self.originals
            .iter()
            .map(|o| self.root.host_path(&o.path))
            .collect()
    }

    /// Make a directory (and its parents) with `new`'s mode and owner; noted for rollback.
    pub fn create_dir(&mut self, host_path: &Path, new: NewFile) -> Result<()> {
        let path = self.root.path(host_path);
        if path.is_dir() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            if !parent.is_dir() {
                let hp = self.root.host_path(parent);
                self.create_dir(&hp, NewFile::mode(0o755))?;
            }
        }
        fs::DirBuilder::new()
            .mode(new.mode)
            .create(&path)
            .with_context(|| format!("creating directory {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(new.mode))
            .with_context(|| format!("setting mode of {}", path.display()))?;
        if new.uid.is_some() || new.gid.is_some() {
            std::os::unix::fs::chown(&path, new.uid, new.gid)
                .with_context(|| format!("setting owner of {}", path.display()))?;
        }
        self.created_dirs.push(path);
        Ok(())
    }

    /// Write `content` to the host path unless it already holds exactly that.
    /// Returns whether the file changed.
    pub fn write(&mut self, host_path: &Path, content: &[u8], new: NewFile) -> Result<bool> {
        let path = self.root.path(host_path);
        let meta = match fs::metadata(&path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("reading metadata of {}", path.display()))
            }
        };
        let current = read_optional(&path)?;
        if current.as_deref() == Some(content) {
            return Ok(false);
        }
        if let Some(parent) = host_path.parent() {
            self.create_dir(parent, NewFile::mode(0o755))?;
        }
        let before = match (&current, &meta) {
            (Some(c), Some(m)) => Some((c.clone(), m.mode() & 0o7777, m.uid(), m.gid())),
            _ => None,
        };
        if let Some((content, mode, uid, gid)) = &before {
            self.backup_once(host_path, content, *mode, *uid, *gid)?;
        }
        if !self.originals.iter().any(|o| o.path == path) {
            self.originals.push(Original {
                path: path.clone(),
                before: before.clone(),
            });
        }
        let (mode, owner) = match &before {
            Some((_, mode, uid, gid)) => (*mode, Some((*uid, *gid))),
            None => (new.mode, new.uid.map(|u| (u, new.gid.unwrap_or(u)))),
        };
        atomic_write(&path, content, mode, owner)?;
        tracing::info!(path = %host_path.display(), "wrote");
        Ok(true)
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
        let backup = self.root.path(BACKUP_DIR).join(rel);
        if backup.exists() {
            return Ok(());
        }
        let dir = backup.parent().expect("backup path has a parent");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        atomic_write(&backup, content, mode, Some((uid, gid)))
            .with_context(|| format!("backing up {}", host_path.display()))
    }

    /// Keep the changes.
    pub fn commit(mut self) {
        self.committed = true;
    }

    /// Undo every change, newest first. Errors are collected, not swallowed.
    pub fn rollback(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        while let Some(o) = self.originals.pop() {
            let r = match &o.before {
                Some((content, mode, uid, gid)) => {
                    atomic_write(&o.path, content, *mode, Some((*uid, *gid)))
                }
                None => fs::remove_file(&o.path)
                    .with_context(|| format!("removing {}", o.path.display())),
            };
            match r {
                Ok(()) => tracing::warn!(path = %o.path.display(), "restored"),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        while let Some(d) = self.created_dirs.pop() {
            // Only an empty directory we made is removed; anything else stays.
            let _ = fs::remove_dir(&d);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("rollback incomplete: {}", errors.join("; "))
        }
    }
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

/// Open a file for appending, creating it with `mode`.
pub fn open_append(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
