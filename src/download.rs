//! Verified download of pinned artifacts (the csf tarball) into a content-addressed cache: stream
//! to `<sha256>.partial` while hashing, rename to `<sha256>.tgz` only on a match (the shape of
//! rustup's `src/dist/download.rs`; digest parsing after coreos-installer's `src/io/hash.rs`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest as _, Sha256};
use tracing::{debug, info, warn};

use crate::http::HttpOptions;

/// Read buffer size: memory use stays at this whatever the download size.
const BUF_SIZE: usize = 64 * 1024;
/// Redirects followed per download (the limit reqwest, brickup's earlier client, used).
const MAX_REDIRECTS: usize = 10;

/// A SHA-256 digest, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl FromStr for Sha256Digest {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.len() != 64 {
            bail!(
                "invalid sha256 {s:?}: expected exactly 64 hex digits, got {} characters",
                s.chars().count()
            );
        }
        if let Some((i, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            bail!("invalid sha256 {s:?}: {c:?} at position {i} is not a hex digit");
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).with_context(|| format!("invalid sha256 {s:?}"))?;
        Ok(Sha256Digest(out))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// Download failures a caller may want to tell apart; transport errors stay `anyhow`.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("sha256 mismatch for {url}: expected {expected}, got {actual}")]
    HashMismatch {
        url: String,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
    #[error("{url} is larger than the download limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error(
        "refusing plain-http download of {url}: use https:// or file://, \
         or allow http explicitly (FetchOptions::allow_http)"
    )]
    HttpNotAllowed { url: String },
    #[error("unsupported URL scheme {scheme:?} in {url}: expected https://, file:// or http://")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
}

/// How to fetch: scheme policy, size cap, retries and the HTTP client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    pub allow_http: bool,
    /// Largest accepted body in bytes, checked against Content-Length and while streaming.
    pub max_size: u64,
    /// Total tries per download (at least one is always made).
    pub attempts: u32,
    /// Wait before the second try; doubles for each further one.
    pub backoff: Duration,
    pub http: HttpOptions,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            allow_http: false,
            max_size: 64 * 1024 * 1024,
            attempts: 4,
            backoff: Duration::from_secs(1),
            http: HttpOptions::default(),
        }
    }
}

/// Where the bytes come from, after the scheme policy was applied.
enum Source {
    File(PathBuf),
    Http(url::Url),
}

/// Returns `cache_dir/<expected>.tgz`, downloading `url` into it unless a copy that hashes to
/// `expected` is already there (then no network is touched).
pub fn fetch_verified(
    url: &str,
    expected: &Sha256Digest,
    cache_dir: &Path,
    opts: &FetchOptions,
) -> Result<PathBuf> {
    // Presigned URLs carry their credentials: messages and logs name the redacted form only.
    let shown = crate::redact::url(url);
    let source = parse_source(url, &shown, opts.allow_http)?;
    ensure_private_dir(cache_dir)?;
    let dest = cache_dir.join(format!("{expected}.tgz"));
    if cached_copy_matches(&dest, expected)? {
        info!(url = %shown, path = %dest.display(), "using verified cached copy");
        return Ok(dest);
    }
    let partial = cache_dir.join(format!("{expected}.partial"));
    let fetched = match &source {
        Source::File(path) => copy_file(path, &shown, &partial, opts.max_size),
        Source::Http(u) => download_with_retries(u, &shown, &partial, opts),
    };
    let (actual, bytes) = match fetched {
        Ok(v) => v,
        Err(e) => return Err(discard(&partial, e)),
    };
    if actual != *expected {
        let e = DownloadError::HashMismatch {
            url: shown,
            expected: *expected,
            actual,
        };
        return Err(discard(&partial, e.into()));
    }
    if let Err(e) = fs::rename(&partial, &dest) {
        let e = anyhow::Error::new(e).context(format!(
            "renaming {} to {}",
            partial.display(),
            dest.display()
        ));
        return Err(discard(&partial, e));
    }
    sync_dir(cache_dir)?;
    info!(url = %shown, bytes, path = %dest.display(), "download verified");
    Ok(dest)
}

