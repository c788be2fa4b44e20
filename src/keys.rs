//! The owner's SSH key step: installs `ssh.authorized_keys` into the `authorized_keys` file sshd
//! really reads for the user (effective `AuthorizedKeysFile`, sshd_config(5) TOKENS), keeping every
//! line already there. The file format itself is [`crate::authorized_keys`].

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::authorized_keys::{expand_keys_file, merge, tree};
use crate::engine::{Action, Applied, Context, Drift, Step};
use crate::fsops::{read_user_file, Transaction};
use crate::passwd::User;

/// The authorized_keys file sshd reads for the configured user (host path), and the user.
fn target<'a>(cx: &'a Context) -> Result<(PathBuf, &'a User)> {
    let user = cx.facts.user()?;
    let pattern = cx.facts.authorized_keys_file()?;
    Ok((expand_keys_file(pattern, user), user))
}

fn wanted_content(cx: &Context, path: &Path, user: &User) -> Result<(String, String)> {
    let current = match read_user_file(&cx.root, &tree(path, user), path)? {
        Some(f) => String::from_utf8(f.content)
            .with_context(|| format!("{} is not UTF-8", path.display()))?,
        None => String::new(),
    };
    // A throwaway login-proof key a crash left behind goes (its line is marked).
    let new = merge(
        &crate::login::without_proof_lines(&current),
        &cx.config.ssh.authorized_keys,
    );
    Ok((current, new))
}

/// Installs `ssh.authorized_keys` for `ssh.user`.
pub struct KeysStep;

impl Step for KeysStep {
    fn name(&self) -> &'static str {
        "ssh-key"
    }

    fn skip_reason(&self, cx: &Context) -> Option<String> {
        cx.config
            .ssh
            .authorized_keys
            .is_empty()
            .then(|| "no ssh.authorized_keys configured".to_string())
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        let (path, user) = target(cx)?;
        let (old, new) = wanted_content(cx, &path, user)?;
        Ok(if old == new {
            vec![]
        } else {
            vec![Action::File {
                path: path.display().to_string(),
                old,
                new,
            }]
        })
    }

    fn apply(&self, cx: &Context, tx: &mut Transaction) -> Result<Applied> {
        let (path, user) = target(cx)?;
        let tree = tree(&path, user);
        let dir = path.parent().unwrap_or(Path::new("/"));
        let mut changed = tx.create_user_dir(&tree, dir, 0o700)?;
        let (_, new) = wanted_content(cx, &path, user)?;
        changed |= tx.write_user_file(&tree, &path, new.as_bytes(), 0o600)?;
        Ok(if changed {
            Applied::changed(format!("installed key(s) in {}", path.display()))
        } else {
            Applied::unchanged(format!("key(s) already in {}", path.display()))
        })
    }

    fn check(&self, cx: &Context) -> Result<Vec<Drift>> {
        let (path, user) = target(cx)?;
        let (old, new) = wanted_content(cx, &path, user)?;
        let shown = path.display().to_string();
        let mut drift = Vec::new();
        if old != new {
            drift.push(Drift::new(&shown, format!(
                "{shown}: a configured key is missing, or its first entry restricts it (command=, from=, ...)"
            )).source(&shown));
        }
        if let Some(f) = read_user_file(&cx.root, &tree(&path, user), &path)? {
            if f.mode & 0o022 != 0 || f.uid != user.uid {
                drift.push(
                    Drift::new(
                        &shown,
                        format!(
                            "{shown}: mode {:o} owner {} (sshd's StrictModes may ignore it)",
                            f.mode & 0o777,
                            f.uid
                        ),
                    )
                    .values(
                        format!("owner {}, not writable by group or others", user.uid),
                        Some(format!("mode {:o} owner {}", f.mode & 0o777, f.uid)),
                    )
                    .source(&shown),
                );
            }
        }
        Ok(drift)
    }
}
