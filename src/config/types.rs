//! The config schema (version 1) and its semantic checks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::authorized_keys;
use crate::sshd::edit::Keyword;

/// A TCP/UDP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub(crate) struct Port(u16);

impl Port {
    pub(crate) fn new(p: u16) -> Option<Port> {
        (p != 0).then_some(Port(p))
    }
    pub(crate) fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        u16::try_from(n)
            .ok()
            .and_then(Port::new)
            .ok_or_else(|| de::Error::custom(format!("{n} is not a TCP port (1-65535)")))
    }
}

/// A masternode port given by number or by coin name (`pivx`, `dash`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MasternodePort {
    Port(Port),
    Coin(String),
}

/// Mainnet P2P ports from each coin's chainparams (FACTS.md).
pub(crate) const COINS: &[(&str, &[u16])] = &[
    ("dash", &[9999]),
    ("dash-evonode", &[9999, 26656, 443]),
    ("pivx", &[51472]),
    ("pivx-testnet", &[51474]),
    ("firo", &[8168]),
    ("syscoin", &[8369]),
    ("raptoreum", &[10226]),
];

impl MasternodePort {
    /// The ports this entry stands for; empty for an unknown coin (caught by validation).
    pub(crate) fn ports(&self) -> Vec<Port> {
        match self {
            MasternodePort::Port(p) => vec![*p],
            MasternodePort::Coin(name) => COINS
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(name))
                .map(|(_, ps)| ps.iter().filter_map(|p| Port::new(*p)).collect())
                .unwrap_or_default(),
        }
    }
}

