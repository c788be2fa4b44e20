//! The receiver's own HTTP/1.1 request reader and response writer: one POST per connection,
//! framed by `Content-Length` (RFC 9112 section 6), read within a deadline. Only what a report
//! needs: no chunked bodies (411), no keep-alive, no pipelining.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// A request head larger than this is not a report sender's.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long a refused client may keep sending after the answer before the socket is closed.
const LINGER: Duration = Duration::from_secs(1);

/// A complete POST: headers (in order) and body.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request is refused: the status code and the reason sent back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// The client may still be sending: close gently so it can read the answer.
    pub(crate) drain: bool,
    /// Seconds for a `Retry-After` header: try again soon.
    pub(crate) retry_after: Option<u32>,
}

impl Refusal {
    pub(crate) fn new(code: u16, reason: impl Into<String>) -> Refusal {
        let reason = reason.into();
        Refusal {
            code,
            reason,
            drain: false,
            retry_after: None,
        }
    }

    /// A 503 the client should retry after `secs`.
    pub(crate) fn busy(secs: u32, reason: impl Into<String>) -> Refusal {
        Refusal {
            retry_after: Some(secs),
            ..Refusal::new(503, reason)
        }
    }

    fn early(code: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            drain: true,
            ..Refusal::new(code, reason)
        }
    }
}

/// Reads one request from `stream`, head and body, all before `deadline`; the body may be at
/// most `max_body` bytes. Answers `100 Continue` when the client waits for it.
pub(crate) fn read_request(
    stream: &mut TcpStream,
    deadline: Instant,
    max_body: u64,
) -> Result<Request, Refusal> {
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(Refusal::early(431, "request head larger than 16 KiB"));
        }
        if read_some(stream, &mut buf, deadline)? == 0 {
            return Err(Refusal::new(
                400,
                "connection closed inside the request head",
            ));
        }
    };
    let (method, headers) = parse_head(&buf[..end])?;
    let len = body_length(&method, &headers, max_body)?;
    let mut body = buf.split_off(end + 4);
    let request = Request {
        headers,
        body: Vec::new(),
    };
    if body.len() < len
        && request
            .header("Expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let answer = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        answer.map_err(|e| Refusal::new(400, format!("answering 100 Continue: {e}")))?;
    }
    while body.len() < len {
        if read_some(stream, &mut body, deadline)? == 0 {
            let got = body.len();
            return Err(Refusal::new(
                400,
                format!("connection closed after {got} of {len} body bytes"),
            ));
        }
    }
    // Bytes past Content-Length would be a pipelined request; the connection closes instead.
    body.truncate(len);
    Ok(Request { body, ..request })
}

/// One `read` appended to `buf`, waiting no later than `deadline`; 0 at end of stream.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, Refusal> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::new(408, "request not complete in time"));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| Refusal::new(500, format!("setting a read timeout: {e}")))?;
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Refusal::new(408, "request not complete in time"));
            }
            Err(e) => return Err(Refusal::new(400, format!("reading the request: {e}"))),
        }
    }
}

