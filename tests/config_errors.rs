//! The config error corpus: every bad config exits 2, names the field (with file:line:col), and
//! changes nothing under the root.

use std::path::Path;
use std::process::Command;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi owner@laptop";
const SHA: &str = "5f1a0f8a0c0e9c3b6d2f3e4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8";

fn base() -> String {
    format!("version: 1\nssh:\n  port: 2222\n  authorized_keys:\n    - {KEY}\n")
}

/// (case name, config text, field the message must name, words the message must contain)
fn corpus() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let b = base();
    let csf = |url: &str, sha: &str| format!("{b}csf:\n  url: {url}\n  sha256: {sha}\n");
    let fw = |body: &str| format!("{b}firewall:\n{body}");
    let rep = |body: &str| format!("{b}report:\n{body}");
    vec![
        (
            "port too big",
            b.replace("2222", "70000"),
            "ssh.port",
            "is not a TCP port (1-65535)",
        ),
        (
            "port zero",
            b.replace("2222", "0"),
            "ssh.port",
            "is not a TCP port",
        ),
        (
            "port negative",
            b.replace("2222", "-5"),
            "ssh.port",
            "is not a TCP port",
        ),
        ("port string", b.replace("2222", "ssh"), "ssh.port", ""),
        ("missing ssh", "version: 1\n".into(), "ssh", "missing field"),
        (
            "missing port",
            format!("version: 1\nssh:\n  authorized_keys:\n    - {KEY}\n"),
            "ssh.port",
            "missing field",
        ),
        (
            "wrong version",
            b.replace("version: 1", "version: 2"),
            "version",
            "unsupported version 2",
        ),
        (
            "unknown top key",
            format!("{b}colour: blue\n"),
            "colour",
            "unknown field",
        ),
        (
            "unknown ssh key",
            format!("{b}  pasword_authentication: false\n"),
            "ssh.pasword_authentication",
            "unknown field",
        ),
        (
            "private key",
            b.replace(KEY, "-----BEGIN OPENSSH PRIVATE KEY-----"),
            "ssh.authorized_keys[0]",
            "PRIVATE key",
        ),
        (
            "garbage key",
            b.replace(KEY, "hello world"),
            "ssh.authorized_keys[0]",
            "not a public key",
        ),
        (
            "bad base64",
            b.replace(KEY, "ssh-ed25519 @@@@ x"),
            "ssh.authorized_keys[0]",
            "not valid base64",
        ),
        (
            "type mismatch",
            b.replace(KEY, &KEY.replace("ssh-ed25519", "ssh-rsa")),
            "ssh.authorized_keys[0]",
            "not \"ssh-rsa\"",
        ),
        (
            "dsa key",
            b.replace(KEY, "ssh-dss AAAAB3NzaC1kc3M= x"),
            "ssh.authorized_keys[0]",
            "DSA",
        ),
        (
            "no keys, passwords off",
            "version: 1\nssh:\n  port: 2222\n".into(),
            "ssh.authorized_keys",
            "locked out",
        ),
        (
            "empty key list",
            "version: 1\nssh:\n  port: 2222\n  authorized_keys: []\n".into(),
            "ssh.authorized_keys",
            "locked out",
        ),
        (
            "bad user",
            format!("{b}  user: \"-oops\"\n"),
            "ssh.user",
            "not a user name",
        ),
        (
            "owned sshd setting",
            format!("{b}  settings:\n    Port: \"22\"\n"),
            "ssh.settings.Port",
            "set by brickup",
        ),
        (
            "match setting",
            format!("{b}  settings:\n    Match: \"User x\"\n"),
            "ssh.settings.Match",
            "not supported",
        ),
        (
            "bad keyword",
            format!("{b}  settings:\n    \"Max Auth\": \"3\"\n"),
            "ssh.settings.Max Auth",
            "not an sshd_config keyword",
        ),
        (
            "ssh port is masternode port",
            fw("  masternode_ports: [2222]\n"),
            "firewall.masternode_ports[0]",
            "cannot share a port",
        ),
        (
            "coin on ssh port",
            b.replace("2222", "51472") + "firewall:\n  masternode_ports: [pivx]\n",
            "firewall.masternode_ports[0]",
            "cannot share",
        ),
        (
            "unknown coin",
            fw("  masternode_ports: [dogecoin]\n"),
            "firewall.masternode_ports[0]",
            "unknown coin",
        ),
        (
            "masternode port too big",
            fw("  masternode_ports: [99999]\n"),
            "firewall.masternode_ports",
            "not a TCP port",
        ),
        (
            "bad ipv6 mode",
            fw("  ipv6: maybe\n"),
            "firewall.ipv6",
            "unknown variant",
        ),
        (
            "extra port is ssh",
            fw("  extra_tcp_in: [2222]\n"),
            "firewall.extra_tcp_in[0]",
            "ssh.port already",
        ),
        (
            "restrict_syslog",
            fw("  restrict_syslog: 7\n"),
            "firewall.restrict_syslog",
            "not 0-3",
        ),
        (
            "owned csf key",
            fw("  settings:\n    TCP_IN: \"1\"\n"),
            "firewall.settings.TCP_IN",
            "set by brickup",
        ),
        (
            "lowercase csf key",
            fw("  settings:\n    lf_daemon: \"1\"\n"),
            "firewall.settings.lf_daemon",
            "UPPER_CASE",
        ),
        (
            "unknown firewall key",
            fw("  tcp_inn: [1]\n"),
            "firewall.tcp_inn",
            "unknown field",
        ),
        (
            "short sha",
            csf("https://example.invalid/csf.tgz", "abc123"),
            "csf.sha256",
            "64 hex digits",
        ),
        (
            "non-hex sha",
            csf("https://example.invalid/csf.tgz", &"z".repeat(64)),
            "csf.sha256",
            "64 hex digits",
        ),
        (
            "missing sha",
            format!("{b}csf:\n  url: https://example.invalid/csf.tgz\n"),
            "csf.sha256",
            "missing field",
        ),
        (
            "http without allow",
            csf("http://example.invalid/csf.tgz", SHA),
            "csf.url",
            "allow_http",
        ),
        (
            "ftp url",
            csf("ftp://example.invalid/csf.tgz", SHA),
            "csf.url",
            "is not an https://",
        ),
        (
            "bad package name",
            format!("{b}packages:\n  extra: [\"vim; rm -rf /\"]\n"),
            "packages.extra[0]",
            "not a package name",
        ),
        (
            "report http",
            rep("  url: http://example.invalid/r\n"),
            "report.url",
            "https",
        ),
        (
            "report unknown key",
            rep("  url: https://example.invalid/r\n  secret: x\n"),
            "report.secret",
            "unknown field",
        ),
        (
            "yaml syntax",
            "version: 1\nssh: [\n".into(),
            "ssh",
            "invalid type",
        ),
        (
            "yaml broken",
            "version: 1\nssh: {port: 2222\n".into(),
            "(document)",
            "expected",
        ),
    ]
}

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push(e.strip_prefix(dir).unwrap().display().to_string());
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        }
        v.push(p);
    }
    v
}

