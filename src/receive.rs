//! A small receiver for brickup's status reports (`brickup receive`): checks the bearer token
//! and the HMAC signature described in `report/sign.rs`, appends each accepted report as one
//! line to a JSON-lines file and prints a one-line summary. Built on tiny_http.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use hmac::Mac;
use sha2::{Digest, Sha256};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::report::{self, Report, Secret, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// How far a signed timestamp may be from the receiver's clock.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(300);
/// Reports are a few KiB; anything far larger is not one.
const MAX_BODY: u64 = 1 << 20;

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("timestamp {0:?} is not unix seconds")]
    BadTimestamp(String),
    #[error("timestamp is {skew_secs}s away from this clock (at most {max_secs}s allowed)")]
    Stale { skew_secs: u64, max_secs: u64 },
    #[error("signature is not `sha256=<64 hex digits>`")]
    MalformedSignature,
    #[error("signature does not match")]
    Mismatch,
    #[error("bearer token does not match")]
    BadToken,
}

/// Checks an `X-Brickup-Signature` against the raw `body` and its `X-Brickup-Timestamp`, and that
/// the timestamp is within `max_skew` of `now`. The comparison is constant-time.
pub fn verify(
    secret: &Secret,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: SystemTime,
    max_skew: Duration,
) -> Result<(), VerifyError> {
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(timestamp.to_string()))?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let skew = now.abs_diff(ts);
    if skew > max_skew.as_secs() {
        return Err(VerifyError::Stale {
            skew_secs: skew,
            max_secs: max_skew.as_secs(),
        });
    }
    let expected = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() == 32)
        .ok_or(VerifyError::MalformedSignature)?;
    report::sign::mac(secret, ts, body)
        .verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

/// Checks an `Authorization` header value against `Bearer <token>` in constant time.
pub fn verify_token(token: &Secret, authorization: Option<&str>) -> Result<(), VerifyError> {
    let given = authorization.ok_or(VerifyError::MissingHeader("Authorization"))?;
    let wanted = format!("Bearer {}", token.expose());
    // Hashing first makes the comparison independent of both lengths.
    let (a, b) = (Sha256::digest(given.trim()), Sha256::digest(wanted));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if diff == 0 {
        Ok(())
    } else {
        Err(VerifyError::BadToken)
    }
}

/// What the receiver accepts and where it writes.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    pub secret: Option<Secret>,
    pub token: Option<Secret>,
    pub out: PathBuf,
    pub max_skew: Duration,
}

/// A bound receiver; [`Receiver::local_addr`] tells the port when bound to port 0.
pub struct Receiver {
    server: Server,
    addr: SocketAddr,
}

