//! Rendering cloud-init user-data (`#cloud-config`, cloud-init's module docs): the config written
//! with `write_files` (0600), the binary fetched by pinned URL + sha256 or embedded (`gz+b64`),
//! the first-boot unit enabled so a failed run retries on the next boot, and `brickup firstboot`
//! run once from `runcmd`. Each provider's user-data size limit is enforced (FACTS.md).

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;

/// The unit shared with baked images.
pub const FIRSTBOOT_UNIT: &str = include_str!("../image/brickup-firstboot.service");
pub const BINARY_PATH: &str = "/usr/local/bin/brickup";

/// Provider, user-data limit in bytes as the provider counts them, and how it counts.
pub const PROVIDERS: &[(&str, Option<usize>, &str)] = &[
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
pub enum Binary {
    /// Fetched at first boot and checked against the sha256 before it runs.
    Fetch { url: String, sha256: String },
    /// Carried inside the user-data (only NoCloud-style seeds have room).
    Embed { bytes: Vec<u8>, sha256: String },
}

/// The user-data for `config_text`, checked against `provider`'s limit.
pub fn render(config_text: &str, binary: &Binary, provider: Option<&str>) -> Result<String> {
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
    let doc = document(config_text, binary)?;
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

/// The first-boot fetch: python3 is there wherever cloud-init is. Hash before anything runs.
fn fetch_script(url: &str, sha256: &str) -> String {
    format!(
        r#"#!/usr/bin/env python3
# Written by brickup render-userdata: fetch the pinned brickup binary, verify, install.
import hashlib, os, sys, time, urllib.request
URL = {url:?}
SHA256 = {sha256:?}
DEST = {BINARY_PATH:?}
for attempt in range(6):
    try:
        with urllib.request.urlopen(URL, timeout=60) as r:
            data = r.read(64 * 1024 * 1024)
        break
    except Exception as e:
        print(f"brickup-fetch: attempt {{attempt + 1}}: {{e}}", file=sys.stderr)
        time.sleep(min(2 ** attempt, 30))
else:
    sys.exit(f"brickup-fetch: could not download {{URL}}")
got = hashlib.sha256(data).hexdigest()
if got != SHA256:
    sys.exit(f"brickup-fetch: sha256 mismatch for {{URL}}: expected {{SHA256}}, got {{got}}")
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

fn document(config_text: &str, binary: &Binary) -> Result<String> {
    let mut d = String::from("#cloud-config\n# Rendered by `brickup render-userdata`: hardens this node at first boot.\n");
    d.push_str("write_files:\n");
    let _ = write!(d, "  - path: /etc/brickup/brickup.yaml\n    owner: root:root\n    permissions: '0600'\n    encoding: b64\n    content: {}\n", b64(config_text.as_bytes()));
    let _ = write!(d, "  - path: /etc/systemd/system/brickup-firstboot.service\n    owner: root:root\n    permissions: '0644'\n    content: |\n{}", block(FIRSTBOOT_UNIT, 6));
    let run = match binary {
        Binary::Fetch { url, sha256 } => {
            let _ = write!(d, "  - path: /usr/local/sbin/brickup-fetch\n    owner: root:root\n    permissions: '0700'\n    content: |\n{}", block(&fetch_script(url, sha256), 6));
            format!("/usr/local/sbin/brickup-fetch && exec {BINARY_PATH} firstboot")
        }
        Binary::Embed { bytes, sha256 } => {
            let _ = write!(d, "  - path: {BINARY_PATH}\n    owner: root:root\n    permissions: '0755'\n    encoding: gz+b64\n    content: {}\n", gz_b64(bytes)?);
            format!("echo '{sha256}  {BINARY_PATH}' | sha256sum -c --quiet && exec {BINARY_PATH} firstboot")
        }
    };
    d.push_str("runcmd:\n");
    // Enabled first, so a failed run is retried by the unit on the next boot.
    d.push_str("  - [systemctl, enable, brickup-firstboot.service]\n");
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
        let doc = render("version: 1\n", &fetch(), Some("aws")).unwrap();
        assert!(doc.starts_with("#cloud-config\n"));
        let mut rng = fastrand::Rng::with_seed(7);
        let big = Binary::Embed {
            bytes: (0..200_000).map(|_| rng.u8(..)).collect(),
            sha256: "cd".repeat(32),
        };
        let err = render("version: 1\n", &big, Some("hetzner"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("over hetzner's limit") && err.contains("fetch the binary by URL"),
            "{err}"
        );
        assert!(render("version: 1\n", &big, Some("nocloud")).is_ok());
        assert!(render("version: 1\n", &fetch(), Some("mars"))
            .unwrap_err()
            .to_string()
            .contains("unknown provider"));
    }

    #[test]
    fn config_round_trips() {
        let cfg = "version: 1\nssh:\n  port: 2222 # ünïcode\n";
        let doc = render(cfg, &fetch(), None).unwrap();
        let v: serde_json::Value = serde_norway::from_str(&doc).unwrap();
        let content = v["write_files"][0]["content"].as_str().unwrap();
        let back = base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap();
        assert_eq!(back, cfg.as_bytes());
        assert_eq!(v["write_files"][0]["permissions"], "0600");
        assert!(v["write_files"][2]["content"]
            .as_str()
            .unwrap()
            .contains(&"ab".repeat(32)));
    }
}
