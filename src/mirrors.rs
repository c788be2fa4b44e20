//! The package sources configured under the root (apt's one-line and deb822 lists, yum/dnf repo
//! files) and the TCP ports their URLs use, so an enforcing csf keeps them open in TCP_OUT. A
//! reader of the host for the facts: it imports no step.

use crate::root::Root;

/// Files naming package sources: apt's one-line and deb822 lists, yum/dnf repo files.
const SOURCE_FILES: &[(&str, &str)] = &[
    ("/etc/apt", "sources.list"),
    ("/etc/apt/sources.list.d", ".list"),
    ("/etc/apt/sources.list.d", ".sources"),
    ("/etc/yum.repos.d", ".repo"),
];

/// TCP ports of the package sources configured under the root, so an enforcing firewall still
/// lets repairs and updates reach them.
pub(crate) fn mirror_ports(root: &Root) -> Vec<u16> {
    let mut ports = Vec::new();
    for (dir, suffix) in SOURCE_FILES {
        let dir = root.path(dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(suffix) {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                ports.extend(source_ports(&text));
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Ports of every http(s)/ftp URL in a sources text (`deb URL`, `URIs: URL`, `baseurl=URL`,
/// `mirrorlist=URL`, ...). Comments are skipped.
pub(crate) fn source_ports(text: &str) -> Vec<u16> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == '='))
        .filter_map(|w| url::Url::parse(w).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https" | "ftp"))
        .filter_map(|u| u.port_or_known_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_package_sources() {
        let apt = "# deb http://ignored:81/ x\ndeb [trusted=yes] http://10.0.2.100/apt ./\ndeb https://mirror.example:8443/debian bookworm main\n";
        assert_eq!(source_ports(apt), vec![80, 8443]);
        let deb822 = "Types: deb\nURIs: https://deb.debian.org/debian\nSuites: bookworm\n";
        assert_eq!(source_ports(deb822), vec![443]);
        let repo = "[baseos]\nmirrorlist=https://mirrors.example/mirrorlist?arch=x\nbaseurl=http://m.example:8080/$basearch/\n";
        assert_eq!(source_ports(repo), vec![443, 8080]);
    }
}
