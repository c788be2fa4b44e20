//! A small receiver for brickup's status reports (`brickup receive`): checks the bearer token
//! and the HMAC signature described in `report/sign.rs`, refuses replayed signatures, appends each
//! accepted report once (`stored.rs`: a retry of a stored body is not a second line) as one line to a JSON-lines file and prints a one-line summary. It reads
//! requests itself (`http.rs`, with a deadline per connection) on a bounded pool of threads
//! (`server.rs` says why), so a slow client cannot hold up the others.

mod handle;
mod http;
mod replay;
mod server;
mod stored;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::report::{self, Secret};

pub use server::Receiver;

/// How far a signed timestamp may be from the receiver's clock.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(300);
/// How long one connection may take to deliver its whole request.
pub(crate) const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once (see `server.rs` for the choice).
pub(crate) const DEFAULT_WORKERS: usize = 64;

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
    let expected = signature_bytes(signature).ok_or(VerifyError::MalformedSignature)?;
    report::sign::mac(secret, ts, body)
        .verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

/// The 32 MAC bytes of a `sha256=<64 hex digits>` signature header.
fn signature_bytes(signature: &str) -> Option<[u8; 32]> {
    let hex = signature.trim().strip_prefix("sha256=")?;
    hex::decode(hex).ok()?.try_into().ok()
}

/// Checks an `Authorization` header value against `Bearer <token>` in constant time.
pub(crate) fn verify_token(token: &Secret, authorization: Option<&str>) -> Result<(), VerifyError> {
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
    /// How long one connection may take to send its request, head and body.
    pub read_timeout: Duration,
    /// How many connections are served at once.
    pub workers: usize,
}

impl ReceiveOptions {
    /// No token or secret, appending to `out`, the default limits.
    pub fn new(out: impl Into<PathBuf>) -> ReceiveOptions {
        ReceiveOptions {
            secret: None,
            token: None,
            out: out.into(),
            max_skew: DEFAULT_MAX_SKEW,
            read_timeout: DEFAULT_READ_TIMEOUT,
            workers: DEFAULT_WORKERS,
        }
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
        max_skew,
        ..ReceiveOptions::new(out)
    };
    Receiver::bind(listen)?.run(&opts, stop)
}

/// `s` with what could steer a terminal or fake a line escaped: control characters (newline,
/// ESC, DEL, C1), bidirectional overrides, and the backslash itself so escapes stay unambiguous.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || is_bidi_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Unicode's explicit bidirectional formatting characters (UAX #9), which reorder what follows.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{61c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
    fn printable_escapes_what_steers_a_terminal() {
        for (raw, shown) in [
            ("mn-1.example", "mn-1.example"),
            ("h\n\x1b[31mred", "h\\n\\x1b[31mred"),
            ("a\rb\tc\0d\x7f", "a\\rb\\tc\\x00d\\x7f"),
            ("back\\slash", "back\\\\slash"),
            ("c1\u{9b}31m", "c1\\u{9b}31m"),
            ("rlo\u{202e}txt", "rlo\\u{202e}txt"),
            ("π ünïcode", "π ünïcode"),
        ] {
            assert_eq!(printable(raw), shown, "{raw:?}");
        }
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
