//! The options field of an `authorized_keys` line, read as sshd reads it (OpenSSH auth-options.c
//! `sshauthopt_parse`, misc.c `opt_flag`/`opt_match`/`opt_dequote`; sshd(8) AUTHORIZED_KEYS FILE
//! FORMAT): names are matched case-insensitively, flags by prefix, `name="value"` with `\"` inside
//! quotes, empty entries between commas skipped, and any other text is an unknown option that makes
//! sshd refuse the whole line. No I/O.

use super::values;
use super::KeyError;

/// Flags in sshd's order of trial, and whether `no-` may precede them.
const FLAGS: &[(&str, bool)] = &[
    ("restrict", false),
    ("cert-authority", false),
    ("port-forwarding", true),
    ("agent-forwarding", true),
    ("x11-forwarding", true),
    ("touch-required", true),
    ("verify-required", true),
    ("pty", true),
    ("user-rc", true),
];

/// Options that take a quoted value.
const VALUED: &[&str] = &[
    "command",
    "principals",
    "from",
    "expiry-time",
    "environment",
    "permitopen",
    "permitlisten",
    "tunnel",
];

/// Options that may appear only once.
const ONCE: &[&str] = &["command", "principals", "from"];

/// Parse `s` (the line from its options on; parsing stops at the first blank outside a value)
/// into the options' lower-case names, `no-` kept for negated flags.
#[cfg(test)]
pub(crate) fn parse(s: &str) -> Result<Vec<String>, KeyError> {
    Ok(parse_values(s)?.into_iter().map(|(n, _)| n).collect())
}

/// Like `parse`, with each valued option's dequoted value.
pub(crate) fn parse_values(s: &str) -> Result<Vec<(String, Option<String>)>, KeyError> {
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<Option<String>> = Vec::new();
    let mut rest = s;
    while !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        let (start, index) = (rest, names.len());
        let fail = |why: String| KeyError::Option {
            index,
            name: shown_name(start),
            why,
        };
        if let Some((name, after)) = flag(rest) {
            names.push(name);
            values.push(None);
            rest = after;
        } else if let Some((name, after)) = valued(rest) {
            if ONCE.contains(&name) && names.iter().any(|n| n == name) {
                return Err(fail("appears twice (sshd refuses the line)".into()));
            }
            let (value, after) = dequote(after).map_err(|why| fail(why.into()))?;
            values::check(name, &value).map_err(fail)?;
            names.push(name.to_string());
            values.push(Some(value));
            rest = after;
        }
        if rest.is_empty() || rest.starts_with([' ', '\t']) {
            break;
        }
        let Some(after) = rest.strip_prefix(',') else {
            return Err(fail(
                "is not an option sshd knows, so sshd ignores the whole line".into(),
            ));
        };
        if after.is_empty() {
            return Err(fail("ends the options with a comma".into()));
        }
        rest = after;
    }
    Ok(names.into_iter().zip(values).collect())
}

/// opt_flag over FLAGS: the flag's name (with `no-` when negated) and the text after it.
fn flag(s: &str) -> Option<(String, &str)> {
    FLAGS.iter().find_map(|&(name, negatable)| {
        let (neg, body) = match strip_ci(s, "no-") {
            Some(body) if negatable => (true, body),
            _ => (false, s),
        };
        let after = strip_ci(body, name)?;
        Some((format!("{}{name}", if neg { "no-" } else { "" }), after))
    })
}

/// opt_match over VALUED: `name=` case-insensitively.
fn valued(s: &str) -> Option<(&'static str, &str)> {
    VALUED
        .iter()
        .find_map(|&name| Some((name, strip_ci(s, name)?.strip_prefix('=')?)))
}

fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// opt_dequote: `"..."` with `\"` standing for a quote; the value and the text after it.
fn dequote(s: &str) -> Result<(String, &str), &'static str> {
    let body = s
        .strip_prefix('"')
        .ok_or("needs a value in double quotes")?;
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[i + 1..])),
            '\\' if chars.peek().is_some_and(|&(_, n)| n == '"') => {
                value.push('"');
                chars.next();
            }
            c => value.push(c),
        }
    }
    Err("has no closing quote")
}

/// The option's name as written, for messages: up to `=`, `,` or a blank, at most 40 characters.
fn shown_name(s: &str) -> String {
    s.split(['=', ',', ' ', '\t', '"'])
        .next()
        .unwrap_or("")
        .chars()
        .take(40)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_sshd_accepts() {
        for (s, names) in [
            ("no-pty k", vec!["no-pty"]),
            ("NO-PTY,Restrict k", vec!["no-pty", "restrict"]),
            (",no-pty,,pty k", vec!["no-pty", "pty"]),
            ("no-pty, k", vec!["no-pty"]),
            ("no-touch-required k", vec!["no-touch-required"]),
            ("command=\"echo \\\"hi there\\\"\" k", vec!["command"]),
            (
                "from=\"10.0.0.0/8,!10.1.2.3,*.example.com\" k",
                vec!["from"],
            ),
            (
                "environment=\"A_1=x y\",tunnel=\"5\" k",
                vec!["environment", "tunnel"],
            ),
            (
                "permitopen=\"[::1]:22\",permitlisten=\"8080\" k",
                vec!["permitopen", "permitlisten"],
            ),
            ("expiry-time=\"20300101\" k", vec!["expiry-time"]),
        ] {
            assert_eq!(parse(s).unwrap(), names, "{s}");
        }
    }

    #[test]
    fn refuses_what_sshd_refuses() {
        for (s, name) in [
            ("no-port-fowarding k", "no-port-fowarding"),
            ("no-pty,bogus k", "bogus"),
            ("ptyx k", "ptyx"),
            ("no-restrict k", "no-restrict"),
            ("pty=\"x\" k", "pty"),
            ("command=echo k", "command"),
            ("command=\"a\",command=\"b\" k", "command"),
            ("tunnel=\"x\" k", "tunnel"),
            ("permitopen=\"host\" k", "permitopen"),
            ("permitopen=\"host:0\" k", "permitopen"),
            ("environment=\"A-B=1\" k", "environment"),
            ("expiry-time=\"2030\" k", "expiry-time"),
            ("from=\"10.0.0.1/8\" k", "from"),
            ("no-pty,", "no-pty"),
        ] {
            match parse(s) {
                Err(KeyError::Option { name: n, .. }) => assert_eq!(n, name, "{s}"),
                other => panic!("{s}: {other:?}"),
            }
        }
    }
}
