//! The host side of sshd's crypto (sshd(8) FILES, moduli(5)): an RSA host key too small is
//! regenerated, `/etc/ssh/moduli` loses its groups under 3072 bits, and the host keys sshd really
//! serves are read from `sshd -T` for the report.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::crypto::{self, MIN_RSA_BITS};
use super::files::sshd_cmd;
use crate::engine::Context;
use crate::fsops::{NewFile, Transaction};
use crate::report::identity::{fingerprint_public_key, HostKey};
use crate::root::Root;
use crate::runner::Runner;

pub(crate) const MODULI: &str = "/etc/ssh/moduli";
const RSA_KEY: &str = "/etc/ssh/ssh_host_rsa_key";
/// The size a weak RSA host key is regenerated with.
const NEW_RSA_BITS: &str = "4096";

/// (current, filtered) `/etc/ssh/moduli` when groups under 3072 bits are to go.
pub(crate) fn moduli_change(root: &Root) -> Result<Option<(String, String)>> {
    let path = root.path(MODULI);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(crypto::filter_moduli(&text).map(|new| (text, new)))
}

/// The RSA host key's size when it is under [`MIN_RSA_BITS`].
pub(crate) fn weak_rsa(root: &Root) -> Option<u32> {
    let text = std::fs::read_to_string(root.path(format!("{RSA_KEY}.pub"))).ok()?;
    crypto::rsa_bits(&text).filter(|b| *b < MIN_RSA_BITS)
}

/// Plan lines for the host-side changes.
pub(crate) fn plan_notes(cx: &Context) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if let Some((old, _)) = moduli_change(&cx.root)? {
        notes.push(format!(
            "remove {} Diffie-Hellman groups under 3072 bits from {MODULI}",
            crypto::weak_moduli(&old)
        ));
    }
    if let Some(bits) = weak_rsa(&cx.root) {
        notes.push(format!(
            "regenerate the {bits}-bit RSA host key {RSA_KEY} with {NEW_RSA_BITS} bits{}",
            if cx.live() {
                ""
            } else {
                " (at first boot: never in an image)"
            }
        ));
    }
    Ok(notes)
}

/// Check lines for the host-side changes.
pub(crate) fn drift(cx: &Context) -> Result<Vec<String>> {
    let mut drift = Vec::new();
    if let Some((old, _)) = moduli_change(&cx.root)? {
        let n = crypto::weak_moduli(&old);
        drift.push(format!("{MODULI} has {n} groups under 3072 bits"));
    }
    // Under a root the key is regenerated at first boot, not in the image: not drift there.
    if let Some(bits) = weak_rsa(&cx.root).filter(|_| cx.live()) {
        drift.push(format!(
            "the RSA host key {RSA_KEY} has {bits} bits (< {MIN_RSA_BITS})"
        ));
    }
    Ok(drift)
}

/// Filter the moduli and (on the machine itself) regenerate a weak RSA host key, through `tx`.
/// Returns what was done.
pub(crate) fn apply(cx: &Context, tx: &mut Transaction) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if let Some((old, new)) = moduli_change(&cx.root)? {
        tx.write(Path::new(MODULI), new.as_bytes(), NewFile::mode(0o644))?;
        done.push(format!(
            "removed {} moduli under 3072 bits",
            crypto::weak_moduli(&old)
        ));
    }
    if let Some(bits) = weak_rsa(&cx.root) {
        if cx.live() {
            regenerate_rsa(cx, tx)?;
            done.push(format!(
                "regenerated the {bits}-bit RSA host key with {NEW_RSA_BITS} bits"
            ));
        }
    }
    Ok(done)
}

/// A new RSA host key made beside the old one, then written over it through the transaction
/// (so a failed step restores the old key).
fn regenerate_rsa(cx: &Context, tx: &mut Transaction) -> Result<()> {
    let tmp = "/etc/ssh/.brickup-new-rsa-key";
    for p in [tmp.to_string(), format!("{tmp}.pub")] {
        let _ = std::fs::remove_file(cx.root.path(&p));
    }
    let keygen = crate::runner::Cmd::new("ssh-keygen")
        .chroot(cx.root.dir())
        .args(["-q", "-t", "rsa", "-b", NEW_RSA_BITS, "-N", "", "-f", tmp]);
    cx.runner.check(&keygen)?;
    for (from, to, mode) in [
        (tmp.to_string(), RSA_KEY.to_string(), 0o600),
        (format!("{tmp}.pub"), format!("{RSA_KEY}.pub"), 0o644),
    ] {
        let real = cx.root.path(&from);
        let bytes = std::fs::read(&real).with_context(|| format!("reading {}", real.display()))?;
        tx.write(Path::new(&to), &bytes, NewFile::mode(mode))?;
        std::fs::remove_file(&real).with_context(|| format!("removing {}", real.display()))?;
    }
    Ok(())
}

