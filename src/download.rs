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
use crate::progress::{Line, Throttle};

mod remote;

/// Read buffer size: memory use stays at this whatever the download size.
const BUF_SIZE: usize = 64 * 1024;

/// The progress line (on a terminal) starts once a download takes this long, and is redrawn at
/// most this often.
const PROGRESS_AFTER: Duration = Duration::from_millis(250);
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

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
        Source::Http(u) => remote::download_with_retries(u, &shown, &partial, opts),
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
    crate::fsops::sync_dir(cache_dir)?;
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
    let (actual, _) = hash_reader(file, io::sink(), u64::MAX, |_| {})
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
/// as more than `limit` bytes arrive; `progress` hears the running total after each read.
fn hash_reader(
    mut reader: impl Read,
    mut out: impl Write,
    limit: u64,
    mut progress: impl FnMut(u64),
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
        progress(total);
    }
    Ok((Sha256Digest(hasher.finalize().into()), total))
}

/// Streams `reader` into a fresh `partial` (0600), fsyncs it and returns digest and size. On a
/// terminal a progress line shows the bytes so far and `total` when it is known; never the URL.
fn stream_to_partial(
    reader: impl Read,
    source: &str,
    partial: &Path,
    (limit, total): (u64, Option<u64>),
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
    let mut line = Line::on_stderr(Throttle::new(PROGRESS_AFTER, PROGRESS_EVERY));
    let result = hash_reader(reader, &mut file, limit, |done| {
        line.update(|elapsed| crate::progress::transfer(done, total, elapsed));
    });
    // Cleared before anything else is logged, whether the stream ended or failed.
    line.finish();
    let result = result?;
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
    stream_to_partial(file, shown, partial, (limit, Some(len))).map_err(|e| e.into_anyhow(shown))
}
