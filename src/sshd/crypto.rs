//! SSH crypto chosen from the target's OpenSSH version (sshd_config(5), release notes): the key
//! exchanges, ciphers, MACs and host key algorithms a masternode's sshd offers, the host keys it
//! serves, and `/etc/ssh/moduli` without groups under 3072 bits. Written after ssh-audit's
//! hardening guides (<https://www.ssh-audit.com/hardening_guides.html>) and dev-sec's
//! ssh_hardening; pure functions, tested with tables.

use base64::Engine as _;

/// An OpenSSH release, as `sshd -V` / `ssh -V` print it (`OpenSSH_9.2p1, OpenSSL ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OpensshVersion {
    pub(crate) major: u32,
    pub(crate) minor: u32,
}

impl OpensshVersion {
    /// The first `OpenSSH_X.Y` in `text` (sshd prints it on stderr, with or without `-V`).
    pub(crate) fn parse(text: &str) -> Option<OpensshVersion> {
        let rest = &text[text.find("OpenSSH_")? + "OpenSSH_".len()..];
        let (major, rest) = rest.split_once('.')?;
        let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        Some(OpensshVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for OpensshVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest OpenSSH brickup chooses algorithms for (`curve25519-sha256` under that name,
/// rsa-sha2 signatures); older ones keep their defaults.
pub(crate) const OLDEST: OpensshVersion = OpensshVersion { major: 7, minor: 4 };

/// Smallest RSA key (host keys, and `RequiredRSASize` for user keys from 9.1).
pub(crate) const MIN_RSA_BITS: u32 = 3072;

/// Key exchange: post-quantum hybrids where the version has them, then curve25519, then the
/// large fixed and negotiated (moduli-filtered) DH groups. No NIST curves, no SHA-1.
fn kex(v: OpensshVersion) -> Vec<&'static str> {
    let mut k = Vec::new();
    if v.at_least(9, 9) {
        k.push("mlkem768x25519-sha256");
    }
    if v.at_least(8, 5) {
        k.push("sntrup761x25519-sha512@openssh.com");
    }
    k.extend([
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group-exchange-sha256",
    ]);
    k
}

const CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

/// Encrypt-then-MAC with SHA-2 only.
const MACS: &[&str] = &[
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
];

/// Ed25519 and RSA with SHA-2 signatures (and their certificates); no ECDSA, no ssh-rsa (SHA-1).
const HOST_KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256",
    "rsa-sha2-256-cert-v01@openssh.com",
];

/// The host keys sshd serves, in order: (key type, private key path). No ECDSA, no DSA.
pub(crate) const HOST_KEYS: &[(&str, &str)] = &[
    ("ssh-ed25519", "/etc/ssh/ssh_host_ed25519_key"),
    ("ssh-rsa", "/etc/ssh/ssh_host_rsa_key"),
];

/// What the algorithm choice depends on besides the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) version: OpensshVersion,
    /// The RHEL family: the system crypto policy owns the algorithm lists there.
    pub(crate) crypto_policy: bool,
    /// Every configured RSA login key has at least [`MIN_RSA_BITS`] (else no RequiredRSASize:
    /// it would lock the owner out).
    pub(crate) rsa_keys_ok: bool,
}

/// sshd settings (keyword, value) for the target, in the order written.
pub(crate) fn settings(t: Target) -> Vec<(&'static str, String)> {
    if t.version < OLDEST {
        return Vec::new();
    }
    let mut s = Vec::new();
    if !t.crypto_policy {
        s.push(("KexAlgorithms", kex(t.version).join(",")));
        s.push(("Ciphers", CIPHERS.join(",")));
        s.push(("MACs", MACS.join(",")));
        s.push(("HostKeyAlgorithms", HOST_KEY_ALGORITHMS.join(",")));
        if t.version.at_least(9, 1) && t.rsa_keys_ok {
            s.push(("RequiredRSASize", MIN_RSA_BITS.to_string()));
        }
    }
    s
}

/// `/etc/ssh/moduli` without the groups smaller than 3072 bits (its 5th field is the size
/// minus one: keep `>= 3071`, as ssh-audit's guides do). None when nothing would be removed,
/// or when nothing would remain (sshd would then fall back to a fixed group).
pub(crate) fn filter_moduli(text: &str) -> Option<String> {
    let size = |l: &str| -> Option<u32> { l.split_whitespace().nth(4)?.parse().ok() };
    let weak = |l: &str| !l.trim_start().starts_with('#') && size(l).is_some_and(|s| s < 3071);
    let strong = text
        .lines()
        .filter(|l| size(l).is_some_and(|s| s >= 3071))
        .count();
    if strong == 0 || !text.lines().any(weak) {
        return None;
    }
    Some(
        text.split_inclusive('\n')
            .filter(|l| !weak(l))
            .collect::<String>(),
    )
}

/// The moduli lines [`filter_moduli`] removes.
pub(crate) fn weak_moduli(text: &str) -> usize {
    match filter_moduli(text) {
        Some(kept) => text.lines().count() - kept.lines().count(),
        None => 0,
    }
}

/// The modulus size of an `ssh-rsa` public key line (`ssh-rsa BASE64 [comment]`), None for other
/// key types or a malformed blob.
pub(crate) fn rsa_bits(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    let kind = words.find(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-"))?;
    if kind != "ssh-rsa" {
        return None;
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(words.next()?)
        .ok()?;
    // string "ssh-rsa", mpint e, mpint n (RFC 4253 6.6).
    let mut rest = &blob[..];
    let mut field = || -> Option<&[u8]> {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let f = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some(f)
    };
    let (_, _, n) = (field()?, field()?, field()?);
    let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
    let first = *n.first()?;
    Some((n.len() as u32 - 1) * 8 + (8 - first.leading_zeros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32) -> OpensshVersion {
        OpensshVersion { major, minor }
    }

    #[test]
    fn parses_versions() {
        let cases = [
            (
                "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024",
                Some(v(9, 2)),
            ),
            (
                "unknown option -- V\nOpenSSH_8.4p1 Debian-5+deb11u3, OpenSSL 1.1.1w",
                Some(v(8, 4)),
            ),
            ("OpenSSH_10.0p2 Debian-5, OpenSSL 3.5.1", Some(v(10, 0))),
            ("OpenSSH_9.9", Some(v(9, 9))),
            ("sshd: command not found", None),
        ];
        for (text, want) in cases {
            assert_eq!(OpensshVersion::parse(text), want, "{text}");
        }
    }

    /// Version -> the algorithms that version gets (Debian 11, 12, 13; Ubuntu 20.04-24.04;
    /// EL9; something too old to choose for).
    #[test]
    fn version_table() {
        let get = |version, crypto_policy| {
            settings(Target {
                version,
                crypto_policy,
                rsa_keys_ok: true,
            })
        };
        let kex = |s: &[(&str, String)]| {
            s.iter()
                .find(|(k, _)| *k == "KexAlgorithms")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let rsa = |s: &[(&str, String)]| s.iter().any(|(k, _)| *k == "RequiredRSASize");
        // (version, policy, first kex, has sntrup, has mlkem, RequiredRSASize, keywords)
        let table = [
            (v(7, 3), false, None, false, false, false, 0),
            (
                v(8, 2),
                false,
                Some("curve25519-sha256"),
                false,
                false,
                false,
                4,
            ),
            (
                v(8, 4),
                false,
                Some("curve25519-sha256"),
                false,
                false,
                false,
                4,
            ),
            (
                v(8, 5),
                false,
                Some("sntrup761x25519-sha512@openssh.com"),
                true,
                false,
                false,
                4,
            ),
            (
                v(8, 9),
                false,
                Some("sntrup761x25519-sha512@openssh.com"),
                true,
                false,
                false,
                4,
            ),
            (
                v(9, 1),
                false,
                Some("sntrup761x25519-sha512@openssh.com"),
                true,
                false,
                true,
                5,
            ),
            (
                v(9, 2),
                false,
                Some("sntrup761x25519-sha512@openssh.com"),
                true,
                false,
                true,
                5,
            ),
            (
                v(9, 6),
                false,
                Some("sntrup761x25519-sha512@openssh.com"),
                true,
                false,
                true,
                5,
            ),
            (
                v(9, 9),
                false,
                Some("mlkem768x25519-sha256"),
                true,
                true,
                true,
                5,
            ),
            (
                v(10, 0),
                false,
                Some("mlkem768x25519-sha256"),
                true,
                true,
                true,
                5,
            ),
            (v(8, 7), true, None, false, false, false, 0),
            (v(9, 9), true, None, false, false, false, 0),
        ];
        for (version, policy, first, sntrup, mlkem, required, n) in table {
            let s = get(version, policy);
            let k = kex(&s);
            assert_eq!(s.len(), n, "{version} policy={policy}: {s:?}");
            assert_eq!(
                k.split(',').next().filter(|f| !f.is_empty()),
                first,
                "{version}"
            );
            assert_eq!(k.contains("sntrup761x25519"), sntrup, "{version}");
            assert_eq!(k.contains("mlkem768"), mlkem, "{version}");
            assert_eq!(rsa(&s), required, "{version}");
        }
    }

    #[test]
    fn nothing_weak_is_offered() {
        let s = settings(Target {
            version: v(9, 2),
            crypto_policy: false,
            rsa_keys_ok: true,
        });
        let all: String = s.iter().map(|(_, v)| format!("{v},")).collect();
        for bad in [
            "nistp", "sha1", "umac-64", "ssh-rsa,", "cbc", "dss", "group14", "group1-",
        ] {
            assert!(!all.contains(bad), "{bad} offered: {all}");
        }
        let macs = &s.iter().find(|(k, _)| *k == "MACs").unwrap().1;
        assert!(
            macs.split(',')
                .all(|m| m.contains("-etm@") && m.contains("sha2")),
            "{macs}"
        );
    }

    #[test]
    fn weak_rsa_login_keys_keep_required_rsa_size_off() {
        let s = settings(Target {
            version: v(9, 2),
            crypto_policy: false,
            rsa_keys_ok: false,
        });
        assert!(!s.iter().any(|(k, _)| *k == "RequiredRSASize"));
    }

    #[test]
    fn moduli_table() {
        let m = |size: u32| format!("20230101000000 2 6 100 {size} 2 C0FFEE\n");
        let head =
            "#    $OpenBSD: moduli,v 1.36 $\n# Time Type Tests Tries Size Generator Modulus\n";
        let cases: Vec<(String, Option<String>)> = vec![
            // Small groups go, comments stay.
            (
                format!("{head}{}{}{}", m(2047), m(3071), m(4095)),
                Some(format!("{head}{}{}", m(3071), m(4095))),
            ),
            // Nothing to remove.
            (format!("{head}{}", m(3071)), None),
            // Nothing would remain: left alone.
            (format!("{head}{}", m(2047)), None),
            (String::new(), None),
        ];
        for (text, want) in cases {
            assert_eq!(filter_moduli(&text), want, "{text}");
        }
        assert_eq!(
            weak_moduli(&format!("{}{}{}", m(1535), m(2047), m(7679))),
            2
        );
    }

    #[test]
    fn rsa_key_sizes() {
        // ssh-keygen -t rsa -b 1024.
        let k1024 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCwvZTadN+m7/u7+OOWsxOB0NksHPo/fq4cSMrfs+C90oBzcDe4Oz0583t4XjlejUfE+/TpliotJzj/F/h9MKcCWqJ+VoHV+aSp6rJfTGiJ9RPTFpAV4hTQy2f0vW4PAC/wS/CxL3KGfbM4fIAexRCAlb6iY204sdvlHHcqXmK9Lw== x";
        assert_eq!(rsa_bits(k1024), Some(1024));
        assert_eq!(
            rsa_bits("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi x"),
            None
        );
        assert_eq!(rsa_bits("ssh-rsa !!!"), None);
    }
}
