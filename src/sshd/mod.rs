//! sshd hardening (sshd_config(5)): a brickup drop-in that sorts first where `sshd_config`
//! includes `sshd_config.d/*.conf`, an in-place managed block otherwise; validated with `sshd -t`
//! and `sshd -T` before sshd is restarted, and rolled back when anything is off.

pub(crate) mod crypto;
pub mod edit;
pub(crate) mod effective;
pub(crate) mod files;
mod first_start;
pub(crate) mod hostkeys;
pub(crate) mod keywords;
mod service;

use files::glob;
pub(crate) use files::{authorized_keys_file, read_order, sshd_cmd, Directive, SSHD_CONFIG};

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::engine::{Action, Applied, Context, Drift, Refused, Step};
use crate::fsops::{NewFile, Transaction};
use crate::ports::{answers, listening_ports};
use crate::root::Root;

const DROPIN_DIR: &str = "/etc/ssh/sshd_config.d";

/// Refusals that keep the owner from being locked out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockoutGuard {
    #[error("refusing to disable password logins: no configured key is usable in {path}, the file(s) sshd reads for {user} (missing, or only with restricting options such as command=)")]
    NoKeyInstalled { path: String, user: String },
    #[error("sshd would not use brickup's {keyword} (wants {wanted:?}, effective {effective:?}): it is overridden by {by}; rolled back")]
    Overridden {
        keyword: String,
        wanted: String,
        effective: String,
        by: String,
    },
    #[error(
        "sshd is not listening on port {port} after the restart; the previous config was restored"
    )]
    NotListening { port: u16 },
    #[error("sshd's AllowUsers/DenyUsers would refuse {user}: rolled back")]
    UserNotAllowed { user: String },
}

/// The candidate as the target's own sshd judges it, before any change, so `plan` and `apply`
/// refuse alike (exit 2, naming the config's own field) what the apply's `sshd -t` of the
/// written drop-in would otherwise find at the drop-in's line: first each of `ssh.settings`
/// alone (`sshd -t -o KEYWORD=VALUE` on the current config), then everything brickup writes at
/// once, as `-o` options, which win over the files as the drop-in does (sshd keeps the first
/// value it reads). The second catches values sshd accepts one by one but not together, such as
/// an `AuthenticationMethods` naming `password` beside brickup's `PasswordAuthentication no`, and
/// brickup's own crypto lists. Without an sshd or its host keys (an image) the check is left to
/// the apply's `sshd -t` of the written candidate.
fn settings_accepted(cx: &Context) -> Result<()> {
    let Some(sshd) = sshd_cmd(&cx.root) else {
        return Ok(());
    };
    // Ok(None): accepted, or sshd cannot judge anything here (no host keys, no /run/sshd).
    let rejects = |options: Vec<String>| -> Result<Option<String>> {
        let mut cmd = sshd.clone().args(["-t", "-f", SSHD_CONFIG]);
        for o in options {
            cmd = cmd.arg("-o").arg(o);
        }
        let out = cx.runner.run(&cmd)?;
        let said = crate::runner::tail(&out.stderr, &out.stdout);
        let unjudged =
            said.contains("no hostkeys available") || said.contains("Missing privilege separation");
        Ok((!out.success() && !unjudged).then_some(said))
    };
    for (k, v) in &cx.config.ssh.settings {
        if let Some(said) = rejects(vec![format!("{k}={v}")])? {
            return Err(Refused::error(
                format!("ssh.settings.{k}"),
                format!("the target's sshd rejects it: {said}"),
            ));
        }
    }
    let candidate = edit::one_line_settings(&settings(cx));
    if let Some(said) = rejects(candidate.iter().map(|(k, v)| format!("{k}={v}")).collect())? {
        let field = if cx.config.ssh.settings.is_empty() {
            "ssh"
        } else {
            "ssh.settings"
        };
        return Err(Refused::error(
            field,
            format!(
                "the target's sshd rejects brickup's candidate config (its settings with yours, as the drop-in would hold them): {said}"
            ),
        ));
    }
    Ok(())
}

/// The first directive of the host's own sshd config (not brickup's drop-in, whose settings the
/// config check judges) that restricts by the client's address: `Match Address`/`Match Host`,
/// or an AllowUsers/DenyUsers `user@host` entry.
fn address_restriction(dirs: &[Directive]) -> Option<&Directive> {
    dirs.iter().find(|d| {
        d.file != Path::new(edit::DROPIN)
            && match d.keyword.as_str() {
                "match" => d.value.split_whitespace().any(|w| {
                    let w = w.split('=').next().unwrap_or(w);
                    w.eq_ignore_ascii_case("address") || w.eq_ignore_ascii_case("host")
                }),
                "allowusers" | "denyusers" => d.value.contains('@'),
                _ => false,
            }
    })
}

