//! The `authorized_keys` file format (sshd(8), "AUTHORIZED_KEYS FILE FORMAT"): parsing public keys
//! (and refusing private ones), merging wanted keys into a file while keeping every line already
//! there, and where sshd looks for a user's file (sshd_config(5) TOKENS). Shared by the key step,
//! which writes the file, and the sshd step, whose lockout guard reads it. No I/O.

use std::path::{Path, PathBuf};

use anyhow::Result;
use base64::Engine as _;

use crate::facts::User;
use crate::fsops::UserTree;

/// Key types sshd accepts today (ssh-dss is disabled by OpenSSH 9.8+ and refused here).
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum KeyError {
    #[error("this is a PRIVATE key: paste the public key (the .pub file's one line) instead, and treat the private key as leaked")]
    PrivateKey,
    #[error("not a public key: expected `<type> <base64> [comment]` with type one of {}", KEY_TYPES.join(", "))]
    Malformed,
    #[error("ssh-dss (DSA) keys are disabled in current OpenSSH; use ssh-ed25519")]
    Dsa,
    #[error("the key data is not valid base64")]
    BadBase64,
    #[error("the key data is of type {inner:?}, not {outer:?} as the line says")]
    TypeMismatch { outer: String, inner: String },
}

/// One `authorized_keys` line's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicKey {
    pub(crate) options: Option<String>,
    pub(crate) kind: String,
    pub(crate) blob: String,
    pub(crate) comment: String,
}

impl PublicKey {
    /// Parse an `authorized_keys` line: `[options] type base64 [comment]`. Never echoes the text.
    pub(crate) fn parse(line: &str) -> Result<PublicKey, KeyError> {
        let line = line.trim();
        if line.contains("PRIVATE KEY")
            || line.starts_with("-----BEGIN")
            || line.starts_with("PuTTY-User-Key-File")
        {
            return Err(KeyError::PrivateKey);
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| KEY_TYPES.contains(w) || *w == "ssh-dss")
            .ok_or(KeyError::Malformed)?;
        if words[at] == "ssh-dss" {
            return Err(KeyError::Dsa);
        }
        let kind = words[at].to_string();
        let blob = words.get(at + 1).ok_or(KeyError::Malformed)?.to_string();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&blob)
            .map_err(|_| KeyError::BadBase64)?;
        let inner = embedded_type(&raw).ok_or(KeyError::Malformed)?;
        if inner != kind {
            return Err(KeyError::TypeMismatch { outer: kind, inner });
        }
        let options = (at > 0).then(|| line[..line.find(&kind).unwrap_or(0)].trim().to_string());
        Ok(PublicKey {
            options,
            kind,
            blob,
            comment: words[at + 2..].join(" "),
        })
    }

    /// The same key, whatever the options or comment.
    pub(crate) fn same_key(&self, other: &PublicKey) -> bool {
        self.kind == other.kind && self.blob == other.blob
    }

    /// Does this entry let its key open a shell? Options that run a fixed command (cloud-init's
    /// "Please login as ..." line), limit the source, expire, or take the terminal do not
    /// (sshd(8) AUTHORIZED_KEYS FILE FORMAT).
    pub(crate) fn usable(&self) -> bool {
        let Some(opts) = &self.options else {
            return true;
        };
        !option_names(opts)
            .iter()
            .any(|o| RESTRICTING.contains(&o.as_str()))
    }
}

/// authorized_keys options that keep a key from giving its owner a normal login.
const RESTRICTING: &[&str] = &[
    "command",
    "from",
    "restrict",
    "expiry-time",
    "principals",
    "cert-authority",
    "no-pty",
];

