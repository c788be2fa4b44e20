//! Delivering one report body: POST with bearer token and HMAC signature, per-attempt timeout,
//! exponential backoff with jitter on connection errors, timeouts, 429 and 5xx, all within a
//! total time bound. The retry shape follows afterburn's `retry` module.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::{Client, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::config::{Credentials, ReportConfig};
use super::sign::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::Report;
use crate::root::Root;

const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// No attempt is started with less time than this left before the total bound.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// A configured report delivery: URL, secrets, client and retry policy.
pub struct Sender {
    client: Client,
    url: Url,
    creds: Credentials,
    attempt_timeout: Duration,
    total_timeout: Duration,
    backoff_base: Duration,
}

/// By hand: the derived form would print the URL with its query string.
impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("url", &crate::redact::parsed_url(&self.url))
            .field("creds", &self.creds)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("backoff_base", &self.backoff_base)
            .finish_non_exhaustive()
    }
}

enum Failure {
    /// Worth another attempt; the server may have asked for a minimum wait.
    Retry(anyhow::Error, Option<Duration>),
    Final(anyhow::Error),
}

impl Sender {
    /// Checks the config, loads its secrets (files under `root`) and builds the client.
    pub fn new(root: &Root, cfg: &ReportConfig) -> Result<Sender> {
        if let Some((field, msg)) = cfg.validate().into_iter().next() {
            bail!("invalid report config: {field}: {msg}");
        }
        Ok(Sender {
            client: client()?,
            url: Url::parse(&cfg.url)
                .with_context(|| format!("parsing report.url {}", crate::redact::url(&cfg.url)))?,
            creds: Credentials::load(root, cfg)?,
            attempt_timeout: Duration::from_secs(cfg.attempt_timeout_secs),
            total_timeout: Duration::from_secs(cfg.total_timeout_secs),
            backoff_base: DEFAULT_BACKOFF_BASE,
        })
    }

    /// Uses `client` instead of the built-in one (it must not follow redirects).
    pub fn with_client(mut self, client: Client) -> Sender {
        self.client = client;
        self
    }

    /// Sets the first retry delay (doubling from there); tests use a few milliseconds.
    pub fn with_backoff_base(mut self, base: Duration) -> Sender {
        self.backoff_base = base;
        self
    }

    pub fn send(&self, doc: &Report) -> Result<()> {
        self.send_body(&doc.to_json())
    }

    /// POSTs `body` until it is accepted, a final answer arrives, or the total bound is spent.
    pub fn send_body(&self, body: &[u8]) -> Result<()> {
        let start = Instant::now();
        let deadline = start + self.total_timeout;
        let target = crate::redact::parsed_url(&self.url);
        for attempt in 1u32.. {
            let left = deadline.saturating_duration_since(Instant::now());
            let (err, retry_after) = match self.attempt(body, self.attempt_timeout.min(left)) {
                Ok(()) => {
                    tracing::info!("report delivered to {target} (attempt {attempt})");
                    return Ok(());
                }
                Err(Failure::Final(e)) => {
                    return Err(e.context(format!("sending the report to {target}")))
                }
                Err(Failure::Retry(e, retry_after)) => (e, retry_after),
            };
            let delay = self.backoff(attempt).max(retry_after.unwrap_or_default());
            let left = deadline.saturating_duration_since(Instant::now());
            if delay + MIN_ATTEMPT >= left {
                return Err(err.context(format!(
                    "sending the report to {target}: gave up after {attempt} attempts in {:.1}s \
                     (report.total_timeout_secs = {})",
                    start.elapsed().as_secs_f64(),
                    self.total_timeout.as_secs()
                )));
            }
            tracing::warn!(
                "report attempt {attempt} to {target} failed: {err:#}; retrying in {:.1}s",
                delay.as_secs_f64()
            );
            thread::sleep(delay);
        }
        unreachable!("the attempt counter does not run out before the deadline")
    }

    fn attempt(&self, body: &[u8], timeout: Duration) -> Result<(), Failure> {
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(token) = &self.creds.token {
            req = req.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        if let Some(secret) = &self.creds.hmac_secret {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| Failure::Final(anyhow!("system clock before 1970: {e}")))?
                .as_secs();
            req = req
                .header(TIMESTAMP_HEADER, now.to_string())
                .header(SIGNATURE_HEADER, sign(secret, now, body));
        }
        match req.send() {
            Ok(resp) => judge(resp, &self.creds),
            // Drop the URL from reqwest's message: the caller names the target without query.
            Err(e) if e.is_builder() => Err(Failure::Final(e.without_url().into())),
            // A certificate the client rejects will be rejected again: do not spend the bound.
            Err(e) if is_tls_rejection(&e) => Err(Failure::Final(
                anyhow!(e.without_url()).context("TLS handshake refused"),
            )),
            Err(e) => {
                let what = if e.is_timeout() {
                    format!("no answer within {}s", timeout.as_secs_f64())
                } else {
                    "request failed".into()
                };
                Err(Failure::Retry(anyhow!(e.without_url()).context(what), None))
            }
        }
    }

    /// `base * 2^(attempt-1)`, capped, scaled by a random factor in [0.5, 1) so many machines
    /// booted together do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        exp.min(BACKOFF_CAP).mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// Sorts a response into success, retry (429, 5xx) and final (everything else, redirects too:
/// a signed POST is not replayed to another address).
fn judge(resp: Response, creds: &Credentials) -> Result<(), Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().unwrap_or_default();
    // A receiver may echo what it got; its answer goes into logs, so secrets are cut first.
    let snippet: String = redact(text.trim(), creds).chars().take(200).collect();
    let err = anyhow!("the receiver answered {status}: {snippet}");
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(Failure::Retry(err, retry_after))
    } else if status.is_redirection() {
        let to = location.map_or_else(|| "nowhere".into(), |l| crate::redact::url(&l));
        Err(Failure::Final(err.context(format!(
            "redirects are not followed (to {to}); set report.url to the final address"
        ))))
    } else {
        Err(Failure::Final(err))
    }
}

/// True when the error chain holds a rustls error (bad certificate, handshake failure). hyper
/// wraps it in `io::Error`s, whose `source()` skips the wrapped error, so look inside them too.
fn is_tls_rejection(err: &(dyn std::error::Error + 'static)) -> bool {
    if err.is::<rustls::Error>() {
        return true;
    }
    let wrapped = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref());
    if wrapped.is_some_and(|inner| is_tls_rejection(inner)) {
        return true;
    }
    err.source().is_some_and(is_tls_rejection)
}

fn redact(text: &str, creds: &Credentials) -> String {
    let secrets = [&creds.token, &creds.hmac_secret];
    secrets
        .into_iter()
        .flatten()
        .filter(|s| !s.expose().is_empty())
        .fold(text.to_string(), |t, s| t.replace(s.expose(), "[redacted]"))
}

/// brickup's client, without redirects (a report is POSTed to exactly the configured URL) or
/// proxies; per-attempt timeouts are set on each request.
fn client() -> Result<Client> {
    crate::http::builder(&crate::http::HttpOptions::default())?
        .timeout(None)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

/// Sends `doc` once under `cfg`'s retry policy.
pub fn send(root: &Root, cfg: &ReportConfig, doc: &Report) -> Result<()> {
    Sender::new(root, cfg)?.send(doc)
}
