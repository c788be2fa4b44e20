//! What the root's csf install is, read from its files: the installed version (none for an
//! install cut short or a damaged csf.conf) and whether the host has a global IPv6 address. A
//! reader of the host for the facts: it imports no step.

use std::fs;
use std::path::Path;

use crate::root::Root;

pub(crate) const CSF_CONF: &str = "/etc/csf/csf.conf";
/// `installing VERSION` while csf's installer runs, `installed VERSION` once it succeeded.
pub(crate) const INSTALL_MARK: &str = "/var/lib/brickup/csf-install";

/// The version of the csf installed under the root, if any (a run reads it once, as a fact).
/// An install that began and never finished counts as none.
/// A csf.conf the installer left damaged also counts as none: the installer writes csf.conf only
/// when there is none, so only a rerun with the damaged file moved aside repairs it.
pub(crate) fn installed_version(root: &Root) -> Option<String> {
    if !root.path("/usr/sbin/csf").exists() || install_interrupted(root) || conf_damaged(root) {
        return None;
    }
    version_in(&root.path("/etc/csf"))
}

/// csf.conf is there but is no csf.conf: empty, or without its `TESTING` line. A power cut
/// after csf's installer copied it (unsynced) leaves it empty, and the installer, rerun, keeps
/// an existing csf.conf: seen in the fault matrix's csf-install cut.
/// Only a readable file is judged (a read error is the firewall step's to report, and a user's
/// csf.conf is never moved for it); bytes that are not UTF-8 do not hide a TESTING line.
pub(super) fn conf_damaged(root: &Root) -> bool {
    match fs::read(root.path(CSF_CONF)) {
        Ok(bytes) => !String::from_utf8_lossy(&bytes).lines().any(|l| {
            l.strip_prefix("TESTING")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        }),
        Err(_) => false,
    }
}

/// An install that began and never finished (power cut, kill, disk full): csf's files may be
/// half there, version.txt included, so only a rerun of the installer repairs it.
pub(super) fn install_interrupted(root: &Root) -> bool {
    fs::read_to_string(root.path(INSTALL_MARK)).is_ok_and(|s| s.starts_with("installing"))
}

/// The version a tarball or an installed csf says it is.
pub(super) fn version_in(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join("version.txt"))
        .ok()
        .map(|v| v.trim().to_string())
}

/// Does the host have a global IPv6 address (`/proc/net/if_inet6`, scope 00, not loopback)?
pub(crate) fn has_global_ipv6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6 && f[3] == "00" && f[5] != "lo" && !f[0].starts_with("fe80")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_ipv6_detection() {
        let lo = "00000000000000000000000000000001 01 80 10 80       lo\n";
        let ll = "fe800000000000005054fffe123456 02 40 20 80     eth0\n";
        let global = "20010db8000000000000000000000001 02 40 00 80     eth0\n";
        assert!(!has_global_ipv6(&format!("{lo}{ll}")));
        assert!(has_global_ipv6(&format!("{lo}{global}")));
    }
}
