//! The one HTTP client brickup uses (downloads and the status report): ureq (blocking HTTP/1.1,
//! no async runtime) with brickup's own rustls setup - the ring provider and the built-in webpki
//! roots, so it works on images without a CA bundle, plus an optional extra CA file for private
//! mirrors - plugged in as a connector (ureq's `unversioned::transport` API).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, ServerName};
use ureq::config::{Config, ConfigBuilder};
use ureq::typestate::AgentScope;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::time::{Duration as UreqDuration, Instant as UreqInstant};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};
use ureq::Agent;

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

/// The download client: the timeouts of `opts`, a CONNECT proxy from the environment
/// (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, first set wins; `NO_PROXY` honoured). It follows
/// no redirects (the caller checks each hop) and hands every status back as a response.
pub fn client(opts: &HttpOptions) -> Result<Agent> {
    let config = config(opts)
        .proxy(env_proxy())
        .timeout_send_request(Some(opts.timeout))
        .timeout_recv_response(Some(opts.timeout))
        .timeout_per_read(Some(opts.timeout))
        .timeout_per_write(Some(opts.timeout))
        .build();
    agent(config, opts)
}

/// What every brickup client shares: no redirects followed, statuses as responses, no proxy,
/// the connect timeout and user agent of `opts`. Callers add their timeouts and proxy.
pub(crate) fn config(opts: &HttpOptions) -> ConfigBuilder<AgentScope> {
    Config::builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_connect(Some(opts.connect_timeout))
        .user_agent(opts.user_agent.as_str())
}

/// An agent for `config` that speaks TLS with brickup's rustls configuration (see [`tls_config`]).
pub(crate) fn agent(config: Config, opts: &HttpOptions) -> Result<Agent> {
    let tls = Tls(Arc::new(tls_config(opts)?));
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(tls);
    Ok(Agent::with_parts(
        config,
        connector,
        DefaultResolver::default(),
    ))
}

/// The proxy the environment names, if it is an HTTP(S) CONNECT proxy: ureq is built without
/// SOCKS support, so a SOCKS proxy is reported and not used.
fn env_proxy() -> Option<ureq::Proxy> {
    let proxy = ureq::Proxy::try_from_env()?;
    match proxy.protocol() {
        ureq::ProxyProtocol::Http | ureq::ProxyProtocol::Https => Some(proxy),
        other => {
            tracing::warn!("ignoring the {other:?} proxy from the environment: only HTTP(S) proxies are supported");
            None
        }
    }
}

/// A ureq error as brickup reports it: never with the URL in it (a query string may carry a
/// presigned signature), TLS failures with the rustls reason.
pub(crate) fn error(e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::BadUri(_) => anyhow!("invalid URL"),
        ureq::Error::RequireHttpsOnly(_) => anyhow!("https is required"),
        ureq::Error::Io(io) => anyhow::Error::new(io),
        other => anyhow::Error::new(other),
    }
}

/// True when `e` is a TLS handshake the client refused (bad certificate, no common protocol):
/// a retry would be refused again.
pub(crate) fn is_tls_rejection(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        ureq::Error::Tls(_) => true,
        _ => false,
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

/// Wraps the connection in TLS for https:// (the target, or an https:// proxy) with one fixed
/// rustls configuration; plain http passes through.
#[derive(Debug)]
struct Tls(Arc<rustls::ClientConfig>);

impl<In: Transport> Connector<In> for Tls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("the host is not a valid TLS server name"))?;
        let conn = ClientConnection::new(self.0.clone(), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        // The handshake shares the connect budget with the TCP connect before it.
        sock.set_timeout(remaining(
            details.timeout,
            details.now,
            (details.current_time)(),
        ));
        let mut stream = StreamOwned::new(conn, sock);
        stream.conn.complete_io(&mut stream.sock)?;
        let config = details.config;
        let buffers = LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size());
        Ok(Some(Either::B(TlsTransport { buffers, stream })))
    }
}

/// `timeout` as measured from `now` instead of from `since`.
fn remaining(mut timeout: NextTimeout, since: UreqInstant, now: UreqInstant) -> NextTimeout {
    if let (UreqDuration::Exact(limit), UreqInstant::Exact(since), UreqInstant::Exact(now)) =
        (timeout.after, since, now)
    {
        let spent = now.saturating_duration_since(since);
        timeout.after = UreqDuration::Exact(limit.saturating_sub(spent));
    }
    timeout
}

/// A TLS session over the transport below it (shaped like ureq's own `RustlsTransport`).
struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("inner", &self.stream.sock.inner())
            .finish()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.sock.set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.sock.set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.sock.get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
