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
            "key cut short when pasted",
            b.replace(
                KEY,
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMB9CrdZ7GzgiLScczhaCB3b",
            ),
            "ssh.authorized_keys[0]",
            "cut short",
        ),
        (
            "non-breaking space after the type",
            b.replace(KEY, &KEY.replacen(' ', "\u{a0}", 1)),
            "ssh.authorized_keys[0]",
            "a non-breaking space (U+00A0) at column 12",
        ),
        (
            "option sshd does not know",
            b.replace(KEY, &format!("no-port-fowarding {KEY}")),
            "ssh.authorized_keys[0]",
            "option 1 (`no-port-fowarding`) is not an option sshd knows",
        ),
        (
            "option value sshd refuses",
            b.replace(KEY, &format!("tunnel=\"tun0\" {KEY}")),
            "ssh.authorized_keys[0]",
            "not a tunnel device number",
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
            "sha one digit short",
            csf("https://example.invalid/csf.tgz", &SHA[..63]),
            "csf.sha256",
            "got 63 hex digits",
        ),
        (
            "non-hex sha",
            csf("https://example.invalid/csf.tgz", &"z".repeat(64)),
            "csf.sha256",
            "got 'z', which is not a hex digit",
        ),
        (
            "tab indentation",
            b.replace("  port: 2222", "\tport: 2222"),
            "(document)",
            "a tab in the indentation: YAML indents with spaces only",
        ),
        (
            "byte-order mark",
            format!("\u{feff}{b}"),
            "(document)",
            "byte-order mark (U+FEFF)",
        ),
        (
            "quoted port",
            b.replace("2222", "\"2222\""),
            "ssh.port",
            "write the number without quotes",
        ),
        (
            "boolean as yes",
            format!("{b}  password_authentication: yes\n"),
            "ssh.password_authentication",
            "write true or false",
        ),
        (
            "mistyped sshd keyword",
            format!("{b}  settings:\n    MaxAuthTrys: \"3\"\n"),
            "ssh.settings.MaxAuthTrys",
            "did you mean maxauthtries",
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
            "package name apt reads as remove",
            format!("{b}packages:\n  extra: [openssh-server-]\n"),
            "packages.extra[0]",
            "trailing `-`",
        ),
        (
            "package with a version",
            format!("{b}packages:\n  extra: [\"curl=7.88\"]\n"),
            "packages.extra[0]",
            "not a package name",
        ),
        (
            "package glob",
            format!("{b}packages:\n  extra: [\"openssh*\"]\n"),
            "packages.extra[0]",
            "not a package name",
        ),
        (
            "package with a release",
            format!("{b}packages:\n  extra: [\"curl/bookworm-backports\"]\n"),
            "packages.extra[0]",
            "not a package name",
        ),
        (
            "keys file moved away from the key",
            format!("{b}  settings:\n    AuthorizedKeysFile: /etc/ssh/authorized_keys/%u\n"),
            "ssh.settings.AuthorizedKeysFile",
            "brickup installs the key where sshd's own config says",
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

/// A line from the middle of a private key: what must never be printed.
const PEM_BODY: &str = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
const TOKEN: &str = "tok-Q9x7-SECRET-never-shown";

fn pem_lines(indent: &str) -> String {
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        PEM_BODY,
        "QyNTUxOQAAACBtW4eQ8r/zG4QL8y0V0KlacgPRiZmgZDbfQkhQTobmYgAAAJhJ",
        "-----END OPENSSH PRIVATE KEY-----",
    ]
    .iter()
    .map(|l| format!("{indent}{l}\n"))
    .collect()
}

