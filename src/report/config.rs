//! The `report` config section, its validation, and the secrets it names.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use url::Url;

use crate::root::Root;

/// A secret value. Debug and Display print `[redacted]`; it cannot be serialized.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that has to use it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret file, dropping trailing line ends (`\n`, `\r\n`).
    pub(crate) fn from_file(path: &Path) -> Result<Secret> {
        let raw =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let text = raw.trim_end_matches(['\r', '\n']).to_string();
        if text.is_empty() {
            bail!("{} is empty", path.display());
        }
        Ok(Secret(text))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

fn default_total_timeout() -> u64 {
    120
}

fn default_attempt_timeout() -> u64 {
    10
}

/// Where and how to send the status report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    pub(crate) url: String,
    /// Allow plain http to a non-loopback host (the token and report then travel in clear).
    #[serde(default)]
    pub(crate) allow_http: bool,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub hmac_secret: Option<Secret>,
    pub(crate) hmac_secret_file: Option<PathBuf>,
    /// Upper bound on the whole delivery, retries included.
    #[serde(default = "default_total_timeout")]
    pub total_timeout_secs: u64,
    /// Upper bound on one attempt (connect, send, response).
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_secs: u64,
}

impl ReportConfig {
    /// A config with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        ReportConfig {
            url: url.into(),
            allow_http: false,
            token: None,
            token_file: None,
            hmac_secret: None,
            hmac_secret_file: None,
            total_timeout_secs: default_total_timeout(),
            attempt_timeout_secs: default_attempt_timeout(),
        }
    }

    /// Every problem found, as `(field path, message)`; empty when the section is valid.
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem =
            |field: &str, msg: String| problems.push((format!("report.{field}"), msg));
        if let Err(msg) = check_url(&self.url, self.allow_http) {
            problem("url", msg);
        }
        for (inline, file, name) in [
            (self.token.as_ref(), &self.token_file, "token"),
            (
                self.hmac_secret.as_ref(),
                &self.hmac_secret_file,
                "hmac_secret",
            ),
        ] {
            if inline.is_some() && file.is_some() {
                problem(name, format!("set either {name} or {name}_file, not both"));
            }
            if inline.is_some_and(|s| s.expose().trim().is_empty()) {
                problem(name, "must not be empty".into());
            }
            if name == "token" && inline.is_some_and(|s| !is_header_safe(s.expose())) {
                problem(name, TOKEN_CHARS.into());
            }
            if file.as_ref().is_some_and(|p| !p.is_absolute()) {
                problem(&format!("{name}_file"), "must be an absolute path".into());
            }
        }
        if self.attempt_timeout_secs == 0 {
            problem("attempt_timeout_secs", "must be at least 1".into());
        }
        if self.total_timeout_secs < self.attempt_timeout_secs {
            problem(
                "total_timeout_secs",
                format!(
                    "must be at least attempt_timeout_secs ({})",
                    self.attempt_timeout_secs
                ),
            );
        }
        problems
    }
}

