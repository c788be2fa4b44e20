//! Files in a directory tree a login user controls (their home, `~/.ssh`). brickup runs as root,
//! so a link the user plants there would steer root's writes anywhere; what must hold follows
//! OpenSSH's `safe_path` (sshd_config(5) `StrictModes`). Below the tree's top nothing is opened
//! through a symlink (each directory O_NOFOLLOW relative to its verified parent), modes and owners
//! are set on descriptors, and every directory above the top must belong to root.

use std::path::Component;

use rustix::fs::Stat;

use super::*;

/// A directory tree owned by a login user: `top` is their home (or the directory holding a file
/// outside it), reached through root's own directories; `uid`/`gid` own what brickup makes below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTree {
    pub top: PathBuf,
    /// The user's name, for messages.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

/// A file read from a user's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFile {
    pub(crate) content: Vec<u8>,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// What a walk that may change things did.
#[derive(Default)]
pub(super) struct Make {
    mode: u32,
    made: Vec<PathBuf>,
    fixed: bool,
}

impl UserTree {
    /// Open the top, refusing what a user could redirect or sshd would ignore: a directory above
    /// it that is not root's or is writable by group/others; a top owned by someone other than the
    /// user or root, or writable by group/others. None when the top does not exist.
    fn open_top(&self, root: &Root) -> Result<Option<OwnedFd>> {
        let host = root.resolve_host(&self.top)?;
        let mut fd = root.open_dir(Path::new("/"))?;
        let mut at = PathBuf::from("/");
        for name in host.iter().skip(1) {
            let st = rustix::fs::fstat(&fd)?;
            if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
                bail!(
                    "{} (above {}) is {}: whoever can change it could redirect brickup's writes; refusing to write {}'s keys below it",
                    at.display(),
                    self.top.display(),
                    why_unsafe(&st),
                    self.user
                );
            }
            at.push(name);
            let flags = dir_flags() | OFlags::NOFOLLOW;
            fd = match rustix::fs::openat(&fd, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("opening {}", at.display())),
            };
        }
        let st = rustix::fs::fstat(&fd)?;
        self.check_owner(&st, &self.top)?;
        if st.st_mode & 0o022 != 0 {
            bail!(
                "{} is writable by group or others (mode {:o}): sshd's StrictModes ignores keys below it and other users could swap them; run `chmod go-w {}`",
                self.top.display(),
                st.st_mode & 0o7777,
                self.top.display()
            );
        }
        Ok(Some(fd))
    }

    /// Open `host_dir` (the top or below it) one component at a time without following links.
    /// With `make`, missing directories are created (owned by the user, `make.mode`) and existing
    /// ones writable by group/others get `make.mode`. None when something does not exist.
    pub(super) fn walk(
        &self,
        root: &Root,
        host_dir: &Path,
        mut make: Option<&mut Make>,
    ) -> Result<Option<OwnedFd>> {
        let rel = host_dir.strip_prefix(&self.top).with_context(|| {
            format!(
                "{} is not inside {}",
                host_dir.display(),
                self.top.display()
            )
        })?;
        let Some(mut fd) = self.open_top(root)? else {
            return Ok(None);
        };
        let mut at = self.top.clone();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                bail!(
                    "{}: only plain names below {}",
                    host_dir.display(),
                    self.top.display()
                );
            };
            let parent = at.clone();
            at.push(name);
            let flags = dir_flags() | OFlags::NOFOLLOW;
            let child = match rustix::fs::openat(&fd, name, flags, Mode::empty()) {
                Ok(child) => child,
                Err(Errno::NOENT) => match make.as_deref_mut() {
                    None => return Ok(None),
                    Some(m) => {
                        let new = NewFile {
                            mode: m.mode,
                            uid: Some(self.uid),
                            gid: Some(self.gid),
                        };
                        let child = mkdir_in(&fd, &parent, name, new)?;
                        m.made.push(at.clone());
                        child
                    }
                },
                Err(Errno::LOOP | Errno::NOTDIR) => return Err(self.refuse(&fd, name, &at, true)),
                Err(e) => return Err(e).with_context(|| format!("opening {}", at.display())),
            };
            let st = rustix::fs::fstat(&child)?;
            self.check_owner(&st, &at)?;
            if let Some(m) = make.as_deref_mut() {
                if st.st_mode & 0o022 != 0 {
                    rustix::fs::fchmod(&child, Mode::from_raw_mode(m.mode))
                        .with_context(|| format!("setting mode of {}", at.display()))?;
                    tracing::warn!(path = %at.display(), "was writable by group/others; mode set for StrictModes");
                    m.fixed = true;
                }
            }
            fd = child;
        }
        Ok(Some(fd))
    }

    /// `name` in `dir`: a regular file with one link, the user's or root's; None when missing.
    fn read(&self, dir: &OwnedFd, name: &OsStr, at: &Path) -> Result<Option<(OwnedFd, Before)>> {
        let found = match read_at(dir, name, at) {
            Ok(found) => found,
            Err(e) => {
                let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
                if st.is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink) {
                    return Err(self.refuse(dir, name, at, false));
                }
                return Err(e);
            }
        };
        let Some((fd, before)) = found else {
            return Ok(None);
        };
        let st = rustix::fs::fstat(&fd)?;
        self.check_owner(&st, at)?;
        if st.st_nlink != 1 {
            bail!(
                "{} has {} hard links: it may be another file (e.g. /etc/shadow) under a second name; refusing to touch it",
                at.display(),
                st.st_nlink
            );
        }
        Ok(Some((fd, before)))
    }

    fn check_owner(&self, st: &Stat, at: &Path) -> Result<()> {
        if st.st_uid != self.uid && st.st_uid != 0 {
            bail!(
                "{} is owned by uid {}, not {} (uid {}) or root: refusing to use it for {}'s keys",
                at.display(),
                st.st_uid,
                self.user,
                self.uid,
                self.user
            );
        }
        Ok(())
    }

    /// The error for a link (or a non-directory) where brickup wanted `at`.
    fn refuse(&self, dir: &OwnedFd, name: &OsStr, at: &Path, want_dir: bool) -> anyhow::Error {
        let kind = if want_dir { "directory" } else { "file" };
        match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(target) => anyhow::anyhow!(
                "{} is a symbolic link (to {}): brickup runs as root and does not follow links in a directory {} controls; replace it with a real {kind}",
                at.display(),
                Path::new(OsStr::from_bytes(target.as_bytes())).display(),
                self.user
            ),
            Err(_) => anyhow::anyhow!("{} is not a {kind}", at.display()),
        }
    }
}

