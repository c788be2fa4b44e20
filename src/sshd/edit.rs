//! Pure sshd_config editors (sshd_config(5)): text in, text out, no I/O. Lines brickup does not
//! own are kept byte for byte; brickup's own lines are marked so a rerun recognises them.

/// Marks a line brickup commented out, so the original can still be read.
pub const DISABLED: &str = "#brickup-disabled# ";
pub const BEGIN: &str = "# BEGIN brickup: managed block, edit /etc/brickup/brickup.yaml instead";
pub const END: &str = "# END brickup";
/// The drop-in brickup writes; it sorts before cloud-init's `50-cloud-init.conf`.
pub(crate) const DROPIN: &str = "/etc/ssh/sshd_config.d/00-brickup.conf";

/// What `ssh.settings` may do with an sshd keyword: one table, used by the config check and by
/// plan, apply and check (through the owned settings it lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    /// brickup sets it itself, from the named config field.
    Owned(&'static str),
    /// brickup will not write it, and says why.
    Refused(&'static str),
}

const KEYS_WHERE: &str = "brickup installs the key where sshd's own config says sshd reads it; moving that file here would leave the key behind (change it in sshd_config first, then rerun)";

/// Lower-case keyword -> rule. Keywords not listed may be set freely.
pub(crate) const KEYWORDS: &[(&str, Keyword)] = &[
    ("port", Keyword::Owned("ssh.port")),
    (
        "passwordauthentication",
        Keyword::Owned("ssh.password_authentication"),
    ),
    (
        "kbdinteractiveauthentication",
        Keyword::Owned("ssh.password_authentication"),
    ),
    (
        "challengeresponseauthentication",
        Keyword::Owned("ssh.password_authentication"),
    ),
    ("permitrootlogin", Keyword::Owned("ssh.user")),
    (
        "pubkeyauthentication",
        Keyword::Owned("ssh.authorized_keys"),
    ),
    (
        "permitemptypasswords",
        Keyword::Owned("ssh.password_authentication"),
    ),
    ("authorizedkeysfile", Keyword::Refused(KEYS_WHERE)),
    ("authorizedkeyscommand", Keyword::Refused(KEYS_WHERE)),
    ("authorizedkeyscommanduser", Keyword::Refused(KEYS_WHERE)),
    (
        "match",
        Keyword::Refused("Match blocks are not supported here"),
    ),
    ("include", Keyword::Refused("Include is not supported here")),
];

/// The rule for a keyword, if any (case-insensitive, as sshd reads keywords).
pub(crate) fn keyword_rule(keyword: &str) -> Option<Keyword> {
    let k = keyword.to_ascii_lowercase();
    KEYWORDS
        .iter()
        .find(|(name, _)| *name == k)
        .map(|(_, r)| *r)
}

/// The settings brickup wants, keyword (as written) -> value, in order.
pub type Settings = Vec<(String, String)>;

/// One directive line: lower-case keyword and the rest.
pub(crate) fn directive(line: &str) -> Option<(String, String)> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let (k, v) = t
        .split_once(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or((t, ""));
    let v = v.trim_start_matches(|c: char| c.is_whitespace() || c == '=');
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

/// Split text into lines keeping their terminators, so joining gives the text back exactly.
fn lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Does the global section include the drop-in directory (`Include /etc/ssh/sshd_config.d/*.conf`)?
pub(crate) fn includes_dropins(text: &str) -> bool {
    for line in text.lines() {
        match directive(line) {
            Some((k, _)) if k == "match" => return false,
            Some((k, v))
                if k == "include"
                    && v.split_whitespace().any(|p| {
                        let p = p.trim_matches('"');
                        p == "/etc/ssh/sshd_config.d/*.conf" || p == "sshd_config.d/*.conf"
                    }) =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// Comment out the global-section lines setting any of `keywords` (lower-case).
/// Lines inside `Match` blocks are left alone: they are reported, not rewritten.
pub fn disable_keywords(text: &str, keywords: &[String]) -> String {
    let mut in_match = false;
    let mut out = String::with_capacity(text.len());
    for line in lines(text) {
        match directive(line) {
            Some((k, _)) if k == "match" => {
                in_match = true;
                out.push_str(line);
            }
            Some((k, _)) if !in_match && keywords.contains(&k) => {
                out.push_str(DISABLED);
                out.push_str(line);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Comment out `keywords` in the global lines sshd reads before the drop-in Include: there they
/// would win over brickup's drop-in (first value wins).
pub fn disable_before_include(text: &str, keywords: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut before = true;
    for line in lines(text) {
        match directive(line) {
            Some((k, _)) if k == "match" || (k == "include" && includes_dropins(line)) => {
                before = false;
                out.push_str(line);
            }
            Some((k, _)) if before && keywords.contains(&k) => {
                out.push_str(DISABLED);
                out.push_str(line);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// The settings as sshd_config lines, one each: a line break (or any control character) in a
/// keyword or value becomes a space, so a value can never add a directive of its own.
pub(crate) fn render(settings: &Settings) -> String {
    one_line_settings(settings)
        .iter()
        .map(|(k, v)| format!("{k} {v}\n"))
        .collect()
}

/// The settings as `render` writes them: a control character in a keyword or value becomes a
/// space.
pub(crate) fn one_line_settings(settings: &Settings) -> Settings {
    let one_line = |s: &str| s.replace(|c: char| c.is_control(), " ");
    settings
        .iter()
        .map(|(k, v)| (one_line(k), one_line(v)))
        .collect()
}

/// The whole brickup drop-in.
pub fn render_dropin(settings: &Settings) -> String {
    format!("# Written by brickup; edit /etc/brickup/brickup.yaml and run `brickup apply` instead.\n# It sorts first so its values win (sshd keeps the first value it reads).\n{}", render(settings))
}

/// Edit a config without the drop-in Include in place: owned keywords in the global section are
/// commented out, and the managed block sits before the first `Match` (or at the end).
pub fn edit_in_place(text: &str, settings: &Settings) -> String {
    let keywords: Vec<String> = settings
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    let without = remove_block(text);
    let disabled = disable_keywords(&without, &keywords);
    let block = format!("{BEGIN}\n{}{END}\n", render(settings));
    let mut out = String::with_capacity(disabled.len() + block.len());
    let mut placed = false;
    for line in lines(&disabled) {
        if !placed && matches!(directive(line), Some((k, _)) if k == "match") {
            out.push_str(&block);
            placed = true;
        }
        out.push_str(line);
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&block);
    }
    out
}

/// The text without brickup's managed block.
fn remove_block(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for line in lines(text) {
        let t = line.trim_end();
        if t == BEGIN {
            inside = true;
        } else if inside && t == END {
            inside = false;
        } else if !inside {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Settings {
        vec![
            ("Port".into(), "2222".into()),
            ("PasswordAuthentication".into(), "no".into()),
        ]
    }

    #[test]
    fn directive_parses_forms() {
        assert_eq!(directive("  Port 22"), Some(("port".into(), "22".into())));
        assert_eq!(directive("Port=22"), Some(("port".into(), "22".into())));
        assert_eq!(directive("#Port 22"), None);
        assert_eq!(directive(""), None);
    }

    #[test]
    fn include_detection() {
        assert!(includes_dropins("Include /etc/ssh/sshd_config.d/*.conf\n"));
        assert!(!includes_dropins(
            "# Include /etc/ssh/sshd_config.d/*.conf\n"
        ));
        assert!(!includes_dropins(
            "Match User x\nInclude /etc/ssh/sshd_config.d/*.conf\n"
        ));
        assert!(!includes_dropins("Port 22\n"));
    }

    #[test]
    fn in_place_table() {
        let cases: &[(&str, &str)] = &[
            // No settings yet: block appended; comments kept.
            ("# c\nUsePAM yes\n", "# c\nUsePAM yes\n{B}"),
            // Several Port lines neutralised, block before Match, Match body untouched.
            (
                "Port 22\nPort 2200\nX11Forwarding yes\nMatch User bob\n  PasswordAuthentication yes\n",
                "#brickup-disabled# Port 22\n#brickup-disabled# Port 2200\nX11Forwarding yes\n{B}Match User bob\n  PasswordAuthentication yes\n",
            ),
            // No trailing newline.
            ("UsePAM yes", "UsePAM yes\n{B}"),
            // Case-insensitive keywords, '=' form.
            ("passwordauthentication=yes\n", "#brickup-disabled# passwordauthentication=yes\n{B}"),
        ];
        let block = format!("{BEGIN}\nPort 2222\nPasswordAuthentication no\n{END}\n");
        for (input, want) in cases {
            let want = want.replace("{B}", &block);
            let got = edit_in_place(input, &spec());
            assert_eq!(got, want, "input {input:?}");
            assert_eq!(edit_in_place(&got, &spec()), got, "rerun changes {input:?}");
        }
    }

    #[test]
    fn in_place_replaces_changed_block() {
        let first = edit_in_place("UsePAM yes\n", &spec());
        let other = vec![("Port".into(), "3333".into())];
        let second = edit_in_place(&first, &other);
        assert_eq!(second, format!("UsePAM yes\n{BEGIN}\nPort 3333\n{END}\n"));
    }

    #[test]
    fn disable_keeps_other_bytes() {
        let text = "Include /etc/ssh/sshd_config.d/*.conf\n\t# Port 22 comment\r\nPort 22\nAcceptEnv LANG\n";
        let got = disable_keywords(text, &["port".into()]);
        assert_eq!(got, "Include /etc/ssh/sshd_config.d/*.conf\n\t# Port 22 comment\r\n#brickup-disabled# Port 22\nAcceptEnv LANG\n");
        assert_eq!(disable_keywords(&got, &["port".into()]), got);
    }

    #[test]
    fn disables_only_what_is_read_before_the_include() {
        let t = "PasswordAuthentication yes\nInclude /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\n";
        let got = disable_before_include(t, &["passwordauthentication".into()]);
        assert_eq!(got, format!("{DISABLED}PasswordAuthentication yes\nInclude /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\n"));
        assert_eq!(
            disable_before_include(&got, &["passwordauthentication".into()]),
            got
        );
    }
}
