//! fetch_verified against a real HTTP server on 127.0.0.1 (one thread per connection, counting
//! requests), plus file:// and the cache.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use brickup::download::{fetch_verified, DownloadError, FetchOptions, Sha256Digest};
use brickup::http::HttpOptions;
use sha2::{Digest as _, Sha256};

/// A local server; `handler(request_number, stream)` writes the whole response.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Every request's head (request line and headers), in arrival order.
    heads: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start<F>(handler: F) -> Server
    where
        F: Fn(usize, &mut TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let (counter, seen) = (hits.clone(), heads.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let handler = handler.clone();
                let (counter, seen) = (counter.clone(), seen.clone());
                thread::spawn(move || {
                    let head = read_request_head(&mut stream);
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(head);
                        counter.fetch_add(1, Ordering::SeqCst) + 1
                    };
                    handler(n, &mut stream);
                });
            }
        });
        Server { addr, hits, heads }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn read_request_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The value of header `name` in a request head, if present.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn respond(stream: &mut TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The client may hang up early (size cap): a failed write is expected then.
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn digest(data: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(data).into())
}

/// A real csf-shaped tar.gz, so the bytes are what production fetches.
fn tarball() -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let script = b"#!/bin/sh\necho installing\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(script.len() as u64);
    header.set_mode(0o755);
    builder
        .append_data(&mut header, "csf/install.sh", &script[..])
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

fn opts() -> FetchOptions {
    FetchOptions {
        allow_http: true,
        attempts: 3,
        backoff: Duration::from_millis(20),
        http: HttpOptions {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            ..HttpOptions::default()
        },
        ..FetchOptions::default()
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn download_error(err: &anyhow::Error) -> &DownloadError {
    err.downcast_ref::<DownloadError>()
        .unwrap_or_else(|| panic!("expected a DownloadError, got: {err:#}"))
}

#[test]
fn good_tarball_is_stored_under_its_digest() {
    let data = tarball();
    let served = data.clone();
    let server = Server::start(move |_, s| respond(s, "200 OK", &served));
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    let want = digest(&data);

    let path = fetch_verified(&server.url("/csf.tgz"), &want, &cache_dir, &opts()).unwrap();

    assert_eq!(path, cache_dir.join(format!("{want}.tgz")));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(dir_names(&cache_dir), vec![format!("{want}.tgz")]);
    assert_eq!(server.hits(), 1);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "cache dir must be private");
}

#[test]
fn wrong_checksum_is_a_hash_mismatch_and_leaves_nothing() {
    let data = tarball();
    let served = data.clone();
    let server = Server::start(move |_, s| respond(s, "200 OK", &served));
    let cache = tempfile::tempdir().unwrap();
    let want = digest(b"something else");

    let err = fetch_verified(&server.url("/csf.tgz"), &want, cache.path(), &opts()).unwrap_err();

    match download_error(&err) {
        DownloadError::HashMismatch {
            expected, actual, ..
        } => {
            assert_eq!(*expected, want);
            assert_eq!(*actual, digest(&data));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("sha256 mismatch"), "{err:#}");
    assert!(
        dir_names(cache.path()).is_empty(),
        "{:?}",
        dir_names(cache.path())
    );
    assert_eq!(server.hits(), 1, "a mismatch is final, not retried");
}

#[test]
fn truncated_body_fails_and_leaves_nothing() {
    let data = tarball();
    let want = digest(&data);
    let server = Server::start(move |_, s| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len() + 1000
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&data).unwrap();
    });
    let cache = tempfile::tempdir().unwrap();

    let err = fetch_verified(&server.url("/csf.tgz"), &want, cache.path(), &opts()).unwrap_err();

    assert!(err.to_string().contains("giving up"), "{err:#}");
    assert!(
        dir_names(cache.path()).is_empty(),
        "{:?}",
        dir_names(cache.path())
    );
    assert_eq!(
        server.hits(),
        3,
        "a cut connection is retried up to `attempts`"
    );
}

#[test]
fn service_unavailable_then_ok_is_retried() {
    let data = tarball();
    let want = digest(&data);
    let server = Server::start(move |n, s| match n {
        1 => respond(s, "503 Service Unavailable", b"busy"),
        _ => respond(s, "200 OK", &data),
    });
    let cache = tempfile::tempdir().unwrap();

    let path = fetch_verified(&server.url("/csf.tgz"), &want, cache.path(), &opts()).unwrap();

    assert_eq!(digest(&std::fs::read(path).unwrap()), want);
    assert_eq!(server.hits(), 2);
}