/// The lower-case names of an options string (`a,b="x,y",c`), quotes respected.
fn option_names(opts: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in opts.chars().chain(std::iter::once(',')) {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                let name = cur
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if !name.is_empty() {
                    names.push(name);
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    names
}

/// The key type string at the head of a key blob (a uint32 length, then the name).
fn embedded_type(raw: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let name = raw.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

/// `current` with every wanted key usable: sshd uses the *first* entry of a key, so a key whose
/// first entry is restricted (e.g. `command="echo Please login as..."`) gets its plain line
/// inserted just before that entry; a missing key is appended. Other lines are kept byte for byte.
pub(crate) fn merge(current: &str, wanted: &[String]) -> String {
    let mut lines: Vec<String> = current.lines().map(str::to_string).collect();
    let mut changed = false;
    for line in wanted {
        let Ok(key) = PublicKey::parse(line) else {
            continue;
        };
        let first = lines
            .iter()
            .position(|l| PublicKey::parse(l).is_ok_and(|h| h.same_key(&key)));
        match first {
            Some(i) if PublicKey::parse(&lines[i]).is_ok_and(|h| h.usable()) => continue,
            Some(i) => lines.insert(i, line.trim().to_string()),
            None => lines.push(line.trim().to_string()),
        }
        changed = true;
    }
    if !changed {
        return current.to_string();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Is one of `keys` usable as the first entry of its key in this authorized_keys text?
pub(crate) fn has_usable_key(text: &str, keys: &[String]) -> bool {
    let entries: Vec<PublicKey> = text
        .lines()
        .filter_map(|l| PublicKey::parse(l).ok())
        .collect();
    keys.iter()
        .filter_map(|k| PublicKey::parse(k).ok())
        .any(|k| {
            entries
                .iter()
                .find(|e| e.same_key(&k))
                .is_some_and(|e| e.usable())
        })
}

/// Expand an `AuthorizedKeysFile` entry (%h, %u, %U, %%; relative means from home) to a host path.
pub(crate) fn expand_keys_file(pattern: &str, user: &User) -> PathBuf {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(&user.home.to_string_lossy()),
            Some('u') => out.push_str(&user.name),
            Some('U') => out.push_str(&user.uid.to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    if out.starts_with('/') {
        PathBuf::from(out)
    } else {
        user.home.join(out)
    }
}

/// The tree brickup must not follow links in: the user's home when the file is below it (sshd
/// reads it as root from a directory the user controls), else the file's own directory.
pub(crate) fn tree(path: &Path, user: &User) -> UserTree {
    let top = if path.starts_with(&user.home) && path != user.home {
        user.home.clone()
    } else {
        path.parent().unwrap_or(Path::new("/")).to_path_buf()
    };
    UserTree {
        top,
        user: user.name.clone(),
        uid: user.uid,
        gid: user.gid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi owner@laptop";

    #[test]
    fn parses_and_refuses() {
        let k = PublicKey::parse(ED).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.comment, "owner@laptop");
        let with_opts = format!("no-pty,from=\"1.2.3.4\" {ED}");
        assert_eq!(
            PublicKey::parse(&with_opts).unwrap().options.as_deref(),
            Some("no-pty,from=\"1.2.3.4\"")
        );
        assert_eq!(
            PublicKey::parse("-----BEGIN OPENSSH PRIVATE KEY-----"),
            Err(KeyError::PrivateKey)
        );
        assert_eq!(
            PublicKey::parse("ssh-ed25519 !!!"),
            Err(KeyError::BadBase64)
        );
        assert!(matches!(
            PublicKey::parse(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi"
            ),
            Err(KeyError::TypeMismatch { .. })
        ));
        assert_eq!(PublicKey::parse("hello world"), Err(KeyError::Malformed));
    }

    #[test]
    fn merge_keeps_lines_and_adds_once() {
        let current = "# mine\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi other-comment";
        assert_eq!(merge(current, &[ED.to_string()]), current);
        let out = merge("# mine", &[ED.to_string()]);
        assert_eq!(out, format!("# mine\n{ED}\n"));
        assert_eq!(merge(&out, &[ED.to_string(), ED.to_string()]), out);
    }

    #[test]
    fn restricted_entries_do_not_count() {
        let blob = ED.split_whitespace().nth(1).unwrap();
        // cloud-init's line for root when disable_root is on.
        let cloud = format!("no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"debian\\\" rather than the user \\\"root\\\".';echo;sleep 10;exit 142\" ssh-ed25519 {blob} cloud");
        assert!(!PublicKey::parse(&cloud).unwrap().usable());
        assert!(!has_usable_key(&cloud, &[ED.to_string()]));
        let out = merge(&format!("# top\n{cloud}\n"), &[ED.to_string()]);
        assert_eq!(
            out,
            format!("# top\n{ED}\n{cloud}\n"),
            "the plain line goes first"
        );
        assert!(has_usable_key(&out, &[ED.to_string()]));
        assert_eq!(merge(&out, &[ED.to_string()]), out);
        for opts in [
            "from=\"10.0.0.1\"",
            "restrict",
            "no-pty",
            "expiry-time=\"20200101\"",
        ] {
            assert!(
                !PublicKey::parse(&format!("{opts} {ED}")).unwrap().usable(),
                "{opts}"
            );
        }
        for opts in [
            "no-agent-forwarding,no-port-forwarding",
            "environment=\"A=command\"",
        ] {
            assert!(
                PublicKey::parse(&format!("{opts} {ED}")).unwrap().usable(),
                "{opts}"
            );
        }
    }

    #[test]
    fn expands_tokens() {
        let u = User {
            name: "mn".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/mn".into(),
            shell: "/bin/bash".into(),
        };
        assert_eq!(
            expand_keys_file(".ssh/authorized_keys", &u),
            Path::new("/home/mn/.ssh/authorized_keys")
        );
        assert_eq!(
            expand_keys_file("/etc/ssh/keys/%u-%U%%", &u),
            Path::new("/etc/ssh/keys/mn-1000%")
        );
        assert_eq!(expand_keys_file("%h/k", &u), Path::new("/home/mn/k"));
    }
}
