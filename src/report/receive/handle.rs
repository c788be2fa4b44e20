//! What the receiver does with one connection: read the request in time, check content type,
//! token, signature and freshness, refuse a replayed signature, store the report as one JSON line
//! (once: a body stored already is answered 200 again, not stored twice) and print its summary
//! with control characters escaped.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

use super::http::{self, Refusal, Request};
use super::replay::ReplayCache;
use super::stored::{Claim, StoredReports};
use super::{printable, signature_bytes, verify, verify_token, ReceiveOptions, VerifyError};
use crate::report::{self, Report, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Reports are a few KiB; anything far larger is not one.
const MAX_BODY: u64 = 1 << 20;
/// An answer is a few dozen bytes; a client that does not take them is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// State the workers share.
pub(crate) struct Handler<'a> {
    opts: &'a ReceiveOptions,
    replay: Mutex<ReplayCache>,
    stored: Mutex<StoredReports>,
    summaries: Mutex<&'a mut (dyn Write + Send)>,
    appending: Mutex<()>,
}

/// A signature that passed, to be claimed in the replay cache.
struct Signed {
    mac: [u8; 32],
    timestamp: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl<'a> Handler<'a> {
    pub(crate) fn new(opts: &'a ReceiveOptions, summaries: &'a mut (dyn Write + Send)) -> Self {
        Handler {
            opts,
            replay: Mutex::new(ReplayCache::new()),
            stored: Mutex::new(StoredReports::new()),
            summaries: Mutex::new(summaries),
            appending: Mutex::new(()),
        }
    }

    /// Reads one request (all of it within the read timeout), answers it and closes.
    pub(crate) fn serve_connection(&self, mut stream: TcpStream) {
        let peer = http::peer(&stream);
        let deadline = Instant::now() + self.opts.read_timeout;
        let result = http::read_request(&mut stream, deadline, MAX_BODY)
            .and_then(|request| self.handle(&request));
        let (code, reason, drain, retry_after) = match result {
            Ok(()) => (200, "ok".to_string(), false, None),
            Err(r) => {
                // The reason can quote what the client sent.
                let reason = printable(&r.reason);
                tracing::warn!("refused a report from {peer}: {} {reason}", r.code);
                (r.code, reason, r.drain, r.retry_after)
            }
        };
        let retry_after = retry_after.map(|s| s.to_string());
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if code == 405 {
            headers.push(("Allow", "POST"));
        }
        if let Some(secs) = &retry_after {
            headers.push(("Retry-After", secs));
        }
        let sent = stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .and_then(|()| http::respond(&mut stream, code, &reason, &headers));
        if let Err(e) = sent {
            tracing::debug!("answering {peer}: {e}");
        }
        if drain {
            http::linger(&mut stream, deadline);
        }
    }

    /// Checks and stores one report.
    fn handle(&self, request: &Request) -> Result<(), Refusal> {
        let content_type = request.header("Content-Type").unwrap_or_default();
        if content_type.split(';').next().map(str::trim) != Some("application/json") {
            let why = format!("expected application/json, got {content_type:?}");
            return Err(Refusal::new(415, why));
        }
        let signed = self
            .authenticate(request)
            .map_err(|e| Refusal::new(401, e.to_string()))?;
        let (value, report) = parse(&request.body)?;
        if let Some(s) = &signed {
            let expires = s.timestamp.saturating_add(self.opts.max_skew.as_secs());
            if !lock(&self.replay).claim(s.mac, expires, unix_now()) {
                let why =
                    "replayed report: this signature was accepted before (sign each POST anew)";
                return Err(Refusal::new(409, why));
            }
        }
        let digest: [u8; 32] = Sha256::digest(&request.body).into();
        match lock(&self.stored).claim(digest) {
            Claim::New => {}
            Claim::Stored => {
                // The same body signed anew: a retry whose answer was lost, or a resent report.
                tracing::info!(
                    "{} came again (a retry or a resend): stored once already",
                    summary(&report)
                );
                return Ok(());
            }
            Claim::Storing => {
                return Err(Refusal::busy(
                    1,
                    "this report is being stored by an earlier attempt; try again",
                ))
            }
        }
        if let Err(e) = self.store(&value, &report) {
            tracing::error!("{e:#}");
            lock(&self.stored).release(&digest);
            if let Some(s) = &signed {
                lock(&self.replay).release(&s.mac);
            }
            return Err(Refusal::new(500, "cannot store the report"));
        }
        lock(&self.stored).stored(&digest);
        Ok(())
    }

    /// Token and signature as configured; the signature, when one is required.
    fn authenticate(&self, request: &Request) -> Result<Option<Signed>, VerifyError> {
        if let Some(token) = &self.opts.token {
            verify_token(token, request.header("Authorization"))?;
        }
        let Some(secret) = &self.opts.secret else {
            return Ok(None);
        };
        let ts = request
            .header(TIMESTAMP_HEADER)
            .ok_or(VerifyError::MissingHeader(TIMESTAMP_HEADER))?;
        let sig = request
            .header(SIGNATURE_HEADER)
            .ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
        let now = SystemTime::now();
        verify(secret, ts, &request.body, sig, now, self.opts.max_skew)?;
        // verify() parsed both already.
        let mac = signature_bytes(sig).ok_or(VerifyError::MalformedSignature)?;
        let timestamp = ts
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp(ts.into()))?;
        Ok(Some(Signed { mac, timestamp }))
    }

    /// Appends the report and prints its summary. The report is stored once appended: a failed
    /// print must not make the sender retry.
    fn store(&self, value: &serde_json::Value, report: &Report) -> Result<()> {
        record(&self.opts.out, value, &self.appending)?;
        let line = summary(report);
        let mut out = lock(&self.summaries);
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            tracing::warn!("printing the summary: {e}");
        }
        Ok(())
    }
}

/// The report, as JSON (so fields this version does not know are stored too) and parsed.
fn parse(body: &[u8]) -> Result<(serde_json::Value, Report), Refusal> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Refusal::new(400, format!("not JSON: {e}")))?;
    let report: Report = serde_json::from_value(value.clone())
        .map_err(|e| Refusal::new(400, format!("not a brickup report: {e}")))?;
    if report.api_version != report::API_VERSION || report.kind != report::KIND {
        let (v, k) = (&report.api_version, &report.kind);
        let why = format!("unsupported apiVersion/kind {v:?}/{k:?}");
        return Err(Refusal::new(400, why));
    }
    Ok((value, report))
}

/// The report's summary line with every string the sender chose made safe for a terminal.
fn summary(report: &Report) -> String {
    let mut shown = report.clone();
    shown.instance_id = printable(&report.instance_id);
    shown.hostname = printable(&report.hostname);
    // The error line is printed with `{:?}`, which escapes it already.
    report::summary_line(&shown)
}

/// Appends the report as one line: one write while holding `appending`, so lines never
/// interleave, then fsync outside it, so concurrent reports can share a journal commit.
fn record(out: &Path, value: &serde_json::Value, appending: &Mutex<()>) -> Result<()> {
    let mut line = serde_json::to_vec(value).context("serializing the report")?;
    line.push(b'\n');
    let file = {
        let _one = lock(appending);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(out)
            .with_context(|| format!("opening {}", out.display()))?;
        file.write_all(&line)
            .with_context(|| format!("appending to {}", out.display()))?;
        file
    };
    file.sync_data()
        .with_context(|| format!("syncing {}", out.display()))
}
