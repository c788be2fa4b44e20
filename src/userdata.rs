//! Rendering cloud-init user-data (`#cloud-config`, cloud-init's module docs). With a fetched
//! binary everything that closes password SSH happens in `bootcmd`, which cloud-init runs in its
//! init stage, before ssh.service/ssh.socket first start: the config is written (once per
//! instance, 0600), the binary fetched and refused unless its sha256 matches, and
//! `brickup firstboot --early` hardens the SSH key and sshd. The rest (`brickup firstboot`) runs
//! from `runcmd`, with the first-boot unit (written in bootcmd, or by `write_files` with an
//! embedded binary) enabled so a failed run retries on the next boot.
//! An embedded binary (`gz+b64`) only arrives with `write_files`, after bootcmd: no early run.
//! Files the config names for the node (report secrets, a CA) travel with the config: in the
//! bootcmd setup, or in `write_files` with an embedded binary; root-owned, 0600.
//! Each provider's user-data size limit is enforced (FACTS.md).

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;

/// The unit shared with baked images.
pub(crate) const FIRSTBOOT_UNIT: &str = include_str!("../image/brickup-firstboot.service");
pub(crate) const BINARY_PATH: &str = "/usr/local/bin/brickup";

/// Provider, user-data limit in bytes as the provider counts them, and how it counts.
pub(crate) const PROVIDERS: &[(&str, Option<usize>, &str)] = &[
    ("aws", Some(16 * 1024), "16 KB raw"),
    ("digitalocean", Some(64 * 1024), "64 KiB"),
    ("hetzner", Some(32 * 1024), "32 KiB"),
    ("linode", Some(65_535), "65,535 bytes unencoded"),
    ("gcp", Some(256 * 1024), "256 KiB per metadata value"),
    ("azure", Some(64 * 1024), "64 KB"),
    // nova limits the base64-encoded form to 65,535 bytes.
    (
        "openstack",
        Some(65_535 / 4 * 3),
        "65,535 bytes base64-encoded",
    ),
    ("vultr", None, "undocumented"),
    ("nocloud", None, "no documented limit"),
    ("proxmox", None, "no documented limit"),
];

/// How the binary reaches the node.
pub(crate) enum Binary {
    /// Fetched at first boot and checked against the sha256 before it runs.
    Fetch { url: String, sha256: String },
    /// Carried inside the user-data (only NoCloud-style seeds have room).
    Embed { bytes: Vec<u8>, sha256: String },
}

/// A file the config names for the node (a report secret, a CA), carried root-owned and 0600.
pub(crate) struct NodeFile {
    pub(crate) path: std::path::PathBuf,
    pub(crate) contents: Vec<u8>,
}

impl NodeFile {
    /// The node path as the shell and write_files see it: absolute, and only characters that
    /// need no quoting.
    fn shell_path(&self) -> Result<&str> {
        let p = self.path.to_str().unwrap_or("");
        let plain = p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b));
        if !p.starts_with('/') || !plain || p.ends_with('/') {
            bail!(
                "{}: carried files need an absolute path of letters, digits and /._-+@",
                self.path.display()
            );
        }
        Ok(p)
    }
}

/// The user-data for `config_text` and the `files` it names, checked against `provider`'s limit.
pub(crate) fn render(
    config_text: &str,
    files: &[NodeFile],
    binary: &Binary,
    provider: Option<&str>,
) -> Result<String> {
    let limit = match provider {
        None => None,
        Some(name) => {
            let known: Vec<&str> = PROVIDERS.iter().map(|p| p.0).collect();
            let p = PROVIDERS
                .iter()
                .find(|p| p.0.eq_ignore_ascii_case(name))
                .with_context(|| {
                    format!("unknown provider {name:?} (known: {})", known.join(", "))
                })?;
            p.1.map(|l| (p.0, l, p.2))
        }
    };
    let doc = document(config_text, files, binary)?;
    if let Some((name, limit, how)) = limit {
        if doc.len() > limit {
            let advice = match binary {
                Binary::Embed { .. } => "fetch the binary by URL (--binary-url/--binary-sha256) instead of --embed-binary",
                Binary::Fetch { .. } => "shorten the config (comments, keys) or move secrets to files baked into the image",
            };
            bail!("user-data is {} bytes, over {name}'s limit ({how}, {limit} bytes) by {} bytes: {advice}", doc.len(), doc.len() - limit);
        }
    }
    Ok(doc)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn gz_b64(bytes: &[u8]) -> Result<String> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).context("compressing the binary")?;
    Ok(b64(&gz.finish().context("compressing the binary")?))
}

/// A literal block scalar at `indent` spaces.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

