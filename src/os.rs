//! The target's OS as os-release(5) describes it (`/etc/os-release`, else
//! `/usr/lib/os-release`): its family (Debian/Ubuntu or the RHEL family), its package tool (apt-get,
//! dnf, or yum where there is no dnf) and whether it is Ubuntu. Read once per run, as a fact.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::report::identity::parse_os_release;
use crate::root::Root;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Debian,
    RedHat { major: u32 },
}

/// The OS family from os-release's ID and ID_LIKE; an unknown one is an error naming them.
pub(crate) fn family(os: &BTreeMap<String, String>) -> Result<Family> {
    let id = os.get("ID").cloned().unwrap_or_default();
    let like = os.get("ID_LIKE").cloned().unwrap_or_default();
    let ids: Vec<&str> = std::iter::once(id.as_str())
        .chain(like.split_whitespace())
        .collect();
    let major = os
        .get("VERSION_ID")
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if ids.iter().any(|i| ["debian", "ubuntu"].contains(i)) {
        Ok(Family::Debian)
    } else if ids
        .iter()
        .any(|i| ["rhel", "centos", "fedora", "rocky", "almalinux"].contains(i))
    {
        // Fedora's version numbers are far above EL's; both have the nft iptables there.
        Ok(Family::RedHat { major })
    } else {
        bail!("unsupported system: os-release says ID={id:?} ID_LIKE={like:?}; brickup supports Debian/Ubuntu (apt-get) and the RHEL family (dnf/yum)")
    }
}

/// The package tool brickup drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    AptGet,
    Dnf,
    /// The RHEL family where there is no dnf.
    Yum,
}

impl Tool {
    /// The command's name.
    pub(crate) fn command(self) -> &'static str {
        match self {
            Tool::AptGet => "apt-get",
            Tool::Dnf => "dnf",
            Tool::Yum => "yum",
        }
    }
}

/// The target's OS family and package tool, from os-release(5) and the tools installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Os {
    pub(crate) family: Family,
    pub(crate) tool: Tool,
    /// os-release's `ID` is `ubuntu` (its security pocket differs from Debian's).
    pub(crate) ubuntu: bool,
}

/// Read the root's os-release and look for dnf; an unsupported OS is an error naming it.
pub(crate) fn detect(root: &Root) -> Result<Os> {
    let path = root.path("/etc/os-release");
    let path = if path.exists() {
        path
    } else {
        root.path("/usr/lib/os-release")
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let fields = parse_os_release(&text);
    let family = family(&fields)?;
    let ubuntu = fields.get("ID").is_some_and(|id| id == "ubuntu");
    let tool = match family {
        Family::Debian => Tool::AptGet,
        Family::RedHat { .. }
            if ["/usr/bin/dnf", "/usr/bin/dnf5", "/bin/dnf"]
                .iter()
                .any(|p| root.path(Path::new(p)).exists()) =>
        {
            Tool::Dnf
        }
        Family::RedHat { .. } => Tool::Yum,
    };
    Ok(Os {
        family,
        tool,
        ubuntu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let os = |t: &str| parse_os_release(t);
        assert_eq!(
            family(&os("ID=debian\nVERSION_ID=\"12\"\n")).unwrap(),
            Family::Debian
        );
        assert_eq!(
            family(&os("ID=ubuntu\nID_LIKE=debian\n")).unwrap(),
            Family::Debian
        );
        assert_eq!(
            family(&os(
                "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n"
            ))
            .unwrap(),
            Family::RedHat { major: 9 }
        );
        assert_eq!(
            family(&os("ID=almalinux\nID_LIKE='rhel'\nVERSION_ID=8.10\n")).unwrap(),
            Family::RedHat { major: 8 }
        );
        let err = family(&os("ID=alpine\nVERSION_ID=3.20\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ID=\"alpine\""), "{err}");
    }
}
