//! One `authorized_keys` line split into fields exactly as sshd splits it (OpenSSH
//! auth2-pubkeyfile.c `auth_check_authkey_line`, sshkey.c `sshkey_read`, authfile.c
//! `sshkey_advance_past_options`): fields are separated by spaces and tabs only; a line either
//! starts with the key type or with options up to the first unquoted blank. Before that, brickup's
//! own rule: nothing but printable ASCII and tabs, so a pasted non-breaking space is named rather
//! than silently taken for a separator. No I/O; errors never echo the key.

use base64::Engine as _;

use super::blob;
use super::KeyError;

/// Key types sshd accepts today (ssh-dss is disabled by OpenSSH 9.8+ and refused here).
pub(crate) const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The key part of a line: `type base64 [comment]`.
#[derive(Debug)]
pub(crate) struct KeyField {
    pub(crate) kind: String,
    pub(crate) blob: String,
    pub(crate) id: Vec<u8>,
    pub(crate) comment: String,
}

pub(crate) fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The first character that is neither printable ASCII nor a tab, named with its 1-based column.
pub(crate) fn check_chars(line: &str) -> Result<(), KeyError> {
    let Some((col, c)) = line
        .chars()
        .enumerate()
        .find(|(_, c)| !(*c == '\t' || (' '..='~').contains(c)))
    else {
        return Ok(());
    };
    let what = match c {
        '\u{a0}' => "a non-breaking space".to_string(),
        '\u{202f}' => "a narrow non-breaking space".to_string(),
        '\u{2000}'..='\u{200a}' => "a typographic space".to_string(),
        '\u{200b}' => "a zero-width space".to_string(),
        '\u{feff}' => "a byte order mark".to_string(),
        '\u{2010}'..='\u{2015}' => "a typographic dash".to_string(),
        '\u{2018}'..='\u{201f}' => "a typographic quote".to_string(),
        '\r' => "a carriage return".to_string(),
        '\n' => "a line break".to_string(),
        c if c.is_control() => "a control character".to_string(),
        _ => "a non-ASCII character".to_string(),
    };
    Err(KeyError::Character {
        what,
        code: format!("U+{:04X}", c as u32),
        column: col + 1,
    })
}

/// Split a line (leading blanks already skipped) into its options text and key field, the way
/// sshd does: first as `type base64 ...`; failing that, options up to the first unquoted blank,
/// then the key. The error is the most telling of the two attempts.
pub(crate) fn split(line: &str) -> Result<(Option<&str>, KeyField), KeyError> {
    let first = match read_key(line) {
        Ok(key) => return Ok((None, key)),
        Err(e) => e,
    };
    let end = past_options(line).ok_or(KeyError::Option {
        index: 0,
        name: String::new(),
        why: "has an unterminated quote".into(),
    })?;
    let rest = line[end..].trim_start_matches(is_blank);
    match read_key(rest) {
        Ok(key) => Ok((Some(&line[..end]), key)),
        Err(second) => Err(first.or(second).unwrap_or(KeyError::Malformed)),
    }
}

/// sshkey_read: Err(None) when the line does not start with a key type at all.
fn read_key(s: &str) -> Result<KeyField, Option<KeyError>> {
    let Some(space) = s.find(is_blank) else {
        return Err((s == "ssh-dss" || KEY_TYPES.contains(&s)).then_some(KeyError::Malformed));
    };
    let kind = &s[..space];
    if kind == "ssh-dss" {
        return Err(Some(KeyError::Dsa));
    }
    if !KEY_TYPES.contains(&kind) {
        return Err(None);
    }
    let rest = s[space..].trim_start_matches(is_blank);
    let end = rest.find(is_blank).unwrap_or(rest.len());
    let blob = &rest[..end];
    if blob.is_empty() {
        return Err(Some(KeyError::Malformed));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| Some(KeyError::BadBase64))?;
    let inner = blob::embedded_type(&raw).unwrap_or_default();
    if inner != kind {
        return Err(Some(match inner.is_empty() {
            true => KeyError::Blob(blob::BlobError::Short),
            false => KeyError::TypeMismatch {
                outer: kind.to_string(),
                inner,
            },
        }));
    }
    let id = blob::decode(kind, &raw).map_err(|e| Some(KeyError::Blob(e)))?;
    Ok(KeyField {
        kind: kind.to_string(),
        blob: blob.to_string(),
        id,
        comment: rest[end..].trim_start_matches(is_blank).to_string(),
    })
}

/// sshkey_advance_past_options: the byte offset of the first blank outside quotes (`\"` is
/// skipped whole), or None for an unterminated quote.
fn past_options(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let (mut i, mut quoted) = (0, false);
    while i < b.len() && (quoted || !(b[i] == b' ' || b[i] == b'\t')) {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'"') {
            i += 1;
        } else if b[i] == b'"' {
            quoted = !quoted;
        }
        i += 1;
    }
    (!(quoted && i == b.len())).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_odd_character() {
        for (line, what, code, column) in [
            (
                "ssh-ed25519\u{a0}AAAA",
                "a non-breaking space",
                "U+00A0",
                12,
            ),
            ("ab\u{200b}", "a zero-width space", "U+200B", 3),
            ("a\rb", "a carriage return", "U+000D", 2),
            ("x\u{1}", "a control character", "U+0001", 2),
            ("jos\u{e9}", "a non-ASCII character", "U+00E9", 4),
        ] {
            let e = check_chars(line).unwrap_err();
            assert_eq!(
                e,
                KeyError::Character {
                    what: what.into(),
                    code: code.into(),
                    column
                },
                "{line:?}"
            );
        }
        assert!(check_chars("a\tb c~").is_ok());
    }

    #[test]
    fn options_end_at_the_first_unquoted_blank() {
        for (s, end) in [
            ("no-pty ssh", Some(6)),
            ("a=\"x y\" k", Some(7)),
            ("a=\"x\\\" y\" k", Some(9)),
            ("a=\"x y", None),
            ("abc", Some(3)),
        ] {
            assert_eq!(past_options(s), end, "{s}");
        }
    }
}
