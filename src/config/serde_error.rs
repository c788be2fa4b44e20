//! Turns a `serde_norway` error into a [`Problem`] that names the field, line, column and the
//! expected type but never the value: serde quotes the offending value (`invalid type: string
//! "-----BEGIN OPENSSH PRIVATE KEY-----\n..."`), and a secret pasted into the wrong field would
//! otherwise reach stderr, last-report.json and the receiver. Message shapes are serde's
//! `de::Error` defaults (<https://docs.rs/serde/latest/serde/de/trait.Error.html>).

use super::Problem;

/// Longest field path segment shown; a longer key is cut (keys are names, not values, but a
/// pasted blob can land in key position too).
const MAX_SEGMENT: usize = 64;

/// Turn serde_norway's "path: message at line L column C" into a [`Problem`].
pub(super) fn problem(e: &serde_norway::Error, source: &str) -> Problem {
    let location = e.location().map(|l| (l.line(), l.column()));
    let (line, column) = location.unwrap_or((1, 1));
    let mut text = e.to_string();
    // Only cut the suffix serde_norway adds itself: a value may contain " at line " too.
    if location.is_some() {
        if let Some(i) = text.rfind(" at line ") {
            text.truncate(i);
        }
    }
    let (path, message) = match text.split_once(": ") {
        Some((p, m)) if !p.contains(' ') && !p.contains('`') && !p.contains('"') => {
            (p.to_string(), m.to_string())
        }
        _ => (String::new(), text.clone()),
    };
    // YAML forbids tabs in indentation; the scanner's own words ("found character that cannot
    // start any token") do not say so.
    // The error's own line with a tab before its first character, else a line that begins with
    // one (a tab further into a block scalar's text is content, not indentation).
    let tab_indented = |l: &str| {
        l.chars()
            .take_while(|c| c.is_whitespace())
            .any(|c| c == '\t')
    };
    let tab_line = source
        .lines()
        .enumerate()
        .find(|(n, l)| (*n + 1 == line && tab_indented(l)) || l.starts_with('\t'));
    if let Some((n, _)) = tab_line {
        return Problem {
            line: n + 1,
            column: 1,
            field: "(document)".into(),
            message: "a tab in the indentation: YAML indents with spaces only (replace the tab \
                      with spaces)"
                .into(),
        };
    }
    Problem {
        line,
        column,
        field: safe_field(&field_of(&path, &message, source, line)),
        message: with_fix(without_value(&message)),
    }
}

/// serde's message with the fix for the usual slips: a quoted number, a YAML 1.1 boolean.
fn with_fix(message: String) -> String {
    let fix = if !message.starts_with("invalid type: string") {
        None
    } else if message.ends_with("expected a boolean") {
        Some("write true or false (yes/no/on/off are strings in YAML 1.2)")
    } else if ["i64", "u64", "u32", "u16", "u8", "an integer", "a port"]
        .iter()
        .any(|t| message.ends_with(&format!("expected {t}")))
    {
        Some("write the number without quotes")
    } else {
        None
    };
    match fix {
        Some(f) => format!("{message}: {f}"),
        None => message,
    }
}