#[test]
fn too_many_requests_is_retried_until_attempts_run_out() {
    let server = Server::start(|_, s| respond(s, "429 Too Many Requests", b""));
    let cache = tempfile::tempdir().unwrap();

    let err = fetch_verified(&server.url("/x"), &digest(b"x"), cache.path(), &opts()).unwrap_err();

    assert!(matches!(
        download_error(&err),
        DownloadError::HttpStatus { status: 429, .. }
    ));
    assert_eq!(server.hits(), 3);
}

#[test]
fn not_found_is_not_retried() {
    let server = Server::start(|_, s| respond(s, "404 Not Found", b"nope"));
    let cache = tempfile::tempdir().unwrap();

    let err = fetch_verified(&server.url("/x"), &digest(b"x"), cache.path(), &opts()).unwrap_err();

    assert!(matches!(
        download_error(&err),
        DownloadError::HttpStatus { status: 404, .. }
    ));
    assert_eq!(server.hits(), 1);
    assert!(dir_names(cache.path()).is_empty());
}

#[test]
fn stalled_server_fails_within_bounded_time() {
    // Headers arrive, then the body stalls far longer than the timeout.
    let server = Server::start(|_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
        thread::sleep(Duration::from_secs(20));
    });
    let cache = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.attempts = 2;
    o.http.timeout = Duration::from_millis(300);

    let start = Instant::now();
    let err = fetch_verified(&server.url("/x"), &digest(b"x"), cache.path(), &o).unwrap_err();

    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.hits(), 2, "a timeout is retried: {err:#}");
    assert!(dir_names(cache.path()).is_empty());
}

#[test]
fn silent_server_fails_within_bounded_time() {
    // The request is read but no response header ever comes.
    let server = Server::start(|_, _| thread::sleep(Duration::from_secs(20)));
    let cache = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.attempts = 2;
    o.http.timeout = Duration::from_millis(300);

    let start = Instant::now();
    let err = fetch_verified(&server.url("/x"), &digest(b"x"), cache.path(), &o).unwrap_err();

    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.hits(), 2, "{err:#}");
}

#[test]
fn plain_http_is_refused_without_allow_http() {
    let server = Server::start(|_, s| respond(s, "200 OK", b"x"));
    let cache = tempfile::tempdir().unwrap();
    let o = FetchOptions {
        allow_http: false,
        ..opts()
    };

    let err = fetch_verified(&server.url("/x"), &digest(b"x"), cache.path(), &o).unwrap_err();

    assert!(matches!(
        download_error(&err),
        DownloadError::HttpNotAllowed { .. }
    ));
    assert!(err.to_string().contains("allow_http"), "{err:#}");
    assert_eq!(server.hits(), 0);
}

#[test]
fn unknown_scheme_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let err =
        fetch_verified("ftp://127.0.0.1/x", &digest(b"x"), cache.path(), &opts()).unwrap_err();
    assert!(matches!(
        download_error(&err),
        DownloadError::UnsupportedScheme { .. }
    ));
}

#[test]
fn file_url_is_copied_and_verified() {
    let data = tarball();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("csf.tgz");
    std::fs::write(&file, &data).unwrap();
    let url = url::Url::from_file_path(&file).unwrap().to_string();
    let cache = tempfile::tempdir().unwrap();

    let path = fetch_verified(&url, &digest(&data), cache.path(), &opts()).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);

    let other = tempfile::tempdir().unwrap();
    let err = fetch_verified(&url, &digest(b"x"), other.path(), &opts()).unwrap_err();
    assert!(matches!(
        download_error(&err),
        DownloadError::HashMismatch { .. }
    ));
    assert!(dir_names(other.path()).is_empty());
}

#[test]
fn cache_hit_needs_no_request_and_corrupt_cache_is_replaced() {
    let data = tarball();
    let want = digest(&data);
    let served = data.clone();
    let server = Server::start(move |_, s| respond(s, "200 OK", &served));
    let cache = tempfile::tempdir().unwrap();
    let cached = cache.path().join(format!("{want}.tgz"));
    std::fs::write(&cached, &data).unwrap();

    let path = fetch_verified(&server.url("/csf.tgz"), &want, cache.path(), &opts()).unwrap();
    assert_eq!(path, cached);
    assert_eq!(server.hits(), 0);

    std::fs::write(&cached, b"bit rot").unwrap();
    let path = fetch_verified(&server.url("/csf.tgz"), &want, cache.path(), &opts()).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(server.hits(), 1);
}