#[test]
fn every_bad_config_exits_2_names_the_field_and_changes_nothing() {
    let cases = corpus();
    assert!(
        cases.len() >= 30,
        "the corpus must hold at least 30 configs"
    );
    let bin = env!("CARGO_BIN_EXE_brickup");
    let mut failures = Vec::new();
    for (name, text, field, words) in cases {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/ssh")).unwrap();
        std::fs::write(root.path().join("etc/ssh/sshd_config"), "Port 22\n").unwrap();
        let cfg = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(cfg.path(), &text).unwrap();
        let before = listing(root.path());
        let out = Command::new(bin)
            .args(["apply", "--root"])
            .arg(root.path())
            .arg("--config")
            .arg(cfg.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let fname = cfg.path().display().to_string();
        let ok = out.status.code() == Some(2)
            && stderr.contains(&format!("{fname}:"))
            && stderr.contains(&format!(": {field}: ").replace(":  :", ":"))
            && stderr.contains(words)
            && listing(root.path()) == before
            && !stderr.contains("PRIVATE KEY-----");
        if !ok {
            failures.push(format!("{name}: exit {:?}: {stderr}", out.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn readme_config_reference_is_the_validated_example() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(brickup::config::EXAMPLE),
        "README's config reference drifted from `brickup example`"
    );
    brickup::config::parse(brickup::config::EXAMPLE, Path::new("example")).unwrap();
}