/// The field a message is about: the unknown or missing key, else serde's path, else the key
/// written on the error's line (a custom error from a field's own Deserialize is reported at
/// the parent's path but at the field's line).
fn field_of(path: &str, message: &str, source: &str, line: usize) -> String {
    let join = |name: &str| {
        if path.is_empty() || path == "." {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(name) = backticked(message, "unknown field `") {
        return join(&name);
    }
    if let Some(name) = backticked(message, "missing field `") {
        return join(&name);
    }
    if path.is_empty() {
        return "(document)".to_string();
    }
    match source.lines().nth(line.saturating_sub(1)).and_then(key_on) {
        Some(k) if !path.ends_with(k) && !path.ends_with(']') => join(k),
        _ => path.to_string(),
    }
}

/// The key a line sets (`  key: value`, `- key:`), if it is shaped like a field name: the
/// line may hold a value instead (`s3cret://x` is no key).
fn key_on(line: &str) -> Option<&str> {
    let body = line.trim().trim_start_matches("- ");
    let (key, rest) = body.split_once(':')?;
    let is_name = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (is_name && (rest.is_empty() || rest.starts_with(' '))).then_some(key)
}

fn backticked(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest.split('`').next()?.to_string())
}

/// serde's message with the value taken out:
/// `invalid type: string "s3cret", expected a sequence` -> `invalid type: string, expected a
/// sequence`. The expectation comes from brickup's schema, the value from the file.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The expectation is last and never contains ", expected ": the last one splits.
            let (unexpected, expected) = match rest.rfind(", expected ") {
                Some(i) => (&rest[..i], Some(&rest[i + 2..])),
                None => (rest, None),
            };
            // serde's kinds are words ("string", "floating point"); the value follows them.
            let kind: String = unexpected
                .chars()
                .take_while(|c| c.is_ascii_alphabetic() || *c == ' ')
                .collect();
            let head = format!("{prefix}{}", kind.trim());
            return match expected {
                Some(exp) => format!("{head}, {}", printable(exp)),
                None => head,
            };
        }
    }
    if message.starts_with("unknown variant `") || message.starts_with("unknown field `") {
        let what = if message.starts_with("unknown variant") {
            "unknown variant"
        } else {
            "unknown field"
        };
        return match message.rfind(", expected ") {
            Some(i) => format!("{what}{}", printable(&message[i..])),
            None => what.to_string(),
        };
    }
    if message.starts_with("missing field `") || message.starts_with("duplicate field `") {
        // The name is one of the schema's own fields.
        return printable(message);
    }
    // Anything else (YAML syntax, brickup's own messages) carries no quoted value; should one
    // appear anyway, the message stops before it.
    match message.find(['"', '`']) {
        Some(i) => format!("{} (value not shown)", printable(message[..i].trim_end())),
        None => printable(message),
    }
}

/// One line, no control characters: a message is one line of a report and of stderr.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A field path safe to print: printable, each segment at most [`MAX_SEGMENT`] characters.
fn safe_field(field: &str) -> String {
    printable(field)
        .split('.')
        .map(|seg| {
            if seg.chars().count() > MAX_SEGMENT {
                let cut: String = seg.chars().take(MAX_SEGMENT).collect();
                format!("{cut}...")
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::without_value;

    #[test]
    fn values_are_taken_out_of_serde_messages() {
        let cases = [
            (
                "invalid type: string \"-----BEGIN\\nsecret\", expected a sequence",
                "invalid type: string, expected a sequence",
            ),
            (
                "invalid value: integer `70000`, expected u16",
                "invalid value: integer, expected u16",
            ),
            (
                "invalid type: floating point `1.5`, expected a string",
                "invalid type: floating point, expected a string",
            ),
            (
                "invalid type: string \"a, expected b\", expected i64",
                "invalid type: string, expected i64",
            ),
            (
                "unknown variant `s3cret\nline`, expected one of `auto`, `on`, `off`",
                "unknown variant, expected one of `auto`, `on`, `off`",
            ),
            (
                "unknown variant `x`, there are no variants",
                "unknown variant",
            ),
            (
                "unknown field `tokn`, expected one of `url`, `token`",
                "unknown field, expected one of `url`, `token`",
            ),
            ("missing field `port`", "missing field `port`"),
            (
                "70000 is not a TCP port (1-65535)",
                "70000 is not a TCP port (1-65535)",
            ),
            ("something \"s3cret\" odd", "something (value not shown)"),
            ("did not find expected key", "did not find expected key"),
        ];
        for (serde, want) in cases {
            assert_eq!(without_value(serde), want, "{serde}");
        }
    }
}
