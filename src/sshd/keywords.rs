//! The keywords OpenSSH's sshd reads (servconf.c's table, OpenSSH 8.0-10.0 with Debian's and
//! Fedora's patches, deprecated and alias names included), for catching a mistyped one in
//! `ssh.settings` when the config is read: a name that is not sshd's but within two edits of
//! one is refused with the one meant. A name far from all of them is left to `sshd -t`, so a
//! keyword newer than this list is not refused.

const KNOWN: &[&str] = &[
    "acceptenv",
    "addressfamily",
    "afstokenpassing",
    "allowagentforwarding",
    "allowgroups",
    "allowstreamlocalforwarding",
    "allowtcpforwarding",
    "allowusers",
    "authenticationmethods",
    "authorizedkeyscommand",
    "authorizedkeyscommanduser",
    "authorizedkeysfile",
    "authorizedkeysfile2",
    "authorizedprincipalscommand",
    "authorizedprincipalscommanduser",
    "authorizedprincipalsfile",
    "banner",
    "casignaturealgorithms",
    "challengeresponseauthentication",
    "channeltimeout",
    "chrootdirectory",
    "ciphers",
    "clientalivecountmax",
    "clientaliveinterval",
    "compression",
    "debianbanner",
    "denygroups",
    "denyusers",
    "disableforwarding",
    "dsaauthentication",
    "exposeauthinfo",
    "fingerprinthash",
    "forcecommand",
    "gatewayports",
    "gssapiauthentication",
    "gssapicleanupcredentials",
    "gssapienablek5users",
    "gssapikeyexchange",
    "gssapikexalgorithms",
    "gssapistorecredentialsonrekey",
    "gssapistrictacceptorcheck",
    "hostbasedacceptedalgorithms",
    "hostbasedacceptedkeytypes",
    "hostbasedauthentication",
    "hostbasedusesnamefrompacketonly",
    "hostcertificate",
    "hostdsakey",
    "hostkey",
    "hostkeyagent",
    "hostkeyalgorithms",
    "ignorerhosts",
    "ignoreuserknownhosts",
    "include",
    "ipqos",
    "kbdinteractiveauthentication",
    "kerberosauthentication",
    "kerberosgetafstoken",
    "kerberosorlocalpasswd",
    "kerberostgtpassing",
    "kerberosticketcleanup",
    "kerberosuniqueccache",
    "kerberosusekuserok",
    "kexalgorithms",
    "keyregenerationinterval",
    "listenaddress",
    "logingracetime",
    "loglevel",
    "logverbose",
    "macs",
    "match",
    "maxauthtries",
    "maxsessions",
    "maxstartups",
    "modulifile",
    "passwordauthentication",
    "permitemptypasswords",
    "permitlisten",
    "permitopen",
    "permitrootlogin",
    "permittty",
    "permittunnel",
    "permituserenvironment",
    "permituserrc",
    "persourcemaxstartups",
    "persourcenetblocksize",
    "persourcepenalties",
    "persourcepenaltyexemptlist",
    "pidfile",
    "port",
    "printlastlog",
    "printmotd",
    "protocol",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "pubkeyauthentication",
    "pubkeyauthoptions",
    "rdomain",
    "refuseconnection",
    "rekeylimit",
    "requiredrsasize",
    "revokedkeys",
    "rhostsauthentication",
    "rhostsrsaauthentication",
    "rsaauthentication",
    "securitykeyprovider",
    "serverkeybits",
    "setenv",
    "skeyauthentication",
    "sshdauthpath",
    "sshdsessionpath",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "strictmodes",
    "subsystem",
    "syslogfacility",
    "tcpkeepalive",
    "trustedusercakeys",
    "unusedconnectiontimeout",
    "usedns",
    "uselogin",
    "usepam",
    "useprivilegeseparation",
    "versionaddendum",
    "x11displayoffset",
    "x11forwarding",
    "x11uselocalhost",
    "xauthlocation",
];

/// Is `name` one of sshd's keywords (any case)? The seam tests/real_sshd.rs compares with the
/// real sshd's own list.
pub fn known(name: &str) -> bool {
    KNOWN.contains(&name.to_ascii_lowercase().as_str())
}

/// The keyword `name` is likely a typo of: not one of sshd's, within two edits of one.
pub(crate) fn typo_of(name: &str) -> Option<&'static str> {
    if known(name) {
        return None;
    }
    let n = name.to_ascii_lowercase();
    KNOWN
        .iter()
        .map(|k| (distance(&n, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_and_real_keywords() {
        assert_eq!(typo_of("MaxAuthTrys"), Some("maxauthtries"));
        assert_eq!(typo_of("PermitRootLogn"), Some("permitrootlogin"));
        assert_eq!(typo_of("ClientAliveIntervall"), Some("clientaliveinterval"));
        assert_eq!(typo_of("MaxAuthTries"), None);
        assert_eq!(typo_of("X11Forwarding"), None);
        // Far from every keyword: left to sshd -t (a keyword newer than the list).
        assert_eq!(typo_of("SomeFutureKeyword"), None);
    }
}