/// Secrets in the wrong place: (case, config text, field named, words of the message).
fn leaking_configs() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let b = base();
    let key_as =
        |value: &str| format!("version: 1\nssh:\n  port: 2222\n  authorized_keys: {value}");
    vec![
        (
            "private key as a block string",
            key_as(&format!("|\n{}", pem_lines("    "))),
            "ssh.authorized_keys",
            "invalid type: string, expected a sequence",
        ),
        (
            "private key as a quoted string",
            key_as(&format!("{:?}\n", pem_lines(""))),
            "ssh.authorized_keys",
            "invalid type: string, expected a sequence",
        ),
        (
            "private key as a plain multi-line string",
            key_as(&pem_lines("    ").replace("-----BEGIN", "\n    BEGIN")),
            "ssh.authorized_keys",
            "invalid type: string, expected a sequence",
        ),
        (
            "URL-shaped token under a key (no key of its own)",
            key_as(&format!("\n    {TOKEN}://x.example/\n")),
            "ssh.authorized_keys",
            "invalid type: string, expected a sequence",
        ),
        (
            "token as the port",
            b.replace("2222", TOKEN),
            "ssh.port",
            "invalid type: string, expected i64",
        ),
        (
            "token as the version",
            b.replace("version: 1", &format!("version: {TOKEN}")),
            "version",
            "invalid type: string, expected u32",
        ),
        (
            "token as a boolean",
            format!("{b}  password_authentication: \"{TOKEN}\"\n"),
            "ssh.password_authentication",
            "invalid type: string, expected a boolean",
        ),
        (
            "token as the settings map",
            format!("{b}  settings: {TOKEN}\n"),
            "ssh.settings",
            "invalid type: string, expected a map",
        ),
        (
            "token as the ipv6 mode",
            format!("{b}firewall:\n  ipv6: {TOKEN}\n"),
            "firewall.ipv6",
            "unknown variant, expected one of",
        ),
        (
            "token as a coin",
            format!("{b}firewall:\n  masternode_ports: [{TOKEN}]\n"),
            "firewall.masternode_ports[0]",
            "unknown coin",
        ),
        (
            "token as the package list",
            format!("{b}packages:\n  extra: {TOKEN}\n"),
            "packages.extra",
            "invalid type: string, expected a sequence",
        ),
        (
            "token as a package",
            format!("{b}packages:\n  extra: [\"{TOKEN};x\"]\n"),
            "packages.extra[0]",
            "not a package name",
        ),
        (
            "token as the user",
            format!("{b}  user: \"{TOKEN} x\"\n"),
            "ssh.user",
            "not a user name",
        ),
        (
            "token as the csf url",
            format!("{b}csf:\n  url: {TOKEN}\n  sha256: {SHA}\n"),
            "csf.url",
            "is not an https://",
        ),
        (
            "token as a report timeout",
            format!(
                "{b}report:\n  url: https://example.invalid/r\n  total_timeout_secs: {TOKEN}\n"
            ),
            "report.total_timeout_secs",
            "invalid type: string, expected u64",
        ),
        (
            "token with a newline as the ipv6 mode",
            format!("{b}firewall:\n  ipv6: \"x\\n{TOKEN}\"\n"),
            "firewall.ipv6",
            "unknown variant",
        ),
    ]
}

fn leaked(text: &str) -> bool {
    text.contains(PEM_BODY) || text.contains("PRIVATE KEY-----") || text.contains(TOKEN)
}

#[test]
fn config_errors_never_echo_the_value() {
    let bin = env!("CARGO_BIN_EXE_brickup");
    let mut failures = Vec::new();
    for (name, text, field, words) in leaking_configs() {
        assert!(leaked(&text), "{name}: the case must hold a secret");
        let err = brickup::config::parse(&text, Path::new("b.yaml")).unwrap_err();
        let in_process = format!("{err}\n{err:?}");
        let root = tempfile::tempdir().unwrap();
        let cfg = root.path().join("brickup.yaml");
        std::fs::write(&cfg, &text).unwrap();
        let out = Command::new(bin)
            .args(["apply", "--root"])
            .arg(root.path())
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let placed =
            err.problems.iter().any(|p| p.field == field && p.line > 1) || field == "version";
        let ok = out.status.code() == Some(2)
            && !leaked(&in_process)
            && !leaked(&stderr)
            && placed
            && stderr.contains(&format!("{}:", cfg.display()))
            && stderr.contains(&format!(": {field}: "))
            && stderr.contains(words);
        if !ok {
            failures.push(format!(
                "{name}: exit {:?}\n{stderr}\n{in_process}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A receiver on 127.0.0.1 that answers 200 and keeps every body it gets.
struct Receiver {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Receiver {
    fn start() -> Receiver {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}/r", server.server_addr().to_ip().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = bodies.clone();
        let thread = std::thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
                seen.lock().unwrap().push(body);
                let _ = req.respond(tiny_http::Response::empty(200));
            }
        });
        Receiver {
            url,
            bodies,
            _thread: thread,
        }
    }
}

#[test]
fn the_invalid_config_report_carries_the_field_not_the_secret() {
    let rx = Receiver::start();
    let text = format!(
        "version: 1\nssh:\n  port: 2222\n  authorized_keys: |\n{}report:\n  url: {}\n  token: tok-report\n",
        pem_lines("    "),
        rx.url
    );
    let root = tempfile::tempdir().unwrap();
    let cfg = root.path().join("brickup.yaml");
    std::fs::write(&cfg, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args(["apply", "--report", "--root"])
        .arg(root.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let bodies = rx.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "one failed report was sent: {stderr}");
    let last = std::fs::read_to_string(root.path().join("var/lib/brickup/last-report.json"))
        .expect("the report is recorded");
    for doc in [&bodies[0], &last] {
        let report: serde_json::Value = serde_json::from_str(doc).unwrap();
        let error = report["error"].to_string();
        assert_eq!(report["status"], "failed", "{doc}");
        assert!(
            error.contains(":4:") && error.contains("ssh.authorized_keys: invalid type: string"),
            "the report names place and field: {error}"
        );
        assert!(!leaked(doc), "secret in the report: {doc}");
    }
    assert!(!leaked(&stderr), "{stderr}");
}
