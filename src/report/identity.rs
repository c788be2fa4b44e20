//! Who this machine is: instance id, hostname, OS release and SSH host key fingerprints, all read
//! under a [`Root`]. Sources follow cloud-init's instance-id files, os-release(5) and
//! `ssh-keygen -l` (sshkey.c: SHA256 of the key blob, base64 without padding).

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::root::Root;

/// Where the instance id comes from, best first: cloud-init's current id, cloud-init's cached
/// id, the DMI product UUID (hypervisor-assigned), then systemd's machine id.
const INSTANCE_ID_SOURCES: [&str; 4] = [
    "/run/cloud-init/.instance-id",
    "/var/lib/cloud/data/instance-id",
    "/sys/class/dmi/id/product_uuid",
    "/etc/machine-id",
];

/// One SSH host key as `ssh-keygen -lf` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// The key type as written in the `.pub` file, e.g. `ssh-ed25519`.
    #[serde(rename = "type")]
    pub key_type: String,
    /// `SHA256:<base64 without padding>`, identical to `ssh-keygen -lf`.
    pub fingerprint: String,
}

/// The instance id from the first source that exists and is not empty.
pub fn instance_id(root: &Root) -> Result<String> {
    for source in INSTANCE_ID_SOURCES {
        if let Some(id) = read_optional_trimmed(&root.path(source))? {
            return Ok(id);
        }
    }
    bail!(
        "no instance id found under {} (tried {})",
        root.dir().display(),
        INSTANCE_ID_SOURCES.join(", ")
    )
}

/// The hostname: the kernel's on a live root, `/etc/hostname` otherwise.
pub fn hostname(root: &Root) -> Result<String> {
    if root.is_live() {
        let name = nix::unistd::gethostname().context("reading the kernel hostname")?;
        return Ok(name.to_string_lossy().into_owned());
    }
    let path = root.path("/etc/hostname");
    read_optional_trimmed(&path)?.with_context(|| format!("{} is missing or empty", path.display()))
}

/// `(ID, VERSION_ID)` from `/etc/os-release`, falling back to `/usr/lib/os-release` as
/// os-release(5) says. A missing `VERSION_ID` (rolling releases) is an empty string.
pub fn os_release(root: &Root) -> Result<(String, String)> {
    for source in ["/etc/os-release", "/usr/lib/os-release"] {
        let path = root.path(source);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let fields = parse_os_release(&text);
                let id = fields.get("ID").cloned().unwrap_or_else(|| "linux".into());
                let version = fields.get("VERSION_ID").cloned().unwrap_or_default();
                return Ok((id, version));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    bail!("no os-release file under {}", root.dir().display())
}

/// Parses os-release(5) text: `KEY=value` lines, values optionally in single or double quotes
/// with shell-style backslash escapes; comments and malformed lines are skipped.
pub(crate) fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        fields.insert(key.to_string(), unquote(raw.trim()));
    }
    fields
}

fn unquote(raw: &str) -> String {
    let (quote, inner) = match raw.chars().next() {
        Some(q @ ('"' | '\'')) if raw.len() >= 2 && raw.ends_with(q) => (q, &raw[1..raw.len() - 1]),
        _ => return raw.to_string(),
    };
    if quote == '\'' {
        return inner.to_string();
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\' | '$' | '`'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Fingerprints of `/etc/ssh/ssh_host_*_key.pub`, sorted by file name.
pub fn host_key_fingerprints(root: &Root) -> Result<Vec<HostKey>> {
    let dir = root.path("/etc/ssh");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ssh_host_") && name.ends_with("_key.pub") {
            paths.push(entry.path());
        }
    }
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            fingerprint_public_key(&text).with_context(|| format!("parsing {}", path.display()))
        })
        .collect()
}

/// Fingerprints one OpenSSH public key line (`<type> <base64> [comment]`).
pub(crate) fn fingerprint_public_key(line: &str) -> Result<HostKey> {
    let mut parts = line.split_whitespace();
    let (Some(key_type), Some(b64)) = (parts.next(), parts.next()) else {
        bail!("expected `<type> <base64-key> [comment]`");
    };
    let blob = STANDARD
        .decode(b64)
        .context("decoding the base64 key blob")?;
    let embedded = blob_key_type(&blob).context("reading the key type inside the blob")?;
    if embedded != key_type {
        bail!("key type {key_type} does not match the blob's {embedded}");
    }
    let digest = Sha256::digest(&blob);
    Ok(HostKey {
        key_type: key_type.to_string(),
        fingerprint: format!("SHA256:{}", STANDARD_NO_PAD.encode(digest)),
    })
}

/// The blob starts with an SSH string (u32 big-endian length, bytes) naming the key type.
fn blob_key_type(blob: &[u8]) -> Result<&str> {
    let len_bytes: [u8; 4] = blob.get(..4).context("blob too short")?.try_into()?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let name = blob
        .get(4..4 + len)
        .context("blob shorter than its type field")?;
    std::str::from_utf8(name).context("key type is not UTF-8")
}

/// The trimmed content of a file, or `None` if it is missing or blank.
fn read_optional_trimmed(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            Ok((!text.is_empty()).then(|| text.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quotes_and_escapes() {
        let text = "# comment\nNAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID='12'\n\
                    PRETTY_NAME=\"say \\\"hi\\\" \\$x \\\\ end\"\nbad line\n=novalue\nEMPTY=\n";
        let f = parse_os_release(text);
        assert_eq!(f["NAME"], "Debian GNU/Linux");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["VERSION_ID"], "12");
        assert_eq!(f["PRETTY_NAME"], "say \"hi\" $x \\ end");
        assert_eq!(f["EMPTY"], "");
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn rejects_mismatched_key_type() {
        // Blob says ssh-ed25519, line claims ssh-rsa.
        let line = "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGmNHvYa4Nqv0Vb0kb1sR0GgFv7Hd9Hn2mW4RyGZb5cJ x";
        let err = fingerprint_public_key(line).unwrap_err();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
        assert!(fingerprint_public_key("ssh-ed25519").is_err());
        assert!(fingerprint_public_key("ssh-ed25519 !!!notbase64").is_err());
    }
}