/// Without `ssh.owner_addresses`, a restriction by address in the host's own sshd config is
/// refused before any change: the login proof, which connects from a network namespace of its
/// own, cannot tell whether it admits the owner. With them, `sshd -T -C` is asked about each
/// (service.rs). An sshd config that cannot be read is left to the checks that name it.
fn refuse_address_restrictions(cx: &Context) -> Result<()> {
    if !cx.config.ssh.owner_addresses.is_empty() {
        return Ok(());
    }
    let Ok(dirs) = read_order(&cx.root) else {
        return Ok(());
    };
    match address_restriction(&dirs) {
        None => Ok(()),
        Some(d) => {
            // The line as written (the directive holds the keyword lower-cased).
            let line = fs::read_to_string(cx.root.path(&d.file))
                .ok()
                .and_then(|t| t.lines().nth(d.line - 1).map(|l| l.trim().to_string()))
                .unwrap_or_else(|| format!("{} {}", d.keyword, d.value));
            Err(Refused::error(
                "ssh.owner_addresses",
                format!(
                    "{}:{}: `{line}` restricts logins by the client's address, which brickup's \
                     login proof cannot see from its own network namespace: list the addresses \
                     you connect from in ssh.owner_addresses, so sshd is asked whether it \
                     admits each",
                    d.file.display(),
                    d.line,
                ),
            ))
        }
    }
}

/// The settings brickup owns, in order. `Port` repeats while a port move keeps old ports.
pub(crate) fn owned_settings(cx: &Context) -> edit::Settings {
    let ssh = &cx.config.ssh;
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut s: edit::Settings = cx
        .ssh_ports()
        .iter()
        .map(|p| ("Port".into(), p.to_string()))
        .collect();
    s.extend([
        (
            "PasswordAuthentication".into(),
            yn(ssh.password_authentication),
        ),
        (
            "KbdInteractiveAuthentication".into(),
            yn(ssh.password_authentication),
        ),
        // The pre-8.7 name of the same switch; an alias since, so harmless to repeat.
        (
            "ChallengeResponseAuthentication".into(),
            yn(ssh.password_authentication),
        ),
        (
            "PermitRootLogin".into(),
            if ssh.user == "root" {
                "prohibit-password"
            } else {
                "no"
            }
            .into(),
        ),
        ("PubkeyAuthentication".into(), "yes".into()),
        ("PermitEmptyPasswords".into(), "no".into()),
    ]);
    s
}

/// Session defaults for a masternode, Lynis SSH-7408's good values (FACTS.md); each one is
/// replaced by `ssh.settings` when it names the keyword.
pub(crate) const SESSION_DEFAULTS: &[(&str, &str)] = &[
    ("MaxAuthTries", "3"),
    ("X11Forwarding", "no"),
    ("AllowAgentForwarding", "no"),
    ("AllowTcpForwarding", "no"),
    ("LogLevel", "VERBOSE"),
    ("ClientAliveInterval", "300"),
    ("ClientAliveCountMax", "2"),
];