impl Receiver {
    pub fn bind(listen: SocketAddr) -> Result<Receiver> {
        let server = Server::http(listen).map_err(|e| anyhow!("listening on {listen}: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .with_context(|| format!("{listen} is not an IP listener"))?;
        Ok(Receiver { server, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` is set (checked at least every 200 ms), or forever, printing one
    /// summary line per accepted report to stdout.
    pub fn run(&self, opts: &ReceiveOptions, stop: Option<Arc<AtomicBool>>) -> Result<()> {
        self.run_with(opts, stop, &mut std::io::stdout())
    }

    /// [`Receiver::run`], writing the summary lines to `summaries`.
    pub fn run_with(
        &self,
        opts: &ReceiveOptions,
        stop: Option<Arc<AtomicBool>>,
        summaries: &mut dyn Write,
    ) -> Result<()> {
        if opts.secret.is_none() && opts.token.is_none() {
            tracing::warn!("receiving reports without a token or HMAC secret: anyone can post");
        }
        tracing::info!("receiving reports on http://{}", self.addr);
        while !stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            let request = self
                .server
                .recv_timeout(Duration::from_millis(200))
                .context("waiting for a request")?;
            if let Some(request) = request {
                handle(request, opts, summaries);
            }
        }
        Ok(())
    }
}

/// Binds `listen` and serves reports (see [`Receiver::run`]).
pub fn serve(
    listen: SocketAddr,
    secret: Option<Secret>,
    token: Option<Secret>,
    out: &Path,
    max_skew: Duration,
    stop: Option<Arc<AtomicBool>>,
) -> Result<()> {
    let opts = ReceiveOptions {
        secret,
        token,
        out: out.to_path_buf(),
        max_skew,
    };
    Receiver::bind(listen)?.run(&opts, stop)
}

fn handle(mut request: Request, opts: &ReceiveOptions, summaries: &mut dyn Write) {
    let peer = request.remote_addr().copied();
    let (code, answer) = match accept(&mut request, opts) {
        Ok((value, report)) => match record(&opts.out, &value) {
            Ok(()) => {
                // The report is stored: a failed print must not make the sender retry.
                let line = report::summary_line(&report);
                if let Err(e) = writeln!(summaries, "{line}").and_then(|()| summaries.flush()) {
                    tracing::warn!("printing the summary: {e}");
                }
                (200, "ok".to_string())
            }
            Err(e) => {
                tracing::error!("{e:#}");
                (500, "cannot store the report".to_string())
            }
        },
        Err((code, reason)) => {
            tracing::warn!("rejected a report from {peer:?}: {code} {reason}");
            (code, reason)
        }
    };
    if let Err(e) = request.respond(Response::from_string(answer + "\n").with_status_code(code)) {
        tracing::warn!("answering {peer:?}: {e}");
    }
}

/// The report, as JSON (so fields this version does not know are stored too) and parsed, or
/// the status code and reason to answer with.
fn accept(
    request: &mut Request,
    opts: &ReceiveOptions,
) -> Result<(serde_json::Value, Report), (u16, String)> {
    if *request.method() != Method::Post {
        return Err((405, "only POST is accepted".into()));
    }
    let content_type = header(request, "Content-Type").unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err((
            415,
            format!("expected application/json, got {content_type:?}"),
        ));
    }
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body);
    read.map_err(|e| (400, format!("reading the body: {e}")))?;
    if body.len() as u64 > MAX_BODY {
        return Err((413, format!("body larger than {MAX_BODY} bytes")));
    }
    authenticate(request, &body, opts).map_err(|e| (401, e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| (400, format!("not JSON: {e}")))?;
    let report: Report = serde_json::from_value(value.clone())
        .map_err(|e| (400, format!("not a brickup report: {e}")))?;
    if report.api_version != report::API_VERSION || report.kind != report::KIND {
        let (v, k) = (&report.api_version, &report.kind);
        return Err((400, format!("unsupported apiVersion/kind {v}/{k}")));
    }
    Ok((value, report))
}

fn authenticate(request: &Request, body: &[u8], opts: &ReceiveOptions) -> Result<(), VerifyError> {
    if let Some(token) = &opts.token {
        verify_token(token, header(request, "Authorization").as_deref())?;
    }
    if let Some(secret) = &opts.secret {
        let ts = header(request, TIMESTAMP_HEADER)
            .ok_or(VerifyError::MissingHeader(TIMESTAMP_HEADER))?;
        let sig = header(request, SIGNATURE_HEADER)
            .ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
        verify(secret, &ts, body, &sig, SystemTime::now(), opts.max_skew)?;
    }
    Ok(())
}

fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h: &&Header| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

/// Appends the report as one line (one write, then fsync).
fn record(out: &Path, value: &serde_json::Value) -> Result<()> {
    let mut line = serde_json::to_vec(value).context("serializing the report")?;
    line.push(b'\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .with_context(|| format!("appending to {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn verify_accepts_only_the_right_signature_in_time() {
        let secret = Secret::new("k3y");
        let body = br#"{"a":1}"#;
        let sig = report::sign(&secret, T, body);
        let skew = DEFAULT_MAX_SKEW;
        assert_eq!(
            verify(&secret, "1700000000", body, &sig, at(T + 300), skew),
            Ok(())
        );
        assert_eq!(
            verify(&secret, "1700000000", body, &sig, at(T - 300), skew),
            Ok(())
        );
        let stale = verify(&secret, "1700000000", body, &sig, at(T + 301), skew);
        assert!(matches!(
            stale,
            Err(VerifyError::Stale { skew_secs: 301, .. })
        ));
        let wrong = Secret::new("other");
        assert_eq!(
            verify(&wrong, "1700000000", body, &sig, at(T), skew),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&secret, "1700000000", b"{}", &sig, at(T), skew),
            Err(VerifyError::Mismatch)
        );
        // The timestamp is part of the signed message.
        assert_eq!(
            verify(&secret, "1700000001", body, &sig, at(T), skew),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&secret, "x", body, &sig, at(T), skew),
            Err(VerifyError::BadTimestamp("x".into()))
        );
        assert_eq!(
            verify(&secret, "1700000000", body, "sha256=zz", at(T), skew),
            Err(VerifyError::MalformedSignature)
        );
        assert_eq!(
            verify(&secret, "1700000000", body, &sig[7..], at(T), skew),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn token_check() {
        let token = Secret::new("tok");
        assert_eq!(verify_token(&token, Some("Bearer tok")), Ok(()));
        assert_eq!(
            verify_token(&token, Some("Bearer tok2")),
            Err(VerifyError::BadToken)
        );
        assert_eq!(
            verify_token(&token, Some("tok")),
            Err(VerifyError::BadToken)
        );
        assert_eq!(
            verify_token(&token, None),
            Err(VerifyError::MissingHeader("Authorization"))
        );
    }
}
