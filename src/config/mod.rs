//! brickup's configuration: the versioned YAML schema, loading, and validation whose every error
//! names the file, line, column and field (`brickup.yaml:3:9: ssh.port: 70000 is not a TCP port`).
//!
//! YAML is read with `serde_norway`, the maintained continuation of the archived `serde_yaml`.
//! No message carries a value from the file (it may be a secret pasted into the wrong field):
//! only numbers brickup parsed itself, like a port, are shown.

mod locate;
mod serde_error;
mod sources;
mod types;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

pub use types::*;

/// Where the config lives unless `--config` says otherwise.
pub(crate) const DEFAULT_PATH: &str = "/etc/brickup/brickup.yaml";

/// A commented example config that validates (`brickup example`).
pub const EXAMPLE: &str = include_str!("example.yaml");

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub(crate) column: usize,
    pub field: String,
    pub message: String,
}

/// An invalid config: every problem found, each with its place. brickup exits 2 on it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub(crate) file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self
            .problems
            .iter()
            .map(|p| {
                format!(
                    "{}:{}:{}: {}: {}",
                    self.file.display(),
                    p.line,
                    p.column,
                    p.field,
                    p.message
                )
            })
            .collect();
        write!(f, "invalid config: {}", lines.join("\n  "))
    }
}

/// A loaded, validated config plus what the report needs to know of it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file's exact text (the report carries its sha256).
    pub(crate) text: String,
    /// Warnings to log (e.g. the file is readable by others).
    pub(crate) warnings: Vec<String>,
}

/// Read and validate the config at `path` (a path on the machine brickup runs on).
/// A config file that is missing or cannot be read (exit 2, like an invalid one).
#[derive(Debug, thiserror::Error)]
#[error("cannot read config {}: {error}", path.display())]
pub struct Unreadable {
    path: PathBuf,
    error: std::io::Error,
}

/// The config file's text.
pub(crate) fn read(path: &Path) -> Result<String, Unreadable> {
    std::fs::read_to_string(path).map_err(|error| Unreadable {
        path: path.to_path_buf(),
        error,
    })
}

pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = read(path)?;
    let config = parse(&text, path)?;
    let mut warnings = Vec::new();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading metadata of {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        warnings.push(format!(
            "{} is readable by others (mode {:o}): it may hold secrets, chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(Loaded {
        config,
        text,
        warnings,
    })
}

/// Parse and validate config text; `file` is only used in messages.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        file: file.to_path_buf(),
        problems,
    };
    if text.starts_with('\u{feff}') {
        return Err(fail(vec![Problem {
            line: 1,
            column: 1,
            field: "(document)".into(),
            message: "the file begins with a byte-order mark (U+FEFF), which YAML reads as part \
                      of the first key: save it as UTF-8 without a BOM"
                .into(),
        }]));
    }
    let config: Config =
        serde_norway::from_str(text).map_err(|e| fail(vec![serde_error::problem(&e, text)]))?;
    let problems: Vec<Problem> = validate(&config)
        .into_iter()
        .map(|(field, message)| {
            let (line, column) = locate::locate(text, &field);
            Problem {
                line,
                column,
                field,
                message,
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(fail(problems))
    }
}

/// Semantic checks serde cannot express, section by section: (field path, message) for each
/// problem.
fn validate(config: &Config) -> Vec<(String, String)> {
    let mut p = Vec::new();
    if config.version != 1 {
        p.push((
            "version".into(),
            format!(
                "unsupported version {} (this brickup reads version 1)",
                config.version
            ),
        ));
    }
    config.ssh.validate(&mut p);
    p.extend(sources::problems(&config.ssh));
    config.firewall.validate(config.ssh.port, &mut p);
    if let Some(csf) = &config.csf {
        csf.validate(&mut p);
    }
    for (i, name) in config.packages.extra.iter().enumerate() {
        if !package_name_ok(name) {
            p.push((
                format!("packages.extra[{i}]"),
                "not a package name: letters, digits and `+-._:`, starting and ending with a letter or digit (apt reads a trailing `-` as \"remove\", `+` as \"install\", `=` and `/` as versions and releases)".into(),
            ));
        }
    }
    if let Some(r) = &config.report {
        p.extend(r.validate());
    }
    config.updates.validate(&mut p);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_validates() {
        let c = parse(EXAMPLE, Path::new("example.yaml")).unwrap();
        assert_eq!(c.ssh.port.get(), 2222);
        assert!(c.csf.is_some());
    }

    #[test]
    fn updates_default_on_without_reboots() {
        let base = "version: 1\nssh:\n  port: 22\n  password_authentication: true\n";
        let c = parse(base, Path::new("u.yaml")).unwrap();
        assert!(c.updates.enabled && !c.updates.reboot);
        assert_eq!(c.updates.reboot_window(), None);
        let c = parse(
            &format!("{base}updates:\n  reboot: true\n"),
            Path::new("u.yaml"),
        )
        .unwrap();
        assert_eq!(c.updates.reboot_window(), Some("04:00"));
        let with = |u: &str| parse(&format!("{base}updates:\n{u}"), Path::new("u.yaml"));
        assert_eq!(
            with("  reboot: true\n  reboot_time: \"03:30\"\n")
                .unwrap()
                .updates
                .reboot_window(),
            Some("03:30")
        );
        for (bad, why) in [
            (
                "  reboot: true\n  reboot_time: \"25:00\"\n",
                "expected HH:MM",
            ),
            ("  reboot: true\n  reboot_time: \"4am\"\n", "expected HH:MM"),
            ("  reboot_time: \"04:00\"\n", "needs updates.reboot: true"),
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.problems[0].field, "updates.reboot_time", "{bad}");
            assert!(e.problems[0].message.contains(why), "{bad}: {e}");
            let line = format!("{base}updates:\n{bad}")
                .lines()
                .nth(e.problems[0].line - 1)
                .map(str::to_string);
            assert!(line.unwrap_or_default().contains("reboot_time"), "{e}");
        }
        let e = with("  security_only: false\n").unwrap_err();
        assert_eq!(e.problems[0].field, "updates.security_only");
    }

    #[test]
    fn serde_errors_name_field_and_place() {
        let e = parse("version: 1\nssh:\n  port: 70000\n", Path::new("b.yaml")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("b.yaml:3:3: ssh.port: 70000 is not a TCP port (1-65535)"),
            "{s}"
        );
        let e = parse(
            "version: 1\nssh:\n  port: 22\n  bogus: 1\n",
            Path::new("b.yaml"),
        )
        .unwrap_err();
        assert_eq!(e.problems[0].field, "ssh.bogus");
        assert_eq!(e.problems[0].line, 4);
    }
}