fn why_unsafe(st: &Stat) -> String {
    if st.st_uid != 0 {
        format!("owned by uid {}", st.st_uid)
    } else {
        format!(
            "writable by group or others (mode {:o})",
            st.st_mode & 0o7777
        )
    }
}

/// Read a file in a user's tree without following links; None when it or its directory is
/// missing. Refuses links, non-regular files, hard-linked files and files owned by another user.
pub fn read_user_file(root: &Root, tree: &UserTree, host_path: &Path) -> Result<Option<UserFile>> {
    let (dir, name) = split(host_path)?;
    let Some(fd) = tree.walk(root, dir, None)? else {
        return Ok(None);
    };
    Ok(tree
        .read(&fd, name, host_path)?
        .map(|(_, (content, mode, uid, gid))| UserFile {
            content,
            mode,
            uid,
            gid,
        }))
}

impl Transaction {
    /// Make `host_path` in a user's tree and the missing directories down to it, owned by the
    /// user with `mode`; existing ones writable by group/others get `mode`. Returns whether anything
    /// changed. A missing top is made root's, mode 0755.
    pub(crate) fn create_user_dir(
        &mut self,
        tree: &UserTree,
        host_path: &Path,
        mode: u32,
    ) -> Result<bool> {
        let mut changed = false;
        if tree.open_top(&self.root)?.is_none() {
            self.create_dir(&tree.top, NewFile::mode(0o755))?;
            changed = true;
        }
        let mut make = Make {
            mode,
            ..Make::default()
        };
        let r = tree.walk(&self.root, host_path, Some(&mut make));
        changed |= make.fixed || !make.made.is_empty();
        let made = make.made.into_iter().map(|d| (d, Some(tree.clone())));
        self.created_dirs.extend(made);
        r?.with_context(|| format!("{} vanished while brickup made it", host_path.display()))?;
        Ok(changed)
    }

    /// Give a file in a user's tree exactly `content`, `mode` and the user as owner: written as a
    /// temp file in the directory's descriptor, chowned and chmodded there, renamed over the old
    /// one. The directory must exist ([`Transaction::create_user_dir`]). Returns whether anything
    /// changed.
    pub fn write_user_file(
        &mut self,
        tree: &UserTree,
        host_path: &Path,
        content: &[u8],
        mode: u32,
    ) -> Result<bool> {
        let (dir, name) = split(host_path)?;
        let fd = tree
            .walk(&self.root, dir, None)?
            .with_context(|| format!("{} does not exist", dir.display()))?;
        let current = tree.read(&fd, name, host_path)?;
        if let Some((file, (old, m, uid, gid))) = &current {
            if old == content {
                return fix_mode_owner(file, (*m, *uid, *gid), mode, tree, host_path);
            }
        }
        let before = current.map(|(_, b)| b);
        if let Some((content, mode, uid, gid)) = &before {
            self.backup_once(host_path, content, *mode, *uid, *gid)?;
        }
        self.note(host_path, before, Some(tree.clone()));
        let owner = Some((tree.uid, tree.gid));
        write_in(&fd, &self.real(dir), name, content, mode, owner)?;
        tracing::info!(path = %host_path.display(), "wrote");
        Ok(true)
    }
}

/// Set mode and owner on the open file when they differ.
fn fix_mode_owner(
    file: &OwnedFd,
    (m, uid, gid): (u32, u32, u32),
    mode: u32,
    tree: &UserTree,
    at: &Path,
) -> Result<bool> {
    let owner_ok = uid == tree.uid && gid == tree.gid;
    if !owner_ok {
        let (u, g) = (Uid::from_raw(tree.uid), Gid::from_raw(tree.gid));
        rustix::fs::fchown(file, Some(u), Some(g))
            .with_context(|| format!("chown {}", at.display()))?;
    }
    if m != mode || !owner_ok {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode))
            .with_context(|| format!("chmod {}", at.display()))?;
    }
    Ok(m != mode || !owner_ok)
}