/// The fetch: python3 is there wherever cloud-init is. bootcmd runs it on every boot, so a
/// binary that already has the pinned sha256 is kept; otherwise nothing runs unless the download
/// hashes to it. It tries for about 3 minutes: bootcmd can run before the route to the binary
/// exists (seen in the VM: an IPv6 address satisfied networkd's wait-online before DHCPv4 had
/// one), and sshd waiting for it beats sshd starting with passwords on and no early run.
fn fetch_script(url: &str, sha256: &str) -> String {
    format!(
        r#"#!/usr/bin/env python3
# Written by brickup render-userdata: fetch the pinned brickup binary, verify, install.
import hashlib, os, sys, time, urllib.request
URL = {url:?}
# What messages name: a presigned URL's query is a secret.
SHOWN = URL.partition("?")[0]
SHA256 = {sha256:?}
DEST = {BINARY_PATH:?}
try:
    with open(DEST, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() == SHA256:
            sys.exit(0)
except FileNotFoundError:
    pass
for attempt in range(10):
    try:
        with urllib.request.urlopen(URL, timeout=60) as r:
            data = r.read(64 * 1024 * 1024)
        break
    except Exception as e:
        print(f"brickup-fetch: attempt {{attempt + 1}}: {{e}}", file=sys.stderr)
        time.sleep(min(2 ** attempt, 30))
else:
    sys.exit(f"brickup-fetch: could not download {{SHOWN}}")
got = hashlib.sha256(data).hexdigest()
if got != SHA256:
    sys.exit(f"brickup-fetch: sha256 mismatch for {{SHOWN}}: expected {{SHA256}}, got {{got}}")
os.makedirs(os.path.dirname(DEST), exist_ok=True)
tmp = DEST + ".partial"
with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
os.chmod(tmp, 0o755)
os.rename(tmp, DEST)
"#
    )
}

pub(crate) const FETCH_PATH: &str = "/usr/local/sbin/brickup-fetch";
/// The first-boot (retry) unit, where user-data and baked images put it.
pub(crate) const UNIT: &str = "brickup-firstboot.service";
pub(crate) const UNIT_PATH: &str = "/etc/systemd/system/brickup-firstboot.service";
const CONFIG_PATH: &str = "/etc/brickup/brickup.yaml";

/// Where `systemctl enable` links a `WantedBy=multi-user.target` unit.
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";

/// bootcmd (every boot, before sshd first starts): once per instance the config, the fetch
/// script and the retry unit (enabled as `systemctl enable` would, by its link in [`WANTS`],
/// without asking systemd in the middle of its boot: it runs from the next boot on, while
/// runcmd does this boot's run), then on every boot the verified binary and the early run -
/// which exits at once once done for this instance. The setup ends with `sync`: cloud-init-per
/// records it done only after, so a power cut cannot leave it recorded with the config or the
/// unit still empty (unsynced writes are lost for 30 s), and a later boot retries the run even
/// when runcmd's own script was lost.
fn bootcmd(config_text: &str, files: &[NodeFile], url: &str, sha256: &str) -> Result<String> {
    let mut carried = String::new();
    for f in files {
        let p = f.shell_path()?;
        let dir = p.rsplit_once('/').map_or("/", |(d, _)| d);
        let _ = write!(
            carried,
            "mkdir -p {}\necho {} | base64 -d > {p}\n",
            if dir.is_empty() { "/" } else { dir },
            b64(&f.contents)
        );
    }
    let setup = format!(
        "set -e\numask 077\nmkdir -p /etc/brickup /usr/local/sbin\necho {} | base64 -d > {CONFIG_PATH}\n{carried}cat > {FETCH_PATH} <<'BRICKUP_FETCH_EOF'\n{}BRICKUP_FETCH_EOF\nchmod 0700 {FETCH_PATH}\ncat > {UNIT_PATH} <<'BRICKUP_UNIT_EOF'\n{FIRSTBOOT_UNIT}BRICKUP_UNIT_EOF\nchmod 0644 {UNIT_PATH}\nmkdir -p {WANTS}\nln -sfn {UNIT_PATH} {WANTS}/{UNIT}\nsync\n",
        b64(config_text.as_bytes()),
        fetch_script(url, sha256)
    );
    let mut d = String::from("bootcmd:\n");
    let _ = write!(
        d,
        "  - - cloud-init-per\n    - instance\n    - brickup-setup\n    - sh\n    - -c\n    - |\n{}",
        block(&setup, 6)
    );
    let _ = writeln!(d, "  - [{FETCH_PATH}]");
    let _ = writeln!(
        d,
        "  - [sh, -c, \"{}\"]",
        verified_exec(sha256, "firstboot --early")
    );
    Ok(d)
}

/// Run the installed binary only when it has the pinned sha256.
fn verified_exec(sha256: &str, args: &str) -> String {
    format!("echo '{sha256}  {BINARY_PATH}' | sha256sum -c --quiet && exec {BINARY_PATH} {args}")
}

fn document(config_text: &str, files: &[NodeFile], binary: &Binary) -> Result<String> {
    let mut d = String::from("#cloud-config\n# Rendered by `brickup render-userdata`: hardens this node at first boot.\n");
    if let Binary::Fetch { url, sha256 } = binary {
        d.push_str(&bootcmd(config_text, files, url, sha256)?);
    }
    let run = match binary {
        Binary::Fetch { sha256, .. } => {
            // bootcmd fetched it; fetched again here if that failed (no network yet, say).
            format!("{FETCH_PATH} && {}", verified_exec(sha256, "firstboot"))
        }
        Binary::Embed { bytes, sha256 } => {
            d.push_str("write_files:\n");
            let _ = write!(d, "  - path: {UNIT_PATH}\n    owner: root:root\n    permissions: '0644'\n    content: |\n{}", block(FIRSTBOOT_UNIT, 6));
            let _ = write!(d, "  - path: {CONFIG_PATH}\n    owner: root:root\n    permissions: '0600'\n    encoding: b64\n    content: {}\n", b64(config_text.as_bytes()));
            for f in files {
                let _ = write!(d, "  - path: {}\n    owner: root:root\n    permissions: '0600'\n    encoding: b64\n    content: {}\n", f.shell_path()?, b64(&f.contents));
            }
            let _ = write!(d, "  - path: {BINARY_PATH}\n    owner: root:root\n    permissions: '0755'\n    encoding: gz+b64\n    content: {}\n", gz_b64(bytes)?);
            verified_exec(sha256, "firstboot")
        }
    };
    d.push_str("runcmd:\n");
    // Enabled first, so a failed run is retried by the unit on the next boot.
    let _ = writeln!(d, "  - [systemctl, enable, {UNIT}]");
    let _ = writeln!(d, "  - [sh, -c, \"{run}\"]");
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch() -> Binary {
        Binary::Fetch {
            url: "https://example.com/brickup".into(),
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn fits_and_refuses_by_provider() {
        let doc = render("version: 1\n", &[], &fetch(), Some("aws")).unwrap();
        assert!(doc.starts_with("#cloud-config\n"));
        let mut rng = fastrand::Rng::with_seed(7);
        let big = Binary::Embed {
            bytes: (0..200_000).map(|_| rng.u8(..)).collect(),
            sha256: "cd".repeat(32),
        };
        let err = render("version: 1\n", &[], &big, Some("hetzner"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("over hetzner's limit") && err.contains("fetch the binary by URL"),
            "{err}"
        );
        assert!(render("version: 1\n", &[], &big, Some("nocloud")).is_ok());
        assert!(render("version: 1\n", &[], &fetch(), Some("mars"))
            .unwrap_err()
            .to_string()
            .contains("unknown provider"));
    }

    #[test]
    fn config_round_trips() {
        let cfg = "version: 1\nssh:\n  port: 2222 # ünïcode\n";
        let doc = render(cfg, &[], &fetch(), None).unwrap();
        let v: serde_json::Value = serde_norway::from_str(&doc).unwrap();
        let setup = v["bootcmd"][0][5].as_str().unwrap();
        let b64 = setup
            .lines()
            .find_map(|l| {
                l.strip_prefix("echo ")?
                    .strip_suffix(" | base64 -d > /etc/brickup/brickup.yaml")
            })
            .unwrap();
        let back = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(back, cfg.as_bytes());
        assert!(setup.contains("umask 077"), "{setup}");
        assert!(setup.contains(&"ab".repeat(32)), "{setup}");
        // Durable before cloud-init-per records the setup done (a power cut in the next 30 s
        // would leave an empty config that the setup never writes again).
        assert_eq!(setup.lines().last(), Some("sync"), "{setup}");
    }

    /// bootcmd: setup once per instance, the fetch (which verifies), then the early run, which
    /// execs only after the sha256 check; the full run stays in runcmd.
    #[test]
    fn early_run_in_bootcmd_after_the_hash_check() {
        let doc = render("version: 1\n", &[], &fetch(), None).unwrap();
        let v: serde_json::Value = serde_norway::from_str(&doc).unwrap();
        let boot = v["bootcmd"].as_array().unwrap();
        assert_eq!(boot[0][0], "cloud-init-per");
        assert_eq!(boot[0][1], "instance");
        assert_eq!(boot[1][0], FETCH_PATH);
        let early = boot[2][2].as_str().unwrap();
        let check = early.find("sha256sum -c --quiet &&").unwrap();
        assert!(
            check
                < early
                    .find("exec /usr/local/bin/brickup firstboot --early")
                    .unwrap(),
            "{early}"
        );
        let full = v["runcmd"][1][2].as_str().unwrap();
        assert!(
            full.contains("sha256sum -c --quiet && exec /usr/local/bin/brickup firstboot"),
            "{full}"
        );
        assert!(!full.contains("--early"), "{full}");
        // The script bootcmd writes keeps a verified binary without downloading again.
        let script = fetch_script("https://example.com/b", &"ab".repeat(32));
        assert!(script.find("sys.exit(0)").unwrap() < script.find("urlopen").unwrap());
    }
}
