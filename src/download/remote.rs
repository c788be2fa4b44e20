//! Fetching a pinned artifact over http(s) for [`super::fetch_verified`]: retries with
//! backoff for network trouble, 429 and 5xx, redirects followed and checked hop by hop, Basic
//! auth from the URL's userinfo sent as a header, the body streamed through the hash.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use tracing::{debug, info, warn};

use super::{stream_to_partial, DownloadError, FetchOptions, Sha256Digest, StreamError};

/// Redirects followed per download (the limit reqwest, brickup's earlier client, used).
const MAX_REDIRECTS: usize = 10;

/// One try's outcome class: worth another try (network trouble, 5xx, 429) or final.
enum AttemptError {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

/// `shown` is the redacted URL: the only form that goes into messages and logs.
pub(super) fn download_with_retries(
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
    let (digest, bytes) = stream_to_partial(
        body.into_reader(),
        shown,
        partial,
        (opts.max_size, announced),
    )
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
