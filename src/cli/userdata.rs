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
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl RenderUserdata {
    pub(crate) fn run(self) -> Result<Exit> {
        let text = std::fs::read_to_string(&self.config)
            .with_context(|| format!("reading config {}", self.config.display()))?;
        crate::config::parse(&text, &self.config)?;
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
            if !url.starts_with("https://")
                && !url.starts_with("http://127.0.0.1")
                && !url.starts_with("http://10.0.2.")
            {
                tracing::warn!("--binary-url is not https: the sha256 still guards the binary");
            }
            Binary::Fetch { url, sha256 }
        };
        let doc = userdata::render(&text, &binary, self.provider.as_deref())
            .map_err(|e| UsageError(format!("{e:#}")))?;
        print!("{doc}");
        Ok(Exit::Ok)
    }
}