/// Host keys a power cut left empty or unreadable: cloud-init writes them without fsync seconds
/// before brickup's first run, and sshd will not start on them (a lockout, seen in the fault
/// matrix). Each `/etc/ssh/ssh_host_*_key` that `ssh-keygen -y` cannot read is removed with its
/// `.pub`, then `ssh-keygen -A` makes the missing ones and `sync` makes them durable. The same
/// cut can undo the keys' creation altogether (cloud-init deleted the image's keys and made new
/// ones; its ssh module, done for this instance, does not run again): with `make_missing` (a
/// later boot of the instance, after cloud-init had its turn) no host key left at all is made
/// too. Run before sshd starts, on every boot (`firstboot --early`). Returns the keys it
/// replaced, or `ssh_host_*_key` when it made them from none.
pub(crate) fn repair_damaged(
    root: &Root,
    runner: &dyn Runner,
    make_missing: bool,
) -> Result<Vec<String>> {
    let dir = root.path("/etc/ssh");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut replaced = Vec::new();
    let mut good = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let host_key = name.starts_with("ssh_host_") && name.ends_with("_key");
        if !(host_key && e.file_type().is_ok_and(|t| t.is_file())) {
            continue;
        }
        let key = format!("/etc/ssh/{name}");
        let readable = e.metadata().is_ok_and(|m| m.len() > 0)
            && runner
                .run(
                    &crate::runner::Cmd::new("ssh-keygen")
                        .chroot(root.dir())
                        .args(["-y", "-f", key.as_str()]),
                )
                .is_ok_and(|o| o.success());
        if readable {
            good += 1;
            continue;
        }
        tracing::warn!("host key {key} is empty or unreadable (cut short?): making a new one");
        for p in [e.path(), root.path(format!("{key}.pub"))] {
            if let Err(err) = std::fs::remove_file(&p) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    return Err(err).with_context(|| format!("removing {}", p.display()));
                }
            }
        }
        replaced.push(key);
    }
    if make_missing && good == 0 && replaced.is_empty() {
        tracing::warn!(
            "no SSH host key in /etc/ssh (a power cut undid cloud-init's?): making them"
        );
        replaced.push("/etc/ssh/ssh_host_*_key".to_string());
    }
    if !replaced.is_empty() {
        runner.check(
            &crate::runner::Cmd::new("ssh-keygen")
                .chroot(root.dir())
                .arg("-A"),
        )?;
        runner.check(&crate::runner::Cmd::new("sync").chroot(root.dir()))?;
    }
    replaced.sort();
    Ok(replaced)
}

/// The host keys sshd serves, as `sshd -T` says: its `hostkey` files whose type one of its
/// `hostkeyalgorithms` can sign with, fingerprinted from the `.pub` beside each.
pub(crate) fn served(root: &Root, runner: &dyn Runner) -> Result<Vec<HostKey>> {
    let cmd = sshd_cmd(root).context("no sshd under the root")?;
    let run_sshd = root.path("/run/sshd");
    if !run_sshd.exists() {
        std::fs::create_dir_all(&run_sshd)
            .with_context(|| format!("creating {}", run_sshd.display()))?;
    }
    let spec = "user=root,host=localhost,addr=127.0.0.1";
    let out = runner.check(&cmd.args(["-T", "-C", spec]))?;
    let algorithms: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("hostkeyalgorithms "))
        .flat_map(|v| v.split(','))
        .collect();
    let mut keys = Vec::new();
    for path in out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("hostkey "))
    {
        let public = root.path(format!("{}.pub", path.trim()));
        let Ok(text) = std::fs::read_to_string(&public) else {
            tracing::warn!("sshd serves {path}, but {} is missing", public.display());
            continue;
        };
        let key = fingerprint_public_key(&text)
            .with_context(|| format!("parsing {}", public.display()))?;
        if signs_with(&key.key_type, &algorithms) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Can sshd sign with a key of `key_type` given its host key algorithms?
fn signs_with(key_type: &str, algorithms: &[&str]) -> bool {
    algorithms.iter().any(|a| match key_type {
        "ssh-rsa" => a.starts_with("rsa-sha2-") || a.starts_with("ssh-rsa"),
        t => a.starts_with(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_and_algorithms() {
        let hardened = ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"];
        assert!(signs_with("ssh-ed25519", &hardened));
        assert!(signs_with("ssh-rsa", &hardened));
        assert!(!signs_with("ecdsa-sha2-nistp256", &hardened));
        assert!(signs_with("ecdsa-sha2-nistp256", &["ecdsa-sha2-nistp256"]));
        assert!(!signs_with("ssh-rsa", &["ssh-ed25519"]));
    }
}
