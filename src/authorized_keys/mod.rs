//! The `authorized_keys` file format (sshd(8), "AUTHORIZED_KEYS FILE FORMAT"): parsing public keys
//! (and refusing private ones), merging wanted keys into a file while keeping every line already
//! there, and where sshd looks for a user's file (sshd_config(5) TOKENS). Shared by the key step,
//! which writes the file, and the sshd step, whose lockout guard reads it. No I/O.

mod blob;
mod line;
mod options;
mod values;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::fsops::UserTree;
use crate::passwd::User;

pub(crate) use blob::BlobError;
use line::KEY_TYPES;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum KeyError {
    #[error("this is a PRIVATE key: paste the public key (the .pub file's one line) instead, and treat the private key as leaked")]
    PrivateKey,
    #[error("not a public key: expected `[options] <type> <base64> [comment]` with type one of {}", KEY_TYPES.join(", "))]
    Malformed,
    #[error("ssh-dss (DSA) keys are disabled in current OpenSSH; use ssh-ed25519")]
    Dsa,
    #[error("the key data is not valid base64 (cut short, or a character changed when pasted?)")]
    BadBase64,
    #[error("the key data is of type {inner:?}, not {outer:?} as the line says")]
    TypeMismatch { outer: String, inner: String },
    #[error("{what} ({code}) at column {column}: sshd splits fields on plain spaces and tabs only; retype it as plain ASCII")]
    Character {
        what: String,
        code: String,
        column: usize,
    },
    #[error("the key data {0}")]
    Blob(BlobError),
    #[error("option {} (`{name}`) {why}", index + 1)]
    Option {
        index: usize,
        name: String,
        why: String,
    },
}

/// One `authorized_keys` line's key, read as sshd reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicKey {
    pub(crate) options: Option<String>,
    pub(crate) kind: String,
    pub(crate) blob: String,
    pub(crate) comment: String,
    /// What sshd compares: the decoded key's parts.
    id: Vec<u8>,
    /// The options' lower-case names (`no-` kept on negated flags) and dequoted values.
    option_list: Vec<(String, Option<String>)>,
}