#[test]
fn announced_size_over_the_cap_is_refused() {
    let server = Server::start(|_, s| respond(s, "200 OK", &[7u8; 4096]));
    let cache = tempfile::tempdir().unwrap();
    let o = FetchOptions {
        max_size: 1000,
        ..opts()
    };

    let err = fetch_verified(&server.url("/x"), &digest(b"x"), cache.path(), &o).unwrap_err();

    assert!(matches!(
        download_error(&err),
        DownloadError::TooLarge { limit: 1000, .. }
    ));
    assert_eq!(server.hits(), 1);
    assert!(dir_names(cache.path()).is_empty());
}

#[test]
fn unannounced_size_over_the_cap_is_cut_while_streaming() {
    // No Content-Length: the body runs until the server closes.
    let server = Server::start(|_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let _ = s.write_all(&[7u8; 200_000]);
    });
    let cache = tempfile::tempdir().unwrap();
    let o = FetchOptions {
        max_size: 100_000,
        ..opts()
    };

    let err = fetch_verified(&server.url("/x"), &digest(b"x"), cache.path(), &o).unwrap_err();

    assert!(matches!(
        download_error(&err),
        DownloadError::TooLarge { limit: 100_000, .. }
    ));
    assert_eq!(server.hits(), 1);
    assert!(dir_names(cache.path()).is_empty());
}

fn redirect(stream: &mut TcpStream, status: &str, location: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
}

#[test]
fn redirects_are_followed_and_basic_auth_stays_with_its_origin() {
    let data = tarball();
    let want = digest(&data);
    let other = Server::start(move |_, s| respond(s, "200 OK", &data));
    let final_url = other.url("/final.tgz");
    let origin = Server::start(move |n, s| match n {
        1 => redirect(s, "302 Found", "/moved.tgz"),
        _ => redirect(s, "301 Moved Permanently", &final_url),
    });
    let url = format!("http://u%40x:p%3Aw@{}/csf.tgz", origin.addr);
    let cache = tempfile::tempdir().unwrap();

    let path = fetch_verified(&url, &want, cache.path(), &opts()).unwrap();

    assert_eq!(digest(&std::fs::read(path).unwrap()), want);
    let heads = origin.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /csf.tgz HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        heads[1].starts_with("GET /moved.tgz HTTP/1.1\r\n"),
        "{heads:?}"
    );
    // base64("u@x:p:w"): the userinfo, percent-decoded, as a Basic header to its own origin only.
    for head in &heads {
        assert_eq!(
            header(head, "authorization"),
            Some("Basic dUB4OnA6dw=="),
            "{head}"
        );
        assert!(!head.contains("p%3Aw") && !head.contains("u%40x"), "{head}");
    }
    let moved = other.heads();
    assert_eq!(moved.len(), 1);
    assert!(
        moved[0].starts_with("GET /final.tgz HTTP/1.1\r\n"),
        "{moved:?}"
    );
    assert_eq!(header(&moved[0], "authorization"), None, "{moved:?}");
}

#[test]
fn a_redirect_to_a_url_with_credentials_is_refused_before_it_is_contacted() {
    let target = Server::start(|_, s| respond(s, "200 OK", b"x"));
    let location = format!("http://user:pw@{}/x", target.addr);
    let origin = Server::start(move |_, s| redirect(s, "302 Found", &location));
    let cache = tempfile::tempdir().unwrap();

    let err = fetch_verified(&origin.url("/x"), &digest(b"x"), cache.path(), &opts()).unwrap_err();

    let msg = format!("{err:#}");
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!msg.contains("pw"), "{msg}");
    assert_eq!(origin.hits(), 1, "a refusal is final, not retried: {msg}");
    assert_eq!(target.hits(), 0, "{msg}");
    assert!(dir_names(cache.path()).is_empty());
}

#[test]
fn more_than_ten_redirects_fail() {
    let server = Server::start(|n, s| redirect(s, "307 Temporary Redirect", &format!("/r{n}")));
    let cache = tempfile::tempdir().unwrap();

    let err = fetch_verified(&server.url("/x"), &digest(b"x"), cache.path(), &opts()).unwrap_err();

    assert!(format!("{err:#}").contains("too many redirects"), "{err:#}");
    assert_eq!(
        server.hits(),
        11,
        "the request and 10 redirects, once: {err:#}"
    );
}

#[test]
fn digest_parses_64_hex_digits_only() {
    let lower = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let d: Sha256Digest = lower.to_uppercase().parse().unwrap();
    assert_eq!(d, digest(b"test"));
    assert_eq!(d.to_string(), lower);

    let short = "abc".parse::<Sha256Digest>().unwrap_err();
    assert!(short.to_string().contains("64 hex digits"), "{short}");
    let bad = format!("{}g", &lower[..63]);
    let err = bad.parse::<Sha256Digest>().unwrap_err();
    assert!(err.to_string().contains("position 63"), "{err}");
    assert!(format!("sha256-{}", &lower[7..])
        .parse::<Sha256Digest>()
        .is_err());

    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(json, format!("\"{lower}\""));
    assert_eq!(serde_json::from_str::<Sha256Digest>(&json).unwrap(), d);
    assert!(serde_json::from_str::<Sha256Digest>("\"abcd\"").is_err());
}

