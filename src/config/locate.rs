//! Finds where a field path (`ssh.authorized_keys[1]`, `firewall.settings.KEY`) stands in YAML
//! text, so semantic errors can name a line and column like serde's own errors do.
//! Block style only; for flow style (`[a, b]`) it falls back to the nearest enclosing key.

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(n));
            }
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#') && t != "---"
}

/// 1-based (line, column) of the field, or of its nearest located ancestor (1, 1 at worst).
pub(crate) fn locate(text: &str, path: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut best = (1, 1);
    // Scope: the lines after `start` whose indent is greater than `parent_indent`.
    let mut start = 0usize;
    let mut parent_indent: isize = -1;
    for seg in segments(path) {
        let mut found = None;
        let mut count = 0usize;
        let mut level: Option<usize> = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            if !is_content(line) {
                continue;
            }
            let ind = indent(line);
            if (ind as isize) <= parent_indent {
                break;
            }
            let body = line.trim_start();
            match seg {
                Seg::Key(k) => {
                    // A key may follow a list dash: "- key: v".
                    let (col, body) = match body.strip_prefix("- ") {
                        Some(b) => (ind + 2, b.trim_start()),
                        None => (ind, body),
                    };
                    let lvl = *level.get_or_insert(col);
                    if col == lvl
                        && (body.starts_with(&format!("{k}:"))
                            || body.starts_with(&format!("\"{k}\":")))
                    {
                        found = Some((i, col));
                        break;
                    }
                }
                Seg::Index(n) => {
                    if !body.starts_with("- ") && body != "-" {
                        continue;
                    }
                    let lvl = *level.get_or_insert(ind);
                    if ind == lvl {
                        if count == n {
                            found = Some((i, ind + 2));
                            break;
                        }
                        count += 1;
                    }
                }
            }
        }
        match found {
            Some((i, col)) => {
                best = (i + 1, col + 1);
                start = i + 1;
                parent_indent = col as isize;
                // A "- key:" item: children of the mapping are indented past the dash.
                if matches!(seg, Seg::Index(_)) {
                    parent_indent = col as isize - 1;
                }
            }
            None => break,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::locate;

    const DOC: &str = "version: 1\nssh:\n  # comment\n  port: 22\n  authorized_keys:\n    - ssh-ed25519 AAAA a\n    - bad\nfirewall:\n  masternode_ports: [pivx, 9]\n  settings:\n    FOO: bar\n";

    #[test]
    fn finds_nested_keys_and_items() {
        assert_eq!(locate(DOC, "ssh.port"), (4, 3));
        assert_eq!(locate(DOC, "ssh.authorized_keys[1]"), (7, 7));
        assert_eq!(locate(DOC, "firewall.settings.FOO"), (11, 5));
        // Flow style falls back to the key.
        assert_eq!(locate(DOC, "firewall.masternode_ports[1]"), (9, 3));
        assert_eq!(locate(DOC, "nothing.here"), (1, 1));
    }
}
