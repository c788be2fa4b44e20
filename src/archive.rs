//! Safe unpacking of the verified csf tarball: every entry is checked and written by us, never by
//! tar's own `unpack` (tar(5) / the `tar` crate's low-level entry API; RUSTSEC-2026-0067/0068).
//!
//! Rules: paths stay relative with no `..`; nothing is written through a symlink; symlinks may
//! only climb (`../`) within the tree and then descend; hard links point at files already
//! unpacked; device and fifo nodes are refused; ownership and setuid/setgid bits are dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use flate2::read::GzDecoder;
use tar::EntryType;
use tracing::{debug, info};

/// The file that marks csf's top directory.
const INSTALLER: &str = "install.sh";

/// Unpacks the gzip tarball into `into` (created 0700 if missing) and returns csf's installer
/// directory (see [`find_installer_dir`]).
pub fn unpack_safely(tarball: &Path, into: &Path) -> Result<PathBuf> {
    crate::download::ensure_private_dir(into)?;
    let file = File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let entries = archive
        .entries()
        .with_context(|| format!("reading {}", tarball.display()))?;
    let mut count = 0usize;
    for entry in entries {
        let mut entry =
            entry.with_context(|| format!("reading an entry of {}", tarball.display()))?;
        unpack_entry(&mut entry, into)
            .with_context(|| format!("unpacking {} into {}", tarball.display(), into.display()))?;
        count += 1;
    }
    info!(tarball = %tarball.display(), entries = count, into = %into.display(), "unpacked");
    find_installer_dir(into)
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<'_, R>, into: &Path) -> Result<()> {
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let refuse = |why: &str| anyhow::anyhow!("refusing tar entry {name:?}: {why}");
    let path = entry.path().map_err(|e| refuse(&e.to_string()))?;
    let rel = relative_path(&path).map_err(&refuse)?;
    let kind = entry.header().entry_type();
    debug!(entry = %name, ?kind, "unpacking");
    if rel.as_os_str().is_empty() {
        return match kind {
            EntryType::Directory | EntryType::XGlobalHeader => Ok(()),
            _ => Err(refuse("empty path")),
        };
    }
    if !matches!(
        kind,
        EntryType::Directory
            | EntryType::Regular
            | EntryType::Continuous
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::XGlobalHeader
    ) {
        return Err(refuse(&format!("{kind:?} entries are not allowed")));
    }
    make_parent_dirs(into, &rel).map_err(|e| refuse(&format!("{e:#}")))?;
    let dest = into.join(&rel);
    match kind {
        EntryType::Directory => make_dir(&dest),
        EntryType::Regular | EntryType::Continuous => {
            let mode = entry.header().mode().unwrap_or(0o644);
            write_file(entry, &dest, mode)
        }
        EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(|e| refuse(&e.to_string()))?
                .ok_or_else(|| refuse("symlink without a target"))?
                .into_owned();
            check_symlink_target(&rel, &target).map_err(|why| refuse(&why))?;
            std::os::unix::fs::symlink(&target, &dest)
                .with_context(|| format!("creating symlink {}", dest.display()))
        }
        EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(|e| refuse(&e.to_string()))?
                .ok_or_else(|| refuse("hard link without a target"))?;
            let target = relative_path(&target)
                .map_err(|why| refuse(&format!("hard link target {}", why)))?;
            check_link_source(into, &target).map_err(|e| refuse(&format!("{e:#}")))?;
            fs::hard_link(into.join(&target), &dest)
                .with_context(|| format!("creating hard link {}", dest.display()))
        }
        _ => Ok(()), // XGlobalHeader: metadata only
    }
    .map_err(|e| e.context(format!("tar entry {name:?}")))
}

/// Normalises an entry path to plain components; absolute paths and `..` are refused.
fn relative_path(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("path is absolute"),
        }
    }
    Ok(out)
}

