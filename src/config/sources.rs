//! Restrictions by the client's address, which brickup's login proof (src/login.rs) cannot stand
//! in for: the proof logs in from a network namespace of its own, not from wherever the owner
//! connects, so `AllowUsers root@203.0.113.0/24` would fail a proof the owner passes, and
//! `AllowUsers root@198.18.0.0/15` pass one the owner fails. Such settings are refused when the
//! config is read, before any change (sshd_config(5) AllowUsers/DenyUsers "USER@HOST"; sshd(8)
//! AUTHORIZED_KEYS FILE FORMAT `from=`). `Match` (Address, Host, ...) is refused as a keyword of
//! its own (src/sshd/edit.rs).

use super::types::SshConfig;

const WHY: &str = "restricts logins by the client's address, which brickup cannot prove (its \
                   login proof connects from a network namespace of its own, not from where you \
                   connect): set it in sshd_config yourself, after checking it from your address";

/// The problems (field, message) of `ssh` that restrict by source address.
pub(super) fn problems(ssh: &SshConfig) -> Vec<(String, String)> {
    let mut p = Vec::new();
    for (k, v) in &ssh.settings {
        let kw = k.to_ascii_lowercase();
        if kw != "allowusers" && kw != "denyusers" {
            continue;
        }
        if let Some(entry) = v.split_whitespace().find(|e| e.contains('@')) {
            p.push((
                format!("ssh.settings.{k}"),
                format!("the entry {entry:?} {WHY}"),
            ));
        }
    }
    for (i, line) in ssh.authorized_keys.iter().enumerate() {
        let Ok(key) = crate::authorized_keys::PublicKey::parse(line) else {
            continue; // the key check names what is wrong with it
        };
        if key.has_option("from") {
            p.push((
                format!("ssh.authorized_keys[{i}]"),
                format!("its from= option {WHY}"),
            ));
        }
    }
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
        for (settings, keys, want) in cases {
            let got: Vec<String> = problems(&ssh(settings, keys))
                .into_iter()
                .map(|(f, m)| {
                    assert!(m.contains("cannot prove"), "{m}");
                    f
                })
                .collect();
            assert_eq!(got, *want, "{settings:?} {keys:?}");
        }
    }
}
