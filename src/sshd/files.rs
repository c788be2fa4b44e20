//! sshd's config files as sshd reads them under the root: `sshd_config` and what it includes, in
//! sshd's reading order, the `AuthorizedKeysFile` it names, and the root's sshd binary. A reader
//! of the host for the facts and the report: it imports no step.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::edit;
use crate::root::Root;
use crate::runner::Cmd;

pub(crate) const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";

/// One directive in the order sshd reads it.
#[derive(Debug, Clone)]
pub(crate) struct Directive {
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) keyword: String,
    pub(crate) value: String,
    pub(crate) in_match: bool,
}

/// The directives of `sshd_config` and what it includes, in sshd's reading order.
pub(crate) fn read_order(root: &Root) -> Result<Vec<Directive>> {
    let mut out = Vec::new();
    read_file(root, Path::new(SSHD_CONFIG), &mut out, 0)?;
    Ok(out)
}

fn read_file(root: &Root, host: &Path, out: &mut Vec<Directive>, depth: usize) -> Result<()> {
    if depth > 8 {
        bail!("Include nesting too deep at {}", host.display());
    }
    let real = root.path(host);
    let text = fs::read_to_string(&real).with_context(|| format!("reading {}", real.display()))?;
    let mut in_match = false;
    for (i, line) in text.lines().enumerate() {
        let Some((keyword, value)) = edit::directive(line) else {
            continue;
        };
        if keyword == "match" {
            in_match = true;
        }
        if keyword == "include" {
            for pattern in value.split_whitespace() {
                for f in glob(root, pattern)? {
                    read_file(root, &f, out, depth + 1)?;
                }
            }
            continue;
        }
        out.push(Directive {
            file: host.to_path_buf(),
            line: i + 1,
            keyword,
            value,
            in_match,
        });
    }
    Ok(())
}

/// Expand an Include pattern (only `*` in the last component, as sshd's configs use).
pub(super) fn glob(root: &Root, pattern: &str) -> Result<Vec<PathBuf>> {
    let pattern = pattern.trim_matches('"');
    let host = if pattern.starts_with('/') {
        PathBuf::from(pattern)
    } else {
        Path::new("/etc/ssh").join(pattern)
    };
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = host.parent().unwrap_or(Path::new("/")).to_path_buf();
    let Some((pre, post)) = name.split_once('*') else {
        return Ok(if root.path(&host).exists() {
            vec![host]
        } else {
            vec![]
        });
    };
    let real = root.path(&dir);
    let mut found = Vec::new();
    match fs::read_dir(&real) {
        Ok(entries) => {
            for e in entries {
                let n = e
                    .with_context(|| format!("listing {}", real.display()))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len() {
                    found.push(dir.join(n));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("listing {}", real.display())),
    }
    found.sort();
    Ok(found)
}

/// The first global `AuthorizedKeysFile` entry (sshd's default: `.ssh/authorized_keys`).
pub(crate) fn authorized_keys_file(root: &Root) -> Result<String> {
    let found = read_order(root)?
        .into_iter()
        .find(|d| !d.in_match && d.keyword == "authorizedkeysfile")
        .and_then(|d| d.value.split_whitespace().next().map(str::to_string));
    Ok(found.unwrap_or_else(|| ".ssh/authorized_keys".to_string()))
}

/// Run `sshd` from the target: the root's own binary in a chroot, or the machine's when live.
pub(crate) fn sshd_cmd(root: &Root) -> Option<Cmd> {
    let bin = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|b| root.path(b).exists())?;
    Some(Cmd::new(bin).chroot(root.dir()))
}
