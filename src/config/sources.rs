//! Restrictions by the client's address, which brickup's login proof (src/login.rs) cannot stand
//! in for: the proof logs in from a network namespace of its own, not from wherever the owner
//! connects, so `AllowUsers root@203.0.113.0/24` would fail a proof the owner passes, and
//! `DenyUsers root@203.0.113.0/24` pass one the owner fails (sshd_config(5) AllowUsers/DenyUsers
//! "USER@HOST"; sshd(8) AUTHORIZED_KEYS FILE FORMAT `from=`). Without `ssh.owner_addresses` such
//! settings are refused when the config is read, before any change. With it, each owner address
//! must be admitted, as sshd's own matching (src/patterns.rs) would: by DenyUsers/AllowUsers, and
//! by the `from=` of at least one configured key. AllowUsers `user@host` stays refused: it would
//! refuse the proof itself. `Match` is refused as a keyword of its own (src/sshd/edit.rs); the
//! host's own files are judged in the sshd step's preflight and by `sshd -T -C`.

use super::types::SshConfig;
use crate::patterns;

const WHY: &str = "restricts logins by the client's address, which brickup cannot prove (its \
                   login proof connects from a network namespace of its own, not from where you \
                   connect): set ssh.owner_addresses to the addresses you connect from, or set \
                   it in sshd_config yourself, after checking it from your address";

const ALLOW_WHY: &str = "admits only some client addresses, and so not brickup's login proof, \
                         which connects from a network namespace of its own: restrict by \
                         address with from= on your key (and ssh.owner_addresses) instead";

/// The problems (field, message) of `ssh` that restrict by source address.
pub(super) fn problems(ssh: &SshConfig) -> Vec<(String, String)> {
    let mut p = Vec::new();
    let owners = &ssh.owner_addresses;
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    for (k, v) in &ssh.settings {
        let kw = k.to_ascii_lowercase();
        match kw.as_str() {
            "allowusers" => allow.push(v.clone()),
            "denyusers" => deny.push(v.clone()),
            _ => continue,
        }
        let Some(entry) = v.split_whitespace().find(|e| e.contains('@')) else {
            continue;
        };
        if owners.is_empty() {
            p.push((
                format!("ssh.settings.{k}"),
                format!("the entry {entry:?} {WHY}"),
            ));
        } else if kw == "allowusers" {
            p.push((
                format!("ssh.settings.{k}"),
                format!("the entry {entry:?} {ALLOW_WHY}"),
            ));
        }
    }
    for (i, a) in owners.iter().enumerate() {
        match patterns::admits(&ssh.user, *a, &allow, &deny) {
            Ok(true) => {}
            Ok(false) => p.push((
                format!("ssh.owner_addresses[{i}]"),
                format!(
                    "ssh.settings' AllowUsers/DenyUsers refuse {} from {a}: you would be locked out",
                    ssh.user
                ),
            )),
            Err(e) => p.push(("ssh.settings".into(), format!("{e}: sshd would not start"))),
        }
    }
    let mut admitted = vec![false; owners.len()];
    for (i, line) in ssh.authorized_keys.iter().enumerate() {
        let Ok(key) = crate::authorized_keys::PublicKey::parse(line) else {
            continue; // the key check names what is wrong with it
        };
        let Some(from) = key.option("from") else {
            admitted.iter_mut().for_each(|a| *a = true);
            continue;
        };
        if owners.is_empty() {
            p.push((
                format!("ssh.authorized_keys[{i}]"),
                format!("its from= option {WHY}"),
            ));
            continue;
        }
        for (j, a) in owners.iter().enumerate() {
            match patterns::host_and_ip(*a, from) {
                1 => admitted[j] = true,
                0 => {}
                _ => p.push((
                    format!("ssh.authorized_keys[{i}]"),
                    format!(
                        "its from={from:?} is not a list sshd can read, so sshd refuses the key"
                    ),
                )),
            }
        }
    }
    if !ssh.authorized_keys.is_empty() {
        for (a, ok) in owners.iter().zip(&admitted) {
            if !ok {
                p.push((
                    "ssh.owner_addresses".into(),
                    format!(
                        "no configured key's from= admits {a}: you would be locked out from there"
                    ),
                ));
            }
        }
    }
    p.dedup();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG88/1D3uztrc89UOtOJ/hOU5GLGt6kti7qCX1Q+WWui me";

    fn ssh(settings: &[(&str, &str)], keys: &[String]) -> SshConfig {
        let mut c: SshConfig = serde_norway::from_str("port: 2222").unwrap();
        c.settings = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c.authorized_keys = keys.to_vec();
        c
    }

    /// ssh.settings, ssh.authorized_keys, the fields named.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [String], &'a [&'a str]);

    #[test]
    fn source_restrictions_are_named() {
        let cases: &[Case] = &[
            (
                &[("AllowUsers", "root@192.0.2.0/24")],
                &[],
                &["ssh.settings.AllowUsers"],
            ),
            (
                &[("denyusers", "bob root@*.example")],
                &[],
                &["ssh.settings.denyusers"],
            ),
            (&[("AllowUsers", "root admin")], &[], &[]),
            (&[("AllowGroups", "ssh@x")], &[], &[]),
            (
                &[],
                &[format!("from=\"10.0.0.0/8\" {KEY}")],
                &["ssh.authorized_keys[0]"],
            ),
            (
                &[],
                &[format!("no-pty,FROM=\"a,b\" {KEY}")],
                &["ssh.authorized_keys[0]"],
            ),
            (&[], &[format!("command=\"echo from=x\" {KEY}")], &[]),
            (&[], &[KEY.to_string()], &[]),
        ];
        check(cases, &[], "cannot prove");
    }

    /// With the owner's addresses known, each is judged as sshd would judge it.
    #[test]
    fn owner_addresses_are_admitted_or_named() {
        let cases: &[Case] = &[
            (&[("DenyUsers", "root@203.0.113.0/24")], &[], &[]),
            (
                &[("DenyUsers", "root@198.51.100.0/24")],
                &[],
                &["ssh.owner_addresses[0]"],
            ),
            (
                &[("AllowUsers", "root@198.51.100.7")],
                &[],
                &["ssh.settings.AllowUsers"],
            ),
            (&[("AllowUsers", "root admin")], &[], &[]),
            (&[], &[format!("from=\"198.51.100.0/24\" {KEY}")], &[]),
            (
                &[],
                &[format!("from=\"203.0.113.0/24\" {KEY}")],
                &["ssh.owner_addresses"],
            ),
            // One key for each place is enough.
            (
                &[],
                &[
                    format!("from=\"203.0.113.0/24\" {KEY}"),
                    format!("from=\"198.51.*\" {KEY}"),
                ],
                &[],
            ),
            // The key check refuses the list itself (src/authorized_keys/values.rs); no key is
            // left that admits the owner.
            (
                &[],
                &[format!("from=\"10.0.0.1/8\" {KEY}")],
                &["ssh.owner_addresses"],
            ),
        ];
        check(cases, &["198.51.100.7".parse().unwrap()], "");
    }

    fn check(cases: &[Case], owners: &[std::net::IpAddr], needle: &str) {
        for (settings, keys, want) in cases {
            let mut c = ssh(settings, keys);
            c.owner_addresses = owners.to_vec();
            let got: Vec<String> = problems(&c)
                .into_iter()
                .map(|(f, m)| {
                    assert!(m.contains(needle), "{m}");
                    f
                })
                .collect();
            assert_eq!(got, *want, "{settings:?} {keys:?}");
        }
    }
}