/// brickup's defaults, in order: session hardening, the crypto for the target's OpenSSH, the
/// host keys served. A keyword `ssh.settings` names is left out (the user's value is written).
pub(crate) fn defaults(cx: &Context) -> edit::Settings {
    let mut s: edit::Settings = SESSION_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(version) = cx.facts.openssh {
        let target = crypto::Target {
            version,
            crypto_policy: matches!(
                cx.facts.os.as_ref().ok().map(|o| o.family),
                Some(crate::os::Family::RedHat { .. })
            ),
            rsa_keys_ok: rsa_login_keys_ok(cx),
        };
        s.extend(
            crypto::settings(target)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
    }
    s.extend(
        crypto::HOST_KEYS
            .iter()
            .filter(|(_, path)| cx.root.path(path).exists())
            .map(|(_, path)| ("HostKey".to_string(), path.to_string())),
    );
    let user: Vec<String> = cx
        .config
        .ssh
        .settings
        .keys()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    s.retain(|(k, _)| !user.contains(&k.to_ascii_lowercase()));
    s
}

/// RequiredRSASize would refuse a configured RSA login key under 3072 bits: the owner's way in.
fn rsa_login_keys_ok(cx: &Context) -> bool {
    cx.config
        .ssh
        .authorized_keys
        .iter()
        .filter_map(|k| crypto::rsa_bits(k))
        .all(|bits| bits >= crypto::MIN_RSA_BITS)
}

/// The settings brickup writes, in order: its own, its defaults, then `ssh.settings`.
pub(crate) fn settings(cx: &Context) -> edit::Settings {
    let mut s = owned_settings(cx);
    s.extend(defaults(cx));
    s.extend(
        cx.config
            .ssh
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    s
}

/// Every file write the step wants: (host path, current, wanted), only those that differ.
fn desired(cx: &Context) -> Result<Vec<(PathBuf, String, String)>> {
    let settings = settings(cx);
    let main = read_text(&cx.root, Path::new(SSHD_CONFIG))?;
    let mut files: Vec<(PathBuf, String, String)> = Vec::new();
    // Port and HostKey accumulate: every other line would add a listener or a served key.
    let mut port = vec!["port".to_string()];
    if settings.iter().any(|(k, _)| k == "HostKey") {
        port.push("hostkey".to_string());
    }
    if edit::includes_dropins(&main) {
        let dropin = Path::new(edit::DROPIN);
        let current = read_text(&cx.root, dropin).unwrap_or_default();
        files.push((
            dropin.to_path_buf(),
            current,
            edit::render_dropin(&settings),
        ));
        // Port accumulates: every other Port line would add a listener. Files read before the
        // drop-in would win over it: brickup's keywords are disabled there too (a repair).
        let mut owned: Vec<String> = settings
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        owned.dedup();
        let main_new = edit::disable_before_include(&edit::disable_keywords(&main, &port), &owned);
        files.push((PathBuf::from(SSHD_CONFIG), main.clone(), main_new));
        for f in glob(&cx.root, &format!("{DROPIN_DIR}/*.conf"))? {
            if f != dropin {
                let text = read_text(&cx.root, &f)?;
                let earlier = f.as_os_str() < dropin.as_os_str();
                let new = edit::disable_keywords(&text, if earlier { &owned } else { &port });
                files.push((f, text, new));
            }
        }
    } else {
        files.push((
            PathBuf::from(SSHD_CONFIG),
            main.clone(),
            edit::edit_in_place(&main, &settings),
        ));
    }
    files.retain(|(_, old, new)| old != new);
    Ok(files)
}

fn read_text(root: &Root, host: &Path) -> Result<String> {
    let real = root.path(host);
    fs::read_to_string(&real).with_context(|| format!("reading {}", real.display()))
}

/// Password logins go off only once a configured key is usable (its first entry unrestricted)
/// in one of the files sshd reads for the user: `patterns` are `AuthorizedKeysFile`'s entries as
/// the candidate config has them. Read without following the user's links.
pub(crate) fn guard_key_usable(cx: &Context, patterns: &[String]) -> Result<()> {
    if cx.config.ssh.password_authentication {
        return Ok(());
    }
    let user = cx.facts.user()?;
    let mut tried = Vec::new();
    for pattern in patterns.iter().filter(|p| p.as_str() != "none") {
        let path = crate::authorized_keys::expand_keys_file(pattern, user);
        let tree = crate::authorized_keys::tree(&path, user);
        let text = crate::fsops::read_user_file(&cx.root, &tree, &path)?
            .map(|f| String::from_utf8_lossy(&f.content).into_owned())
            .unwrap_or_default();
        if crate::authorized_keys::has_usable_key(&text, &cx.config.ssh.authorized_keys) {
            return Ok(());
        }
        tried.push(path.display().to_string());
    }
    Err(LockoutGuard::NoKeyInstalled {
        path: tried.join(", "),
        user: user.name.clone(),
    }
    .into())
}

/// Hardens sshd.
pub struct SshdStep;

impl Step for SshdStep {
    fn name(&self) -> &'static str {
        "sshd"
    }

    fn holds_ssh_ports(&self) -> bool {
        true
    }

    fn recover(&self, cx: &Context, error: &anyhow::Error) -> Result<Option<String>> {
        service::recover(cx, error)
    }

    /// Before anything changes: the user can log in at all, the port is free for sshd, and no
    /// packet filter brickup does not manage stands between the owner and a new port.
    fn preflight(&self, cx: &Context) -> Result<()> {
        let user = cx.facts.user().map_err(|e| {
            Refused::error(
                "ssh.user",
                format!("{e:#} (ssh.create_user has brickup create it)"),
            )
        })?;
        let shell = user.shell.to_string_lossy();
        if shell.ends_with("nologin") || shell.ends_with("/false") || shell.is_empty() {
            return Err(Refused::error(
                "ssh.user",
                format!("the user's login shell {shell} refuses logins"),
            ));
        }
        if !cx.root.path(&user.shell).exists() {
            return Err(Refused::error(
                "ssh.user",
                format!("the user's login shell {shell} does not exist"),
            ));
        }
        // A user still to create gets its home from the user step.
        if !user.to_create && !cx.root.path(&user.home).is_dir() {
            return Err(Refused::error(
                "ssh.user",
                format!("the user's home {} does not exist", user.home.display()),
            ));
        }
        let port = cx.config.ssh.port.get();
        if cx.live()
            && listening_ports()?.contains(&port)
            && !answers(port, std::time::Duration::from_secs(2))
        {
            return Err(Refused::error(
                "ssh.port",
                format!("port {port} is in use by another program (it does not answer as sshd)"),
            ));
        }
        refuse_address_restrictions(cx)?;
        settings_accepted(cx)?;
        crate::firewall::refuse_unmanaged(cx)
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        let mut actions = Action::files(desired(cx)?);
        actions.extend(hostkeys::plan_notes(cx)?.into_iter().map(Action::Note));
        let old = &cx.facts.old_ssh_ports;
        if !old.is_empty() {
            actions.push(Action::Note(format!(
                "sshd keeps answering on port(s) {old:?} beside {} until the whole run has succeeded; then only {} stays open",
                cx.config.ssh.port, cx.config.ssh.port
            )));
        }
        if !actions.is_empty() {
            actions.push(Action::Command(service::validate_cmd(cx).display()));
            if cx.live() {
                actions.push(Action::Note(format!(
                    "restart sshd, then verify it answers on port {}",
                    cx.config.ssh.port
                )));
            }
        }
        Ok(actions)
    }

    fn apply(&self, cx: &Context, tx: &mut Transaction) -> Result<Applied> {
        let host = hostkeys::apply(cx, tx)?;
        let files = desired(cx)?;
        if files.is_empty() && host.is_empty() && !cx.live() {
            return Ok(deferred_rsa(
                cx,
                Applied::unchanged("sshd config already hardened"),
            ));
        }
        for (path, _, new) in &files {
            tx.write(path, new.as_bytes(), NewFile::mode(0o644))?;
        }
        let mut done: Vec<String> = files
            .iter()
            .map(|f| format!("wrote {}", f.0.display()))
            .collect();
        done.extend(host.iter().cloned());
        let mut applied = if done.is_empty() {
            Applied::unchanged("sshd config already hardened")
        } else {
            Applied::changed(done.join("; "))
        };
        applied = deferred_rsa(cx, applied);
        match service::verify_effective(cx)? {
            service::Verified::Yes => {}
            service::Verified::Deferred(why) => applied = applied.deferring(why),
        }
        if cx.live() {
            let changed = !files.is_empty() || !host.is_empty();
            service::restart_if_needed(cx, tx, changed)?;
        } else if applied.changed {
            applied = applied.deferring("sshd restart left to first boot");
        }
        Ok(applied)
    }

    fn check(&self, cx: &Context) -> Result<Vec<Drift>> {
        let mut drift: Vec<Drift> = desired(cx)?
            .into_iter()
            .map(|(p, _, _)| {
                let path = p.display().to_string();
                Drift::new(&path, format!("{path} differs from brickup's settings")).source(&path)
            })
            .collect();
        drift.extend(Drift::all("sshd host keys", hostkeys::drift(cx)?));
        drift.extend(service::effective_drift(cx)?);
        if cx.live() {
            let port = cx.config.ssh.port.get();
            drift.extend(service::listening_drift(port, cx.kept_ssh_ports())?);
            if let Err(e) = crate::login::prove(cx, port, &crate::login::families(cx)) {
                drift.push(
                    Drift::new(format!("login on port {port}"), format!("{e:#}"))
                        .values("a key login", Some("no login".into())),
                );
            }
        }
        Ok(drift)
    }
}

/// Under a root, a weak RSA host key is left to the run on the machine (never generated into
/// an image that many instances share).
fn deferred_rsa(cx: &Context, applied: Applied) -> Applied {
    match hostkeys::weak_rsa(&cx.root) {
        Some(bits) if !cx.live() => applied.deferring(format!(
            "the {bits}-bit RSA host key is regenerated at first boot"
        )),
        _ => applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keyword table and the settings brickup writes name the same owned keywords.
    #[test]
    fn owned_settings_match_the_keyword_table() {
        let text = "version: 1\nssh:\n  port: 2222\n  authorized_keys:\n    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi x\n";
        let config = crate::config::parse(text, Path::new("t.yaml")).unwrap();
        let runner = crate::runner::SystemRunner;
        let cx = Context::new(Root::new("/nonexistent-root"), &config, &runner);
        let mut written: Vec<String> = owned_settings(&cx)
            .into_iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        written.sort();
        written.dedup();
        let mut table: Vec<String> = edit::KEYWORDS
            .iter()
            .filter(|(_, r)| matches!(r, edit::Keyword::Owned(_)))
            .map(|(k, _)| k.to_string())
            .collect();
        table.sort();
        assert_eq!(written, table);
    }
}
