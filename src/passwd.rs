//! Users as the root's `/etc/passwd` has them: the entry brickup installs keys for and logs in
//! as, or the one `ssh.create_user` will make. A reader of the host: it imports no step.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::root::Root;

/// A user's passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: PathBuf,
    pub(crate) shell: PathBuf,
    /// Not in `/etc/passwd` yet: `ssh.create_user` asks for it, and plan and preflight see the
    /// user as the user step will create it. Its uid and gid are `u32::MAX` ("no change" to
    /// chown) until then; the engine reads the user again once the user step has run.
    pub(crate) to_create: bool,
}

impl User {
    /// The user `ssh.create_user` will create, with its home as `useradd` makes it.
    pub(crate) fn planned(name: &str, shell: &Path) -> User {
        User {
            name: name.to_string(),
            uid: u32::MAX,
            gid: u32::MAX,
            home: home(name),
            shell: shell.to_path_buf(),
            to_create: true,
        }
    }
}

/// The home `useradd` makes for a created user.
pub(crate) fn home(user: &str) -> PathBuf {
    Path::new("/home").join(user)
}

/// Look `name` up in the root's `/etc/passwd`; None when it has no such entry.
pub(crate) fn passwd_user(root: &Root, name: &str) -> Result<Option<User>> {
    let path = root.path("/etc/passwd");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || f[0] != name {
            continue;
        }
        let id = |i: usize| {
            f[i].parse().with_context(|| {
                format!("{}: {name}'s entry has a bad id {:?}", path.display(), f[i])
            })
        };
        return Ok(Some(User {
            name: name.to_string(),
            uid: id(2)?,
            gid: id(3)?,
            home: PathBuf::from(f[5]),
            shell: PathBuf::from(f[6]),
            to_create: false,
        }));
    }
    Ok(None)
}