/// `shown` is the redacted `url`, the only form that goes into messages.
fn parse_source(url: &str, shown: &str, allow_http: bool) -> Result<Source> {
    let parsed = url::Url::parse(url).with_context(|| format!("parsing URL {shown}"))?;
    match parsed.scheme() {
        "https" => Ok(Source::Http(parsed)),
        "http" if allow_http => Ok(Source::Http(parsed)),
        "http" => Err(DownloadError::HttpNotAllowed { url: shown.into() }.into()),
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|()| anyhow!("{shown} does not name a local file path"))?;
            Ok(Source::File(path))
        }
        other => Err(DownloadError::UnsupportedScheme {
            url: shown.into(),
            scheme: other.into(),
        }
        .into()),
    }
}

/// Creates a private (0700) directory if missing; an existing one is used as it is.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{} exists but is not a directory", dir.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating directory {}", dir.display())),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", dir.display())),
    }
}

/// True when `dest` exists and hashes to `expected`; a stale or corrupt copy is removed.
fn cached_copy_matches(dest: &Path, expected: &Sha256Digest) -> Result<bool> {
    let file = match File::open(dest) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("opening {}", dest.display())),
    };
    let (actual, _) = hash_reader(file, io::sink(), u64::MAX)
        .map_err(|e| e.into_anyhow(&dest.display().to_string()))?;
    if actual == *expected {
        return Ok(true);
    }
    warn!(path = %dest.display(), %actual, "cached copy does not match its name, removing it");
    fs::remove_file(dest).with_context(|| format!("removing corrupt {}", dest.display()))?;
    Ok(false)
}

/// Removes the partial file after a failure and hands the original error back.
fn discard(partial: &Path, err: anyhow::Error) -> anyhow::Error {
    match fs::remove_file(partial) {
        Ok(()) => err,
        Err(e) if e.kind() == io::ErrorKind::NotFound => err,
        Err(e) => err.context(format!("also failed to remove {}: {e}", partial.display())),
    }
}

/// Why streaming stopped: too many bytes, or an I/O error on either side.
enum StreamError {
    TooLarge(u64),
    Read(io::Error),
    Write(io::Error),
}

impl StreamError {
    fn into_anyhow(self, source: &str) -> anyhow::Error {
        match self {
            StreamError::TooLarge(limit) => DownloadError::TooLarge {
                url: source.to_string(),
                limit,
            }
            .into(),
            StreamError::Read(e) => anyhow::Error::new(e).context(format!("reading {source}")),
            StreamError::Write(e) => anyhow::Error::new(e).context("writing the download"),
        }
    }
}

/// Copies `reader` into `out` through one fixed buffer, hashing as it goes and stopping as soon
/// as more than `limit` bytes arrive.
fn hash_reader(
    mut reader: impl Read,
    mut out: impl Write,
    limit: u64,
) -> Result<(Sha256Digest, u64), StreamError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Read(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(StreamError::TooLarge(limit));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(StreamError::Write)?;
    }
    Ok((Sha256Digest(hasher.finalize().into()), total))
}

/// Streams `reader` into a fresh `partial` (0600), fsyncs it and returns digest and size.
fn stream_to_partial(
    reader: impl Read,
    source: &str,
    partial: &Path,
    limit: u64,
) -> Result<(Sha256Digest, u64), StreamError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(partial)
        .map_err(StreamError::Write)?;
    // An existing partial keeps its old mode through open(); make sure it is private.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(StreamError::Write)?;
    let result = hash_reader(reader, &mut file, limit)?;
    file.sync_all().map_err(StreamError::Write)?;
    debug!(source, bytes = result.1, "stream complete");
    Ok(result)
}

/// `shown` is the redacted URL, for messages.
fn copy_file(path: &Path, shown: &str, partial: &Path, limit: u64) -> Result<(Sha256Digest, u64)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?
        .len();
    if len > limit {
        return Err(DownloadError::TooLarge {
            url: shown.into(),
            limit,
        }
        .into());
    }
    info!(url = %shown, bytes = len, "copying local file");
    stream_to_partial(file, shown, partial, limit).map_err(|e| e.into_anyhow(shown))
}

