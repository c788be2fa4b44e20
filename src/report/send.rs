//! Delivering one report body: POST with bearer token and HMAC signature, per-attempt timeout,
//! exponential backoff with jitter on connection errors, timeouts, 429 and 5xx, all within a
//! total time bound. The retry shape follows afterburn's `retry` module.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use ureq::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use ureq::http::{Response, StatusCode};
use ureq::{Agent, Body};
use url::Url;

use super::config::{Credentials, ReportConfig};
use super::sign::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::Report;
use crate::root::Root;

const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// No attempt is started with less time than this left before the total bound.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);
/// How much of a refusal's body is read (the first 200 characters go into the error).
const MAX_ANSWER: u64 = 64 * 1024;

/// A configured report delivery: URL, secrets, client and retry policy.
pub struct Sender {
    client: Agent,
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
            .post(self.url.as_str())
            .config()
            .timeout_per_call(Some(timeout))
            .build()
            .header(CONTENT_TYPE, "application/json");
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
        match req.send(body) {
            Ok(resp) => judge(resp, &self.creds),
            // A request that cannot be built (a header value with a newline) fails the same way
            // every time. crate::http::error keeps the URL out of the message.
            Err(e @ (ureq::Error::Http(_) | ureq::Error::BadUri(_))) => {
                Err(Failure::Final(crate::http::error(e)))
            }
            // A certificate the client rejects will be rejected again: do not spend the bound.
            Err(e) if crate::http::is_tls_rejection(&e) => Err(Failure::Final(
                crate::http::error(e).context("TLS handshake refused"),
            )),
            Err(e) => {
                let what = if matches!(e, ureq::Error::Timeout(_)) {
                    format!("no answer within {}s", timeout.as_secs_f64())
                } else {
                    "request failed".into()
                };
                Err(Failure::Retry(crate::http::error(e).context(what), None))
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

/// Sorts a response into success (2xx, and 409 "already accepted"), retry (429, 5xx) and final
/// (everything else, redirects too: a signed POST is not replayed to another address).
fn judge(mut resp: Response<Body>, creds: &Credentials) -> Result<(), Failure> {
    let status = resp.status();
    // 409: brickup's receiver already stored this very signature (an earlier attempt's answer
    // was lost); resending would only be refused again, so it counts as delivered.
    if status.is_success() || status == StatusCode::CONFLICT {
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
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .unwrap_or_default();
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
fn client() -> Result<Agent> {
    let opts = crate::http::HttpOptions::default();
    crate::http::agent(crate::http::config(&opts).build(), &opts)
}

/// Sends `doc` once under `cfg`'s retry policy.
pub fn send(root: &Root, cfg: &ReportConfig, doc: &Report) -> Result<()> {
    Sender::new(root, cfg)?.send(doc)
}