/// Splits a request head (without its final blank line) into method and headers.
pub(crate) fn parse_head(head: &[u8]) -> Result<(String, Vec<(String, String)>), Refusal> {
    let bad = |why: &str| Refusal::early(400, why.to_string());
    let head = std::str::from_utf8(head).map_err(|_| bad("request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad("malformed request line"));
    };
    if method.is_empty() || target.is_empty() || !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(bad("malformed request line (HTTP/1.x expected)"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(Refusal::early(
                431,
                format!("more than {MAX_HEADERS} headers"),
            ));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("header without a colon"))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(bad("malformed header name"));
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok((method.to_string(), headers))
}

/// RFC 9110 `tchar`: what a header name may contain (so no spaces, no folded lines).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The body length a POST announces, or why it cannot be read.
pub(crate) fn body_length(
    method: &str,
    headers: &[(String, String)],
    max_body: u64,
) -> Result<usize, Refusal> {
    if method != "POST" {
        return Err(Refusal::early(405, "only POST is accepted"));
    }
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if named("Transfer-Encoding").next().is_some() {
        return Err(Refusal::early(
            411,
            "send the body with Content-Length, not Transfer-Encoding",
        ));
    }
    let mut lengths = named("Content-Length");
    let first = lengths
        .next()
        .ok_or_else(|| Refusal::early(411, "Content-Length required"))?;
    if lengths.any(|other| other != first) {
        return Err(Refusal::early(400, "conflicting Content-Length headers"));
    }
    let len: u64 = Some(first)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Refusal::early(400, format!("Content-Length {first:?} is not a number")))?;
    if len > max_body {
        return Err(Refusal::early(
            413,
            format!("body larger than {max_body} bytes"),
        ));
    }
    Ok(len as usize)
}

/// Writes a complete `text/plain` answer; the connection closes after it.
pub(crate) fn respond(
    stream: &mut TcpStream,
    code: u16,
    text: &str,
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} {}\r\n", phrase(code));
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n");
    head.push_str(&format!(
        "Content-Length: {}\r\n\r\n{text}\n",
        text.len() + 1
    ));
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

/// Closes after an early answer: stops sending, then reads and drops what the client still
/// sends, for at most [`LINGER`] and never past `deadline`. Closing with unread bytes would
/// reset the connection, and the client could lose the answer.
pub(crate) fn linger(stream: &mut TcpStream, deadline: Instant) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let until = deadline.min(Instant::now() + LINGER);
    let mut sink = Vec::new();
    while let Ok(n) = read_some(stream, &mut sink, until) {
        if n == 0 {
            break;
        }
        sink.clear();
    }
}

fn phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The client's address for the log.
pub(crate) fn peer(stream: &std::net::TcpStream) -> String {
    stream
        .peer_addr()
        .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<(String, Vec<(String, String)>), u16> {
        parse_head(text.as_bytes()).map_err(|r| r.code)
    }

    #[test]
    fn heads() {
        let (method, headers) = head("POST /hook HTTP/1.1\r\nHost: x\r\nA-b:  v w \t").unwrap();
        assert_eq!(method, "POST");
        let pairs = [("Host", "x"), ("A-b", "v w")].map(|(n, v)| (n.to_string(), v.to_string()));
        assert_eq!(headers, pairs);
        assert!(head("GET / HTTP/1.0").is_ok());
        for bad in [
            "POST / HTTP/2",
            "POST /  HTTP/1.1",
            "POST",
            " / HTTP/1.1",
            "POST / HTTP/1.1\r\nNo colon",
            "POST / HTTP/1.1\r\nBad name: v",
            "POST / HTTP/1.1\r\nHost: x\r\n folded",
            "POST / HTTP/1.1\r\n: empty name",
        ] {
            assert_eq!(head(bad), Err(400), "{bad:?}");
        }
        let many = format!("POST / HTTP/1.1{}", "\r\nX: y".repeat(MAX_HEADERS + 1));
        assert_eq!(head(&many), Err(431));
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nX: \xff").unwrap_err().code,
            400
        );
    }

    #[test]
    fn body_lengths() {
        let len = |method: &str, headers: &[(&str, &str)]| {
            let headers: Vec<_> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            body_length(method, &headers, 100).map_err(|r| r.code)
        };
        assert_eq!(len("POST", &[("content-length", "42")]), Ok(42));
        assert_eq!(len("POST", &[("Content-Length", "100")]), Ok(100));
        assert_eq!(
            len("POST", &[("Content-Length", "7"), ("Content-Length", "7")]),
            Ok(7)
        );
        assert_eq!(len("GET", &[("Content-Length", "1")]), Err(405));
        assert_eq!(len("POST", &[]), Err(411));
        assert_eq!(len("POST", &[("Transfer-Encoding", "chunked")]), Err(411));
        let both = [("Content-Length", "5"), ("Transfer-Encoding", "chunked")];
        assert_eq!(len("POST", &both), Err(411));
        assert_eq!(len("POST", &[("Content-Length", "101")]), Err(413));
        assert_eq!(
            len("POST", &[("Content-Length", "99999999999999999999999")]),
            Err(400)
        );
        assert_eq!(
            len("POST", &[("Content-Length", "7"), ("Content-Length", "8")]),
            Err(400)
        );
        for bad in ["", "-1", "+5", "1 2", "0x10"] {
            assert_eq!(len("POST", &[("Content-Length", bad)]), Err(400), "{bad:?}");
        }
    }
}