/// One try's outcome class: worth another try (network trouble, 5xx, 429) or final.
enum AttemptError {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

/// `shown` is the redacted URL: the only form that goes into messages and logs.
fn download_with_retries(
    parsed: &url::Url,
    shown: &str,
    partial: &Path,
    opts: &FetchOptions,
) -> Result<(Sha256Digest, u64)> {
    let agent = crate::http::client(&opts.http)?;
    let (target, auth) = split_userinfo(parsed);
    let attempts = opts.attempts.max(1);
    let mut delay = opts.backoff;
    for attempt in 1..=attempts {
        info!(url = %shown, attempt, "downloading");
        match download_once(&agent, (&target, &auth), shown, partial, opts) {
            Ok(v) => return Ok(v),
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::Retry(e)) if attempt == attempts => {
                return Err(e.context(format!("giving up on {shown} after {attempts} attempts")))
            }
            Err(AttemptError::Retry(e)) => {
                warn!(url = %shown, attempt, error = %format!("{e:#}"), ?delay, "download failed, retrying");
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// The Basic `Authorization` value (RFC 7617) made from a URL's userinfo.
type Auth = Option<String>;

/// Moves a URL's userinfo into a Basic Authorization value, so the URL handed to the client
/// (and anything it logs) carries no credentials.
fn split_userinfo(url: &url::Url) -> (url::Url, Auth) {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return (url.clone(), None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        url.password().map(decode).unwrap_or_default()
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    );
    let mut bare = url.clone();
    // Cannot fail: a URL with userinfo has a host.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    (bare, Some(auth))
}

/// GETs `target`, following up to [`MAX_REDIRECTS`] redirects itself so each hop is checked
/// before it is contacted: no credentials in the target (they would sit in the URL the client
/// logs), no plain http unless allowed, and the Authorization header only for the original
/// origin (scheme, host and port), as browsers and reqwest do.
fn get_following_redirects(
    agent: &ureq::Agent,
    (target, auth): (&url::Url, &Auth),
    shown: &str,
    opts: &FetchOptions,
) -> Result<ureq::http::Response<ureq::Body>, AttemptError> {
    let mut url = target.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut req = agent.get(url.as_str());
        if let Some(auth) = auth.as_ref().filter(|_| url.origin() == target.origin()) {
            req = req.header("Authorization", auth);
        }
        let resp = req.call().map_err(|e| {
            // A malformed request or a refused certificate would fail the same way again.
            let fatal = matches!(e, ureq::Error::BadUri(_) | ureq::Error::Http(_))
                || crate::http::is_tls_rejection(&e);
            let e = crate::http::error(e).context(format!("requesting {shown}"));
            if fatal {
                AttemptError::Fatal(e)
            } else {
                AttemptError::Retry(e)
            }
        })?;
        if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            return Ok(resp);
        }
        let Some(next) = redirect_target(&resp, &url) else {
            return Ok(resp);
        };
        check_redirect(&next, opts)
            .map_err(|e| AttemptError::Fatal(e.context(format!("redirected from {shown}"))))?;
        debug!(from = %shown, to = %crate::redact::parsed_url(&next), "following redirect");
        url = next;
    }
    Err(AttemptError::Fatal(anyhow!(
        "{shown}: too many redirects (more than {MAX_REDIRECTS})"
    )))
}

/// The `Location` of a redirect, resolved against the URL that answered it.
fn redirect_target(resp: &ureq::http::Response<ureq::Body>, base: &url::Url) -> Option<url::Url> {
    let location = resp.headers().get("location")?.to_str().ok()?;
    base.join(location).ok()
}

/// Refuses a redirect target brickup would not have accepted as its configured URL.
fn check_redirect(next: &url::Url, opts: &FetchOptions) -> Result<()> {
    let shown = crate::redact::parsed_url(next);
    if !next.username().is_empty() || next.password().is_some() {
        bail!("refusing a redirect to a URL with credentials in it ({shown})");
    }
    match next.scheme() {
        "https" => Ok(()),
        "http" if opts.allow_http => Ok(()),
        "http" => Err(DownloadError::HttpNotAllowed { url: shown }.into()),
        other => Err(DownloadError::UnsupportedScheme {
            url: shown,
            scheme: other.into(),
        }
        .into()),
    }
}

fn download_once(
    agent: &ureq::Agent,
    request: (&url::Url, &Auth),
    shown: &str,
    partial: &Path,
    opts: &FetchOptions,
) -> Result<(Sha256Digest, u64), AttemptError> {
    let resp = get_following_redirects(agent, request, shown, opts)?;
    let status = resp.status();
    if !status.is_success() {
        let err = DownloadError::HttpStatus {
            url: shown.into(),
            status: status.as_u16(),
        };
        let retry = status.is_server_error() || status.as_u16() == 429;
        return Err(if retry {
            AttemptError::Retry(err.into())
        } else {
            AttemptError::Fatal(err.into())
        });
    }
    let body = resp.into_body();
    let announced = body.content_length();
    if announced.is_some_and(|len| len > opts.max_size) {
        let e = DownloadError::TooLarge {
            url: shown.into(),
            limit: opts.max_size,
        };
        return Err(AttemptError::Fatal(e.into()));
    }
    let (digest, bytes) = stream_to_partial(body.into_reader(), shown, partial, opts.max_size)
        .map_err(|e| match e {
            StreamError::Read(_) => AttemptError::Retry(e.into_anyhow(shown)),
            _ => AttemptError::Fatal(e.into_anyhow(shown)),
        })?;
    if let Some(len) = announced.filter(|&len| len != bytes) {
        let e = anyhow!("{shown}: received {bytes} bytes but Content-Length announced {len}");
        return Err(AttemptError::Retry(e));
    }
    info!(url = %shown, bytes, "received");
    Ok((digest, bytes))
}

/// fsyncs a directory so a rename inside it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_are_held_to_the_configured_url_rules() {
        let strict = FetchOptions::default();
        let lax = FetchOptions {
            allow_http: true,
            ..FetchOptions::default()
        };
        let check = |url: &str, opts: &FetchOptions| {
            check_redirect(&url::Url::parse(url).unwrap(), opts).map_err(|e| format!("{e:#}"))
        };
        assert!(check("https://mirror.example/csf.tgz?sig=1", &strict).is_ok());
        assert!(check("http://mirror.example/csf.tgz", &lax).is_ok());
        let plain = check("http://mirror.example/csf.tgz", &strict).unwrap_err();
        assert!(plain.contains("allow_http"), "{plain}");
        let creds = check("https://u:secret@mirror.example/x?sig=2", &lax).unwrap_err();
        assert!(creds.contains("credentials"), "{creds}");
        assert!(
            !creds.contains("secret") && !creds.contains("sig=2"),
            "{creds}"
        );
        let ftp = check("ftp://mirror.example/x", &lax).unwrap_err();
        assert!(ftp.contains("unsupported URL scheme"), "{ftp}");
    }

    #[test]
    fn userinfo_moves_into_a_basic_header() {
        let url = url::Url::parse("https://al%20ice:p%40ss@host/p?q=1").unwrap();
        let (bare, auth) = split_userinfo(&url);
        assert_eq!(bare.as_str(), "https://host/p?q=1");
        // base64("al ice:p@ss")
        assert_eq!(auth.as_deref(), Some("Basic YWwgaWNlOnBAc3M="));
        let user_only = url::Url::parse("https://tok@host/").unwrap();
        assert_eq!(
            split_userinfo(&user_only).1.as_deref(),
            Some("Basic dG9rOg==")
        );
        let none = url::Url::parse("https://host/").unwrap();
        assert_eq!(split_userinfo(&none), (none.clone(), None));
    }
}
