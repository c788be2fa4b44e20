//! Reads and edits `/etc/csf/csf.conf` as text: the `KEY = "value"` settings brickup owns change,
//! every other byte stays (csf readme, "csf.conf"; the pure-edit shape of coreos-installer's
//! `apply_grub_console_commands`). No I/O here: callers load and write the file.
//!
//! A setting is a line that starts in the first column with a key name (`A-Z`, `0-9`, `_`),
//! then optional blanks, `=`, optional blanks and a double-quoted value. Lines starting with `#`
//! are comments even when their text names a key (`# TCP_IN = "..."`), and are never matched.

use std::collections::BTreeMap;

/// csf.conf keys brickup owns; `firewall.settings` may not set them.
pub(crate) const OWNED_KEYS: &[&str] = &[
    "TESTING",
    "TCP_IN",
    "TCP_OUT",
    "UDP_IN",
    "UDP_OUT",
    "IPV6",
    "TCP6_IN",
    "TCP6_OUT",
    "UDP6_IN",
    "UDP6_OUT",
    "AUTO_UPDATES",
    "RESTRICT_SYSLOG",
];

/// Why a policy cannot be applied to a csf.conf; callers match on `MissingKey` to tell a renamed
/// setting in a new csf release from a broken file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsfConfError {
    #[error("csf.conf has no {key} setting: this csf release may have renamed it")]
    MissingKey { key: String },
    #[error("csf.conf line {line}: {key} is set but not as KEY = \"value\": {text:?}")]
    Malformed {
        key: String,
        line: usize,
        text: String,
    },
    #[error("wanted value for {key} contains a double quote or a control character")]
    BadValue { key: String, value: String },
    #[error("{key:?} is not a csf.conf key name (A-Z, 0-9, _)")]
    BadKey { key: String },
}

/// One `KEY = "value"` line, split so the value can be replaced without touching the rest.
#[derive(Debug, PartialEq, Eq)]
struct Setting<'a> {
    key: &'a str,
    /// Everything up to and including the opening quote.
    head: &'a str,
    value: &'a str,
    /// The closing quote and whatever follows it on the line (without the line ending).
    tail: &'a str,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(is_key_char)
}

/// The key a line starts with in the first column, if any (comments and blank lines give none).
fn leading_key(line: &str) -> Option<&str> {
    let end = line.find(|c: char| !is_key_char(c)).unwrap_or(line.len());
    (end > 0).then(|| &line[..end])
}

/// Parse one line (without its line ending) as a setting.
fn parse_setting(line: &str) -> Option<Setting<'_>> {
    let key = leading_key(line)?;
    let quoted = line[key.len()..]
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')?
        .trim_start_matches([' ', '\t'])
        .strip_prefix('"')?;
    let close = quoted.find('"')?;
    let tail = &quoted[close..];
    if !tail[1..].trim().is_empty() {
        return None;
    }
    // `quoted` is a suffix of `line`, so the head is what precedes it.
    let head_len = line.len() - quoted.len();
    Some(Setting {
        key,
        head: &line[..head_len],
        value: &quoted[..close],
        tail,
    })
}

/// Split text into (line without ending, ending) pairs; the ending is `"\r\n"`, `"\n"` or `""`.
fn lines_with_endings(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_inclusive('\n').map(|chunk| {
        let body = chunk
            .strip_suffix("\r\n")
            .or_else(|| chunk.strip_suffix('\n'))
            .unwrap_or(chunk);
        (body, &chunk[body.len()..])
    })
}

/// All settings in the file. A key set twice keeps its last value, as csf's own loader does.
pub fn read_keys(text: &str) -> BTreeMap<String, String> {
    lines_with_endings(text)
        .filter_map(|(line, _)| parse_setting(line))
        .map(|s| (s.key.to_string(), s.value.to_string()))
        .collect()
}

fn check_wanted(wanted: &BTreeMap<String, String>) -> Result<(), CsfConfError> {
    for (key, value) in wanted {
        if !valid_key(key) {
            return Err(CsfConfError::BadKey { key: key.clone() });
        }
        // A line break would add a line of its own; NUL and the rest have no place in csf.conf.
        if value.contains(|c: char| c == '"' || c.is_control()) {
            return Err(CsfConfError::BadValue {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// The file with each wanted key's value replaced and nothing else changed. Every line setting a
/// wanted key is rewritten (so a key set twice cannot keep its old value). A wanted key the file
/// does not set is an error, never appended: csf ignores keys it does not know.
pub fn apply_policy(
    current: &str,
    wanted: &BTreeMap<String, String>,
) -> Result<String, CsfConfError> {
    check_wanted(wanted)?;
    let mut out = String::with_capacity(current.len() + 64);
    let mut seen = std::collections::BTreeSet::new();
    for (idx, (line, ending)) in lines_with_endings(current).enumerate() {
        let owned = leading_key(line).filter(|k| wanted.contains_key(*k));
        match (owned, parse_setting(line)) {
            (Some(_), Some(s)) => {
                out.push_str(s.head);
                out.push_str(&wanted[s.key]);
                out.push_str(s.tail);
                seen.insert(s.key);
            }
            (Some(key), None) => {
                return Err(CsfConfError::Malformed {
                    key: key.to_string(),
                    line: idx + 1,
                    text: line.to_string(),
                })
            }
            (None, _) => out.push_str(line),
        }
        out.push_str(ending);
    }
    match wanted.keys().find(|k| !seen.contains(k.as_str())) {
        Some(key) => Err(CsfConfError::MissingKey { key: key.clone() }),
        None => Ok(out),
    }
}

/// Wanted keys whose value in `current` differs: `(key, found, wanted)`, found `None` when the
/// file does not set the key. Empty when the file already matches.
pub fn drift(
    current: &str,
    wanted: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>, String)> {
    let found = read_keys(current);
    wanted
        .iter()
        .filter(|(k, v)| found.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), found.get(k).cloned(), v.clone()))
        .collect()
}

/// A csf port list (`TCP_IN` and friends): comma-joined, duplicates dropped, first order kept.
pub fn port_list(ports: &[u16]) -> String {
    let mut seen = std::collections::BTreeSet::new();
    ports
        .iter()
        .filter(|p| seen.insert(**p))
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_setting_shapes() {
        let s = parse_setting(r#"TCP_IN = "22,80""#).unwrap();
        assert_eq!(
            (s.key, s.head, s.value, s.tail),
            ("TCP_IN", r#"TCP_IN = ""#, "22,80", "\"")
        );
        assert_eq!(parse_setting(r#"IPV6="1"  "#).unwrap().value, "1");
        assert_eq!(parse_setting(r#"X = """#).unwrap().value, "");
        for bad in [
            r#"# TCP_IN = "22""#,
            r#" TCP_IN = "22""#,
            "TCP_IN = 22",
            r#"TCP_IN = "22"#,
            r#"TCP_IN = "22" x"#,
            r#"TCP_IN "22""#,
            "",
        ] {
            assert_eq!(parse_setting(bad), None, "{bad:?}");
        }
    }
}
