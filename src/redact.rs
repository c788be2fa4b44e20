//! Redaction of URLs for logs, plans, errors and reports: credentials travel in userinfo and in
//! query strings (presigned `X-Amz-Signature=...`, `?token=...`), so both are replaced by `***`
//! wherever brickup formats a URL (URL syntax after RFC 3986 / the WHATWG URL standard).

use url::Url;

/// What stands in for a hidden part.
const MASK: &str = "***";

/// `url` with userinfo, query and fragment masked:
/// `https://user:pw@host/p?X-Amz-Signature=...` -> `https://***@host/p?***`.
/// A URL that does not parse is never echoed: only its scheme, if it has a plain one, remains.
pub(crate) fn url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(parsed) => parsed_url(&parsed),
        Err(_) => unparsed(raw),
    }
}

/// [`url`] for an already parsed URL.
pub(crate) fn parsed_url(u: &Url) -> String {
    let mut out = format!("{}:", u.scheme());
    if let Some(host) = u.host_str() {
        out.push_str("//");
        if !u.username().is_empty() || u.password().is_some() {
            out.push_str(MASK);
            out.push('@');
        }
        out.push_str(host);
        if let Some(port) = u.port() {
            out.push_str(&format!(":{port}"));
        }
        out.push_str(u.path());
    } else if u.scheme() == "file" {
        out.push_str("//");
        out.push_str(u.path());
    } else {
        // mailto:, data: and the like: everything after the scheme may be the secret.
        out.push_str(MASK);
        return out;
    }
    if u.query().is_some() {
        out.push('?');
        out.push_str(MASK);
    }
    if u.fragment().is_some() {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

/// A text that is not a URL: keep a plain scheme (`ftp`, `https`) so the message still says
/// what kind of address it was, mask the rest.
fn unparsed(raw: &str) -> String {
    let scheme = raw.split_once(':').map(|(s, _)| s).filter(|s| {
        !s.is_empty()
            && s.len() <= 16
            && s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    match scheme {
        Some(s) => format!("{}:{MASK} (unparseable URL)", s.to_ascii_lowercase()),
        None => format!("{MASK} (unparseable URL)"),
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn masks_userinfo_query_and_fragment() {
        let cases = [
            (
                "https://user:pw@host/p?X-Amz-Signature=abc",
                "https://***@host/p?***",
            ),
            ("https://host/p", "https://host/p"),
            ("https://host:8443/a/b?", "https://host:8443/a/b?***"),
            ("https://tok@host/", "https://***@host/"),
            ("https://:pw@host/", "https://***@host/"),
            (
                "http://[::1]:8080/r?k=v#frag",
                "http://[::1]:8080/r?***#***",
            ),
            ("http://127.0.0.1:9/r#x", "http://127.0.0.1:9/r#***"),
            ("file:///var/csf.tgz", "file:///var/csf.tgz"),
            ("file:///var/csf.tgz?x=1", "file:///var/csf.tgz?***"),
            ("mailto:me@example.com", "mailto:***"),
            ("HTTPS://Host/P", "https://host/P"),
        ];
        for (raw, want) in cases {
            assert_eq!(url(raw), want, "{raw}");
        }
    }

    #[test]
    fn never_echoes_what_does_not_parse() {
        for (raw, want) in [
            ("not a url secret", "*** (unparseable URL)"),
            (
                "https://us er:s3cret@[bad/p?q=1",
                "https:*** (unparseable URL)",
            ),
            ("s3cret-token", "*** (unparseable URL)"),
            ("", "*** (unparseable URL)"),
            ("a b:c", "*** (unparseable URL)"),
        ] {
            assert_eq!(url(raw), want, "{raw}");
        }
    }
}