#[test]
fn ca_file_without_certificates_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let err = brickup::http::client(&HttpOptions {
        ca_file: Some(ca.clone()),
        ..HttpOptions::default()
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains(&ca.display().to_string()),
        "{err:#}"
    );
    brickup::http::client(&HttpOptions::default()).unwrap();
}

/// A CA and a server certificate for IP 127.0.0.1, made with the openssl CLI into `dir`.
fn make_test_pki(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI is needed for the TLS test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        &[
            "-subj",
            "/CN=brickup test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// An HTTPS server on 127.0.0.1 (rustls, ring) answering every request with `body`.
fn start_tls_server(dir: &Path, body: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(dir.join("srv.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp.unwrap());
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            // A client that rejects the certificate ends the handshake: nothing to answer.
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            if !head.ends_with(b"\r\n\r\n") {
                continue;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes());
            let _ = tls.write_all(&body);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (addr, hits)
}

#[test]
fn https_with_extra_ca_file_works_and_fails_without_it() {
    let pki = tempfile::tempdir().unwrap();
    make_test_pki(pki.path());
    fetch_with_and_without_the_ca(pki.path());
}

/// The README's "works on images with no CA bundle": this test runs again in a mount namespace
/// where the system's CA stores (/etc/ssl, /usr/share/ca-certificates, /usr/lib/ssl, /etc/pki)
/// are empty, and the same HTTPS fetch must verify with the CA file and be refused without it.
/// A TLS setup that loaded the system's bundle would fail there (none to load) or pass the
/// untrusted half only by accident of the host's bundle. Needs root for the mount namespace.
#[test]
fn https_works_on_a_machine_without_a_ca_bundle() {
    const STORES: [&str; 4] = [
        "/etc/ssl",
        "/usr/share/ca-certificates",
        "/usr/lib/ssl",
        "/etc/pki",
    ];
    if let Some(pki) = std::env::var_os("BRICKUP_TEST_NO_CA_BUNDLE_PKI") {
        // The child, in its own mount namespace.
        for store in STORES {
            if let Ok(mut entries) = std::fs::read_dir(store) {
                assert!(
                    entries.next().is_none(),
                    "{store} is not empty in the child"
                );
            }
        }
        fetch_with_and_without_the_ca(Path::new(&pki));
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    // Made out here: the openssl CLI needs its config from /usr/lib/ssl.
    make_test_pki(pki.path());
    let masked: Vec<&str> = STORES
        .into_iter()
        .filter(|s| Path::new(s).is_dir())
        .collect();
    assert!(
        !masked.is_empty(),
        "this machine has no CA store to hide: {STORES:?}"
    );
    let script = r#"for d in "$@"; do mount -t tmpfs -o mode=0755 brickup-no-ca "$d" || exit 1; done
exec "$EXE" --exact https_works_on_a_machine_without_a_ca_bundle --nocapture --test-threads 1"#;
    let o = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .args(&masked)
        .env("EXE", std::env::current_exe().unwrap())
        .env("BRICKUP_TEST_NO_CA_BUNDLE_PKI", pki.path())
        .output()
        .expect("unshare (util-linux) is needed");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("1 passed"),
        "the fetch without a CA bundle (hiding {masked:?}):\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Fetch from a local HTTPS server whose certificate the test CA in `pki` signed: refused at
/// once without that CA, verified with it as the extra CA file.
fn fetch_with_and_without_the_ca(pki: &Path) {
    let data = tarball();
    let (addr, hits) = start_tls_server(pki, data.clone());
    let url = format!("https://127.0.0.1:{}/csf.tgz", addr.port());
    let want = digest(&data);

    let untrusted = FetchOptions {
        allow_http: false,
        attempts: 3,
        backoff: Duration::from_secs(2),
        ..opts()
    };
    let cache = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = fetch_verified(&url, &want, cache.path(), &untrusted).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a refused certificate is final, not retried: {err:#}"
    );
    assert!(format!("{err:#}").contains(&url), "{err:#}");
    assert!(dir_names(cache.path()).is_empty());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no request without a trusted certificate"
    );

    let mut trusted = untrusted.clone();
    trusted.http.ca_file = Some(pki.join("ca.pem"));
    let path = fetch_verified(&url, &want, cache.path(), &trusted).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
