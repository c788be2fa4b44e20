//! The one HTTP client brickup uses (downloads and the status report): rustls with the ring
//! provider and the built-in webpki roots, so it works on images without a CA bundle, plus an
//! optional extra CA file for private mirrors (reqwest 0.13 `ClientBuilder::tls_backend_preconfigured`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rustls_pki_types::{pem::PemObject as _, CertificateDer};

const MAX_REDIRECTS: usize = 10;

/// Settings shared by every request a client makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Limit for establishing the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit for the response headers and for each read of the body: a stalled peer fails within
    /// this time, a slow but steady one does not.
    pub timeout: Duration,
    /// Extra trust anchors (PEM), added to the built-in webpki roots, for private mirrors.
    pub ca_file: Option<PathBuf>,
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            ca_file: None,
            user_agent: concat!("brickup/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Builds a blocking client with brickup's TLS setup and the timeouts of `opts`.
pub fn client(opts: &HttpOptions) -> Result<reqwest::blocking::Client> {
    builder(opts)?.build().context("building the HTTP client")
}

/// The client builder with brickup's TLS setup and `opts` applied, for callers that add to it.
pub fn builder(opts: &HttpOptions) -> Result<reqwest::blocking::ClientBuilder> {
    let tls = tls_config(opts)?;
    Ok(reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::custom(follow_redirect))
        .user_agent(opts.user_agent.clone()))
}

/// reqwest's default limit of 10 redirects, and none to a URL with userinfo: hyper's trace logs
/// print the authority it connects to, credentials included (downloads move the configured URL's
/// userinfo into a header for that reason; a redirect target cannot be treated the same way).
fn follow_redirect(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let url = attempt.url();
    if !url.username().is_empty() || url.password().is_some() {
        attempt.error("refusing a redirect to a URL with credentials in it")
    } else if attempt.previous().len() >= MAX_REDIRECTS {
        attempt.error(format!("too many redirects (more than {MAX_REDIRECTS})"))
    } else {
        attempt.follow()
    }
}

/// The rustls configuration: ring provider, safe protocol versions, webpki roots plus `ca_file`.
fn tls_config(opts: &HttpOptions) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &opts.ca_file {
        for cert in read_pem_certs(path)? {
            roots
                .add(cert)
                .with_context(|| format!("adding a certificate from {}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("selecting TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Reads every certificate from a PEM file; a file with none is an error, not a silent no-op.
fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing PEM certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("CA file {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}