impl PublicKey {
    /// Parse an `authorized_keys` line: `[options] type base64 [comment]`, refusing anything sshd
    /// would refuse (and any character but printable ASCII and tabs). Never echoes the key.
    pub(crate) fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim_matches(line::is_blank);
        if text.contains("PRIVATE KEY")
            || text.starts_with("-----BEGIN")
            || text.starts_with("PuTTY-User-Key-File")
        {
            return Err(KeyError::PrivateKey);
        }
        line::check_chars(text)?;
        let (options, key) = line::split(text)?;
        let option_list = match options {
            Some(_) => options::parse_values(text)?,
            None => Vec::new(),
        };
        Ok(PublicKey {
            options: options.map(str::to_string),
            kind: key.kind,
            blob: key.blob,
            comment: key.comment,
            id: key.id,
            option_list,
        })
    }

    /// The dequoted value of option `name` (lower-case, as sshd matches it), when the line
    /// carries it.
    pub(crate) fn option(&self, name: &str) -> Option<&str> {
        self.option_list
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The same key as sshd compares keys (decoded), whatever the options or comment.
    pub(crate) fn same_key(&self, other: &PublicKey) -> bool {
        self.kind == other.kind && self.id == other.id
    }

    /// Does this entry let its key open a shell? Options that run a fixed command (cloud-init's
    /// "Please login as ..." line), limit the source, expire, or take the terminal do not
    /// (sshd(8) AUTHORIZED_KEYS FILE FORMAT).
    pub(crate) fn usable(&self) -> bool {
        !self
            .option_list
            .iter()
            .map(|(n, _)| n)
            .any(|o| RESTRICTING.contains(&o.as_str()))
    }

    /// Is this entry the login `wanted` asks for? Usable, or restricted only by the very `from=`
    /// the configured line carries (the config check admits the owner's addresses by it).
    pub(crate) fn usable_as(&self, wanted: &PublicKey) -> bool {
        self.usable()
            || self.option_list.iter().all(|(n, v)| {
                !RESTRICTING.contains(&n.as_str())
                    || (n == "from" && v.is_some() && wanted.option("from") == v.as_deref())
            })
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

/// `current` with every wanted key usable: sshd uses the *first* entry of a key, so a key whose
/// first entry is restricted (e.g. `command="echo Please login as..."`) gets its plain line
/// inserted just before that entry; a missing key is appended. Other lines are kept byte for byte.
pub(crate) fn merge(current: &str, wanted: &[String]) -> String {
    let mut lines: Vec<String> = current.lines().map(str::to_string).collect();
    let mut changed = false;
    for want in wanted {
        let Ok(key) = PublicKey::parse(want) else {
            continue;
        };
        let first = lines
            .iter()
            .position(|l| PublicKey::parse(l).is_ok_and(|h| h.same_key(&key)));
        match first {
            Some(i) if PublicKey::parse(&lines[i]).is_ok_and(|h| h.usable_as(&key)) => continue,
            Some(i) => lines.insert(i, want.trim_matches(line::is_blank).to_string()),
            None => lines.push(want.trim_matches(line::is_blank).to_string()),
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
                .is_some_and(|e| e.usable_as(&k))
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

/// Test seam: brickup's verdict on one authorized_keys line (Err: the message it would give).
#[cfg(feature = "testing")]
pub fn check_line(line: &str) -> Result<(), String> {
    PublicKey::parse(line)
        .map(|_| ())
        .map_err(|e| e.to_string())
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
    fn field_bugs_are_refused() {
        let blob = ED.split_whitespace().nth(1).unwrap();
        let cut = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMB9CrdZ7GzgiLScczhaCB3b";
        let nbsp = format!("ssh-ed25519\u{a0}{blob} owner");
        let typo = format!("no-port-fowarding {ED}");
        assert!(matches!(
            PublicKey::parse(cut),
            Err(KeyError::Blob(BlobError::Short))
        ));
        assert!(matches!(
            PublicKey::parse(&nbsp),
            Err(KeyError::Character { column: 12, .. })
        ));
        let e = PublicKey::parse(&typo).unwrap_err();
        assert!(e.to_string().contains("`no-port-fowarding`"), "{e}");
        for (line, err) in [(cut.to_string(), "cut short"), (nbsp.clone(), "U+00A0")] {
            let msg = PublicKey::parse(&line).unwrap_err().to_string();
            assert!(msg.contains(err), "{msg}");
            assert!(!msg.contains("AAAAC3"), "never echoes the key: {msg}");
        }
        // On disk: a broken variant never counts, and the correct line is added after it.
        for broken in [nbsp, typo, format!("ssh-ed25519 {blob}AAAA")] {
            let current = format!("# mine\n{broken}\n");
            assert!(!has_usable_key(&current, &[ED.to_string()]), "{broken}");
            assert_eq!(
                merge(&current, &[ED.to_string()]),
                format!("{current}{ED}\n")
            );
        }
    }

    #[test]
    fn keys_compare_by_decoded_key() {
        let blob = ED.split_whitespace().nth(1).unwrap();
        let tabbed = format!("ssh-ed25519\t{blob}\tother");
        assert!(has_usable_key(&tabbed, &[ED.to_string()]));
        assert_eq!(merge(&tabbed, &[ED.to_string()]), tabbed);
        let proof = format!("from=\"198.18.4.2,fd00:b1c::2\" {ED} brickup-login-proof");
        assert!(!PublicKey::parse(&proof).unwrap().usable());
    }

    #[test]
    fn expands_tokens() {
        let u = User {
            name: "mn".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/mn".into(),
            shell: "/bin/bash".into(),
            to_create: false,
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