/// https anywhere; http only to loopback hosts unless `allow_http`; no credentials in the URL
/// (they would end up in logs: use `token`).
fn check_url(url: &str, allow_http: bool) -> std::result::Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not contain credentials; use report.token".into());
    }
    let host = parsed.host_str().ok_or("has no host")?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_http || is_loopback(host) => Ok(()),
        // The host and scheme come from the file: messages do not repeat them.
        "http" => Err(
            "plain http to a host other than loopback sends the report in clear: use https, \
             or set report.allow_http"
                .into(),
        ),
        _ => Err("unsupported scheme; use https".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

const TOKEN_CHARS: &str = "must be printable ASCII without spaces (it goes into a header)";

fn is_header_safe(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The secrets a delivery uses, resolved from inline values or files.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub(crate) token: Option<Secret>,
    pub(crate) hmac_secret: Option<Secret>,
}

impl Credentials {
    /// Resolves inline secrets or reads the `*_file` ones (host paths, read under `root`).
    pub(crate) fn load(root: &Root, cfg: &ReportConfig) -> Result<Credentials> {
        let pick =
            |inline: &Option<Secret>, file: &Option<PathBuf>, name: &str| match (inline, file) {
                (Some(_), Some(_)) => bail!("report.{name} and report.{name}_file are both set"),
                (Some(s), None) => Ok(Some(s.clone())),
                (None, Some(p)) => Secret::from_file(&root.path(p))
                    .map(Some)
                    .with_context(|| format!("loading report.{name}_file")),
                (None, None) => Ok(None),
            };
        let token = pick(&cfg.token, &cfg.token_file, "token")?;
        if token.as_ref().is_some_and(|t| !is_header_safe(t.expose())) {
            bail!("report.token {TOKEN_CHARS}");
        }
        Ok(Credentials {
            token,
            hmac_secret: pick(&cfg.hmac_secret, &cfg.hmac_secret_file, "hmac_secret")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(cfg: &ReportConfig) -> Vec<String> {
        cfg.validate().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn url_rules() {
        for ok in [
            "https://example.com/hook",
            "http://127.0.0.1:8080/r",
            "http://[::1]/r",
            "http://localhost/r",
            "http://127.0.0.2/r",
        ] {
            assert!(fields(&ReportConfig::new(ok)).is_empty(), "{ok}");
        }
        for bad in [
            "http://example.com/r",
            "ftp://example.com/r",
            "not a url",
            "https://user:pw@example.com/r",
        ] {
            assert_eq!(fields(&ReportConfig::new(bad)), ["report.url"], "{bad}");
        }
        let mut cfg = ReportConfig::new("http://example.com/r");
        cfg.allow_http = true;
        assert!(fields(&cfg).is_empty());
    }

    #[test]
    fn secret_and_timeout_rules() {
        let mut cfg = ReportConfig::new("https://example.com/r");
        cfg.token = Some(Secret::new("t\u{e9} x"));
        cfg.token_file = Some("/etc/t".into());
        cfg.hmac_secret = Some(Secret::new(" "));
        cfg.hmac_secret_file = Some("relative".into());
        cfg.attempt_timeout_secs = 0;
        assert_eq!(
            fields(&cfg),
            [
                "report.token",
                "report.token",
                "report.hmac_secret",
                "report.hmac_secret",
                "report.hmac_secret_file",
                "report.attempt_timeout_secs"
            ]
        );
        let mut cfg = ReportConfig::new("https://example.com/r");
        cfg.total_timeout_secs = 5;
        assert_eq!(fields(&cfg), ["report.total_timeout_secs"]);
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown() {
        let cfg: ReportConfig =
            serde_json::from_str(r#"{"url":"https://e.com","token":"abc"}"#).unwrap();
        assert_eq!(cfg.total_timeout_secs, 120);
        assert_eq!(cfg.attempt_timeout_secs, 10);
        assert_eq!(cfg.token.as_ref().unwrap().expose(), "abc");
        assert!(!format!("{cfg:?}").contains("abc"));
        assert!(serde_json::from_str::<ReportConfig>(r#"{"url":"x","tokn":"a"}"#).is_err());
    }

    #[test]
    fn secret_file_drops_trailing_line_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        fs::write(&p, "abc \n\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "abc ");
        fs::write(&p, "abc\r\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "abc");
        fs::write(&p, "\n").unwrap();
        assert!(Secret::from_file(&p).is_err());
        fs::write(&p, "two words\n").unwrap();
        let mut cfg = ReportConfig::new("https://e.com");
        cfg.token_file = Some(p.clone());
        let err = Credentials::load(&Root::new("/"), &cfg).unwrap_err();
        assert!(format!("{err:#}").contains("without spaces"), "{err:#}");
        assert!(!format!("{err:#}").contains("two words"));
    }
}