/// A symlink at `rel` may point `../` up to the tree's top and then only down: since nothing is
/// ever written through a symlink, every link lives in a real directory and cannot resolve
/// outside, even through other links.
fn check_symlink_target(rel: &Path, target: &Path) -> Result<(), String> {
    let depth = rel.components().count() - 1;
    let mut ups = 0usize;
    let mut seen_name = false;
    for comp in target.components() {
        match comp {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("symlink target {} is absolute", target.display()))
            }
            Component::CurDir => {}
            Component::ParentDir if seen_name => {
                return Err(format!(
                    "symlink target {} has `..` after a name",
                    target.display()
                ))
            }
            Component::ParentDir => ups += 1,
            Component::Normal(_) => seen_name = true,
        }
    }
    if ups > depth {
        return Err(format!(
            "symlink target {} points outside the unpack directory",
            target.display()
        ));
    }
    if !seen_name && ups == 0 {
        return Err(format!("symlink target {:?} is empty", target.display()));
    }
    Ok(())
}

/// Creates the missing parents of `rel` under `into`, refusing any that is a symlink or a file.
fn make_parent_dirs(into: &Path, rel: &Path) -> Result<()> {
    let mut cur = into.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for comp in parent.components() {
        cur.push(comp);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is not a real directory (symlink or file)",
                cur.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(&cur)?,
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", cur.display())),
        }
    }
    Ok(())
}

/// Creates a directory 0755; an existing real directory is fine, anything else is refused.
fn make_dir(dest: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(dest)
                .with_context(|| format!("inspecting {}", dest.display()))?;
            if !meta.is_dir() {
                bail!("{} already exists and is not a directory", dest.display());
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating directory {}", dest.display())),
    }
}

/// Writes a regular file that must not exist yet; only the rwx bits survive, minus group/other
/// write, so no setuid/setgid/sticky bit comes from the archive.
fn write_file(reader: &mut impl Read, dest: &Path, mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode((mode & 0o755) | 0o600)
        .open(dest)
        .with_context(|| format!("creating {}", dest.display()))?;
    io::copy(reader, &mut file).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// A hard link's source must be a regular file already unpacked, reached without symlinks.
fn check_link_source(into: &Path, target: &Path) -> Result<()> {
    check_parent_dirs(into, target)?;
    let src = into.join(target);
    let meta = fs::symlink_metadata(&src)
        .with_context(|| format!("hard link source {}", src.display()))?;
    if !meta.is_file() {
        bail!("hard link source {} is not a regular file", src.display());
    }
    Ok(())
}

/// Like [`make_parent_dirs`] but only checks: every parent must already be a real directory.
fn check_parent_dirs(into: &Path, rel: &Path) -> Result<()> {
    let mut cur = into.to_path_buf();
    for comp in rel.parent().unwrap_or(Path::new("")).components() {
        cur.push(comp);
        let meta =
            fs::symlink_metadata(&cur).with_context(|| format!("inspecting {}", cur.display()))?;
        if !meta.is_dir() {
            bail!(
                "{} is not a real directory (symlink or file)",
                cur.display()
            );
        }
    }
    Ok(())
}

/// Files that, next to `install.sh`, mark csf's own top directory. The release also carries
/// unrelated installers deeper down (`csf/da/scripts/install.sh`, a DirectAdmin plugin), so
/// `install.sh` alone does not identify it (FACTS.md, `release-15.10-layout.txt`).
const MARKERS: &[&str] = &[INSTALLER, "csf.pl", "version.txt"];

/// Finds csf's installer directory: the archive's one top-level directory holding `install.sh`,
/// `csf.pl` and `version.txt` as regular files. Nested `install.sh` files are ignored.
fn find_installer_dir(root: &Path) -> Result<PathBuf> {
    let mut tops = Vec::new();
    for entry in fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        let ty = entry
            .file_type()
            .with_context(|| format!("inspecting {}", entry.path().display()))?;
        if ty.is_dir() {
            tops.push(entry.path());
        }
    }
    let is_csf = |dir: &Path| {
        MARKERS.iter().all(|m| {
            fs::symlink_metadata(dir.join(m))
                .map(|md| md.file_type().is_file())
                .unwrap_or(false)
        })
    };
    let found: Vec<PathBuf> = tops.iter().filter(|d| is_csf(d)).cloned().collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no top-level directory holding {} found in the archive unpacked at {} (top-level directories: {})",
            MARKERS.join(" + "),
            root.display(),
            names(&tops)
        ),
        many => bail!(
            "{} top-level directories hold csf's installer under {}: {}",
            many.len(),
            root.display(),
            names(many)
        ),
    }
}

fn names(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "none".into();
    }
    dirs.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