impl<'de> Deserialize<'de> for MasternodePort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected a port number or a coin name (dash, pivx, ...)")
        })? {
            Raw::N(n) => u16::try_from(n)
                .ok()
                .and_then(Port::new)
                .map(MasternodePort::Port)
                .ok_or_else(|| de::Error::custom(format!("{n} is not a TCP port (1-65535)"))),
            Raw::S(s) => Ok(MasternodePort::Coin(s)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub(crate) version: u32,
    pub(crate) ssh: SshConfig,
    #[serde(default)]
    pub(crate) firewall: FirewallConfig,
    pub(crate) csf: Option<CsfConfig>,
    #[serde(default)]
    pub(crate) packages: PackagesConfig,
    pub(crate) report: Option<crate::report::config::ReportConfig>,
    #[serde(default)]
    pub(crate) updates: UpdatesConfig,
}

/// Automatic security updates: unattended-upgrades (Debian/Ubuntu) or dnf-automatic (RHEL
/// family), limited to security fixes. On unless `enabled: false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdatesConfig {
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// Reboot automatically when an update needs it (default: never).
    #[serde(default)]
    pub(crate) reboot: bool,
    /// The reboot window, `HH:MM` local time (with `reboot: true`; default 04:00).
    pub(crate) reboot_time: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for UpdatesConfig {
    fn default() -> Self {
        UpdatesConfig {
            enabled: true,
            reboot: false,
            reboot_time: None,
        }
    }
}

impl UpdatesConfig {
    /// The reboot window when reboots are on.
    pub(crate) fn reboot_window(&self) -> Option<&str> {
        self.reboot
            .then(|| self.reboot_time.as_deref().unwrap_or("04:00"))
    }

    pub(super) fn validate(&self, p: &mut Vec<(String, String)>) {
        let Some(t) = &self.reboot_time else {
            return;
        };
        let hhmm = t.split_once(':').is_some_and(|(h, m)| {
            h.len() == 2
                && m.len() == 2
                && h.parse::<u8>().is_ok_and(|h| h < 24)
                && m.parse::<u8>().is_ok_and(|m| m < 60)
        });
        if !hhmm {
            p.push((
                "updates.reboot_time".into(),
                "expected HH:MM (24-hour local time, e.g. \"04:00\")".into(),
            ));
        } else if !self.reboot {
            p.push((
                "updates.reboot_time".into(),
                "a reboot window needs updates.reboot: true".into(),
            ));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SshConfig {
    #[serde(default = "default_user")]
    pub(crate) user: String,
    pub(crate) port: Port,
    #[serde(default)]
    pub(crate) authorized_keys: Vec<String>,
    /// Keep password logins on (default off: the whole point).
    #[serde(default)]
    pub(crate) password_authentication: bool,
    /// More sshd settings, keyword -> value, written after brickup's own.
    #[serde(default)]
    pub(crate) settings: BTreeMap<String, String>,
    /// The addresses the owner connects from. Only needed for restrictions by the client's
    /// address (DenyUsers `user@host`, `from=` on a key, `Match Address` in sshd_config): sshd is
    /// then asked (`sshd -T -C`) whether it admits each one.
    #[serde(default)]
    pub(crate) owner_addresses: Vec<std::net::IpAddr>,
    /// Create `ssh.user` when the node has no such user (the early run does it, before sshd
    /// first starts). Absent: the user must already exist.
    #[serde(default)]
    pub(crate) create_user: Option<CreateUser>,
}

fn default_user() -> String {
    "root".to_string()
}

/// How brickup creates `ssh.user` (`ssh.create_user`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    /// Login shell; must exist on the node.
    #[serde(default = "default_shell")]
    pub(crate) shell: PathBuf,
    /// Supplementary groups (they must exist); the user is kept in them.
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    /// How the user becomes root.
    #[serde(default)]
    pub(crate) sudo: SudoPolicy,
}

fn default_shell() -> PathBuf {
    PathBuf::from("/bin/bash")
}

/// `ssh.create_user.sudo`. The created user has no password (logins are by key), so a sudo that
/// asks for one could never be satisfied: either sudo asks nothing, or there is no sudo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SudoPolicy {
    /// `USER ALL=(ALL:ALL) NOPASSWD: ALL` in `/etc/sudoers.d/brickup-USER`, checked by `visudo`:
    /// whoever holds the SSH key is root.
    #[default]
    Nopasswd,
    /// No sudo rule: root only from the provider's console (root's SSH login is refused).
    None,
}

/// A user name `useradd` takes without `--badname` (shadow's default rule), at most 32 bytes.
pub(crate) fn creatable_user_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase() || f == '_')
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
        && name.len() <= 32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Ipv6Mode {
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FirewallConfig {
    #[serde(default)]
    pub(crate) masternode_ports: Vec<MasternodePort>,
    #[serde(default)]
    pub(crate) extra_tcp_in: Vec<Port>,
    #[serde(default)]
    pub(crate) extra_udp_in: Vec<Port>,
    /// Outbound TCP; default the guide's 25,53,587,80,443 (+ masternode ports).
    pub(crate) tcp_out: Option<Vec<Port>>,
    /// Outbound UDP; default: csf's own value is left alone.
    pub(crate) udp_out: Option<Vec<Port>>,
    #[serde(default)]
    pub(crate) ipv6: Ipv6Mode,
    #[serde(default)]
    pub(crate) auto_updates: bool,
    #[serde(default = "default_restrict_syslog")]
    pub(crate) restrict_syslog: u8,
    /// Further csf.conf keys, KEY -> value.
    #[serde(default)]
    pub(crate) settings: BTreeMap<String, String>,
}

fn default_restrict_syslog() -> u8 {
    3
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            masternode_ports: Vec::new(),
            extra_tcp_in: Vec::new(),
            extra_udp_in: Vec::new(),
            tcp_out: None,
            udp_out: None,
            ipv6: Ipv6Mode::Auto,
            auto_updates: false,
            restrict_syslog: 3,
            settings: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CsfConfig {
    pub(crate) url: String,
    pub(crate) sha256: String,
    /// Allow a plain http:// URL (the checksum still guards the content).
    #[serde(default)]
    pub(crate) allow_http: bool,
    /// Extra CA certificate (PEM) for a private mirror.
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PackagesConfig {
    #[serde(default)]
    pub(crate) extra: Vec<String>,
}

impl Config {
    /// The files the config names for the node to read (field path, node path): render-userdata
    /// carries each, and a run on the node refuses when one cannot be read.
    pub(crate) fn node_files(&self) -> Vec<(&'static str, &Path)> {
        let mut files = Vec::new();
        if let Some(r) = &self.report {
            files.extend(r.token_file.as_deref().map(|p| ("report.token_file", p)));
            files.extend(
                r.hmac_secret_file
                    .as_deref()
                    .map(|p| ("report.hmac_secret_file", p)),
            );
        }
        if let Some(c) = &self.csf {
            files.extend(c.ca_file.as_deref().map(|p| ("csf.ca_file", p)));
        }
        files
    }
}

/// A plain package name, as apt-get, dnf and yum take it literally: no operators at either end
/// (a trailing `-` makes apt *remove* the package), no versions, releases, globs or spaces.
pub(crate) fn package_name_ok(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._:".contains(c))
}

impl CreateUser {
    fn validate(&self, user: &str, p: &mut Vec<(String, String)>) {
        if user == "root" {
            p.push((
                "ssh.create_user".into(),
                "root always exists: create_user is for a named admin user (set ssh.user)".into(),
            ));
        } else if !creatable_user_name(user) {
            p.push((
                "ssh.user".into(),
                format!(
                    "{user:?} cannot be created: useradd takes lowercase letters, digits, `_` and \
                     `-`, starting with a letter or `_`, at most 32 characters"
                ),
            ));
        }
        if !self.shell.is_absolute() {
            p.push((
                "ssh.create_user.shell".into(),
                format!("{} is not an absolute path", self.shell.display()),
            ));
        }
        for (i, g) in self.groups.iter().enumerate() {
            if !creatable_user_name(g) {
                p.push((
                    format!("ssh.create_user.groups[{i}]"),
                    format!("{g:?} is not a group name"),
                ));
            }
        }
    }
}

impl SshConfig {
    pub(super) fn validate(&self, p: &mut Vec<(String, String)>) {
        let user_ok = !self.user.is_empty()
            && !self.user.starts_with('-')
            && self
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !user_ok {
            p.push((
                "ssh.user".into(),
                "not a user name (letters, digits, `._-`, not starting with `-`)".into(),
            ));
        }
        if let Some(create) = &self.create_user {
            create.validate(&self.user, p);
        }
        for (i, line) in self.authorized_keys.iter().enumerate() {
            if let Err(e) = authorized_keys::PublicKey::parse(line) {
                p.push((format!("ssh.authorized_keys[{i}]"), e.to_string()));
            }
        }
        if self.authorized_keys.is_empty() && !self.password_authentication {
            p.push((
                "ssh.authorized_keys".into(),
                "empty while password logins are to be disabled: the owner would be locked out \
                 (add a public key, or set ssh.password_authentication: true)"
                    .into(),
            ));
        }
        for (k, v) in &self.settings {
            let field = format!("ssh.settings.{k}");
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
                p.push((field, "not an sshd_config keyword".into()));
            } else if let Some(meant) = crate::sshd::keywords::typo_of(k) {
                p.push((
                    field,
                    format!("not an sshd keyword: did you mean {meant} (sshd_config(5))?"),
                ));
            } else if let Some(rule) = crate::sshd::edit::keyword_rule(k) {
                p.push((
                    field,
                    match rule {
                        Keyword::Owned(from) => format!("set by brickup itself (use {from})"),
                        Keyword::Refused(why) => why.to_string(),
                    },
                ));
            } else if v.trim().is_empty() || v.contains(|c: char| c.is_control()) {
                p.push((
                    field,
                    "needs a one-line value (no line breaks or control characters)".into(),
                ));
            }
        }
    }
}

impl FirewallConfig {
    pub(super) fn validate(&self, ssh_port: Port, p: &mut Vec<(String, String)>) {
        for (i, m) in self.masternode_ports.iter().enumerate() {
            let field = format!("firewall.masternode_ports[{i}]");
            if let MasternodePort::Coin(_) = m {
                if m.ports().is_empty() {
                    let known: Vec<&str> = COINS.iter().map(|(c, _)| *c).collect();
                    p.push((
                        field.clone(),
                        format!(
                            "unknown coin (known: {}; or give the port number)",
                            known.join(", ")
                        ),
                    ));
                }
            }
            if m.ports().contains(&ssh_port) {
                p.push((field, format!("port {ssh_port} is also ssh.port: SSH and the masternode cannot share a port")));
            }
        }
        for (i, port) in self.extra_tcp_in.iter().enumerate() {
            if *port == ssh_port {
                p.push((
                    format!("firewall.extra_tcp_in[{i}]"),
                    format!("port {port} is ssh.port already (it is always open)"),
                ));
            }
        }
        if self.restrict_syslog > 3 {
            p.push((
                "firewall.restrict_syslog".into(),
                format!("{} is not 0-3", self.restrict_syslog),
            ));
        }
        for (k, v) in &self.settings {
            let field = format!("firewall.settings.{k}");
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                p.push((field, "not a csf.conf key (UPPER_CASE)".into()));
            } else if crate::csf::conf::OWNED_KEYS.contains(&k.as_str()) {
                p.push((
                    field,
                    "set by brickup itself from the firewall section".into(),
                ));
            } else if v.contains(|c: char| c == '"' || c.is_control()) {
                p.push((
                    field,
                    "value may not contain a double quote, line break or control character".into(),
                ));
            }
        }
    }

    /// The masternode ports, deduplicated in order.
    pub(crate) fn masternode(&self) -> Vec<Port> {
        let mut out: Vec<Port> = Vec::new();
        for p in self.masternode_ports.iter().flat_map(|m| m.ports()) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

impl CsfConfig {
    pub(super) fn validate(&self, p: &mut Vec<(String, String)>) {
        let found = match self.sha256.chars().find(|c| !c.is_ascii_hexdigit()) {
            Some(c) if !c.is_ascii_graphic() => Some("a character that is not a hex digit".into()),
            Some(c) => Some(format!("{c:?}, which is not a hex digit")),
            None if self.sha256.len() != 64 => Some(format!("{} hex digits", self.sha256.len())),
            None => None,
        };
        if let Some(found) = found {
            p.push((
                "csf.sha256".into(),
                format!(
                    "must be 64 hex digits (the tarball's sha256, as `sha256sum` prints it): got {found}"
                ),
            ));
        }
        let scheme = self
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("https") | Some("file") => {}
            Some("http") if self.allow_http => {}
            Some("http") => p.push((
                "csf.url".into(),
                "plain http:// needs csf.allow_http: true (the sha256 still guards the content)"
                    .into(),
            )),
            _ => p.push((
                "csf.url".into(),
                "is not an https://, file:// or http:// URL".into(),
            )),
        }
    }
}
