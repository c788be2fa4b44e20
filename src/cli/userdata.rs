//! `brickup render-userdata`: ready cloud-init user-data on stdout.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use super::{Exit, UsageError};
use crate::userdata::{self, Binary};

#[derive(Debug, clap::Args)]
pub(crate) struct RenderUserdata {
    /// The brickup config to embed (validated first).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where the node fetches the brickup binary (https).
    #[arg(long, value_name = "URL", required_unless_present = "embed_binary")]
    binary_url: Option<String>,
    /// The binary's sha256; checked before it runs.
    #[arg(long, value_name = "HEX")]
    binary_sha256: Option<String>,
    /// Check the output against this provider's user-data limit (aws, hetzner, nocloud, ...).
    #[arg(long, value_name = "NAME")]
    provider: Option<String>,
    /// Carry the binary inside the user-data (gz+b64); fits NoCloud-style seeds only.
    #[arg(long)]
    embed_binary: bool,
    /// The binary to embed (default: this brickup).
    #[arg(long, value_name = "PATH", requires = "embed_binary")]
    binary: Option<PathBuf>,
    /// Carry a file the config names (a report secret, a CA) from LOCAL_PATH on this machine;
    /// without it the file is read at NODE_PATH here. Repeatable.
    #[arg(long = "file", value_name = "NODE_PATH=LOCAL_PATH")]
    files: Vec<String>,
    /// A file the config names that the node already has (baked into its image, or placed by
    /// other means before brickup runs): not carried. Repeatable.
    #[arg(long, value_name = "NODE_PATH")]
    on_node: Vec<PathBuf>,
}

/// The files `config` names for the node, read from this machine: `--file` sources first, else
/// the node path itself; those in `on_node` are left out. A file neither gives is refused, naming
/// its field.
fn carried(
    config: &crate::config::Config,
    sources: &[String],
    on_node: &[PathBuf],
) -> Result<Vec<userdata::NodeFile>> {
    let named = config.node_files();
    let mut map: Vec<(PathBuf, PathBuf)> = Vec::new();
    for s in sources {
        let (node, local) = s
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--file {s:?}: expected NODE_PATH=LOCAL_PATH")))?;
        let node = PathBuf::from(node);
        if !named.iter().any(|(_, p)| *p == node) {
            return Err(UsageError(format!(
                "--file {}: the config names no such file (it names: {})",
                node.display(),
                names(&named)
            ))
            .into());
        }
        map.push((node, PathBuf::from(local)));
    }
    for p in on_node {
        if !named.iter().any(|(_, n)| n == p) {
            return Err(UsageError(format!(
                "--on-node {}: the config names no such file (it names: {})",
                p.display(),
                names(&named)
            ))
            .into());
        }
    }
    let mut files = Vec::new();
    for (field, node) in named {
        if on_node.iter().any(|p| p == node) {
            tracing::info!("{field} ({}): the node has it; not carried", node.display());
            continue;
        }
        let local = map
            .iter()
            .find(|(n, _)| n == node)
            .map_or(node, |(_, l)| l.as_path());
        let contents = std::fs::read(local).map_err(|e| {
            UsageError(format!(
                "{field} names {}, which the node must have: reading {}: {e}; pass --file {}=LOCAL_FILE \
                 to carry it in the user-data, or --on-node {} if the node's image has it",
                node.display(),
                local.display(),
                node.display(),
                node.display()
            ))
        })?;
        if field.starts_with("report.") && String::from_utf8_lossy(&contents).trim().is_empty() {
            return Err(UsageError(format!("{field}: {} is empty", local.display())).into());
        }
        tracing::info!(
            "carrying {} ({field}) from {} in the user-data (root-owned, 0600)",
            node.display(),
            local.display()
        );
        files.push(userdata::NodeFile {
            path: node.to_path_buf(),
            contents,
        });
    }
    Ok(files)
}

fn names(named: &[(&str, &std::path::Path)]) -> String {
    if named.is_empty() {
        return "none".into();
    }
    named
        .iter()
        .map(|(f, p)| format!("{f} {}", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl RenderUserdata {
    pub(crate) fn run(self) -> Result<Exit> {
        let text = crate::config::read(&self.config)?;
        let config = crate::config::parse(&text, &self.config)?;
        let files = carried(&config, &self.files, &self.on_node)?;
        let wanted_sha = match &self.binary_sha256 {
            Some(h) => Some(
                h.parse::<crate::download::Sha256Digest>()
                    .map_err(|e| UsageError(format!("--binary-sha256: {e}")))?
                    .to_string(),
            ),
            None => None,
        };
        let binary = if self.embed_binary {
            let path = match &self.binary {
                Some(p) => p.clone(),
                None => std::env::current_exe().context("finding this brickup binary")?,
            };
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let sha256 = sha256_hex(&bytes);
            if let Some(w) = &wanted_sha {
                if *w != sha256 {
                    return Err(UsageError(format!(
                        "--binary-sha256 {w} does not match {} (sha256 {sha256})",
                        path.display()
                    ))
                    .into());
                }
            }
            Binary::Embed { bytes, sha256 }
        } else {
            let url = self
                .binary_url
                .clone()
                .expect("clap requires --binary-url without --embed-binary");
            let sha256 = wanted_sha.ok_or_else(|| {
                UsageError(
                    "--binary-url needs --binary-sha256: an unverified binary never runs".into(),
                )
            })?;
            check_binary_url(&url)?;
            if !url.starts_with("https://")
                && !url.starts_with("http://127.0.0.1")
                && !url.starts_with("http://10.0.2.")
            {
                tracing::warn!("--binary-url is not https: the sha256 still guards the binary");
            }
            Binary::Fetch { url, sha256 }
        };
        let doc = userdata::render(&text, &files, &binary, self.provider.as_deref())
            .map_err(|e| UsageError(format!("{e:#}")))?;
        print!("{doc}");
        Ok(Exit::Ok)
    }
}

/// A `--binary-url` the node's fetch can use: a URL whose scheme it speaks, with no
/// `user:password@` (Python's urlopen cannot send those, and the user-data would carry them in
/// the clear). The error never repeats the credentials or the query.
fn check_binary_url(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| {
        UsageError(format!(
            "--binary-url is not a URL ({e}): give the https:// address of the binary"
        ))
    })?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(UsageError(format!(
            "--binary-url must be https:// (or http://), not {}://",
            parsed.scheme()
        ))
        .into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let host = parsed.host_str().unwrap_or("?");
        return Err(UsageError(format!(
            "--binary-url carries credentials (user:password@{host}): the fetch at first boot \
             cannot send them, and the user-data would hold them in the clear; host the binary \
             at a plain URL (a presigned URL's query works, and the sha256 guards the content)"
        ))
        .into());
    }
    Ok(())
}
